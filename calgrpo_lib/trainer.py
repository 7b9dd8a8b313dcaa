"""The GRPO loop with CAL credit, read top to bottom in :meth:`Trainer.step`:

    prompts -> rollouts (G samples each) -> rewards -> group advantages -> oracle verdicts for wrong answers
    -> error spans -> token masks -> token credit -> clipped-surrogate loss (num_iterations passes) -> optimizer step

The trainer holds the state (model, optimizer, step, metrics) and composes the library's pieces; it draws nothing.
Notebooks and the CLI watch it through ``callbacks``: callables ``f(event, record)`` with ``event`` in
{"step", "eval"}. Each step's sampling is seeded by ``(seed, step)``, and checkpoints hold the model, optimizer,
RNG states and metrics, so a resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .advantages import group_advantages, num_zero_spread_groups
from .config import GRPOConfig, lr_at_step
from .credit import token_advantages
from .data import load_problems
from .loss import entropy_from_logits, grpo_loss, token_logprobs, train_step
from .metrics_log import MetricsLog
from .policy import load_policy
from .sampling import greedy_accuracy
from .rewards import batch_rewards
from .rollout import Rollout, sample_rollouts, sequence_forward
from .spans import error_token_masks

__all__ = ["Trainer", "TrainResult", "train", "build_oracle", "Callback"]

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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One GRPO run. ``model``/``tokenizer``/``oracle`` may be passed in (notebooks, tests); else built from
    ``config``."""

    def __init__(self, config: GRPOConfig, *, model: Any = None, tokenizer: Any = None, oracle: Any = None,
                 callbacks: Sequence[Callback] = (), progress: bool = True) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.progress = progress
        self.output_dir = Path(config.output_dir)
        _seed_everything(config.seed)
        device = None if config.device == "auto" else config.device
        dtype = None if config.dtype == "auto" else config.dtype
        if model is None:
            model, tokenizer = load_policy(config.model, device=device, dtype=dtype)
        self.model, self.tokenizer = model, tokenizer
        self.ref_model = None
        if config.beta > 0:  # frozen copy of the starting policy for the KL term
            import copy

            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.oracle = oracle if oracle is not None else build_oracle(config)
        self.train_problems = load_problems(config.task, "train", n=config.train_size, seed=config.seed,
                                            path=config.data_path)
        self.eval_problems = (load_problems(config.task, "test", n=config.eval_size, seed=0, path=config.data_path)
                              if config.eval_size else [])
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self._optimizer_time = 0.0
        self.optimizer.register_step_pre_hook(self._start_optimizer_clock)
        self.optimizer.register_step_post_hook(self._stop_optimizer_clock)
        self.step_count = 0
        self.log = MetricsLog(self.output_dir)

    # ------------------------------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        """One GRPO step; returns its metrics (also logged and sent to the callbacks)."""
        cfg, tok = self.config, self.tokenizer
        t0 = time.perf_counter()
        problems = self._problems_for_step(self.step_count)
        rollout = sample_rollouts(self.model, tok, problems, cfg, seed=cfg.seed * 1_000_003 + self.step_count)
        t1 = time.perf_counter()

        targets = [p.final for p in rollout.problems]  # (N,) one per completion
        rewards = batch_rewards(rollout.texts, targets, cfg.reward_format, cfg.answer_weight, cfg.format_weight)
        reward_t = torch.tensor(rewards.total, dtype=torch.float32)  # (N,)
        seq_adv = group_advantages(reward_t, cfg.num_generations, scale=cfg.scale_rewards)  # (N,)
        is_wrong = torch.tensor([c == 0.0 for c in rewards.correct])  # (N,)
        t2 = time.perf_counter()

        quotes, oracle_stats = self._oracle_quotes(rollout, is_wrong)
        t3 = time.perf_counter()

        error_mask, span_stats = error_token_masks(tok, rollout.completion_ids, rollout.completion_mask, quotes,
                                                   max_error_span_tokens=cfg.max_error_span_tokens,
                                                   texts=rollout.texts)  # (N, T)
        token_adv, credit_stats = token_advantages(seq_adv, rollout.completion_mask, error_mask, is_wrong,
                                                   cfg.credit_mode, negative_reward=cfg.negative_reward, lam=cfg.lam)
        t4 = time.perf_counter()

        lr = lr_at_step(cfg, self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        update = self._update(rollout, token_adv)
        t5 = time.perf_counter()

        self.step_count += 1
        lengths = rollout.completion_mask.sum(dim=1).float()
        record = {
            "kind": "train", "step": self.step_count,
            "reward_mean": reward_t.mean().item(), "reward_std": reward_t.std().item(),
            "reward_min": reward_t.min().item(), "reward_max": reward_t.max().item(),
            "accuracy": statistics.fmean(rewards.correct), "format_rate": statistics.fmean(rewards.formatted),
            "zero_spread_frac": num_zero_spread_groups(reward_t, cfg.num_generations) / len(problems),
            "completion_len_mean": lengths.mean().item(), "learning_rate": lr,
            **update, **oracle_stats,
            "span_hit_rate": span_stats.hit_rate, "credit_fallbacks": credit_stats.num_fallback,
            "error_tokens": credit_stats.num_error_tokens,
            "time_generation": t1 - t0, "time_rewards": t2 - t1, "time_oracle": t3 - t2, "time_credit": t4 - t3,
            "time_loss": t5 - t4 - self._optimizer_time, "time_optimizer": self._optimizer_time,
            "time_step": t5 - t0,
        }
        self._emit("step", record)
        return record

    def _problems_for_step(self, step: int) -> list:
        rng = random.Random(f"{self.config.seed}/{step}")
        return rng.sample(self.train_problems, min(self.config.prompts_per_step, len(self.train_problems)))

    def _oracle_quotes(self, rollout: Rollout, is_wrong: torch.Tensor) -> tuple[list, dict[str, float]]:
        """(quote, step) of each wrong answer's first error, None elsewhere; plus the oracle's counters."""
        quotes: list = [None] * len(rollout.texts)
        if self.config.credit_mode == "sequence" or self.oracle is None:
            return quotes, {}
        wrong = [i for i in range(len(quotes)) if is_wrong[i]]
        items = [(rollout.problems[i].question, rollout.problems[i].answer, rollout.texts[i]) for i in wrong]
        before = self.oracle.stats.snapshot()
        verdicts = self.oracle.judge_batch(items) if items else []
        for i, verdict in zip(wrong, verdicts):
            if verdict.localized:
                quotes[i] = (verdict.quote, verdict.step)
        after = self.oracle.stats.snapshot()
        return quotes, {f"oracle_{k}": after[k] - before.get(k, 0) for k in ("calls", "cache_hits", "failures",
                                                                              "unlocalized")}

    def _update(self, rollout: Rollout, token_adv: torch.Tensor) -> dict[str, float]:
        """``num_iterations`` optimizer steps on this batch of rollouts; returns the metrics of the last one."""
        cfg = self.config
        batch = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask,
                 "completion_mask": rollout.completion_mask, "advantages": token_adv}
        with torch.no_grad():
            if cfg.num_iterations > 1:  # the sampling policy, fixed for all passes
                batch["old_logp"] = self._logprobs(self.model, batch)
            if self.ref_model is not None:
                batch["ref_logp"] = self._logprobs(self.ref_model, batch)
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
        return {k: v for k, v in metrics.items() if k != "num_microbatches"}

    def _logprobs(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        start, size = batch["input_ids"].shape[1] - batch["completion_mask"].shape[1], self.config.microbatch_size
        out = []
        for i in range(0, batch["input_ids"].shape[0], size):
            ids, mask = batch["input_ids"][i:i + size], batch["attention_mask"][i:i + size]
            out.append(token_logprobs(sequence_forward(model, ids, mask, start), ids, start,
                                     temperature=self.config.temperature))
        return torch.cat(out)

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

    def _emit(self, event: str, record: dict[str, Any]) -> None:
        self.log.log(record)
        for callback in self.callbacks:
            callback(event, record)

    # --------------------------------------------------------------------------------------- checkpoints
    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-NNNNNN`` atomically (a temporary folder renamed at the end)."""
        final = self.checkpoint_root / f"step-{self.step_count:06d}"
        tmp = self.checkpoint_root / f".tmp-step-{self.step_count:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step_count,
                    "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                    "config": self.config.to_dict()}, tmp / "trainer_state.pt")
        (tmp / "metrics.json").write_text(json.dumps(self.log.records))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return final

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoint_root.glob("step-*")) if self.checkpoint_root.exists() else []
        return found[-1] if found else None

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model weights, optimizer, RNG states and step from a checkpoint folder."""
        from safetensors.torch import load_file

        path = Path(path)
        state = torch.load(path / "trainer_state.pt", weights_only=False)
        weights = load_file(str(path / "model.safetensors"), device=str(next(self.model.parameters()).device))
        self.model.load_state_dict(weights, strict=False)
        if getattr(self.model.config, "tie_word_embeddings", False):
            self.model.tie_weights()
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step_count = int(state["step"])
        self.log.truncate_after(self.step_count)

    def _replace_earlier_run(self) -> None:
        """A new run in a folder that holds an earlier one replaces it: its checkpoints and metrics would otherwise
        mix with this run's (its first evaluation would pass for this run's "before", a later resume would pick up
        its checkpoints). Other files in the folder are left alone."""
        old = sorted(self.checkpoint_root.glob("step-*")) if self.checkpoint_root.exists() else []
        if not old and not self.log.records:
            return
        checkpoints = f"{len(old)} checkpoint{'' if len(old) == 1 else 's'}"
        warnings.warn(f"output_dir={os.fspath(self.output_dir)!r} holds an earlier run ({len(self.log.records)} "
                      f"metric records, {checkpoints}); this run replaces it (resume=True would continue it instead)",
                      stacklevel=3)
        for path in old:
            shutil.rmtree(path)
        self.log.truncate_after(-1)

    # -------------------------------------------------------------------------------------------- train
    def train(self) -> TrainResult:
        """Run to ``max_steps`` (resuming first when ``config.resume``), evaluating and checkpointing on schedule.

        Ctrl-C writes a checkpoint, then returns with ``interrupted=True``.
        """
        from tqdm.auto import tqdm

        cfg, t_start = self.config, time.perf_counter()
        if cfg.resume and self.latest_checkpoint() is not None:
            self.load_checkpoint(self.latest_checkpoint())
        elif self.step_count == 0:
            self._replace_earlier_run()
        evals = self.log.of_kind("eval")
        eval_before = evals[0] if evals else (self.evaluate() if self.eval_problems else None)
        interrupted = False
        bar = tqdm(total=cfg.max_steps, initial=self.step_count, desc="GRPO", disable=not self.progress)
        try:
            while self.step_count < cfg.max_steps:
                record = self.step()
                bar.update(1)
                bar.set_postfix(reward=f"{record['reward_mean']:.2f}", acc=f"{record['accuracy']:.2f}")
                last = self.step_count == cfg.max_steps
                if self.eval_problems and cfg.eval_every and self.step_count % cfg.eval_every == 0 and not last:
                    self.evaluate()
                if last or (cfg.save_every and self.step_count % cfg.save_every == 0):
                    self.save_checkpoint()
        except KeyboardInterrupt:
            interrupted = True
            self.save_checkpoint()
        finally:
            bar.close()
        eval_after = None
        if not interrupted and self.eval_problems:
            eval_after = self.evaluate()
        self.log.close()
        return TrainResult(cfg, self.step_count, eval_before, eval_after, self.log.of_kind("train"),
                           self.log.of_kind("eval"), time.perf_counter() - t_start, interrupted)


def build_oracle(config: GRPOConfig) -> Any:
    """The oracle named by ``config.oracle`` (None for "none"), with its sqlite cache in the run folder."""
    from . import oracle as oracles

    if config.oracle == "none":
        return None
    cache = config.oracle_cache or str(Path(config.output_dir) / "oracle_cache.sqlite")
    Path(cache).parent.mkdir(parents=True, exist_ok=True)
    if config.oracle == "stepcheck":  # exact and fast: no cache needed
        return oracles.StepCheckOracle()
    run = oracles.OracleConfig(concurrency=config.oracle_concurrency, fallback="stepcheck")
    if config.oracle == "gemini":
        kwargs = {"model": config.oracle_model} if config.oracle_model else {}
        return oracles.GeminiOracle(**kwargs, base_url=config.oracle_base_url, config=run, cache=cache)
    if config.oracle == "openai":
        if not config.oracle_model:
            raise ValueError("oracle='openai' needs oracle_model (the served model name, e.g. 'qwen2.5:7b')")
        base = config.oracle_base_url or "http://127.0.0.1:8000/v1"
        return oracles.OpenAICompatibleOracle(config.oracle_model, base, config=run, cache=cache)
    if not config.oracle_model:
        raise ValueError("oracle='local' needs oracle_model (a hub id or local folder of a causal LM judge)")
    judge, judge_tok = load_policy(config.oracle_model)
    return oracles.LocalJudgeOracle(judge, judge_tok, config=run, cache=cache)


def train(config: GRPOConfig, **kwargs: Any) -> TrainResult:
    """Build a :class:`Trainer` from ``config`` (``kwargs`` go to it) and run it."""
    return Trainer(config, **kwargs).train()
