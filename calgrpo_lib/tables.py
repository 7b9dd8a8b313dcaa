"""Plain-text tables for the notebooks and the command line: :func:`format_table`, and the summaries of a CAL vs
GRPO experiment's results.

``format_table`` prints columns of numbers deterministically (signed floats, fixed decimals), so a notebook can
check its printed output. The summaries read a results dict written by
:func:`calgrpo_lib.experiment.run_experiment` (its ``runs``: one record per finished (mode, seed) run, see that
module): :func:`summary_table` (accuracy and cost per mode, over seeds), :func:`steps_to_reach` (the first
evaluation at which each run reaches plain GRPO's mean final accuracy), and their text forms
:func:`summary_text` and :func:`reach_text`. :func:`runs_by_mode` groups the runs, for these and for the curves.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .validation import check_choice, check_int, check_type
from .viz import as_list

__all__ = ["format_table", "RUN_KEYS", "SUMMARY_COLUMNS", "COST_COLUMNS", "check_runs", "runs_by_mode",
           "summary_table", "summary_text", "target_accuracy", "steps_to_reach", "reach_text"]

#: keys of a run record that the summaries read
RUN_KEYS = ("mode", "seed", "accuracy_before", "accuracy_after", "eval_curve")
#: columns of :func:`summary_table`'s rows about accuracy, and about cost
SUMMARY_COLUMNS = ("seeds", "before", "final_mean", "final_min", "final_max", "gain", "train_time_s")
COST_COLUMNS = ("seeds", "time_per_step_s", "oracle_calls_per_step", "oracle_time_per_step_s", "oracle_share")
_REACH_BY = ("step", "wall_time")


# ------------------------------------------------------------------------------------------------ tables

def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        text = f"{value:+.{digits}f}"
        return text.replace("-", "+", 1) if float(text) == 0 else text  # no "-0.000"
    return str(value)


def format_table(columns: dict[str, Any], *, index: Sequence[str] | None = None, index_name: str = "",
                 digits: int = 3) -> str:
    """A plain-text table: one column per entry of ``columns`` (lists or 1-D tensors of equal length).

    Floats are printed with a sign and ``digits`` decimals (``-0`` shows as ``+0``), other values with ``str``;
    ``index`` labels the rows (default ``0, 1, ...``). Deterministic, so a notebook can check its printed output.
    """
    check_type("columns", columns, dict)
    check_int("digits", digits, 0, 12)
    cols = {str(k): as_list(f"columns[{k!r}]", v) for k, v in columns.items()}
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"column lengths {lengths} differ; allowed: equal lengths")
    n = next(iter(lengths.values()), 0)
    labels = [str(i) for i in range(n)] if index is None else [str(i) for i in as_list("index", index)]
    if len(labels) != n:
        raise ValueError(f"len(index)={len(labels)} differs from the column length {n}; allowed: equal lengths")
    table = [[index_name, *cols]] + [[labels[r], *(_cell(v[r], digits) for v in cols.values())] for r in range(n)]
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = ["  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------------------ experiment results

def check_runs(results: Any, keys: Sequence[str] = RUN_KEYS) -> list[dict[str, Any]]:
    """The runs of a results dict, checked for ``keys`` (by default those the summaries read)."""
    check_type("results", results, dict)
    runs = results.get("runs")
    if not isinstance(runs, list):
        raise ValueError(f"results has no 'runs' list (keys {sorted(results)}); allowed: a dict written by "
                         f"run_experiment, with results['runs'] a list of run records")
    for i, run in enumerate(runs):
        check_type(f"results['runs'][{i}]", run, dict)
        missing = [k for k in keys if k not in run]
        if missing:
            raise ValueError(f"results['runs'][{i}] lacks {missing}; allowed: run records with keys {list(keys)}")
    return runs


def runs_by_mode(results: dict[str, Any], keys: Sequence[str] = RUN_KEYS) -> dict[str, list[dict[str, Any]]]:
    """The runs of ``results``, checked for ``keys``, grouped by mode (modes in order of first appearance, each
    mode's runs sorted by seed)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for run in check_runs(results, keys):
        grouped.setdefault(str(run["mode"]), []).append(run)
    return {mode: sorted(rs, key=lambda r: r.get("seed", 0)) for mode, rs in grouped.items()}


def _steps(run: dict[str, Any]) -> int:
    """Steps of a run: its ``steps``, else its last evaluation's step (at least 1)."""
    return max(int(run.get("steps") or max((p["step"] for p in run["eval_curve"]), default=1)), 1)


def summary_table(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """One row per mode (in order of first appearance), over its seeds ``s = 1..n``:

    - ``seeds`` = n; ``before`` = mean_s acc_before; ``final_mean`` / ``final_min`` / ``final_max`` = mean / min /
      max_s acc_after; ``gain`` = final_mean - before (accuracies are fractions, so 0.1 is 10 points);
    - ``train_time_s`` = mean_s of the training wall time; ``time_per_step_s`` = mean_s of train_time_s / steps;
    - ``oracle_calls_per_step``, ``oracle_time_per_step_s`` = means over seeds of the per-step means;
      ``oracle_share`` = oracle_time_per_step_s / time_per_step_s (0 when the steps took no time).

    Keys missing from hand-made records count as 0 (cost) or as the curve's length (``steps``).
    """
    table: dict[str, dict[str, float]] = {}
    for mode, runs in runs_by_mode(results).items():
        finals = [float(r["accuracy_after"]) for r in runs]
        before = statistics.fmean(float(r["accuracy_before"]) for r in runs)
        per_step = statistics.fmean(float(r.get("train_time_s", 0.0)) / _steps(r) for r in runs)
        oracle_time = statistics.fmean(float(r.get("oracle_time_per_step_s", 0.0)) for r in runs)
        table[mode] = {
            "seeds": len(runs), "before": before, "final_mean": statistics.fmean(finals), "final_min": min(finals),
            "final_max": max(finals), "gain": statistics.fmean(finals) - before,
            "train_time_s": statistics.fmean(float(r.get("train_time_s", 0.0)) for r in runs),
            "time_per_step_s": per_step,
            "oracle_calls_per_step": statistics.fmean(float(r.get("oracle_calls_per_step", 0.0)) for r in runs),
            "oracle_time_per_step_s": oracle_time, "oracle_share": oracle_time / per_step if per_step > 0 else 0.0,
        }
    return table


def _rows_text(rows: dict[str, dict[str, Any]], columns: Sequence[str], digits: int, index_name: str) -> str:
    cols = {c: [("never" if row.get(c) is None else row.get(c)) for row in rows.values()] for c in columns}
    return format_table(cols, index=list(rows), index_name=index_name, digits=digits)


def summary_text(results: dict[str, Any], columns: Sequence[str] = SUMMARY_COLUMNS, *, digits: int = 3) -> str:
    """:func:`summary_table` as a plain-text table with the given ``columns`` (:data:`SUMMARY_COLUMNS` by default,
    :data:`COST_COLUMNS` for the cost)."""
    table = summary_table(results)
    known = next(iter(table.values()), {})
    for i, c in enumerate(columns):
        check_choice(f"columns[{i}]", c, tuple(known) or SUMMARY_COLUMNS + COST_COLUMNS)
    return _rows_text(table, columns, digits, "mode")


def target_accuracy(results: dict[str, Any], target_mode: str = "sequence") -> float:
    """The mean final accuracy of ``target_mode`` over its seeds (plain GRPO's, by default)."""
    table = summary_table(results)
    check_choice("target_mode", target_mode, tuple(table))
    return table[target_mode]["final_mean"]


def steps_to_reach(results: dict[str, Any], target_mode: str = "sequence", *, target: float | None = None,
                   by: str = "step") -> dict[str, dict[int, float | None]]:
    """For each mode and seed, the first evaluation whose accuracy reaches the target; ``None`` if none does.

    The target is ``target`` when given, else :func:`target_accuracy` of ``target_mode``: the mean final accuracy
    of plain GRPO, so ``steps_to_reach(...)["cal_hybrid"][0] = min {step : acc_cal_hybrid,seed 0(step) >= target}``.
    ``by="step"`` returns that evaluation's step, ``by="wall_time"`` its training wall time in seconds.
    Returns ``{mode: {seed: step or seconds or None}}``, modes in order of first appearance, seeds sorted.
    """
    check_choice("by", by, _REACH_BY)
    if target is None:
        target = target_accuracy(results, target_mode)
    key = "step" if by == "step" else "wall_time_s"
    out: dict[str, dict[int, float | None]] = {}
    for mode, mode_runs in runs_by_mode(results).items():
        out[mode] = {}
        for run in mode_runs:
            hit = next((p for p in sorted(run["eval_curve"], key=lambda p: p["step"]) if p["accuracy"] >= target),
                       None)
            out[mode][run["seed"]] = None if hit is None else hit[key]
    return out


def reach_text(results: dict[str, Any], target_mode: str = "sequence", *, by: str = "step", digits: int = 1) -> str:
    """:func:`steps_to_reach` as a table: one row per mode, one column per seed ("never" where not reached)."""
    reach = steps_to_reach(results, target_mode, by=by)
    seeds = sorted({s for per_seed in reach.values() for s in per_seed})
    rows = {mode: {f"seed {s}": per_seed.get(s) for s in seeds} for mode, per_seed in reach.items()}
    return _rows_text(rows, [f"seed {s}" for s in seeds], digits, "mode")
