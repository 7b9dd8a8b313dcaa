"""Does token-level credit help? CAL credit modes against plain GRPO, on equal budgets, over several seeds.

:func:`run_experiment` trains the ``tiny`` preset once per (credit mode, seed), on the budget :data:`BUDGET` (50
steps of 8 prompts unless overridden). Every run gets the same budget: the same ``max_steps``, ``prompts_per_step``
(B) and ``num_generations`` (G), so the same ``max_steps * B * G`` sampled completions, and the same held-out
evaluation every ``eval_every`` steps. Only ``credit_mode`` and ``seed`` differ; ``credit_mode="sequence"`` is plain
GRPO (no oracle call). After each run the results file is rewritten (atomically), so an interrupted experiment loses
at most the run in progress, and calling it again with the same config trains only the (mode, seed) pairs the file
does not hold yet.

The results file (JSON) holds ``config`` (the shared config: every field but ``credit_mode``, ``seed``,
``output_dir`` and ``resume``) and ``runs``, one record per finished run:

- ``mode``, ``seed``, ``steps``;
- ``accuracy_before`` / ``accuracy_after``: greedy held-out accuracy at step 0 and after the last step;
- ``eval_curve``: ``[{"step", "accuracy", "wall_time_s"}, ...]`` for every evaluation, ``wall_time_s`` being the
  training wall time up to that step: ``sum_{s <= step} time_step(s)`` (sampling, rewards, oracle, credit, loss,
  optimizer; evaluations and checkpoints excluded, as they cost every mode the same);
- ``history``: one record per step with the keys of :data:`HISTORY_KEYS` (``oracle_calls`` is 0 in mode
  ``sequence``, which never asks the oracle);
- ``train_time_s`` (the last curve point's ``wall_time_s``), ``wall_time_s`` (the trainer's whole ``train()``,
  evaluations included), ``oracle_calls_per_step`` and ``oracle_time_per_step_s`` (means over the steps), and the
  ``environment`` (torch version, threads, machine) the run was timed on.

The summaries (:func:`summary_table`, :func:`steps_to_reach`) are pure functions of that dict; the picture is
:func:`calgrpo_lib.viz.experiment_curves`. Command line (``make experiment`` runs it with the defaults)::

    python -m calgrpo_lib.experiment --modes sequence cal_sparse cal_hybrid prefix --seeds 0 1 2 \\
        [--max-steps N] [--out results/cal_vs_grpo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import CREDIT_MODE_CHOICES, GRPOConfig, preset
from .notebook import fresh_run_dir
from .validation import check_choice, check_int, check_type

__all__ = ["BUDGET", "RESULTS_FORMAT", "DEFAULT_OUT", "DEFAULT_RUN_DIR", "HISTORY_KEYS", "PER_RUN_FIELDS",
           "SUMMARY_COLUMNS", "COST_COLUMNS", "run_experiment", "experiment_config", "load_results", "find_results",
           "summary_table", "summary_text", "runs_by_mode", "target_accuracy", "steps_to_reach", "reach_text",
           "describe_results", "main"]

RESULTS_FORMAT = "calgrpo-experiment/1"  #: ``format`` field of a results file
DEFAULT_OUT = "results/cal_vs_grpo.json"
DEFAULT_RUN_DIR = "runs/cal_vs_grpo"  #: run folders: ``<run_dir>/<mode>-seed<seed>``
#: per-step values kept in each run's ``history`` (from the trainer's step records)
HISTORY_KEYS = ("step", "reward_mean", "accuracy", "time_step", "time_oracle", "oracle_calls", "oracle_cache_hits",
                "error_tokens", "credit_fallbacks")
#: config fields set per run (not part of the shared config, not overridable)
PER_RUN_FIELDS = ("credit_mode", "seed", "output_dir", "resume")
#: columns of :func:`summary_table`'s rows about accuracy, and about cost
SUMMARY_COLUMNS = ("seeds", "before", "final_mean", "final_min", "final_max", "gain", "train_time_s")
COST_COLUMNS = ("seeds", "time_per_step_s", "oracle_calls_per_step", "oracle_time_per_step_s", "oracle_share")
_RUN_KEYS = ("mode", "seed", "accuracy_before", "accuracy_after", "eval_curve")
_REACH_BY = ("step", "wall_time")


# ------------------------------------------------------------------------------------------------- checks

def _check_modes(modes: Any) -> list[str]:
    check_type("modes", modes, (list, tuple))
    if not modes:
        allowed = ", ".join(map(repr, CREDIT_MODE_CHOICES))
        raise ValueError(f"modes={modes!r} is empty; allowed: one or more of {allowed}")
    for i, mode in enumerate(modes):
        check_choice(f"modes[{i}]", mode, CREDIT_MODE_CHOICES)
    if len(set(modes)) != len(modes):
        raise ValueError(f"modes={list(modes)!r} repeats a mode; allowed: distinct modes")
    return list(modes)


def _check_seeds(seeds: Any) -> list[int]:
    check_type("seeds", seeds, (list, tuple))
    if not seeds:
        raise ValueError(f"seeds={seeds!r} is empty; allowed: one or more ints >= 0")
    for i, seed in enumerate(seeds):
        check_int(f"seeds[{i}]", seed, 0, None)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={list(seeds)!r} repeats a seed; allowed: distinct ints >= 0")
    return list(seeds)


def _check_results(results: Any, keys: Sequence[str] = _RUN_KEYS) -> list[dict[str, Any]]:
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


def runs_by_mode(results: dict[str, Any], keys: Sequence[str] = _RUN_KEYS) -> dict[str, list[dict[str, Any]]]:
    """The runs of ``results``, checked for ``keys``, grouped by mode (modes in order of first appearance, each
    mode's runs sorted by seed)."""
    return _by_mode(_check_results(results, keys))


def _by_mode(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by mode, modes in order of first appearance, runs of a mode sorted by seed."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault(str(run["mode"]), []).append(run)
    return {mode: sorted(rs, key=lambda r: r.get("seed", 0)) for mode, rs in grouped.items()}


# ---------------------------------------------------------------------------------------------- running

#: The comparison's budget per run, laid over the tiny preset: half its prompts per step and fewer steps, so that
#: the 12 runs of ``make experiment`` (4 modes x 3 seeds) take about 25 minutes on 2 CPU cores.
BUDGET: dict[str, Any] = {"max_steps": 50, "prompts_per_step": 8}


def experiment_config(**config_overrides: Any) -> GRPOConfig:
    """The config every run shares: ``preset("tiny", **BUDGET, **config_overrides)``, checked for what an experiment
    needs.

    ``credit_mode``, ``seed``, ``output_dir`` and ``resume`` are set per run and may not be overridden. Held-out
    evaluation is needed (``eval_size >= 1``); when ``eval_every`` is 0, it becomes ``max(1, max_steps // 6)`` so an
    accuracy-vs-step curve exists. The returned config's own ``credit_mode``/``seed``/``output_dir`` mean nothing.
    """
    reserved = sorted(set(config_overrides) & set(PER_RUN_FIELDS))
    if reserved:
        raise ValueError(f"config override(s) {reserved} are set per run by run_experiment (modes, seeds, run_dir); "
                         f"allowed: any other GRPOConfig field")
    config = preset("tiny", **{**BUDGET, **config_overrides})
    if config.eval_size < 1:
        raise ValueError(f"eval_size={config.eval_size!r} leaves nothing to evaluate; allowed: an int >= 1")
    if config.eval_every == 0:
        config = config.replace(eval_every=max(1, config.max_steps // 6))
    return config


def _shared(config: GRPOConfig) -> dict[str, Any]:
    """The JSON form of the shared config (per-run fields dropped), as stored in the results file."""
    return json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k not in PER_RUN_FIELDS}))


def _environment() -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "machine": platform.processor() or platform.machine(), "platform": platform.platform()}


