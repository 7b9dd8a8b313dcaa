"""Does token-level credit help? CAL credit modes against plain GRPO, on equal budgets, over several seeds.

:func:`run_experiment` trains the ``tiny`` preset once per (credit mode, seed), on the budget :data:`BUDGET` (50
steps of 8 prompts unless overridden). Every run gets the same budget: the same ``max_steps``, ``prompts_per_step``
(B) and ``num_generations`` (G), so the same ``max_steps * B * G`` sampled completions, and the same held-out
evaluation every ``eval_every`` steps. Only ``credit_mode`` and ``seed`` differ; ``credit_mode="sequence"`` is plain
GRPO (no oracle call). After each run the results file is rewritten (atomically), so an interrupted experiment loses
at most the run in progress, and calling it again with the same config trains only the (mode, seed) pairs the file
does not hold yet.

The results file (JSON) holds ``config`` (the shared config: every field but those of :data:`PER_RUN_FIELDS`) and
``runs``, one record per finished run:

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

The summaries (:func:`calgrpo_lib.tables.summary_table`, :func:`calgrpo_lib.tables.steps_to_reach`) are pure
functions of that dict; the picture is :func:`calgrpo_lib.curves.experiment_curves`. Command line (``make
experiment`` runs it with the defaults)::

    python -m calgrpo_lib.experiment --modes sequence cal_sparse cal_hybrid prefix --seeds 0 1 2 \\
        [--max-steps N] [--out results/cal_vs_grpo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import GRPOConfig, preset
from .credit import BASE_CREDIT_MODES, CREDIT_MODES
from .curves import experiment_curves
from .notebook import fresh_run_dir
from .tables import COST_COLUMNS, check_runs, reach_text, runs_by_mode, summary_table, summary_text, target_accuracy
from .validation import check_choice, check_int, check_type

__all__ = ["BUDGET", "RESULTS_FORMAT", "DEFAULT_OUT", "DEFAULT_RUN_DIR", "HISTORY_KEYS", "PER_RUN_FIELDS",
           "run_experiment", "experiment_config", "load_results", "find_results", "describe_results", "main"]

RESULTS_FORMAT = "calgrpo-experiment/1"  #: ``format`` field of a results file
DEFAULT_OUT = "results/cal_vs_grpo.json"
DEFAULT_RUN_DIR = "runs/cal_vs_grpo"  #: run folders: ``<run_dir>/<mode>-seed<seed>``
#: per-step values kept in each run's ``history`` (from the trainer's step records)
HISTORY_KEYS = ("step", "reward_mean", "accuracy", "time_step", "time_oracle", "oracle_calls", "oracle_cache_hits",
                "error_tokens", "credit_fallbacks")
#: config fields set per run (not part of the shared config, not overridable): the two compared, the run's folder,
#: and the run-folder switches (each run starts afresh in its emptied folder, never resumes or overwrites)
PER_RUN_FIELDS = ("credit_mode", "seed", "output_dir", "resume", "overwrite", "allow_config_change")


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
    check_runs(data)
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
    parser.add_argument("--modes", nargs="+", default=list(BASE_CREDIT_MODES),
                        help=f"credit modes, of {', '.join(CREDIT_MODES)} (default: {' '.join(BASE_CREDIT_MODES)})")
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
