"""Group-relative advantages: how good was each answer compared with its siblings?

GRPO samples ``G`` answers (a *group*) per prompt and scores each with a reward ``r``. Instead of a learned value
function, the baseline is the group itself:

    group mean-centred (scale="none"):  A_i = r_i - mean_j r_j
    group-scaled       (scale="group"): A_i = (r_i - mean_j r_j) / (std_j r_j + eps)      (GRPO paper)
    batch-scaled       (scale="batch"): A_i = (r_i - mean_j r_j) / (std over the whole batch + eps)  (TRL "batch")
    leave-one-out      (RLOO):          A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_j r_j)

where ``j`` runs over the group of ``i``. ``std="unbiased"`` divides the sum of squares by ``G - 1`` (torch's
default, what TRL uses), ``std="population"`` by ``G``.

A group whose rewards are all equal (zero spread) carries no learning signal: its advantages are exactly 0 (set
explicitly, so float round-off in the mean cannot leak a tiny signal), and :func:`num_zero_spread_groups` counts
such groups, a number worth logging: when most groups are all-right or all-wrong, GRPO learns nothing.

Rewards come flat, shaped ``(B * G,)`` with the ``G`` answers of a prompt next to each other (TRL's layout), or
shaped ``(B, G)``; every function returns the shape it was given.
"""

from __future__ import annotations

import torch

from .validation import check_choice, check_float, check_int, check_type

__all__ = ["SCALES", "STD_CONVENTIONS", "group_advantages", "rloo_advantages", "zero_spread_groups",
           "num_zero_spread_groups"]

SCALES = ("group", "batch", "none")
STD_CONVENTIONS = ("unbiased", "population")


def _grouped(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Check ``rewards`` and return it as a float tensor shaped ``(B, G)``."""
    check_type("rewards", rewards, torch.Tensor)
    check_int("num_generations", num_generations, 2, None)
    if rewards.dim() not in (1, 2):
        raise ValueError(f"rewards.shape={tuple(rewards.shape)}; allowed: (B * G,) or (B, G)")
    if rewards.dim() == 2 and rewards.shape[1] != num_generations:
        raise ValueError(f"rewards.shape={tuple(rewards.shape)} but num_generations={num_generations}; "
                         f"allowed: a (B, G) tensor with G == num_generations")
    if rewards.numel() == 0 or rewards.numel() % num_generations != 0:
        raise ValueError(f"rewards has {rewards.numel()} elements, not divisible by num_generations="
                         f"{num_generations}; allowed: B * G elements with B >= 1")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    bad = ~torch.isfinite(rewards)
    if bad.any():
        index = tuple(torch.nonzero(bad)[0].tolist())
        raise ValueError(f"rewards contains a non-finite value {rewards[index].item()!r} at index {index}; "
                         f"allowed: finite numbers")
    return rewards.reshape(-1, num_generations)  # (B, G)


def _std(x: torch.Tensor, std: str, dim: int | None) -> torch.Tensor:
    check_choice("std", std, STD_CONVENTIONS)
    correction = 1 if std == "unbiased" else 0
    if dim is None:
        return x.std(correction=correction)
    return x.std(dim=dim, keepdim=True, correction=correction)


def zero_spread_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Bool ``(B,)``: True for each group whose ``G`` rewards are all equal (``max == min``)."""
    grouped = _grouped(rewards, num_generations)  # (B, G)
    return grouped.amax(dim=1) == grouped.amin(dim=1)  # (B,)


def num_zero_spread_groups(rewards: torch.Tensor, num_generations: int) -> int:
    """How many groups have all-equal rewards, i.e. contribute no learning signal."""
    return int(zero_spread_groups(rewards, num_generations).sum().item())


def group_advantages(rewards: torch.Tensor, num_generations: int, *, scale: str = "group",
                     std: str = "unbiased", eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages ``A_i = (r_i - mean_group(r)) / (s + eps)``, same shape as ``rewards``.

    - ``scale="group"``: ``s`` is the std of the group of ``i`` (GRPO paper, TRL ``scale_rewards="group"``);
    - ``scale="batch"``: ``s`` is the std of all ``B * G`` rewards (TRL ``scale_rewards="batch"``); the mean is
      still the group mean;
    - ``scale="none"``: no division, ``A_i = r_i - mean_group(r)`` (Dr. GRPO).

    ``std`` picks the convention (``"unbiased"``: divide by ``G - 1``, ``"population"``: by ``G``). ``eps`` keeps
    the division finite; it is added to the std, not to the variance. Groups with zero spread get exactly 0.
    """
    check_choice("scale", scale, SCALES)
    check_choice("std", std, STD_CONVENTIONS)
    check_float("eps", eps, 0.0, None)
    grouped = _grouped(rewards, num_generations)  # (B, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # (B, G)
    if scale == "group":
        centred = centred / (_std(grouped, std, dim=1) + eps)  # (B, G) / (B, 1)
    elif scale == "batch":
        centred = centred / (_std(grouped, std, dim=None) + eps)  # one scalar std for the whole batch
    flat_groups = grouped.amax(dim=1) == grouped.amin(dim=1)  # (B,)
    advantages = centred.masked_fill(flat_groups[:, None], 0.0)  # (B, G); also clears 0/0 when eps == 0
    return advantages.reshape(rewards.shape)


def rloo_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Leave-one-out advantages ``A_i = r_i - (sum_group(r) - r_i) / (G - 1)``, same shape as ``rewards``.

    Each answer is compared with the mean of the *other* ``G - 1`` answers, so the baseline does not depend on the
    answer it judges (an unbiased policy-gradient estimate). Algebraically ``A_i = G / (G - 1) * (r_i - mean)``:
    the same direction as mean-centring, slightly larger. Zero-spread groups give exactly 0.
    """
    grouped = _grouped(rewards, num_generations)  # (B, G)
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (num_generations - 1)  # (B, G)
    advantages = grouped - others_mean
    flat_groups = grouped.amax(dim=1) == grouped.amin(dim=1)  # (B,)
    return advantages.masked_fill(flat_groups[:, None], 0.0).reshape(rewards.shape)
