"""Outcome reward models: a sequence-classification model that scores a (question, response) pair, and the warm-up
calibration that maps its raw scores onto ``[0, 1]``.

Any Hugging Face ``AutoModelForSequenceClassification`` folder or hub id works, and ``"tiny-rm"`` is the one shipped
in the package (``calgrpo_lib/models/tiny-rm/``, built by :mod:`calgrpo_lib.reward_model_build`). The pair is
rendered with the RM tokenizer's chat template when it has one (user = question, assistant = response), else as
``build_prompt(question, "plain") + response``; the score of a model with one label is its logit, of a model with
two labels (``bad``, ``good``) the log-odds ``logit_1 - logit_0``.

Calibration (the run's warm-up scores ``W`` sampled responses, :func:`calibrate`), with ``s`` a raw score::

    min_max:   r_hat = clip((s - min_W) / (max_W - min_W), 0, 1)
    mean_std:  r_hat = sigmoid((s - mean_W) / std_W)

Either way ``r_hat`` lies in ``[0, 1]``; how the reward mixes it with the verifier is in
:mod:`calgrpo_lib.hybrid_rewards`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .policy import model_source, pick_device, pick_dtype
from .rewards import build_prompt
from .validation import check_choice, check_int

__all__ = ["TINY_RM", "TINY_RM_DIR", "CALIBRATIONS", "RMCalibration", "calibrate", "RewardModel",
           "reward_model_source", "render_pair"]

TINY_RM = "tiny-rm"
TINY_RM_DIR = Path(__file__).resolve().parent / "models" / "tiny-rm"
CALIBRATIONS = ("min_max", "mean_std")


@dataclass(frozen=True)
class RMCalibration:
    """How raw RM scores map to ``r_hat`` in ``[0, 1]`` (see the module docstring): ``low``/``high`` are the
    warm-up's min/max (``min_max``) or its mean/std (``mean_std``), over ``num_samples`` scores."""

    method: str
    low: float
    high: float
    num_samples: int

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        """``r_hat`` of raw ``scores`` ``(N,)`` -> ``(N,)`` float32 in ``[0, 1]``."""
        s = scores.float()  # (N,)
        if self.method == "min_max":
            return ((s - self.low) / max(self.high - self.low, 1e-8)).clamp(0.0, 1.0)  # (N,)
        return torch.sigmoid((s - self.low) / max(self.high, 1e-8))  # (N,)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RMCalibration:
        check_choice("method", d.get("method"), CALIBRATIONS)
        return cls(str(d["method"]), float(d["low"]), float(d["high"]), int(d["num_samples"]))


def calibrate(scores: torch.Tensor | Sequence[float], method: str = "min_max") -> RMCalibration:
    """The calibration of raw warm-up ``scores`` ``(W,)``: their min and max (``min_max``) or their mean and
    population std (``mean_std``). Needs ``W >= 2`` finite scores."""
    check_choice("method", method, CALIBRATIONS)
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()  # (W,)
    if s.numel() < 2 or not torch.isfinite(s).all():
        raise ValueError(f"scores has {s.numel()} values (finite: {bool(torch.isfinite(s).all())}); allowed: at "
                         "least 2 finite scores to calibrate on")
    if method == "min_max":
        low, high = s.min().item(), s.max().item()
    else:
        low, high = s.mean().item(), s.std(unbiased=False).item()
    return RMCalibration(method, low, high, int(s.numel()))


def reward_model_source(name_or_path: str | os.PathLike) -> tuple[str, str]:
    """Where a reward model would load from, checked without loading it: ``"tiny-rm"`` is the shipped folder, any
    other value goes through :func:`calgrpo_lib.policy.model_source` (a model folder, or a hub id)."""
    return model_source(name_or_path, "reward_model", shipped=(TINY_RM, TINY_RM_DIR, "reward-model build"),
                        example="Skywork/Skywork-Reward-V2-Qwen3-0.6B")


def render_pair(tokenizer: Any, question: str, response: str) -> str:
    """The text an RM scores for ``(question, response)``: its chat template (user, assistant) when the tokenizer
    has one, else ``build_prompt(question, "plain") + response``."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return build_prompt(question, "plain") + response


class RewardModel:
    """A sequence-classification model and its tokenizer, scoring (question, response) pairs in batches."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 64, max_length: int | None = None) -> None:
        check_int("batch_size", batch_size, 1, None)
        labels = int(getattr(model.config, "num_labels", 1))
        if labels not in (1, 2):
            raise ValueError(f"the reward model has num_labels={labels}; allowed: 1 (a score) or 2 (bad, good)")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_length = max_length if max_length is not None else (int(limit) if limit else None)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:  # it finds each row's last token by the pad id
            model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.padding_side, tokenizer.truncation_side = "right", "left"  # a long pair keeps its answer's end

    @classmethod
    def load(cls, name_or_path: str | os.PathLike = TINY_RM, *, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None, batch_size: int = 64) -> RewardModel:
        """Load ``"tiny-rm"`` (shipped, offline), a local folder or a hub id, on ``device`` (``None``: the best
        available, as the policy's) in ``dtype`` (``None``: as :func:`calgrpo_lib.policy.pick_dtype`)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        kind, path = reward_model_source(name_or_path)
        dev = pick_device(device)
        local = kind == "folder"
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=pick_dtype(dev, dtype),
                                                                   local_files_only=local)
        return cls(model.to(dev), tokenizer, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, questions: Sequence[str], responses: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask ``(n, T)`` each of the pairs, on the CPU, as the RM scores them (and as a
        build trains it): :func:`render_pair`, right padding, truncation from the left to ``max_length``, special
        tokens only where there is no chat template."""
        texts = [render_pair(self.tokenizer, q, r) for q, r in zip(questions, responses)]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=self.max_length is not None,
                             max_length=self.max_length,
                             add_special_tokens=not getattr(self.tokenizer, "chat_template", None))
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.no_grad()
    def score(self, questions: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Raw scores of the pairs ``(questions[i], responses[i])``, ``(N,)`` float32 on the CPU."""
        if len(questions) != len(responses):
            raise ValueError(f"questions has {len(questions)} items but responses has {len(responses)}; allowed: "
                             "equal lengths")
        out = []
        for i in range(0, len(questions), self.batch_size):
            enc = self.encode(questions[i: i + self.batch_size], responses[i: i + self.batch_size])  # (n, T) each
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()  # (n, labels)
            out.append(logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0])  # (n,)
        scores = torch.cat(out).cpu() if out else torch.zeros(0)  # (N,)
        if not torch.isfinite(scores).all():
            bad = int((~torch.isfinite(scores)).sum())
            raise FloatingPointError(f"the reward model gave {bad} non-finite score(s) of {len(scores)}; check its "
                                     "dtype (float16 overflows) and weights")
        return scores

    def __repr__(self) -> str:
        name = getattr(self.model.config, "_name_or_path", type(self.model).__name__)
        return f"RewardModel({name!r}, device={self.device}, batch_size={self.batch_size})"

