"""The results file of an experiment (:mod:`calgrpo_lib.experiment`): one JSON record per finished run, written
atomically, loaded and found again.

:func:`run_record` turns a finished run into its record, :func:`write_json` rewrites the file (a temporary file
renamed over it, so a crash never leaves half a file), :func:`load_results` reads one back (checked), and
:func:`find_results` finds one from a notebook's folder.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from .tables import check_runs, runs_by_mode
from .validation import check_choice, check_type

__all__ = ["RESULTS_FORMAT", "HISTORY_KEYS", "environment", "run_record", "write_json", "load_results",
           "select_conditions", "find_results"]

RESULTS_FORMAT = "calgrpo-experiment/1"  #: ``format`` field of a results file
#: per-step values kept in each run's ``history`` (from the trainer's step records)
HISTORY_KEYS = ("step", "reward_mean", "accuracy", "time_step", "time_oracle", "oracle_calls", "oracle_cache_hits",
                "error_tokens", "credit_fallbacks", "span_not_narrowed", "span_hit_rate", "oracle_unlocalized",
                "zero_spread_frac", "entropy", "completion_len_mean")


def environment() -> dict[str, Any]:
    """Where a run was timed: torch version and threads, Python, processor and platform."""
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "machine": platform.processor() or platform.machine(), "platform": platform.platform()}


def run_record(mode: str, seed: int, result: Any) -> dict[str, Any]:
    """One finished run (``result``: a :class:`calgrpo_lib.trainer.TrainResult`) as a JSON-ready record (see the
    module docstring of :mod:`calgrpo_lib.experiment`)."""
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
        "environment": environment(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
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


def find_results(path: str | os.PathLike, start: str | os.PathLike | None = None) -> Path | None:
    """``path`` if it is a file; a relative ``path`` is looked up from ``start`` (default: the current directory),
    then its parent (a notebook runs in ``notebooks/``, the results lie at the repository root), then, for a path
    under ``results/``, among the published results that come with the package (the repository's ``results/*.json``
    are ``calgrpo_lib/results/`` in a wheel: an install outside the repository, such as Colab's, has them too).
    ``None`` if none holds it."""
    check_type("path", path, (str, os.PathLike))
    path = Path(path)
    if path.is_absolute():
        return path if path.is_file() else None
    base = Path(start) if start is not None else Path.cwd()
    found = next((c for c in (base / path, base.parent / path) if c.is_file()), None)
    if found is None and len(path.parts) == 2 and path.parts[0] == "results":
        packaged = files("calgrpo_lib").joinpath("results", path.name)
        found = Path(str(packaged)) if packaged.is_file() else None
    return found


def select_conditions(results: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A copy of ``results`` holding only the runs of the conditions ``names`` (in that order), to draw or compare a
    part of a grid. An unknown name is refused with the names the results hold."""
    check_type("names", names, (list, tuple))
    by = runs_by_mode(results)
    for i, name in enumerate(names):
        check_choice(f"names[{i}]", name, tuple(by))
    runs = [r for name in names for r in by[name]]
    conditions = {n: c for n, c in results.get("conditions", {}).items() if n in names}
    return {**results, "runs": runs, **({"conditions": conditions} if "conditions" in results else {})}
