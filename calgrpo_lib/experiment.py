"""Does token-level credit help? CAL credit modes against plain GRPO, on equal budgets, over several seeds.

:func:`run_experiment` trains the ``tiny`` preset once per (condition, seed), on the budget :data:`BUDGET` (50
steps of 8 prompts unless overridden). A condition is a credit mode, or a named set of the fields of
:data:`calgrpo_lib.conditions.CONDITION_FIELDS` (credit mode, span granularity, oracle noise): experiment v2,
``--grid v2``, is the grid :data:`calgrpo_lib.conditions.GRID_V2` on its budget ``BUDGET_V2``. Every run gets the
same budget: the same ``max_steps``, ``prompts_per_step`` (B) and ``num_generations`` (G), so the same
``max_steps * B * G`` sampled completions, and the same held-out evaluation every ``eval_every`` steps. Only the
condition's fields and ``seed`` differ; ``credit_mode="sequence"`` is plain GRPO (no oracle call). After each run
the results file is rewritten (atomically, :mod:`calgrpo_lib.results_file`), so an interrupted experiment loses at
most the runs in progress, and calling it again with the same config trains only the (condition, seed) pairs the
file does not hold yet. ``jobs=2`` trains two runs at a time, each in its own process.

The results file (JSON) holds ``config`` (the shared config: every field but those of :data:`PER_RUN_FIELDS`),
``conditions`` (name -> fields) and ``runs``, one record per finished run:

- ``mode`` (the condition's name), ``condition`` (its fields), ``seed``, ``steps``;
- ``accuracy_before`` / ``accuracy_after``: greedy held-out accuracy at step 0 and after the last step;
- ``eval_curve``: ``[{"step", "accuracy", "wall_time_s"}, ...]`` for every evaluation, ``wall_time_s`` being the
  training wall time up to that step: ``sum_{s <= step} time_step(s)`` (sampling, rewards, oracle, credit, loss,
  optimizer; evaluations and checkpoints excluded, as they cost every mode the same);
- ``history``: one record per step with the keys of :data:`HISTORY_KEYS` (``oracle_calls`` is 0 in mode
  ``sequence``, which never asks the oracle);
- ``train_time_s`` (the last curve point's ``wall_time_s``), ``wall_time_s`` (the trainer's whole ``train()``,
  evaluations included), ``oracle_calls_per_step`` and ``oracle_time_per_step_s`` (means over the steps), and the
  ``environment`` (torch version, threads, machine) the run was timed on.

The summaries (:func:`calgrpo_lib.tables.summary_table`, :func:`calgrpo_lib.tables.steps_to_reach`, the paired
contrasts of :mod:`calgrpo_lib.contrasts`) are pure functions of that dict; the picture is
:func:`calgrpo_lib.curves.experiment_curves`. Command line (``make experiment`` runs the first line's defaults,
``make experiment-v2`` the second)::

    python -m calgrpo_lib.experiment --modes sequence cal_sparse cal_hybrid prefix --seeds 0 1 2 \\
        [--max-steps N] [--out results/cal_vs_grpo.json]
    python -m calgrpo_lib.experiment --grid v2 --jobs 2      # experiment v2: results/experiment_v2.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .conditions import (
    BUDGET_V2,
    CONDITION_FIELDS,
    check_conditions,
    grid_v2,
    mode_conditions,
    oracle_quality,
)
from .config import GRPOConfig, preset
from .contrasts import METRICS, contrast_plot, contrast_text, credit_quality_plot
from .credit import BASE_CREDIT_MODES, CREDIT_MODES
from .curves import experiment_curves
from .notebook import fresh_run_dir
from .results_file import HISTORY_KEYS, RESULTS_FORMAT, find_results, load_results, run_record, write_json
from .tables import COST_COLUMNS, check_runs, reach_text, runs_by_mode, summary_table, summary_text, target_accuracy
from .validation import check_choice, check_int, check_type

__all__ = ["BUDGET", "RESULTS_FORMAT", "DEFAULT_OUT", "DEFAULT_RUN_DIR", "V2_OUT", "V2_RUN_DIR", "HISTORY_KEYS",
           "PER_RUN_FIELDS", "run_experiment", "experiment_config", "load_results", "find_results", "describe_results",
           "main"]

DEFAULT_OUT = "results/cal_vs_grpo.json"
DEFAULT_RUN_DIR = "runs/cal_vs_grpo"  #: run folders: ``<run_dir>/<condition>-seed<seed>``
V2_OUT = "results/experiment_v2.json"  #: results of ``--grid v2`` (``make experiment-v2``)
V2_RUN_DIR = "runs/experiment_v2"
#: config fields set per run (not part of the shared config, not overridable): those of the run's condition
#: (:data:`calgrpo_lib.conditions.CONDITION_FIELDS`), its seed and folder, and the run-folder switches (each run
#: starts afresh in its emptied folder, never resumes or overwrites)
PER_RUN_FIELDS = (*CONDITION_FIELDS, "seed", "output_dir", "resume", "overwrite", "allow_config_change")


# ------------------------------------------------------------------------------------------------- checks

def _check_modes(modes: Any) -> list[str]:
    check_type("modes", modes, (list, tuple))
    if not modes:
        allowed = ", ".join(map(repr, CREDIT_MODES))
        raise ValueError(f"modes={modes!r} is empty; allowed: one or more of {allowed}")
    for i, mode in enumerate(modes):
        check_choice(f"modes[{i}]", mode, CREDIT_MODES)
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


# ---------------------------------------------------------------------------------------------- running

#: The comparison's budget per run, laid over the tiny preset: half its prompts per step and fewer steps, so that
#: the 12 runs of ``make experiment`` (4 modes x 3 seeds) take about 25 minutes on 2 CPU cores.
BUDGET: dict[str, Any] = {"max_steps": 50, "prompts_per_step": 8}


def experiment_config(**config_overrides: Any) -> GRPOConfig:
    """The config every run shares: ``preset("tiny", **BUDGET, **config_overrides)``, checked for what an experiment
    needs.

    The fields of :data:`PER_RUN_FIELDS` (``credit_mode``, ``seed``, ``output_dir``, ``resume``, ...) are set per
    run and may not be overridden. Held-out evaluation is needed (``eval_size >= 1``); when ``eval_every`` is 0, it
    becomes ``max(1, max_steps // 6)`` so an accuracy-vs-step curve exists. The returned config's own
    ``credit_mode``/``seed``/``output_dir`` mean nothing.
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


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _train_run(config: GRPOConfig, threads: int) -> tuple[Any, bool]:
    """Train one run (in this process or a worker of :func:`run_experiment`'s pool); ``(result, interrupted)``."""
    import torch

    from .trainer import train

    if threads:
        torch.set_num_threads(threads)
    result = train(config, progress=False)
    return result, bool(result.interrupted)


def _plan(modes: Sequence[str] | None, seeds: Any, conditions: Any) -> tuple[dict[str, dict], dict[str, list[int]]]:
    """The checked conditions and each one's seeds (``seeds``: one list for all, or a mapping condition -> list)."""
    if (modes is None) == (conditions is None):
        raise ValueError("pass exactly one of modes (credit modes) and conditions (name -> config fields)")
    conds = check_conditions(conditions) if conditions is not None else mode_conditions(_check_modes(modes))
    if isinstance(seeds, dict):
        missing = [c for c in conds if c not in seeds]
        if missing:
            raise ValueError(f"seeds has no entry for condition(s) {missing}; allowed: a list of seeds, or a dict "
                             f"with one list per condition")
        return conds, {c: _check_seeds(seeds[c]) for c in conds}
    seeds = _check_seeds(seeds)
    return conds, dict.fromkeys(conds, seeds)


def run_experiment(modes: Sequence[str] | None = None, seeds: Sequence[int] | dict[str, Sequence[int]] = (0, 1, 2),
                   *, conditions: dict[str, dict[str, Any]] | None = None, out: str | os.PathLike | None = DEFAULT_OUT,
                   run_dir: str | os.PathLike = DEFAULT_RUN_DIR, overwrite: bool = False, progress: bool = True,
                   keep_checkpoints: bool = False, jobs: int = 1, **config_overrides: Any) -> dict[str, Any]:
    """Train the tiny preset once per (condition, seed) on equal budgets; return (and save to ``out``) the results.

    - ``modes``: credit modes (``"sequence"`` is plain GRPO), each a condition of its own; or ``conditions``:
      ``{name: config fields}`` (:mod:`calgrpo_lib.conditions`, e.g. its ``grid_v2()``). Exactly one of the two.
    - ``seeds``: ints >= 0 for every condition, or ``{name: seeds}``. Runs go seed by seed (every condition of the
      first seed, then of the next), each in ``<run_dir>/<name>-seed<seed>`` (emptied first; its checkpoint is
      deleted afterwards unless ``keep_checkpoints``).
    - ``config_overrides``: fields laid over ``preset("tiny")`` for every run (see :func:`experiment_config`).
    - ``out``: the results JSON, rewritten after every run. When it exists and holds the same shared config, its
      runs are kept and their (condition, seed) pairs skipped; a different config, or a stored condition of the
      same name with other fields, raises, naming the difference (pass another ``out``, or ``overwrite=True`` to
      start afresh). ``None`` keeps the results in memory only.
    - ``jobs``: runs trained at once, each in its own process with ``max(1, cpus // jobs)`` torch threads (1: in
      this process, with torch's threads as they are).
    - ``progress``: a tqdm bar over the runs (the trainer's own bar stays off).

    A Ctrl-C stops the experiment (``KeyboardInterrupt`` is raised again) after the finished runs are saved; runs
    in progress start from scratch next time. Each run record's ``mode`` is its condition's name and
    ``condition`` its fields. The returned dict is ``{"format", "config", "conditions", "runs"}`` with ``runs`` in
    the order they finished (earlier calls' runs first).
    """
    conds, seeds_by = _plan(modes, seeds, conditions)
    check_type("run_dir", run_dir, (str, os.PathLike))
    for name, flag in (("overwrite", overwrite), ("progress", progress), ("keep_checkpoints", keep_checkpoints)):
        check_type(name, flag, bool)
    check_int("jobs", jobs, 1, None)
    if out is not None:
        check_type("out", out, (str, os.PathLike))
    config = experiment_config(**config_overrides)
    shared = _shared(config)
    results: dict[str, Any] = {"format": RESULTS_FORMAT, "config": shared, "conditions": dict(conds), "runs": []}
    path = Path(out) if out is not None else None
    if path is not None and path.exists() and not overwrite:
        stored = load_results(path)
        diff = _config_diff(stored["config"], shared)
        changed = {c: (f, conds[c]) for c, f in stored.get("conditions", {}).items() if c in conds and f != conds[c]}
        if diff or changed:
            shown = ", ".join([f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:8]]
                              + [f"condition {c}: {a!r} -> {b!r}" for c, (a, b) in changed.items()])
            raise ValueError(f"out={os.fspath(path)!r} holds runs of another config ({shown}); allowed: the same "
                             f"config, another out, or overwrite=True (--overwrite) to start afresh")
        results["conditions"] = {**stored.get("conditions", {}), **conds}
        results["runs"] = stored["runs"]
    done = {(r["mode"], r["seed"]) for r in results["runs"]}
    all_seeds = sorted({s for ss in seeds_by.values() for s in ss})
    pairs = [(c, s) for s in all_seeds for c in conds if s in seeds_by[c]]  # seed by seed: stays comparable
    todo = [p for p in pairs if p not in done]

    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    def configured(name: str, seed: int) -> GRPOConfig:
        folder = fresh_run_dir(Path(run_dir) / f"{name}-seed{seed}")
        return config.replace(**conds[name], seed=seed, output_dir=folder, resume=False)

    def store(name: str, seed: int, result: Any) -> None:
        results["runs"].append({**run_record(name, seed, result), "condition": conds[name]})
        if path is not None:
            write_json(path, results)
        if not keep_checkpoints:
            shutil.rmtree(Path(run_dir) / f"{name}-seed{seed}" / "checkpoints", ignore_errors=True)
        bar.update(1)

    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="runs", unit="run", disable=not progress)
    try:
        if jobs == 1:
            for name, seed in todo:
                bar.set_postfix(run=f"{name}-seed{seed}")
                result, interrupted = _train_run(configured(name, seed), 0)
                if interrupted:
                    raise KeyboardInterrupt
                store(name, seed, result)
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                queue, running = list(todo), {}
                try:
                    while queue or running:
                        while queue and len(running) < jobs:
                            name, seed = queue.pop(0)
                            running[pool.submit(_train_run, configured(name, seed), threads)] = (name, seed)
                        finished, _ = wait(running, return_when=FIRST_COMPLETED)
                        for future in finished:
                            name, seed = running.pop(future)
                            result, interrupted = future.result()
                            if interrupted:
                                raise KeyboardInterrupt
                            store(name, seed, result)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return results


