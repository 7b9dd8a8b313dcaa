"""The GRPO loop with CAL credit. :meth:`Trainer.step` calls its five phases in order, each a public method (so a
notebook can run one step phase by phase):

    rollout   prompts -> G samples each
    score     -> rewards (verifier, reward model or both) -> group advantages (x difficulty weights)
    localize  -> oracle verdicts for wrong answers -> error quotes -> token masks
    credit    -> token credit
    update    -> clipped-surrogate loss (num_iterations passes) -> optimizer step

The trainer holds the state (model, optimizer, step, metrics) and composes the library's pieces; it draws nothing.
Notebooks and the CLI watch it through ``callbacks``: callables ``f(event, record)`` with ``event`` in
{"step", "eval"}. Each step's sampling is seeded by ``(seed, step)``, and checkpoints hold the model (with LoRA,
``use_peft``: its adapters, see :mod:`calgrpo_lib.lora`), optimizer, RNG states, metrics and the reward model's
calibration, so a resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import json
import os
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .advantages import num_zero_spread_groups
from .checkpoints import check_run_folder, load_checkpoint, read_checkpoint_state, replace_run, save_checkpoint
from .config import GRPOConfig, lr_at_step
from .credit import CreditStats, token_advantages
from .data import load_problems
from .interrupts import StepBoundaryStop
from .lora import POLICY_FIELDS, adapters_disabled, is_peft, prepare_policy, trainable_parameters
from .loss import entropy_from_logits, grpo_loss, token_logprobs, train_step
from .metrics_log import MetricsLog
from .policy import load_policy
from .preflight import preflight
from .reward_model import RMCalibration
from .rollout import Rollout, sample_rollouts, sequence_forward
from .run_oracle import build_oracle
from .sampling import greedy_accuracy
from .scoring import RewardScorer, Scores
from .spans import SpanStats, error_token_masks

__all__ = ["Trainer", "TrainResult", "Scores", "Localization", "train", "Callback", "TIMING_KEYS"]

Callback = Callable[[str, dict[str, Any]], None]
TIMING_KEYS = ("time_generation", "time_rewards", "time_oracle", "time_credit", "time_loss", "time_optimizer",
               "time_step")


@dataclass
class TrainResult:
    """What a run produced: evaluations before and after, every step's metrics, and where it is on disk."""

    config: GRPOConfig
    steps_done: int
    eval_before: dict[str, Any] | None
    eval_after: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0
    interrupted: bool = False
    oracle_summary: dict[str, Any] | None = None  # the oracle's faults over the run (OracleStats.summary), if any


@dataclass
class Localization:
    """Phase 3 of a step: where its wrong answers go wrong, from the oracle's verdicts to token positions."""

    verdicts: list[Any]  # (N,) the oracle's verdict on each wrong answer it judged, None elsewhere
    quotes: list[tuple[str, int | None] | None]  # (N,) (quote, step) of each localized verdict, None elsewhere
    error_mask: torch.Tensor  # (N, T) bool, the tokens each quote covers
    span_stats: SpanStats  # how the quotes mapped to tokens
    oracle_stats: dict[str, float]  # this step's oracle_ counts (OracleStats.step_counts: calls, faults by cause)
    oracle_time_s: float  # seconds spent asking the oracle


