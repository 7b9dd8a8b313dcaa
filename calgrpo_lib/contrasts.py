"""Paired contrasts of an experiment's conditions against plain GRPO, with bootstrap confidence intervals.

Per run, from its held-out curve ``acc(k)`` at evaluation steps ``k_0 = 0 < k_1 < ... < k_J = T``
(:func:`run_metrics`):

- ``final`` = ``acc(T)``;
- ``auc`` = ``(1 / T) * sum_j (k_j - k_{j-1}) * (acc(k_{j-1}) + acc(k_j)) / 2``, the trapezoid area under the
  accuracy-vs-step curve over its length: the mean accuracy over training (a fraction, like ``final``);
- ``reach`` = the step at which the curve first reaches a target ``a*`` (plain GRPO's mean final accuracy),
  linearly interpolated between the two evaluations around the crossing:
  ``k_{j-1} + (k_j - k_{j-1}) * (a* - acc(k_{j-1})) / (acc(k_j) - acc(k_{j-1}))``; ``None`` if it never does.

Runs are paired by seed (the same seed: the same starting policy, data order and evaluation set). For a condition
``c`` and a metric ``m``, ``d_s = m(c, s) - m(sequence, s)`` over the seeds both have (for ``reach``, the seeds where
both reached the target). :func:`paired_differences` reports ``mean_s d_s`` and a 95% percentile bootstrap interval:
resample the ``n`` differences with replacement ``n_boot`` times (seeded), take the 2.5th and 97.5th percentiles of
the resampled means. With 3-5 seeds the interval is rough (a bootstrap of so few values is narrow-biased); an
interval that contains 0 says the experiment cannot tell the condition from plain GRPO on that metric.

:func:`contrast_plot` draws the differences with their intervals; :func:`credit_quality_plot` draws them against the
oracle F1 of each condition (:func:`calgrpo_lib.conditions.condition_f1`): the credit-quality curve.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

from .tables import format_table, runs_by_mode
from .validation import check_choice, check_int, check_type

__all__ = ["METRICS", "mean_curve", "curve_auc", "reach_step", "run_metrics", "paired_differences", "contrast_text",
           "contrast_plot", "credit_quality_plot"]

METRICS = ("final", "auc", "reach")  #: per-run metrics of :func:`run_metrics`


def _curve(run: dict[str, Any]) -> list[tuple[int, float]]:
    points = sorted((int(p["step"]), float(p["accuracy"])) for p in run["eval_curve"])
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        raise ValueError(f"run {run.get('mode')!r} seed {run.get('seed')!r} has eval_curve {points!r}; allowed: two "
                         "or more evaluations at increasing steps")
    return points


def mean_curve(results: dict[str, Any], condition: str) -> dict[int, float]:
    """``{k: mean_s acc_s(k)}``: a condition's held-out accuracy at each evaluation step, averaged over its seeds
    (every seed is evaluated at the same steps; a step some seed lacks is left out)."""
    by = runs_by_mode(results)
    check_choice("condition", condition, tuple(by))
    curves = [dict(_curve(r)) for r in by[condition]]
    common = sorted(set.intersection(*(set(c) for c in curves)))
    return {k: statistics.fmean(c[k] for c in curves) for k in common}


def curve_auc(run: dict[str, Any]) -> float:
    """The run's mean held-out accuracy over training: the trapezoid area under ``acc(k)`` divided by its span."""
    points = _curve(run)
    area = sum((k1 - k0) * (a0 + a1) / 2 for (k0, a0), (k1, a1) in zip(points, points[1:]))
    return area / (points[-1][0] - points[0][0])


def reach_step(run: dict[str, Any], target: float) -> float | None:
    """The (interpolated) step at which the run's curve first reaches ``target``; ``None`` if it never does."""
    points = _curve(run)
    if points[0][1] >= target:
        return float(points[0][0])
    for (k0, a0), (k1, a1) in zip(points, points[1:]):
        if a1 >= target:
            return k0 + (k1 - k0) * (target - a0) / (a1 - a0)
    return None


def run_metrics(run: dict[str, Any], target: float) -> dict[str, float | None]:
    """``{"final", "auc", "reach"}`` of one run (see the module docstring); ``target`` is the accuracy to reach."""
    return {"final": float(run["accuracy_after"]), "auc": curve_auc(run), "reach": reach_step(run, target)}


