"""Small helpers that keep notebook cells short: the quick/full switch for CI, a clean run folder, the GPU guard.

Rules that several notebooks share live here once:

- ``CALGRPO_QUICK=1`` in the environment (CI, ``pytest --nbval-lax``) asks notebooks for their quick setting: a few
  training steps instead of a full run. :func:`notebook_settings` picks the setting; :func:`quick_mode` tells which.
- ``CALGRPO_RUN_GPU=1`` opts in to the real-model cells; :func:`gpu_run_allowed` says whether they may run, and why
  not.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .checkpoints import CALIBRATION_FILE
from .config import GRPOConfig
from .validation import check_type

__all__ = ["QUICK_ENV", "GPU_ENV", "quick_mode", "notebook_settings", "fresh_run_dir", "gpu_run_allowed",
           "config_changes"]

QUICK_ENV = "CALGRPO_QUICK"  #: set to 1 for the quick (CI) setting of the notebooks
GPU_ENV = "CALGRPO_RUN_GPU"  #: set to 1 to let the real-model cells run on a CUDA GPU
_TRUE = ("1", "true", "yes", "on")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def quick_mode() -> bool:
    """True when ``$CALGRPO_QUICK`` is ``1`` (or ``true``/``yes``/``on``): notebooks run their quick setting."""
    return _env_flag(QUICK_ENV)


def notebook_settings(full: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    """The settings a notebook runs with: ``full``, with ``quick`` laid over it when :func:`quick_mode` is on.

    ``quick`` holds only what the quick setting changes (e.g. ``{"max_steps": 6, "eval_size": 32}``); keys it does
    not name keep their ``full`` value. Returns a new dict; the inputs are not modified.
    """
    check_type("full", full, dict)
    check_type("quick", quick, dict)
    return {**full, **quick} if quick_mode() else dict(full)


def fresh_run_dir(path: str | os.PathLike) -> str:
    """Empty the run folder ``path`` so a new run starts from scratch, and return it as a string.

    A new run refuses a folder that holds an earlier run unless ``overwrite=True`` (``Trainer``); emptying it first
    lets a re-run notebook cell start afresh (and drops the earlier run's TensorBoard files). Only a folder that looks
    like a run (``metrics.jsonl``, ``checkpoints/``, ``reward_calibration.json``, a TRL ``checkpoint-N/``, or nothing
    at all inside) is removed; anything else raises rather than delete it.
    """
    check_type("path", path, (str, os.PathLike))
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"path={os.fspath(path)!r} is a file; allowed: a run folder (or a new path)")
        names = {p.name for p in folder.iterdir()}
        trl_run = any(n.startswith("checkpoint-") and (folder / n).is_dir() for n in names)  # the trl engine's
        if names and not names & {"metrics.jsonl", "checkpoints", CALIBRATION_FILE} and not trl_run:
            raise ValueError(f"path={os.fspath(path)!r} holds {sorted(names)[:5]} but no metrics.jsonl or "
                             f"checkpoints/; allowed: a run folder written by the trainer (or TRL's checkpoint-N/), "
                             "an empty or a new folder")
        shutil.rmtree(folder)
    return os.fspath(path)


def gpu_run_allowed(env: str = GPU_ENV) -> tuple[bool, str]:
    """``(allowed, why)``: the real-model cells run only on a CUDA GPU and when ``$<env>`` is ``1``.

    ``why`` says what is missing (or, when allowed, what will run on which GPU), ready to print.
    """
    check_type("env", env, str)
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU (torch.cuda.is_available() is False)")
    if not _env_flag(env):
        missing.append(f"${env} is not set to 1")
    if missing:
        return False, "skipped: " + "; ".join(missing) + "."
    return True, f"running on {torch.cuda.get_device_name(0)}."


def config_changes(config: GRPOConfig, base: GRPOConfig | None = None) -> dict[str, Any]:
    """The fields of ``config`` that differ from ``base`` (default: ``GRPOConfig()``, the tiny preset), in field
    order: what a preset or an override changes."""
    check_type("config", config, GRPOConfig)
    ref = (base if base is not None else GRPOConfig()).to_dict()
    return {k: v for k, v in config.to_dict().items() if v != ref[k]}
