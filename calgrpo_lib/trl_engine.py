"""CAL credit inside TRL's ``GRPOTrainer``: :class:`CALGRPOConfig` and :class:`CALGRPOTrainer`.

TRL's ``GRPOTrainer`` gives every completion one advantage ``A_i`` ``(B,)``, broadcast over its tokens in the loss.
:class:`CALGRPOTrainer` keeps everything TRL does (generation, rewards, group advantages, the loss, LoRA through
``peft_config``, logging, checkpoints) and replaces only those advantages: after TRL has generated and scored a batch,
it asks our oracle where each of this process's wrong completions goes wrong, maps the quotes to TRL's own completion
token ids (:func:`calgrpo_lib.spans.error_token_masks`) and hands the loss ``A_it`` ``(B, T)`` from
:func:`calgrpo_lib.credit.token_advantages` in the configured ``credit_mode``. TRL's ``_compute_loss`` takes ``(B, T)``
advantages as they are (it unsqueezes only a ``(B,)`` tensor), so the loss is TRL's own.

The seam is TRL's ``_generate_and_score_completions``: :class:`CALGRPOTrainer` calls it and post-processes the dict
it returns (:meth:`CALGRPOTrainer.apply_credit`). It is a private TRL method, so the TRL versions this module is
tested with are pinned (:data:`SUPPORTED_TRL`, the ``trl`` extra of pyproject.toml); another version warns.

Per completion, correctness is ``calgrpo_lib.rewards.is_correct(text, row[target_column])`` on the text the oracle is
shown (:func:`calgrpo_lib.spans.decode_responses` of TRL's completion ids), the oracle item is ``(row[question_column],
row[reference_column], text)``; the dataset's columns reach us as TRL passes them to reward functions
(``remove_unused_columns=False``, TRL's default). :func:`problems_dataset` builds such a dataset from our problems and
:func:`reward_func` is our answer + format reward as a TRL reward function.

:func:`trl_config` builds a :class:`CALGRPOConfig` from our :class:`calgrpo_lib.config.GRPOConfig` (``python -m
calgrpo_lib train --engine trl``; under ``accelerate launch`` for several processes). The mapping, ours -> TRL's:

============================================  =====================================================================
ours                                          TRL (``CALGRPOConfig`` / ``CALGRPOTrainer``)
============================================  =====================================================================
``prompts_per_step`` P, ``num_generations`` G  ``num_generations=G``; the P*G completions of a step are split over
                                              the N processes: ``per_device_train_batch_size * gradient_accumulation
                                              _steps = P*G/N`` (``per_device_train_batch_size = min(microbatch_size,
                                              P*G/N)``); one optimizer step per batch and pass, as ours
``microbatch_size``                           ``per_device_train_batch_size`` (see above)
``max_new_tokens`` / ``min_new_tokens``       ``max_completion_length`` / ``generation_kwargs`` (``min_new_tokens``;
                                              ``min_tokens`` with vLLM)
``max_steps``, ``save_every``                 ``max_steps``, ``save_steps`` times ``num_iterations`` (TRL counts
                                              optimizer steps, we count batches); ``save_every=0``: one checkpoint
                                              at the end; ``logging_steps=1``
``learning_rate``, ``lr_scheduler_type``,     the same names (TRL's ``num_iterations`` also reuses each batch
``weight_decay``, ``max_grad_norm``, ``beta``,  ``num_iterations`` times)
``epsilon``, ``epsilon_high``,
``num_iterations``, ``loss_type``,
``scale_rewards``, ``temperature``,
``top_p``, ``seed``, ``output_dir``
``gradient_checkpointing``                    ``activation_checkpointing`` (transformers 5's name)
``device``                                    ``use_cpu=True`` for ``cpu``; else accelerate's choice
``dtype``                                     ``bf16`` / ``fp16`` mixed precision and ``model_init_kwargs["dtype"]``
                                              (``auto``: TRL's float32 weights, bf16 autocast on a GPU with bf16)
``use_peft``, ``lora_*``                      the trainer's ``peft_config`` (:func:`peft_config`)
``resume``                                    ``trainer.train(resume_from_checkpoint=True)`` (newest checkpoint-N)
:data:`CAL_FIELDS` (``credit_mode``, ...)     the same :class:`CALGRPOConfig` fields
``model``, ``task``, ``data_path``,           the trainer's model (a name: TRL loads it) and dataset
``train_size``, ``prompt_style``, ``seed``    (:func:`problems_dataset`)
``reward_format``, ``*_weight``               the reward function (:func:`reward_func`)
(none: TRL's own)                             ``report_to``, ``use_vllm``, ``vllm_mode``, ``vllm_server_base_url``
:data:`NO_TRL_COUNTERPART`                    none: a value other than the default (or the neutral value listed
                                              there) is refused by the command line, naming the flag
============================================  =====================================================================

This is the only library module that imports ``trl`` at top level (``pip install -e ".[trl]"``).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from importlib import metadata
from typing import Any

import torch
import trl
from accelerate.utils import gather_object
from packaging.specifiers import SpecifierSet
from transformers import PrinterCallback, ProgressCallback

from .config import GRPOConfig as CalConfig
from .config import process_batch_split
from .credit import token_advantages
from .data import load_problems
from .rewards import FORMATS, batch_rewards, build_prompt, is_correct
from .run_oracle import build_oracle
from .spans import decode_responses, error_token_masks
from .tasks import Problem
from .validation import check_choice, check_type

__all__ = ["SUPPORTED_TRL", "CAL_FIELDS", "METRIC_PREFIX", "NO_TRL_COUNTERPART", "CALGRPOConfig", "CALGRPOTrainer",
           "CreditBatch", "problems_dataset", "reward_func", "trl_config", "peft_config", "trl_trainer"]

SUPPORTED_TRL = ">=1.16,<1.17"  #: TRL versions tested (pyproject's ``trl`` extra pins the same)
METRIC_PREFIX = "cal/"  #: our metrics in TRL's logs: ``cal/span_hit_rate``, ``cal/oracle_failures``, ...
#: the fields of calgrpo_lib.config.GRPOConfig that CALGRPOConfig shares (same names, defaults and checks)
CAL_FIELDS = ("credit_mode", "negative_reward", "lam", "max_error_span_tokens", "oracle", "oracle_model",
              "oracle_base_url", "oracle_concurrency", "oracle_timeout_s", "oracle_batch_timeout_s", "oracle_cache",
              "oracle_cascade", "oracle_trust_remote_code", "prm_interface", "prm_threshold", "span_granularity")
_DEFAULTS = {f.name: f.default for f in fields(CalConfig)}
#: fields of our GRPOConfig that the trl engine has no counterpart for, with the values that mean "off" there too
#: (besides the default): our held-out evaluation, the reward-model rewards, our run folder
NO_TRL_COUNTERPART: dict[str, tuple[Any, ...]] = {
    "eval_size": (0,), "eval_every": (0,), "reward": (), "reward_model": (), "reward_scorer": (), "rm_warmup": (),
    "rm_calibration": (), "rm_correct_weight": (), "rm_incorrect_weight": (), "difficulty_w_min": (),
    "difficulty_w_max": (), "difficulty_k": (), "allow_config_change": (), "extra": (),
    "oracle_miss_rate": (), "oracle_wrong_step_rate": (), "oracle_correct_step_rate": ()}
# Counters summed over processes each batch, logged as cal/<name>
_SUMMED = ("completions", "wrong", "judged", "quotes", "mapped", "wrong_with_span", "fallbacks", "error_tokens",
           "oracle_calls", "oracle_cache_hits", "oracle_failures", "oracle_unlocalized", "oracle_retries",
           "oracle_fallbacks", "oracle_abandoned")


def _ours(name: str, help: str) -> Any:
    return field(default=_DEFAULTS[name], metadata={"help": help})


@dataclass
class CALGRPOConfig(trl.GRPOConfig):
    """TRL's ``GRPOConfig`` plus the CAL credit fields of :class:`calgrpo_lib.config.GRPOConfig` (:data:`CAL_FIELDS`:
    same names, defaults and checks; an invalid value fails at creation, naming the field) and the dataset columns the
    oracle and the correctness check read."""

    credit_mode: str = _ours("credit_mode", "Token credit: 'sequence' (TRL's broadcast), 'cal_sparse', 'cal_hybrid', "
                                            "'prefix', or a control: 'random_span', 'uniform' (calgrpo_lib.credit).")
    negative_reward: float = _ours("negative_reward", "R-, the credit of an error span (<= 0).")
    lam: float = _ours("lam", "Weight of the extra error-span push-down in cal_hybrid (>= 0).")
    max_error_span_tokens: int = _ours("max_error_span_tokens", "A longer error span falls back to sequence credit.")
    oracle: str = _ours("oracle", "The oracle: 'stepcheck' (exact, offline), 'gemini', 'openai', 'local', 'prm' or "
                                  "'none' (credit_mode='sequence' only).")
    oracle_model: str | None = _ours("oracle_model", "Judge model id (gemini / openai / local / prm); None: default.")
    oracle_base_url: str | None = _ours("oracle_base_url", "Base URL of an OpenAI-compatible server (vLLM, ollama).")
    oracle_concurrency: int = _ours("oracle_concurrency", "Judge calls in flight at once (1-256).")
    oracle_timeout_s: float = _ours("oracle_timeout_s", "Wall-clock limit of one judge call, retries included.")
    oracle_batch_timeout_s: float | None = _ours("oracle_batch_timeout_s", "Limit of one batch's judge calls "
                                                                           "together (None: 2 * oracle_timeout_s).")
    oracle_cache: str | None = _ours("oracle_cache", "SQLite file of judge replies (None: "
                                                     "<output_dir>/oracle_cache.sqlite).")
    oracle_cascade: bool = _ours("oracle_cascade", "The exact step checker first, the judge where it may see an "
                                                   "earlier error.")
    oracle_trust_remote_code: bool = _ours("oracle_trust_remote_code", "Run a hub judge's own code.")
    prm_interface: str = _ours("prm_interface", "oracle='prm': 'step_head' or 'next_token'.")
    prm_threshold: float = _ours("prm_threshold", "oracle='prm': the first step below this is the first error.")
    span_granularity: str = _ours("span_granularity", "What an error span covers: 'quote', 'step', 'claim' or "
                                  "'result'.")
    question_column: str = field(default="question", metadata={"help": "Dataset column of the question the oracle "
                                                                        "is shown."})
    reference_column: str = field(default="answer", metadata={"help": "Dataset column of the reference solution "
                                                                      "the oracle is shown."})
    target_column: str = field(default="final", metadata={"help": "Dataset column of the right final answer (a "
                                                                  "number): a completion is wrong when its final "
                                                                  "answer differs."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("question_column", "reference_column", "target_column"):
            value = getattr(self, name)
            check_type(name, value, str)
            if not value.strip():
                raise ValueError(f"{name}={value!r} is empty; allowed: the name of a dataset column")
        self.credit_config()  # every CAL field checked now, before any model work

    def credit_config(self) -> CalConfig:
        """Our :class:`calgrpo_lib.config.GRPOConfig` holding this config's :data:`CAL_FIELDS` and ``output_dir``
        (the rest default): validates them, and is what :func:`calgrpo_lib.run_oracle.build_oracle` takes."""
        return CalConfig(**{name: getattr(self, name) for name in CAL_FIELDS}, output_dir=str(self.output_dir))


@dataclass(frozen=True)
class CreditBatch:
    """What :meth:`CALGRPOTrainer.apply_credit` saw and gave for this process's last batch (CPU tensors): TRL's
    completions, their texts, which were wrong, TRL's advantages, the error tokens, the token advantages TRL got."""

    completion_ids: torch.Tensor  # (B, T)
    completion_mask: torch.Tensor  # (B, T) bool
    texts: list[str]  # (B,)
    is_wrong: torch.Tensor  # (B,) bool
    advantages: torch.Tensor  # (B,)
    error_mask: torch.Tensor  # (B, T) bool
    token_advantages: torch.Tensor  # (B, T)