# ------------------------------------------------------------------------------------------- description

def describe_results(results: dict[str, Any]) -> str:
    """A few lines on what ``results`` holds: modes x seeds, the budget every run had, where it was timed, and the
    shared config's differences from today's :func:`experiment_config` (a file made before it changed says so)."""
    runs = check_runs(results)
    config = results.get("config") or {}
    by_mode = runs_by_mode(results)
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
    parser.add_argument("--grid", choices=("v2",), default=None,
                        help="experiment v2 (calgrpo_lib.conditions.GRID_V2, its budget BUDGET_V2); --modes and "
                             "--seeds are then ignored")
    parser.add_argument("--conditions", nargs="+", default=None, help="with --grid: only these conditions")
    parser.add_argument("--main-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                        help="with --grid: seeds of its main contrasts (default: 0 1 2 3 4)")
    parser.add_argument("--other-seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="with --grid: seeds of its other conditions (default: 0 1 2)")
    parser.add_argument("--modes", nargs="+", default=list(BASE_CREDIT_MODES),
                        help=f"credit modes, of {', '.join(CREDIT_MODES)} (default: {' '.join(BASE_CREDIT_MODES)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each (default 1)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help=f"steps per run (default {BUDGET['max_steps']})")
    parser.add_argument("--prompts-per-step", type=int, default=None,
                        help=f"prompts per step (default {BUDGET['prompts_per_step']})")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (default: preset's)")
    parser.add_argument("--eval-size", type=int, default=None, help="held-out problems (default: the preset's)")
    parser.add_argument("--out", default=None, help=f"results JSON (default {DEFAULT_OUT}; {V2_OUT} with --grid)")
    parser.add_argument("--run-dir", default=None,
                        help=f"run folders (default {DEFAULT_RUN_DIR}; {V2_RUN_DIR} with --grid)")
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
    args.out = args.out or (V2_OUT if args.grid else DEFAULT_OUT)
    run_dir = args.run_dir or (V2_RUN_DIR if args.grid else DEFAULT_RUN_DIR)
    try:
        if args.grid:
            conditions, seeds = grid_v2(args.main_seeds, args.other_seeds, conditions=args.conditions)
            plan: dict[str, Any] = {"conditions": conditions, **BUDGET_V2, **overrides}
        else:
            plan, seeds = {"modes": args.modes, **overrides}, args.seeds
        results = run_experiment(seeds=seeds, out=args.out, run_dir=run_dir, overwrite=args.overwrite,
                                 progress=args.progress, jobs=args.jobs, **plan)
    except (ValueError, TypeError) as e:
        print(f"calgrpo experiment: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished runs are in {args.out}: run the same command again to continue",
              file=sys.stderr)
        return 130
    print(summary_text(results))
    print("\ncost per step\n" + summary_text(results, COST_COLUMNS))
    has_plain = "sequence" in summary_table(results)  # the baseline of the reach target and the contrasts
    if has_plain:
        print(f"\nfirst evaluation step reaching plain GRPO's mean final accuracy "
              f"({target_accuracy(results):.3f})\n" + reach_text(results))
    if args.grid and has_plain:
        for metric in METRICS:
            print(f"\npaired differences against plain GRPO (95% bootstrap CI over seeds): {metric}\n"
                  + contrast_text(results, metric))
    out = Path(args.out)
    for x in ("step", "wall_time"):
        figure = out.with_name(f"{out.stem}_{x}.png")
        experiment_curves(results, x=x).savefig(figure, dpi=110)
        print(f"saved {figure}")
    if args.grid and has_plain:
        save_contrast_figures(results, out)
    return 0


def save_contrast_figures(results: dict[str, Any], out: Path) -> list[Path]:
    """Save a grid's paired differences against plain GRPO (final accuracy, with 95% bootstrap CIs) as
    ``<out stem>_contrasts.png`` and the credit-quality curve (the same differences of the exact and noisy
    ``cal_hybrid`` step conditions against their oracle's measured F1) as ``<out stem>_credit_quality.png``."""
    quality = oracle_quality(results.get("conditions", {}))
    saved = [out.with_name(f"{out.stem}_contrasts.png")]
    contrast_plot(results, "final").savefig(saved[0], dpi=110)
    if quality:
        saved.append(out.with_name(f"{out.stem}_credit_quality.png"))
        credit_quality_plot(results, quality).savefig(saved[1], dpi=110)
    for path in saved:
        print(f"saved {path}")
    return saved


if __name__ == "__main__":
    sys.exit(main())
