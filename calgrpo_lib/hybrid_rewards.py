"""Hybrid rewards: a verifier's 0/1 correctness and a reward model's graded score together, and the difficulty
weights that scale each completion's advantage. Pure functions on tensors.

Notation, for one step of ``N = B * G`` completions in ``B`` groups of ``G`` (prompt-major rows, as
:func:`calgrpo_lib.advantages.group_advantages`): ``v_i`` in {0, 1} is the verifier
(:func:`calgrpo_lib.rewards.answer_reward`), ``s_i`` the RM's raw score, ``r_hat_i`` in ``[0, 1]`` its calibrated
score (:class:`calgrpo_lib.reward_model.RMCalibration`).

The reward, by ``config.reward`` (:data:`REWARDS`)::

    rule:    r_i = answer_weight * v_i + format_weight * f_i                 (the verifier and the format only)
    rm:      r_i = r_hat_i                                                   (the RM alone: it can be gamed)
    hybrid:  r_i = v_i * (1 - c + c * r_hat_i) + (1 - v_i) * (u * r_hat_i)   (stratified by the verifier)

with ``c`` = ``correct_weight`` and ``u`` = ``incorrect_weight`` (0.5 / 0.5 by default). A right answer's reward lies
in ``[1 - c, 1]``, a wrong one's in ``[0, u]``: with ``u <= 1 - c`` no wrong answer outranks a right one however the
RM scores them, and the RM only orders answers *within* the verifier's two classes (partial credit among wrong
answers, a preference among right ones). A constant RM gives every wrong answer ``u * r_hat`` and every right one
``1 - c + c * r_hat``: a constant shift and scale of ``v_i``, so the group advantages equal the verifier's
(``scale_rewards="group"``, up to the std's epsilon).

Difficulty weights ``w_i`` multiply the advantage, ``A_i <- w_i * A_i`` (a factor on the *reward* that is the same
for a whole group would cancel in the group's std normalisation; on the advantage it scales the gradient), by
``config.reward_scorer`` (:data:`SCORERS`)::

    sigmoid: w_i = w_min + (w_max - w_min) / (1 + exp(-k * (sigma_u - sigma_bar)))
    tanh:    w_i = w_min + (w_max - w_min) * tanh(r_hat_i ** 3)
    none:    w_i = 1

``sigma_u`` is the spread of the RM in completion ``i``'s group ``u``: the population std of its ``G`` values of
``r_hat``; ``sigma_bar`` is the running mean of ``sigma_u`` over every group of the run so far, this step's
included (:class:`SpreadMean`). So a prompt on which the RM tells its answers apart more than usual (hard, mixed)
weighs more, one whose answers all look alike less. The tanh weight is per completion: answers the RM rates
highly weigh more, in both directions of the advantage (a convincing wrong answer is pushed down harder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .validation import check_choice, check_float, check_int

__all__ = ["REWARDS", "SCORERS", "stratified_reward", "group_spread", "sigmoid_weight", "tanh_weight",
           "difficulty_weights", "SpreadMean"]

REWARDS = ("rule", "rm", "hybrid")
SCORERS = ("sigmoid", "tanh", "none")


def _groups(x: torch.Tensor, group_size: int) -> torch.Tensor:
    check_int("group_size", group_size, 1, None)
    if x.dim() != 1 or x.numel() % group_size:
        raise ValueError(f"a tensor of shape {tuple(x.shape)} does not split into groups of group_size={group_size}; "
                         "allowed: shape (B * G,)")
    return x.view(-1, group_size)  # (B, G)


def stratified_reward(correct: torch.Tensor, r_hat: torch.Tensor, correct_weight: float = 0.5,
                      incorrect_weight: float = 0.5) -> torch.Tensor:
    """The hybrid reward ``r_i = v_i (1 - c + c r_hat_i) + (1 - v_i) u r_hat_i`` ``(N,)`` for verifier ``correct``
    ``(N,)`` (0/1) and calibrated RM scores ``r_hat`` ``(N,)`` in ``[0, 1]`` (``c`` = ``correct_weight``, ``u`` =
    ``incorrect_weight``, each in ``[0, 1]``)."""
    check_float("correct_weight", correct_weight, 0.0, 1.0)
    check_float("incorrect_weight", incorrect_weight, 0.0, 1.0)
    if correct.shape != r_hat.shape:
        raise ValueError(f"correct has shape {tuple(correct.shape)} but r_hat has {tuple(r_hat.shape)}; allowed: "
                         "equal shapes (N,)")
    v = correct.float()  # (N,)
    return v * (1.0 - correct_weight + correct_weight * r_hat) + (1.0 - v) * (incorrect_weight * r_hat)  # (N,)


def group_spread(r_hat: torch.Tensor, group_size: int) -> torch.Tensor:
    """``sigma_u``: the population std of ``r_hat`` within each group, ``(N,)`` -> ``(B,)``."""
    return _groups(r_hat.float(), group_size).std(dim=1, unbiased=False)  # (B,)


def sigmoid_weight(sigma_u: torch.Tensor, sigma_bar: float, w_min: float, w_max: float, k: float) -> torch.Tensor:
    """``w = w_min + (w_max - w_min) / (1 + exp(-k (sigma_u - sigma_bar)))``, elementwise on ``sigma_u``."""
    return w_min + (w_max - w_min) * torch.sigmoid(k * (sigma_u.float() - sigma_bar))


def tanh_weight(r_hat: torch.Tensor, w_min: float, w_max: float) -> torch.Tensor:
    """``w = w_min + (w_max - w_min) * tanh(r_hat ** 3)``, elementwise on ``r_hat``."""
    return w_min + (w_max - w_min) * torch.tanh(r_hat.float() ** 3)


def difficulty_weights(r_hat: torch.Tensor, group_size: int, scorer: str, *, sigma_bar: float = 0.0,
                       w_min: float = 0.5, w_max: float = 2.0, k: float = 10.0) -> torch.Tensor:
    """Each completion's weight ``w_i`` ``(N,)`` for ``scorer`` in :data:`SCORERS` (see the module docstring);
    the sigmoid weight is its group's, repeated over the group's ``G`` rows."""
    check_choice("scorer", scorer, SCORERS)
    check_float("w_min", w_min, 0.0)
    check_float("w_max", w_max, w_min)
    check_float("k", k, 0.0)
    check_float("sigma_bar", sigma_bar, 0.0)
    if scorer == "none":
        return torch.ones_like(r_hat, dtype=torch.float32)  # (N,)
    if scorer == "tanh":
        return tanh_weight(r_hat, w_min, w_max)  # (N,)
    w_group = sigmoid_weight(group_spread(r_hat, group_size), sigma_bar, w_min, w_max, k)  # (B,)
    return w_group.repeat_interleave(group_size)  # (N,)


@dataclass
class SpreadMean:
    """The running mean ``sigma_bar`` of the group spreads ``sigma_u`` seen so far: ``total / count``. Part of a
    run's state (checkpoints hold it, so a resumed run weighs its steps as an uninterrupted one)."""

    total: float = 0.0
    count: int = 0

    def update(self, sigma_u: torch.Tensor) -> float:
        """Add this step's spreads ``(B,)`` and return the new ``sigma_bar``."""
        self.total += float(sigma_u.double().sum())
        self.count += int(sigma_u.numel())
        return self.value

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else 0.0

