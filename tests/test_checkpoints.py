"""Checkpoints: a resumed run reads tensors and plain values only, never code."""

from __future__ import annotations

import os
import random

import pytest
import torch

from calgrpo_lib.checkpoints import load_checkpoint


class _RunsCode:
    """An object whose unpickling would create the file ``marker`` (as a crafted ``trainer_state.pt`` could run a
    shell command)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(2, 2)
    return model, torch.optim.AdamW(model.parameters())


def test_a_checkpoint_state_that_would_run_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"optimizer": {}, "step": 3, "payload": _RunsCode(str(marker))}, tmp_path / "trainer_state.pt")
    model, optimizer = _model_and_optimizer()
    with pytest.raises(ValueError, match=r"trainer_state\.pt.*holds more than tensors and plain values"):
        load_checkpoint(tmp_path, model, optimizer)
    assert not marker.exists(), "loading the checkpoint ran the code in it"


def test_the_state_save_checkpoint_writes_loads_with_weights_only(tmp_path):
    """The optimizer state, both RNG states and a config dict survive ``torch.load(weights_only=True)``."""
    model, optimizer = _model_and_optimizer()
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "step": 1, "torch_rng": torch.get_rng_state(),
             "python_rng": random.getstate(), "config": {"seed": 0, "lam": 0.5, "data_path": None, "extra": ["x"]}}
    torch.save(state, tmp_path / "trainer_state.pt")
    loaded = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    assert loaded["python_rng"] == random.getstate() and loaded["config"] == state["config"]
    assert torch.equal(loaded["torch_rng"], state["torch_rng"]) and os.path.getsize(tmp_path / "trainer_state.pt")