def paired_differences(results: dict[str, Any], metric: str = "final", *, baseline: str = "sequence",
                       n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """For each condition other than ``baseline``: ``{"n", "mean", "low", "high", "diffs"}``, the seed-paired
    differences ``d_s = metric(condition, s) - metric(baseline, s)`` (``diffs``: ``{seed: d_s}``), their mean and a
    ``level`` percentile bootstrap interval (``n_boot`` resamples, seeded by ``seed``). The ``reach`` target is the
    baseline's mean final accuracy. ``n = 0`` (no common seed) gives ``None`` for mean, low and high."""
    check_choice("metric", metric, METRICS)
    check_int("n_boot", n_boot, 1, None)
    check_type("level", level, float)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} is outside (0, 1); allowed: e.g. 0.95")
    by = runs_by_mode(results)
    check_choice("baseline", baseline, tuple(by))
    target = statistics.fmean(float(r["accuracy_after"]) for r in by[baseline])
    base = {r["seed"]: run_metrics(r, target)[metric] for r in by[baseline]}
    out: dict[str, dict[str, Any]] = {}
    for name, runs in by.items():
        if name == baseline:
            continue
        diffs = {}
        for r in runs:
            value, ref = run_metrics(r, target)[metric], base.get(r["seed"])
            if value is not None and ref is not None:
                diffs[r["seed"]] = value - ref
        row: dict[str, Any] = {"n": len(diffs), "mean": None, "low": None, "high": None, "diffs": diffs}
        if diffs:
            values, rng = list(diffs.values()), random.Random(f"{seed}/{name}/{metric}")
            means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(n_boot))
            tail = (1.0 - level) / 2
            row.update(mean=statistics.fmean(values), low=means[int(tail * (n_boot - 1))],
                       high=means[int(round((1.0 - tail) * (n_boot - 1)))])
        out[name] = row
    return out


def contrast_text(results: dict[str, Any], metric: str = "final", *, baseline: str = "sequence",
                  digits: int = 3, **kwargs: Any) -> str:
    """:func:`paired_differences` as a table: one row per condition, columns n, mean, low, high."""
    rows = paired_differences(results, metric, baseline=baseline, **kwargs)
    columns = {c: [("n/a" if row[c] is None else row[c]) for row in rows.values()]
               for c in ("n", "mean", "low", "high")}
    return format_table(columns, index=list(rows), index_name=f"{metric} - {baseline}", digits=digits)


# ---------------------------------------------------------------------------------------------- figures

_METRIC_LABELS = {"final": "final accuracy", "auc": "mean accuracy over training (AUC)", "reach": "steps to reach"}


def contrast_plot(results: dict[str, Any], metric: str = "final", *, baseline: str = "sequence",
                  conditions: list[str] | None = None, ax: Any = None, **kwargs: Any):
    """Each condition's mean paired difference from ``baseline`` (a dot) with its 95% bootstrap interval (a bar),
    one row per condition (``conditions``: which and in what order; default all), a line at 0. Returns a Figure."""
    from matplotlib.figure import Figure

    rows = paired_differences(results, metric, baseline=baseline, **kwargs)
    names = [n for n in (conditions or list(rows)) if rows.get(n, {}).get("n")]
    if ax is None:
        fig = Figure(figsize=(6.4, 0.45 * len(names) + 1.2), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    scale = 1.0 if metric == "reach" else 100.0  # accuracies in points
    for y, name in enumerate(reversed(names)):
        row = rows[name]
        ax.plot([row["low"] * scale, row["high"] * scale], [y, y], color="#0571b0", linewidth=2)
        ax.plot([row["mean"] * scale], [y], "o", color="#0571b0")
        ax.scatter([d * scale for d in row["diffs"].values()], [y] * row["n"], s=10, color="#999999", zorder=3)
    ax.axvline(0.0, color="#444444", linewidth=1)
    ax.set_yticks(range(len(names)), [f"{n} ({rows[n]['n']} seeds)" for n in reversed(names)], fontsize=8)
    unit = "steps" if metric == "reach" else "points"
    ax.set_xlabel(f"{_METRIC_LABELS[metric]} minus {baseline}'s, paired by seed ({unit})")
    ax.set_title("mean paired difference, bar = 95% bootstrap CI, grey = seeds", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def credit_quality_plot(results: dict[str, Any], f1_by_condition: dict[str, float], *, metric: str = "final",
                        baseline: str = "sequence", ax: Any = None, **kwargs: Any):
    """Learning gain against the oracle's localisation quality: for each condition of ``f1_by_condition`` (name ->
    the ProcessBench F1 its oracle measures), the mean paired difference from ``baseline`` with its 95% bootstrap
    interval, against that F1. Returns a Figure."""
    from matplotlib.figure import Figure

    check_type("f1_by_condition", f1_by_condition, dict)
    rows = paired_differences(results, metric, baseline=baseline, **kwargs)
    points = sorted((float(f1), rows[n]) for n, f1 in f1_by_condition.items() if rows.get(n, {}).get("n"))
    if ax is None:
        fig = Figure(figsize=(6.0, 3.8), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    scale = 1.0 if metric == "reach" else 100.0
    xs = [f for f, _ in points]
    ax.fill_between(xs, [r["low"] * scale for _, r in points], [r["high"] * scale for _, r in points],
                    color="#0571b0", alpha=0.2, linewidth=0, label="95% bootstrap CI")
    ax.plot(xs, [r["mean"] * scale for _, r in points], "o-", color="#0571b0", label="mean paired difference")
    ax.axhline(0.0, color="#444444", linewidth=1, label=f"{baseline} (no oracle)")
    ax.set_xlabel("oracle's ProcessBench F1 on the synthetic task")
    ax.set_ylabel(f"{_METRIC_LABELS[metric]} minus {baseline}'s ({'steps' if metric == 'reach' else 'points'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