class Trainer:
    """One GRPO run. ``model``/``tokenizer``/``oracle`` may be passed in (notebooks, tests); else built from
    ``config``."""

    def __init__(self, config: GRPOConfig, *, model: Any = None, tokenizer: Any = None, oracle: Any = None,
                 reward_model: Any = None, callbacks: Sequence[Callback] = (), progress: bool = True) -> None:
        preflight(config, model=model is None, oracle=oracle is None, reward_model=reward_model is None)  # before any
        # model: paths, device, oracle and reward-model needs
        self.config = config
        self.callbacks = list(callbacks)
        self.progress = progress
        self.output_dir = Path(config.output_dir)
        # another run there: refused unless resume / overwrite; a resume's checkpoint verified, its config compared
        self._resume_from = check_run_folder(self.output_dir, config.to_dict())
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        if model is None:
            model, tokenizer = load_policy(config.model, device=None if config.device == "auto" else config.device,
                                           dtype=None if config.dtype == "auto" else config.dtype)
        model = prepare_policy(model, **{f: getattr(config, f) for f in POLICY_FIELDS})  # LoRA, checkpointing
        self.model, self.tokenizer = model, tokenizer
        self.ref_model = None  # the KL's reference (the starting policy); a LoRA run's is its base, adapters off
        if config.beta > 0 and not is_peft(model):
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.oracle = oracle if oracle is not None else build_oracle(config)
        self.scorer = RewardScorer(config, reward_model=reward_model, device=next(model.parameters()).device)
        self.train_problems = load_problems(config.task, "train", n=config.train_size, seed=config.seed,
                                            path=config.data_path)
        self.eval_problems = (load_problems(config.task, "test", n=config.eval_size, seed=0, path=config.data_path)
                              if config.eval_size else [])
        trained = trainable_parameters(model)
        if any(p.dtype in (torch.bfloat16, torch.float16) for p in trained):  # AdamW updates its weights in place
            warnings.warn(f"the trained weights are {trained[0].dtype}: AdamW's updates at learning_rate="
                          f"{config.learning_rate} can fall below their resolution and be lost; use dtype='float32' "
                          "(or use_peft=True, whose adapters are float32)", UserWarning, stacklevel=2)
        self.optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=config.weight_decay)
        self._optimizer_time = 0.0
        self.optimizer.register_step_pre_hook(self._start_optimizer_clock)
        self.optimizer.register_step_post_hook(self._stop_optimizer_clock)
        self.step_count = 0
        self._stop = StepBoundaryStop()  # in train(): Ctrl-C / SIGTERM wait for the open step to end
        if config.overwrite:  # only now, once the model and data loaded: a failed start replaces nothing
            replace_run(self.output_dir)
        self.log = MetricsLog(self.output_dir)

    # ------------------------------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        """One GRPO step, its five phases in order; returns its metrics (also logged and sent to the callbacks).

        ``N = B * G`` completions (``B = prompts_per_step`` prompts, ``G = num_generations`` samples each) of at
        most ``T`` tokens.
        """
        cfg = self.config
        t0 = time.perf_counter()
        rollout = self.rollout()  # N completions, prompt-major
        t1 = time.perf_counter()
        scores = self.score(rollout)  # rewards and group advantages, (N,) each
        t2 = time.perf_counter()
        located = self.localize(rollout, scores)  # oracle verdicts -> quotes -> error mask (N, T)
        t3 = time.perf_counter()
        token_adv, credit_stats = self.credit(rollout, scores, located)  # (N, T)
        t4 = time.perf_counter()
        with self._stop.step_open():  # from the weights' first change to the step's record
            update_metrics = self.update(rollout, token_adv)  # learning rate, loss metrics of the last pass
            t5 = time.perf_counter()

            self.step_count += 1
            reward, lengths = scores.reward, rollout.completion_mask.sum(dim=1).float()  # (N,), (N,)
            num_prompts = len(rollout.problems) // cfg.num_generations  # B
            record = {
                "kind": "train", "step": self.step_count,
                "reward_mean": reward.mean().item(), "reward_std": reward.std().item(),
                "reward_min": reward.min().item(), "reward_max": reward.max().item(),
                "accuracy": statistics.fmean(scores.rewards.correct),
                "format_rate": statistics.fmean(scores.rewards.formatted),
                "zero_spread_frac": num_zero_spread_groups(reward, cfg.num_generations) / num_prompts,
                "completion_len_mean": lengths.mean().item(),
                **scores.metrics, **update_metrics, **located.oracle_stats,
                "span_hit_rate": located.span_stats.hit_rate, "credit_fallbacks": credit_stats.num_fallback,
                "error_tokens": credit_stats.num_error_tokens, "span_not_narrowed": located.span_stats.not_narrowed,
                "time_generation": t1 - t0, "time_rewards": t2 - t1, "time_oracle": located.oracle_time_s,
                "time_credit": (t3 - t2 - located.oracle_time_s) + (t4 - t3),  # quotes -> token masks, token credit
                "time_loss": t5 - t4 - self._optimizer_time, "time_optimizer": self._optimizer_time,
                "time_step": t5 - t0,
            }
            self.log.log(record)
        for callback in self.callbacks:
            callback("step", record)
        return record

    def rollout(self) -> Rollout:
        """Phase 1: sample ``G`` completions for each of this step's ``B`` prompts.

        The prompts are drawn from the training problems by ``(seed, step)`` and the sampling is seeded by
        ``seed * 1_000_003 + step``, so a resumed run samples what an uninterrupted one would have.
        """
        problems = self._problems_for_step(self.step_count)
        return sample_rollouts(self.model, self.tokenizer, problems, self.config,
                               seed=self.config.seed * 1_000_003 + self.step_count)

    def score(self, rollout: Rollout) -> Scores:
        """Phase 2: each completion's reward ``r_i`` (``config.reward``), its group advantage ``A_i`` (see
        :func:`calgrpo_lib.advantages.group_advantages`) times its difficulty weight with an RM, and which final
        answers are wrong (:class:`calgrpo_lib.scoring.RewardScorer`). An RM run's first call calibrates the RM."""
        if self.scorer.needs_warmup:
            self.calibrate_reward_model()
        return self.scorer.score(rollout)

    def calibrate_reward_model(self) -> RMCalibration:
        """The RM warm-up (:meth:`calgrpo_lib.scoring.RewardScorer.warm_up`) on the policy as it is now, written to
        ``<output_dir>/reward_calibration.json``; checkpoints keep it, so a resume does not redo it."""
        calibration = self.scorer.warm_up(self.model, self.tokenizer, self.train_problems)
        self.scorer.write_calibration(self.output_dir)
        return calibration

    def localize(self, rollout: Rollout, scores: Scores) -> Localization:
        """Phase 3: where each wrong answer goes wrong, as a token mask.

        The oracle judges the wrong answers only (none in credit mode ``sequence``, or without an oracle); a
        localized verdict gives a ``(quote, step)``, and :func:`calgrpo_lib.spans.error_token_masks` marks the
        tokens the quote covers, at ``span_granularity`` (metric ``span_not_narrowed``: spans kept coarser). A wrong
        answer without a mapped quote keeps an all-False row (sequence credit).
        The step's oracle metrics are :meth:`~calgrpo_lib.oracle.OracleStats.step_counts` prefixed ``oracle_``:
        calls, cache hits, failures, unlocalized, retries, fallbacks, abandoned calls, each non-zero
        ``failures_<cause>`` / ``retries_<cause>`` / ``unlocalized_<cause>``, and ``oracle_stopped`` (quota stop).
        """
        cfg = self.config
        t0 = time.perf_counter()
        verdicts: list[Any] = [None] * len(rollout.texts)  # (N,)
        quotes: list[tuple[str, int | None] | None] = [None] * len(rollout.texts)  # (N,)
        oracle_stats: dict[str, float] = {}
        if cfg.credit_mode != "sequence" and self.oracle is not None:
            wrong = [i for i in range(len(quotes)) if scores.is_wrong[i]]
            items = [(rollout.problems[i].question, rollout.problems[i].answer, rollout.texts[i]) for i in wrong]
            before = self.oracle.stats.snapshot()
            for i, verdict in zip(wrong, self.oracle.judge_batch(items) if items else []):
                verdicts[i] = verdict
                if verdict.localized:
                    quotes[i] = (verdict.quote, verdict.step)
            oracle_stats = {f"oracle_{k}": v for k, v in self.oracle.stats.step_counts(before).items()}
        oracle_time = time.perf_counter() - t0
        error_mask, span_stats = error_token_masks(self.tokenizer, rollout.completion_ids, rollout.completion_mask,
                                                   quotes, max_error_span_tokens=cfg.max_error_span_tokens,
                                                   texts=rollout.texts, granularity=cfg.span_granularity)  # (N, T)
        return Localization(verdicts, quotes, error_mask, span_stats, oracle_stats, oracle_time)

    def credit(self, rollout: Rollout, scores: Scores, located: Localization) -> tuple[torch.Tensor, CreditStats]:
        """Phase 4: one advantage per token ``A_it`` from the group advantages and the error mask, in
        ``config.credit_mode`` (see :mod:`calgrpo_lib.credit`); returns ``(A (N, T), CreditStats)``."""
        cfg = self.config  # random_span draws its spans from a generator seeded by (seed, step): resumes repeat them
        rng = torch.Generator().manual_seed(random.Random(f"credit/{cfg.seed}/{self.step_count}").getrandbits(63))
        return token_advantages(scores.advantages, rollout.completion_mask, located.error_mask, scores.is_wrong,
                                cfg.credit_mode, negative_reward=cfg.negative_reward, lam=cfg.lam, generator=rng)

    def update(self, rollout: Rollout, token_adv: torch.Tensor) -> dict[str, float]:
        """Phase 5: ``num_iterations`` optimizer steps on this batch, at this step's learning rate.

        Each pass minimises :func:`calgrpo_lib.loss.grpo_loss` (clipped surrogate, KL to the starting policy when
        ``beta > 0``) with ``token_adv`` ``(N, T)`` as advantages. Returns ``learning_rate`` and the metrics of the
        last pass (loss, clip fractions, entropy, grad_norm, ...).
        """
        cfg = self.config
        lr = lr_at_step(cfg, self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask,
                 "completion_mask": rollout.completion_mask, "advantages": token_adv}
        if cfg.num_iterations > 1:  # the sampling policy, fixed for all passes
            batch["old_logp"] = self.logprobs(rollout)  # (N, T)
        if cfg.beta > 0:  # a frozen copy of the starting policy; a LoRA run's base model: itself, adapters off
            with adapters_disabled(self.model):
                batch["ref_logp"] = self.logprobs(rollout, self.ref_model)  # (N, T)
        num_tokens = int(rollout.completion_mask.sum().item())
        start = rollout.completion_start

        def loss_fn(model: torch.nn.Module, micro: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
            logits = sequence_forward(model, micro["input_ids"], micro["attention_mask"], start)  # (n, T+1, V)
            logp = token_logprobs(logits, micro["input_ids"], start, temperature=cfg.temperature)  # (n, T)
            entropy = entropy_from_logits(logits[:, :-1].detach(), temperature=cfg.temperature)  # (n, T)
            return grpo_loss(logp, micro.get("old_logp"), micro["advantages"], micro["completion_mask"],
                             ref_logp=micro.get("ref_logp"), beta=cfg.beta, epsilon=cfg.epsilon,
                             epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
                             max_completion_length=cfg.max_new_tokens, num_items_in_batch=max(num_tokens, 1),
                             entropy=entropy)

        self._optimizer_time = 0.0
        self.model.train()
        for _ in range(cfg.num_iterations):
            metrics = train_step(self.model, self.optimizer, batch, loss_fn, microbatch_size=cfg.microbatch_size,
                                 accumulation="sum" if cfg.loss_type == "dapo" else "mean",
                                 max_grad_norm=cfg.max_grad_norm)
        self.model.eval()
        return {"learning_rate": lr, **{k: v for k, v in metrics.items() if k != "num_microbatches"}}

    def _problems_for_step(self, step: int) -> list:
        rng = random.Random(f"{self.config.seed}/{step}")
        return rng.sample(self.train_problems, min(self.config.prompts_per_step, len(self.train_problems)))

    def logprobs(self, rollout: Rollout, model: torch.nn.Module | None = None) -> torch.Tensor:
        """``log pi(o_it)`` of each sampled completion token under ``model`` (default: the policy being trained),
        ``(N, T)``, without gradient, ``microbatch_size`` rows at a time."""
        model = self.model if model is None else model
        start, size, out = rollout.completion_start, self.config.microbatch_size, []
        with torch.no_grad():
            for i in range(0, rollout.input_ids.shape[0], size):
                ids, mask = rollout.input_ids[i:i + size], rollout.attention_mask[i:i + size]
                out.append(token_logprobs(sequence_forward(model, ids, mask, start), ids, start,
                                         temperature=self.config.temperature))
        return torch.cat(out)  # (N, T)

    def _start_optimizer_clock(self, *args: Any) -> None:
        self._optimizer_clock = time.perf_counter()

    def _stop_optimizer_clock(self, *args: Any) -> None:
        self._optimizer_time += time.perf_counter() - self._optimizer_clock

    # ---------------------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, Any]:
        """Greedy accuracy on the held-out problems (logged with ``kind="eval"``)."""
        t0 = time.perf_counter()
        result = greedy_accuracy(self.model, self.tokenizer, self.eval_problems,
                                 max_new_tokens=self.config.max_new_tokens, prompt_style=self.config.prompt_style)
        record = {"kind": "eval", "step": self.step_count, **result, "time_eval": time.perf_counter() - t0}
        self._emit("eval", record)
        return record

    def _eval_due(self) -> bool:
        """A scheduled held-out evaluation at this step (the last step's is ``eval_after``)."""
        k, cfg = self.step_count, self.config
        return bool(self.eval_problems) and cfg.eval_every > 0 and 0 < k < cfg.max_steps and k % cfg.eval_every == 0

    def _emit(self, event: str, record: dict[str, Any]) -> None:
        self.log.log(record)
        for callback in self.callbacks:
            callback(event, record)

    # --------------------------------------------------------------------------------------- checkpoints
    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-NNNNNN`` atomically (see :mod:`calgrpo_lib.checkpoints`)."""
        return save_checkpoint(self.checkpoint_root, self.step_count, model=self.model, tokenizer=self.tokenizer,
                               optimizer=self.optimizer, config=self.config.to_dict(), records=self.log.records,
                               extra_state={"reward_scorer": self.scorer.state_dict()})

    def load_checkpoint(self, path: str | os.PathLike, *, verify: bool = True) -> None:
        """Restore model weights, optimizer, RNG states and step from a checkpoint folder (checked against its
        manifest first unless ``verify=False``); records of later steps are dropped, as they will be redone."""
        self.step_count = load_checkpoint(path, self.model, self.optimizer, verify=verify)
        self.scorer.load_state_dict(read_checkpoint_state(path).get("reward_scorer"))
        self.log.truncate_after(self.step_count)

    # -------------------------------------------------------------------------------------------- train
    def train(self) -> TrainResult:
        """Run to ``max_steps`` (resuming first when ``config.resume``), evaluating and checkpointing on schedule.

        Ctrl-C or SIGTERM writes a checkpoint, then returns with ``interrupted=True``. A resume continues from the
        newest good checkpoint (chosen and checked when the trainer was built, see
        :func:`calgrpo_lib.checkpoints.check_run_folder`); with none, from step 0, the records of a run killed before
        its first checkpoint dropped as they will be redone.
        """
        from tqdm.auto import tqdm

        cfg, t_start = self.config, time.perf_counter()
        if self._resume_from is not None:
            self.load_checkpoint(self._resume_from, verify=False)  # verified in __init__
            self._resume_from = None
        elif cfg.resume and self.step_count == 0 and self.log.records:
            warnings.warn(f"resume: output_dir={os.fspath(self.output_dir)!r} holds {len(self.log.records)} metric "
                          "records but no checkpoint; starting from step 0, those records are redone", stacklevel=2)
            self.log.truncate_after(-1)
        evals = self.log.of_kind("eval")
        eval_before = evals[0] if evals else (self.evaluate() if self.eval_problems else None)
        interrupted = False
        bar = tqdm(total=cfg.max_steps, initial=self.step_count, desc="GRPO", disable=not self.progress)
        with self._stop.active():  # Ctrl-C / SIGTERM: the open step ends, a checkpoint is written, return interrupted
            try:
                if self._eval_due() and self.step_count not in {r["step"] for r in self.log.of_kind("eval")}:
                    self.evaluate()  # a resume at a step whose scheduled evaluation an interrupt cut off
                while self.step_count < cfg.max_steps:
                    record = self.step()
                    self._stop.check()  # a stop signal held during the step: stop here, at its boundary
                    bar.update(1)
                    bar.set_postfix(reward=f"{record['reward_mean']:.2f}", acc=f"{record['accuracy']:.2f}")
                    if self._eval_due():
                        self.evaluate()
                    if self.step_count == cfg.max_steps or (cfg.save_every and self.step_count % cfg.save_every == 0):
                        with self._stop.step_open():  # a stop signal waits for the checkpoint to be written
                            self.save_checkpoint()
                        self._stop.check()
            except KeyboardInterrupt:
                interrupted = True
                if self._stop.inconsistent:  # cut inside a step's update: the state in memory is no step's
                    warnings.warn("interrupted inside a step's update (not by a signal, which waits for the step's "
                                  "end): no checkpoint written; a resume redoes the steps after the newest one",
                                  stacklevel=2)
                else:
                    with self._stop.step_open():  # a second Ctrl-C / SIGTERM does not cut this checkpoint short
                        self.save_checkpoint()
            finally:
                bar.close()
        eval_after = self.evaluate() if not interrupted and self.eval_problems else None
        self.log.close()
        summary = self.oracle.stats.summary() if hasattr(getattr(self.oracle, "stats", None), "summary") else None
        if summary is not None:  # the run's faults by cause, next to metrics.jsonl's per-step counts
            (self.output_dir / "oracle_summary.json").write_text(json.dumps(summary, indent=1, default=str))
        return TrainResult(cfg, self.step_count, eval_before, eval_after, self.log.of_kind("train"),
                           self.log.of_kind("eval"), time.perf_counter() - t_start, interrupted, summary)


def train(config: GRPOConfig, **kwargs: Any) -> TrainResult:
    """Build a :class:`Trainer` from ``config`` (``kwargs`` go to it) and run it."""
    return Trainer(config, **kwargs).train()