def _check_trl_version() -> None:
    version = metadata.version("trl")
    if version not in SpecifierSet(SUPPORTED_TRL):
        warnings.warn(f"trl=={version} is installed; CALGRPOTrainer is tested with trl{SUPPORTED_TRL} (it overrides "
                      "GRPOTrainer._generate_and_score_completions, a private method)", UserWarning, stacklevel=3)


class CALGRPOTrainer(trl.GRPOTrainer):
    """TRL's ``GRPOTrainer`` with CAL token credit: ``args`` must be a :class:`CALGRPOConfig`; ``oracle`` (optional)
    is any of our oracles (default: :func:`calgrpo_lib.run_oracle.build_oracle` of ``args.credit_config()``; none
    in credit mode ``sequence``, which asks no oracle). Every other argument is TRL's.

    What is replaced: the ``advantages`` of the batch dict TRL's ``_generate_and_score_completions`` returns, ``(B,)``
    -> ``(B, T)`` (:meth:`apply_credit`): TRL's loss, clipping and metrics run on token credit; nothing else changes.
    """

    def __init__(self, model: Any, reward_funcs: Any = None, args: CALGRPOConfig | None = None, *more: Any,
                 oracle: Any = None, **kwargs: Any) -> None:
        if not isinstance(args, CALGRPOConfig):
            raise TypeError(f"args has type {type(args).__name__}; allowed: CALGRPOConfig (CAL credit needs its "
                            "fields: credit_mode, oracle, ...)")
        _check_trl_version()
        super().__init__(model, reward_funcs, args, *more, **kwargs)
        self.credit_config = args.credit_config()
        if oracle is None and args.credit_mode != "sequence":
            oracle = build_oracle(self.credit_config)
        self.oracle = oracle
        self.local_totals: Counter[str] = Counter()  #: this process's own counters (completions, wrong, judged, ...)
        self.last_batch: CreditBatch | None = None  #: this process's last batch, for inspection

    # ------------------------------------------------------------------------------------------ the seam
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor | Any]:
        """TRL's generation and scoring, then :meth:`apply_credit` on its output (the ``(B,)`` advantages become
        ``(B, T)`` token advantages). Called once per generation batch, before TRL shuffles and splits it."""
        output = super()._generate_and_score_completions(inputs)
        return self.apply_credit(inputs, output)

    def apply_credit(self, inputs: Sequence[dict[str, Any]], output: dict[str, Any]) -> dict[str, Any]:
        """``output`` (TRL's batch dict for this process's ``B`` completions of ``inputs``) with ``advantages``
        replaced by ``token_advantages(A, completion_mask, error_mask, is_wrong, credit_mode)`` ``(B, T)``.

        Only this process's completions are judged (TRL has already sliced ``advantages`` to them), wrong ones only,
        with one ``judge_batch`` call (concurrent and cached by the oracle, whose faults become failed verdicts and
        so sequence credit, never an exception). Logs ``cal/*`` metrics into ``self._metrics`` (summed over
        processes): span hit rate, oracle calls / cache hits / failures (also by cause), error tokens, fallbacks, and
        the seconds spent in the oracle (``cal/oracle_time_s``) and in all of this (``cal/credit_time_s``).
        """
        cfg, t_start = self.args, time.perf_counter()
        seq_adv = output["advantages"]  # (B,)
        if seq_adv.dim() != 1:
            raise ValueError(f"output['advantages'] has shape {tuple(seq_adv.shape)}; allowed: TRL's (B,) sequence "
                             "advantages (apply_credit runs once per batch)")
        ids = output["completion_ids"].cpu()  # (B, T)
        response_mask = output["completion_mask"].bool().cpu()  # (B, T)
        if len(inputs) != ids.shape[0]:
            raise ValueError(f"len(inputs)={len(inputs)}; allowed: one row per completion, {ids.shape[0]}")
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        texts = decode_responses(tokenizer, ids, response_mask)  # what the oracle sees and the offsets index
        has_tokens = response_mask.any(dim=1).tolist()  # (B,) a masked (truncated) completion has no loss
        targets = _column(inputs, cfg.target_column)
        is_wrong = torch.tensor([bool(h) and not is_correct(t, float(y)) for h, t, y in zip(has_tokens, texts,
                                                                                             targets)])  # (B,)

        t0 = time.perf_counter()
        quotes: list[tuple[str, int | None] | None] = [None] * len(texts)  # (B,)
        oracle_counts: dict[str, float] = {}
        wrong = [i for i in range(len(texts)) if is_wrong[i]]
        asked = cfg.credit_mode != "sequence" and self.oracle is not None and bool(wrong)
        if asked:
            questions = _column(inputs, cfg.question_column)
            references = _column(inputs, cfg.reference_column)
            before = self.oracle.stats.snapshot()
            verdicts = self.oracle.judge_batch([(questions[i], references[i], texts[i]) for i in wrong])
            for i, verdict in zip(wrong, verdicts):
                if verdict.localized:
                    quotes[i] = (verdict.quote, verdict.step)
            oracle_counts = self.oracle.stats.step_counts(before)
        oracle_time = time.perf_counter() - t0
        error_mask, span_stats = error_token_masks(tokenizer, ids, response_mask, quotes,
                                                   max_error_span_tokens=cfg.max_error_span_tokens,
                                                   texts=texts, granularity=cfg.span_granularity)  # (B, T) bool
        draws = torch.Generator().manual_seed(  # random_span's draws: per (seed, step, process), so a resume repeats
            hash((self.args.seed, self.state.global_step, self.accelerator.process_index)) & (2**63 - 1))
        token_adv, credit_stats = token_advantages(seq_adv.detach().cpu(), response_mask, error_mask, is_wrong,
                                                   cfg.credit_mode, negative_reward=cfg.negative_reward,
                                                   lam=cfg.lam, generator=draws)  # (B, T)
        local = {"completions": len(texts), "wrong": credit_stats.num_wrong,
                 "judged": len(wrong) if asked else 0,
                 "quotes": span_stats.num_quotes, "mapped": span_stats.num_mapped,
                 "wrong_with_span": credit_stats.num_wrong_with_span, "fallbacks": credit_stats.num_fallback,
                 "error_tokens": credit_stats.num_error_tokens,
                 **{f"oracle_{k}": oracle_counts.get(k, 0.0) for k in ("calls", "cache_hits", "failures",
                                                                        "unlocalized", "retries", "fallbacks",
                                                                        "abandoned")}}
        self.local_totals.update(local)
        causes = {k: v for k, v in oracle_counts.items() if k.startswith("failures_")}
        times = (oracle_time, time.perf_counter() - t_start)
        self._log_credit(local, causes, times, float(oracle_counts.get("stopped", 0.0)))
        self.last_batch = CreditBatch(ids, response_mask, texts, is_wrong, seq_adv.detach().cpu(), error_mask,
                                      token_adv)
        return {**output, "advantages": token_adv.to(seq_adv.device)}

    def _log_credit(self, local: dict[str, float], causes: dict[str, float], times: tuple[float, float],
                    stopped: float) -> None:
        """Sum this batch's counters over processes and append them to TRL's ``self._metrics[mode]``; ``times``:
        seconds spent asking the oracle and in the whole of :meth:`apply_credit` (means over processes)."""
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        summed = torch.tensor([float(local[k]) for k in _SUMMED] + [*times, stopped], device=device)
        summed = self.accelerator.reduce(summed, reduction="sum").tolist()
        totals = dict(zip(_SUMMED, summed))
        metrics = self._metrics[mode]
        for name in _SUMMED:
            metrics[METRIC_PREFIX + name].append(totals[name])
        metrics[METRIC_PREFIX + "span_hit_rate"].append(totals["mapped"] / totals["quotes"] if totals["quotes"]
                                                        else 0.0)
        metrics[METRIC_PREFIX + "oracle_time_s"].append(summed[-3] / self.accelerator.num_processes)
        metrics[METRIC_PREFIX + "credit_time_s"].append(summed[-2] / self.accelerator.num_processes)
        metrics[METRIC_PREFIX + "oracle_stopped"].append(float(summed[-1] > 0))
        merged: Counter[str] = Counter()
        for part in gather_object([causes]):
            merged.update(part)
        for name in sorted(merged):
            metrics[f"{METRIC_PREFIX}oracle_{name}"].append(float(merged[name]))