def _run_record(mode: str, seed: int, result: Any) -> dict[str, Any]:
    """One finished run of :func:`run_experiment` as a JSON-ready record (see the module docstring)."""
    history = [{k: (int(r["step"]) if k == "step" else float(r.get(k, 0.0))) for k in HISTORY_KEYS}
               for r in sorted(result.history, key=lambda r: r["step"])]
    elapsed, total = {0: 0.0}, 0.0  # step -> training wall time up to and including that step
    for r in history:
        total += r["time_step"]
        elapsed[r["step"]] = total
    curve = [{"step": int(e["step"]), "accuracy": float(e["accuracy"]),
              "wall_time_s": elapsed.get(int(e["step"]), total)} for e in sorted(result.evals, key=lambda e: e["step"])]
    steps = max(len(history), 1)
    return {
        "mode": mode, "seed": seed, "steps": result.steps_done,
        "accuracy_before": float(result.eval_before["accuracy"]),
        "accuracy_after": float(result.eval_after["accuracy"]),
        "eval_curve": curve, "history": history,
        "train_time_s": total, "wall_time_s": float(result.wall_time_s),
        "oracle_calls_per_step": sum(r["oracle_calls"] for r in history) / steps,
        "oracle_time_per_step_s": sum(r["time_oracle"] for r in history) / steps,
        "environment": _environment(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """The results dict stored at ``path`` by :func:`run_experiment` (checked: a ``config`` and a ``runs`` list)."""
    check_type("path", path, (str, os.PathLike))
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    _check_results(data)
    if not isinstance(data.get("config"), dict):
        raise ValueError(f"{os.fspath(path)!r} has no 'config' dict; allowed: a results file written by "
                         f"run_experiment")
    return data


def find_results(path: str | os.PathLike = DEFAULT_OUT, start: str | os.PathLike | None = None) -> Path | None:
    """``path`` if it is a file; a relative ``path`` is looked up from ``start`` (default: the current directory)
    and then its parent (a notebook runs in ``notebooks/``, the results lie at the repository root). ``None`` if
    neither holds it."""
    check_type("path", path, (str, os.PathLike))
    path = Path(path)
    if path.is_absolute():
        return path if path.is_file() else None
    base = Path(start) if start is not None else Path.cwd()
    return next((c for c in (base / path, base.parent / path) if c.is_file()), None)


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def run_experiment(modes: Sequence[str], seeds: Sequence[int], *, out: str | os.PathLike | None = DEFAULT_OUT,
                   run_dir: str | os.PathLike = DEFAULT_RUN_DIR, overwrite: bool = False, progress: bool = True,
                   keep_checkpoints: bool = False, **config_overrides: Any) -> dict[str, Any]:
    """Train the tiny preset once per (mode, seed) on equal budgets; return (and save to ``out``) the results dict.

    - ``modes``: credit modes (``"sequence"`` is plain GRPO); ``seeds``: ints >= 0. Runs go seed by seed (every
      mode of the first seed, then of the next), each in ``<run_dir>/<mode>-seed<seed>`` (emptied first; its
      checkpoint is deleted afterwards unless ``keep_checkpoints``).
    - ``config_overrides``: fields laid over ``preset("tiny")`` for every run (see :func:`experiment_config`).
    - ``out``: the results JSON, rewritten after every run. When it exists and holds the same shared config, its
      runs are kept and their (mode, seed) pairs skipped; a different config raises, naming the differing fields
      (pass another ``out``, or ``overwrite=True`` to start afresh). ``None`` keeps the results in memory only.
    - ``progress``: a tqdm bar over the runs (the trainer's own bar stays off).

    A Ctrl-C during a run stops the experiment (``KeyboardInterrupt`` is raised again) after the finished runs are
    saved; the interrupted run starts from scratch next time. The returned dict is ``{"format", "config", "runs"}``
    with ``runs`` in the order they were stored (earlier calls' runs first).
    """
    modes, seeds = _check_modes(modes), _check_seeds(seeds)
    check_type("run_dir", run_dir, (str, os.PathLike))
    for name, flag in (("overwrite", overwrite), ("progress", progress), ("keep_checkpoints", keep_checkpoints)):
        check_type(name, flag, bool)
    if out is not None:
        check_type("out", out, (str, os.PathLike))
    config = experiment_config(**config_overrides)
    shared = _shared(config)
    results: dict[str, Any] = {"format": RESULTS_FORMAT, "config": shared, "runs": []}
    path = Path(out) if out is not None else None
    if path is not None and path.exists() and not overwrite:
        stored = load_results(path)
        diff = _config_diff(stored["config"], shared)
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:8])
            raise ValueError(f"out={os.fspath(path)!r} holds runs of another config ({shown}); allowed: the same "
                             f"config, another out, or overwrite=True (--overwrite) to start afresh")
        results["runs"] = stored["runs"]
    done = {(r["mode"], r["seed"]) for r in results["runs"]}
    pairs = [(m, s) for s in seeds for m in modes]  # seed by seed: a stopped experiment stays comparable
    todo = [p for p in pairs if p not in done]

    from tqdm.auto import tqdm

    from .trainer import train

    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="runs", unit="run", disable=not progress)
    try:
        for mode, seed in todo:
            bar.set_postfix(mode=mode, seed=seed)
            folder = Path(run_dir) / f"{mode}-seed{seed}"
            run_config = config.replace(credit_mode=mode, seed=seed, output_dir=fresh_run_dir(folder), resume=False)
            result = train(run_config, progress=False)
            if result.interrupted:
                raise KeyboardInterrupt
            results["runs"].append(_run_record(mode, seed, result))
            if path is not None:
                _write_json(path, results)
            if not keep_checkpoints:
                shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            bar.update(1)
    finally:
        bar.close()
    return results


