"""Checkpoints of a training run: one folder per step, ``<root>/step-NNNNNN``, written atomically.

A checkpoint holds what a resumed run needs to repeat exactly what an uninterrupted one would have done: the model
and tokenizer (``save_pretrained``), ``trainer_state.pt`` (optimizer state, step, the torch and Python RNG states,
the config) and ``metrics.json`` (the run's records so far). It is written into a temporary folder that is renamed
at the end, so a run killed while writing keeps its previous checkpoint. ``trainer_state.pt`` holds tensors and plain
values only and is read with ``torch.load(weights_only=True)``: a crafted file cannot run code when a run resumes.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["checkpoint_folders", "save_checkpoint", "load_checkpoint", "termination_as_interrupt"]


def checkpoint_folders(root: str | os.PathLike) -> list[Path]:
    """The checkpoint folders under ``root``, oldest step first (none when ``root`` does not exist)."""
    root = Path(root)
    return sorted(root.glob("step-*")) if root.exists() else []


def save_checkpoint(root: str | os.PathLike, step: int, *, model: Any, tokenizer: Any,
                    optimizer: torch.optim.Optimizer, config: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """Write ``<root>/step-NNNNNN`` (replacing one of the same step) and return it.

    The current RNG states are stored with it, so call this right after the step it records. Temporary folders that
    a run killed while writing left behind (``.tmp-step-*``) are removed first.
    """
    root = Path(root)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    for left in root.glob(".tmp-step-*"):  # this one from an earlier try, or others a killed run left behind
        shutil.rmtree(left, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(), "config": config}, tmp / "trainer_state.pt")
    (tmp / "metrics.json").write_text(json.dumps(records))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def load_checkpoint(path: str | os.PathLike, model: Any, optimizer: torch.optim.Optimizer) -> int:
    """Restore the model weights, the optimizer and the RNG states of the checkpoint folder ``path``; return its
    step."""
    from safetensors.torch import load_file

    path = Path(path)
    state_file = path / "trainer_state.pt"
    try:  # weights_only: tensors and plain containers only; a pickle that asks to run code is refused, not run
        state = torch.load(state_file, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"checkpoint file {os.fspath(state_file)!r} holds more than tensors and plain values (a "
                         f"pickle that would run code when loaded); it was not loaded. Allowed: a trainer_state.pt "
                         f"written by save_checkpoint. {err}") from None
    weights = load_file(str(path / "model.safetensors"), device=str(next(model.parameters()).device))
    model.load_state_dict(weights, strict=False)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return int(state["step"])


@contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM (``kill``, a job scheduler's stop) raises ``KeyboardInterrupt`` as Ctrl-C does, so a
    run stopped either way writes its checkpoint; the previous handler is restored on exit. Outside the main thread,
    where Python cannot set signal handlers, it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