def _column(inputs: Sequence[dict[str, Any]], name: str) -> list[Any]:
    if inputs and name not in inputs[0]:
        raise ValueError(f"the dataset has no column {name!r} (columns: {sorted(inputs[0])}); allowed: set the "
                         "CALGRPOConfig field naming it (question_column / reference_column / target_column), and "
                         "keep remove_unused_columns=False")
    return [row[name] for row in inputs]


def problems_dataset(problems: Sequence[Problem], *, prompt_style: str = "plain", tokenizer: Any = None) -> Any:
    """A ``datasets.Dataset`` for :class:`CALGRPOTrainer` from our problems: columns ``prompt`` (``build_prompt`` of
    the question in ``prompt_style``), ``question``, ``answer`` (the reference solution) and ``final`` (float)."""
    from datasets import Dataset

    rows = [{"prompt": build_prompt(p.question, prompt_style, tokenizer), "question": p.question, "answer": p.answer,
             "final": float(p.final)} for p in problems]
    return Dataset.from_list(rows)


def reward_func(reward_format: str = "gsm8k", answer_weight: float = 0.8, format_weight: float = 0.2, *,
                target_column: str = "final") -> Callable[..., list[float]]:
    """Our rule reward (:func:`calgrpo_lib.rewards.batch_rewards`: ``answer_weight * right + format_weight *
    well-formed``) as a TRL reward function reading the target from the ``target_column`` column."""
    check_choice("reward_format", reward_format, FORMATS)
    batch_rewards([], [], reward_format, answer_weight, format_weight)  # checks the weights now

    def calgrpo_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]  # plain or conversational
        if target_column not in columns:
            raise ValueError(f"the dataset has no column {target_column!r} (columns: {sorted(columns)}); allowed: "
                             "a dataset with it, e.g. problems_dataset(...)")
        targets = [float(y) for y in columns[target_column]]
        return batch_rewards(texts, targets, reward_format, answer_weight, format_weight).total

    return calgrpo_reward