# ------------------------------------------------------------------------------------------- summaries

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
    for mode, runs in _by_mode(_check_results(results)).items():
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
    from .viz import format_table

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
    runs = _check_results(results)
    key = "step" if by == "step" else "wall_time_s"
    out: dict[str, dict[int, float | None]] = {}
    for mode, mode_runs in _by_mode(runs).items():
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


def describe_results(results: dict[str, Any]) -> str:
    """A few lines on what ``results`` holds: modes x seeds, the budget every run had, where it was timed, and the
    shared config's differences from today's :func:`experiment_config` (a file made before it changed says so)."""
    runs = _check_results(results)
    config = results.get("config") or {}
    by_mode = _by_mode(runs)
    seeds = sorted({r["seed"] for r in runs})
    steps, b, g = config.get("max_steps"), config.get("prompts_per_step"), config.get("num_generations")
    lines = [f"{len(by_mode)} modes ({', '.join(by_mode)}) x seeds {seeds}: {len(runs)} runs"]
    if None not in (steps, b, g):
        lines.append(f"each run: {steps} steps x {b} prompts x {g} samples = {steps * b * g} completions, "
                     f"greedy held-out accuracy on {config.get('eval_size')} problems every "
                     f"{config.get('eval_every')} steps")
    envs = {(e.get("torch"), e.get("threads"), e.get("machine")) for e in (r.get("environment") for r in runs) if e}
    if envs:
        lines.append("timed on " + "; ".join(f"torch {t}, {n} thread(s), {m}" for t, n, m in sorted(envs, key=str)))
    if config:
        diff = _config_diff(config, _shared(experiment_config()))
        shown = ", ".join(f"{k}={ours!r} (today: {now!r})" for k, (ours, now) in diff.items())
        lines.append(f"config vs today's experiment_config(): {shown or 'the same'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calgrpo_lib.experiment",
                                     description="CAL credit modes vs plain GRPO on equal budgets, over seeds.")
    parser.add_argument("--modes", nargs="+", default=list(CREDIT_MODE_CHOICES), help="credit modes (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help=f"steps per run (default {BUDGET['max_steps']})")
    parser.add_argument("--prompts-per-step", type=int, default=None,
                        help=f"prompts per step (default {BUDGET['prompts_per_step']})")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (default: preset's)")
    parser.add_argument("--eval-size", type=int, default=None, help="held-out problems (default: the preset's)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results JSON (default {DEFAULT_OUT})")
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"run folders (default {DEFAULT_RUN_DIR})")
    parser.add_argument("--overwrite", action="store_true", help="start afresh instead of keeping stored runs")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the experiment, print the tables, save the curves as ``<out stem>_step.png`` / ``_wall_time.png``."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("prompts_per_step", args.prompts_per_step),
                                   ("eval_every", args.eval_every), ("eval_size", args.eval_size)) if v is not None}
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars inside the bar over runs
    try:
        results = run_experiment(args.modes, args.seeds, out=args.out, run_dir=args.run_dir,
                                 overwrite=args.overwrite, progress=args.progress, **overrides)
    except (ValueError, TypeError) as e:
        print(f"calgrpo experiment: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished runs are in {args.out}: run the same command again to continue",
              file=sys.stderr)
        return 130
    from .viz import experiment_curves

    print(summary_text(results))
    print("\ncost per step\n" + summary_text(results, COST_COLUMNS))
    if "sequence" in summary_table(results):
        print(f"\nfirst evaluation step reaching plain GRPO's mean final accuracy "
              f"({target_accuracy(results):.3f})\n" + reach_text(results))
    out = Path(args.out)
    for x in ("step", "wall_time"):
        figure = out.with_name(f"{out.stem}_{x}.png")
        experiment_curves(results, x=x).savefig(figure, dpi=110)
        print(f"saved {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
