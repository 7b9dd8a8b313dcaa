"""Pictures of reward models for the notebooks: how an RM's scores split right from wrong answers, the two
difficulty weightings, and runs trained on different rewards side by side.

Figures are matplotlib ``Figure`` objects built without pyplot: a notebook cell ending with one shows it once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .curves import moving_average
from .hybrid_rewards import sigmoid_weight, tanh_weight
from .validation import check_int, check_type

__all__ = ["rm_score_histogram", "difficulty_weight_curves", "reward_runs_curves", "REWARD_COLORS"]

REWARD_COLORS = {"rule": "#4c72b0", "rm": "#c44e52", "hybrid": "#55a868"}  #: one colour per reward, every figure


def rm_score_histogram(scores: Sequence[float], labels: Sequence[float], *, threshold: float | None = 0.0,
                       bins: int = 30, title: str | None = None):
    """Histograms of RM ``scores`` for the answers the verifier calls right (``labels`` 1) and wrong (0), with the
    decision ``threshold`` (``None``: none drawn). Returns a ``Figure``."""
    from matplotlib.figure import Figure

    if len(scores) != len(labels) or not len(scores):
        raise ValueError(f"scores has {len(scores)} items and labels {len(labels)}; allowed: equal, non-zero lengths")
    check_int("bins", bins, 1, None)
    s = [float(x) for x in scores]
    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = fig.add_subplot()
    edges = torch.linspace(min(s), max(s) + 1e-9, bins + 1).tolist()
    for label, name, color in ((1.0, "right (verifier)", "#55a868"), (0.0, "wrong (verifier)", "#c44e52")):
        part = [x for x, y in zip(s, labels) if float(y) == label]
        ax.hist(part, bins=edges, alpha=0.55, color=color, label=f"{name}: {len(part)}")
    if threshold is not None:
        ax.axvline(threshold, color="0.3", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("RM score (log-odds that the answer is right)")
    ax.set_ylabel("answers")
    ax.legend(fontsize=8)
    ax.set_title(title or "what the reward model sees", fontsize=10)
    return fig


def difficulty_weight_curves(w_min: float = 0.5, w_max: float = 2.0, k: float = 10.0, sigma_bar: float = 0.15):
    """The two difficulty weightings of :mod:`calgrpo_lib.hybrid_rewards`: the sigmoid against the group's RM
    spread ``sigma_u`` (left, ``sigma_bar`` marked) and the tanh against a completion's ``r_hat`` (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    sigma = torch.linspace(0.0, 0.5, 101)  # r_hat in [0, 1]: a group's population std is at most 0.5
    left.plot(sigma, sigmoid_weight(sigma, sigma_bar, w_min, w_max, k), color="#8172b2", linewidth=2)
    left.axvline(sigma_bar, color="0.4", linestyle=":", linewidth=1, label=f"sigma_bar = {sigma_bar:.3f}")
    left.set_xlabel("sigma_u: std of r_hat in the group")
    left.set_title(f"sigmoid, k = {k:g}", fontsize=10)
    left.legend(fontsize=8)
    r_hat = torch.linspace(0.0, 1.0, 101)
    right.plot(r_hat, tanh_weight(r_hat, w_min, w_max), color="#dd8452", linewidth=2)
    right.set_xlabel("r_hat of the completion")
    right.set_title("tanh(r_hat^3)", fontsize=10)
    for ax in (left, right):
        ax.axhline(w_min, color="0.7", linewidth=0.8)
        ax.axhline(w_max, color="0.7", linewidth=0.8)
        ax.set_ylim(w_min - 0.1 * (w_max - w_min), w_max + 0.1 * (w_max - w_min))
        ax.set_ylabel("weight w on the advantage")
        ax.grid(alpha=0.3)
    return fig


def reward_runs_curves(runs: Mapping[str, Any], *, smooth: int = 5, title: str | None = None):
    """Runs trained on different rewards, by name (``"rule"``, ``"rm"``, ``"hybrid"``, ...): held-out greedy
    accuracy at each evaluation (left), sampled training accuracy by the verifier (middle) and the mean calibrated
    RM score ``r_hat`` of the training samples (right, runs that logged it), each per step with a ``smooth``-step
    moving average. ``runs`` maps a name to a ``TrainResult`` (or anything with ``history`` and ``evals``)."""
    from matplotlib.figure import Figure

    check_type("runs", runs, Mapping)
    check_int("smooth", smooth, 1, None)
    fig = Figure(figsize=(10.5, 3.2), layout="constrained")
    acc_ax, train_ax, rm_ax = fig.subplots(1, 3)
    for name, run in runs.items():
        color = REWARD_COLORS.get(name)
        evals, history = list(run.evals), list(run.history)
        acc_ax.plot([e["step"] for e in evals], [e["accuracy"] for e in evals], marker="o", markersize=3,
                    color=color, label=name)
        steps = [r["step"] for r in history]
        train_ax.plot(steps, moving_average([r["accuracy"] for r in history], smooth), color=color, label=name)
        rm = [(r["step"], r["rm_r_hat_mean"]) for r in history if r.get("rm_r_hat_mean") is not None]
        if rm:
            rm_ax.plot([s for s, _ in rm], moving_average([v for _, v in rm], smooth), color=color, label=name)
    for ax, label in ((acc_ax, "held-out accuracy (greedy)"), (train_ax, "train accuracy, sampled (verifier)"),
                      (rm_ax, "mean r_hat of the samples (RM)")):
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