def trl_config(cal: CalConfig, *, num_processes: int = 1, report_to: str = "none", use_vllm: bool = False,
               vllm_mode: str = "colocate", vllm_server_base_url: str | None = None) -> CALGRPOConfig:
    """The :class:`CALGRPOConfig` of our config ``cal`` for ``num_processes`` processes (the mapping table in the
    module docstring). ``report_to``: TRL's loggers, comma-separated (``"none"``, ``"wandb"``, ...). A batch that
    does not split evenly over the processes and microbatches raises ``ValueError`` naming the fields."""
    check_choice("vllm_mode", vllm_mode, ("colocate", "server"))
    micro, accumulation = process_batch_split(cal.prompts_per_step, cal.num_generations, num_processes,
                                              cal.microbatch_size)
    mu = cal.num_iterations
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported() and cal.device != "cpu"
    generation: dict[str, Any] | None = None
    if cal.min_new_tokens:
        generation = {("min_tokens" if use_vllm else "min_new_tokens"): cal.min_new_tokens}
    return CALGRPOConfig(
        output_dir=cal.output_dir, seed=cal.seed, max_steps=cal.max_steps * mu, logging_steps=1,
        save_strategy="steps", save_steps=(cal.save_every or cal.max_steps) * mu,
        report_to=[r.strip() for r in report_to.split(",") if r.strip()] or "none",
        per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
        num_generations=cal.num_generations, max_completion_length=cal.max_new_tokens,
        temperature=cal.temperature, top_p=cal.top_p, generation_kwargs=generation,
        learning_rate=cal.learning_rate, lr_scheduler_type=cal.lr_scheduler_type, weight_decay=cal.weight_decay,
        max_grad_norm=cal.max_grad_norm, beta=cal.beta, epsilon=cal.epsilon, epsilon_high=cal.epsilon_high,
        num_iterations=mu, loss_type=cal.loss_type, scale_rewards=cal.scale_rewards,
        activation_checkpointing=cal.gradient_checkpointing, use_cpu=cal.device == "cpu",
        bf16=cal.dtype == "bfloat16" or (cal.dtype == "auto" and cuda_bf16), fp16=cal.dtype == "float16",
        model_init_kwargs={"dtype": cal.dtype} if cal.dtype != "auto" else None,
        dataloader_pin_memory=cal.device != "cpu" and torch.cuda.is_available(), use_vllm=use_vllm, vllm_mode=vllm_mode,
        vllm_server_base_url=vllm_server_base_url, **{name: getattr(cal, name) for name in CAL_FIELDS})


