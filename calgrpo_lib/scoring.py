"""Phase 2 of a step, scoring: each completion's reward (the verifier's rule, a reward model, or both), its group
advantage, and, with a reward model, the difficulty weight on that advantage.

The reward and weight formulas are in :mod:`calgrpo_lib.hybrid_rewards`, the RM and its calibration in
:mod:`calgrpo_lib.reward_model`. :class:`RewardScorer` holds the state scoring needs across steps: the RM, its
warm-up calibration (``W = config.rm_warmup`` responses sampled from the starting policy, before the first step)
and the running mean ``sigma_bar`` of the group spreads; :meth:`RewardScorer.state_dict` is what a checkpoint keeps
of it, so a resumed run scores as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .advantages import group_advantages
from .checkpoints import CALIBRATION_FILE
from .config import GRPOConfig
from .hybrid_rewards import SpreadMean, difficulty_weights, group_spread, stratified_reward
from .reward_model import RewardModel, RMCalibration, calibrate
from .reward_model_eval import ranking_rate
from .rewards import RewardBatch, batch_rewards
from .rollout import Rollout, sample_rollouts
from .tasks import Problem

__all__ = ["Scores", "RewardScorer", "CALIBRATION_FILE"]


@dataclass
class Scores:
    """Phase 2 of a step: the rewards of its ``N`` completions and their (weighted) group advantages."""

    rewards: RewardBatch  # the verifier's: total (rule reward), correct, formatted: (N,) lists of floats
    reward: torch.Tensor  # (N,) float32, the reward r_i the advantages come from (config.reward)
    advantages: torch.Tensor  # (N,) w_i * A_i, A_i measured against the completion's own group
    is_wrong: torch.Tensor  # (N,) bool, the final answer is wrong (the verifier)
    weights: torch.Tensor | None = None  # (N,) difficulty weights w_i (None: no RM, all 1)
    rm_scores: torch.Tensor | None = None  # (N,) raw RM scores s_i (None: no RM)
    metrics: dict[str, float] = field(default_factory=dict)  # rm_* and weight_* of this step


class RewardScorer:
    """Scores rollouts under ``config.reward``; with ``"rm"`` or ``"hybrid"`` it loads ``config.reward_model``
    (unless ``reward_model`` is given) on ``device``."""

    def __init__(self, config: GRPOConfig, *, reward_model: RewardModel | None = None,
                 device: torch.device | str | None = None) -> None:
        self.config = config
        self.reward_model = reward_model
        if config.reward != "rule" and reward_model is None:
            self.reward_model = RewardModel.load(config.reward_model, device=device, batch_size=config.microbatch_size)
        self.calibration: RMCalibration | None = None
        self.spread = SpreadMean()

    @property
    def needs_warmup(self) -> bool:
        """An RM run not yet calibrated (a resumed run takes its calibration from the checkpoint)."""
        return self.reward_model is not None and self.calibration is None

    def warm_up(self, model: Any, tokenizer: Any, problems: list[Problem]) -> RMCalibration:
        """Calibrate the RM on ``W = rm_warmup`` responses of the policy ``model``: ``ceil(W / G)`` training
        problems drawn by ``(seed, "rm-warmup")``, ``G`` samples each (the run's sampling settings, with the sampling
        seed of step 1_000_002, which no run reaches, so the steps after sample as they would without a warm-up),
        the first ``W`` scored."""
        cfg = self.config
        rng = random.Random(f"{cfg.seed}/rm-warmup")
        chosen = rng.sample(problems, min(math.ceil(cfg.rm_warmup / cfg.num_generations), len(problems)))
        rollout = sample_rollouts(model, tokenizer, chosen, cfg, seed=(cfg.seed + 1) * 1_000_003 - 1)
        w = min(cfg.rm_warmup, len(rollout.texts))
        scores = self.reward_model.score([p.question for p in rollout.problems[:w]], rollout.texts[:w])  # (W,)
        self.calibration = calibrate(scores, cfg.rm_calibration)
        return self.calibration

    def score(self, rollout: Rollout) -> Scores:
        """Rewards, group advantages and weights of ``rollout``'s ``N`` completions (needs :meth:`warm_up` first
        with an RM)."""
        cfg = self.config
        targets = [p.final for p in rollout.problems]  # (N,) one per completion
        rewards = batch_rewards(rollout.texts, targets, cfg.reward_format, cfg.answer_weight, cfg.format_weight)
        correct = torch.tensor(rewards.correct, dtype=torch.float32)  # (N,) v_i
        is_wrong = correct == 0.0  # (N,) bool
        if self.reward_model is None:
            reward = torch.tensor(rewards.total, dtype=torch.float32)  # (N,)
            advantages = group_advantages(reward, cfg.num_generations, scale=cfg.scale_rewards)  # (N,)
            return Scores(rewards, reward, advantages, is_wrong)
        if self.calibration is None:
            raise RuntimeError("the reward model is not calibrated; call warm_up(model, tokenizer, problems) first")
        s = self.reward_model.score([p.question for p in rollout.problems], rollout.texts)  # (N,) raw
        r_hat = self.calibration.normalize(s)  # (N,) in [0, 1]
        reward = r_hat if cfg.reward == "rm" else stratified_reward(correct, r_hat, cfg.rm_correct_weight,
                                                                   cfg.rm_incorrect_weight)  # (N,)
        sigma_bar = self.spread.update(group_spread(r_hat, cfg.num_generations))  # running mean, this step's in
        weights = difficulty_weights(r_hat, cfg.num_generations, cfg.reward_scorer, sigma_bar=sigma_bar,
                                     w_min=cfg.difficulty_w_min, w_max=cfg.difficulty_w_max,
                                     k=cfg.difficulty_k)  # (N,)
        advantages = weights * group_advantages(reward, cfg.num_generations, scale=cfg.scale_rewards)  # (N,)
        groups = [i // cfg.num_generations for i in range(len(s))]  # (N,) the group of each completion
        agreement = ranking_rate(s.tolist(), rewards.correct, groups)["rate"]  # right over wrong, within groups
        metrics = {
            "rm_score_mean": s.mean().item(), "rm_score_std": s.std().item() if len(s) > 1 else 0.0,
            "rm_r_hat_mean": r_hat.mean().item(), "rm_reward_mean": reward.mean().item(),
            "rm_calibration_low": self.calibration.low, "rm_calibration_high": self.calibration.high,
            "rm_sigma_bar": sigma_bar, "rm_agreement": agreement,
            "weight_mean": weights.mean().item(), "weight_std": weights.std().item() if len(s) > 1 else 0.0,
            "weight_min": weights.min().item(), "weight_max": weights.max().item(),
        }
        return Scores(rewards, reward, advantages, is_wrong, weights, s, metrics)

    # ---------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the calibration (or None) and the running spread mean."""
        return {"calibration": None if self.calibration is None else self.calibration.to_dict(),
                "spread_total": self.spread.total, "spread_count": self.spread.count}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`'s values (``None``: a checkpoint of a run without RM state, nothing kept)."""
        if not state:
            return
        calibration = state.get("calibration")
        self.calibration = None if calibration is None else RMCalibration.from_dict(calibration)
        self.spread = SpreadMean(float(state.get("spread_total", 0.0)), int(state.get("spread_count", 0)))

    def write_calibration(self, output_dir: str | Path) -> Path:
        """Write the calibration and the RM's name to ``<output_dir>/reward_calibration.json``."""
        path = Path(output_dir) / CALIBRATION_FILE
        path.write_text(json.dumps({"reward_model": self.config.reward_model, "reward": self.config.reward,
                                    **(self.calibration.to_dict() if self.calibration else {})}, indent=1))
        return path