def peft_config(cal: CalConfig) -> Any:
    """The trainer's ``peft_config`` of our config: a ``peft.LoraConfig`` of the ``lora_*`` fields with ``use_peft``,
    else None."""
    if not cal.use_peft:
        return None
    from peft import LoraConfig

    from .lora import parse_target_modules

    return LoraConfig(task_type="CAUSAL_LM", r=cal.lora_r, lora_alpha=cal.lora_alpha, lora_dropout=cal.lora_dropout,
                      target_modules=parse_target_modules(cal.lora_target_modules))


def trl_trainer(cal: CalConfig, model: Any, tokenizer: Any, *, args: CALGRPOConfig | None = None, oracle: Any = None,
                callbacks: list[Any] | None = None, quiet: bool = False) -> CALGRPOTrainer:
    """A :class:`CALGRPOTrainer` for ``cal``: ``args`` (default ``trl_config(cal)``), the task's training problems as
    a :func:`problems_dataset`, :func:`reward_func` of ``cal``'s reward fields, :func:`peft_config`. ``model``: a
    model, or a name or folder TRL loads; ``quiet``: without TRL's printed logs and progress bars (a notebook)."""
    problems = load_problems(cal.task, "train", n=cal.train_size, seed=cal.seed, path=cal.data_path)
    dataset = problems_dataset(problems, prompt_style=cal.prompt_style, tokenizer=tokenizer)
    reward = reward_func(cal.reward_format, cal.answer_weight, cal.format_weight)
    trainer = CALGRPOTrainer(model=model, reward_funcs=reward, args=args if args is not None else trl_config(cal),
                             train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config(cal),
                             callbacks=callbacks, oracle=oracle)
    if quiet:
        from transformers.utils.notebook import NotebookProgressCallback  # imports IPython: only when asked

        for callback in (PrinterCallback, ProgressCallback, NotebookProgressCallback):
            trainer.remove_callback(callback)
    return trainer
