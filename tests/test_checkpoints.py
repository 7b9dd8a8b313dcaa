"""Checkpoints and the metrics file: a resumed run reads tensors and plain values only, never code, and what a kill
left half-written does not break the next run."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from calgrpo_lib.checkpoints import checkpoint_folders, load_checkpoint, save_checkpoint
from calgrpo_lib.metrics_log import MetricsLog


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


class _Saves:
    """A stand-in for a model or tokenizer: ``save_pretrained`` writes one file."""

    def __init__(self, name: str) -> None:
        self.name = name

    def save_pretrained(self, folder) -> None:
        (folder / self.name).write_text("x")


def test_saving_removes_temporary_folders_a_killed_run_left_behind(tmp_path):
    left = tmp_path / ".tmp-step-000003-99999"  # a run killed while it wrote step 3
    left.mkdir()
    (left / "model.safetensors").write_text("half")
    _, optimizer = _model_and_optimizer()
    final = save_checkpoint(tmp_path, 4, model=_Saves("model.safetensors"), tokenizer=_Saves("tokenizer.json"),
                            optimizer=optimizer, config={"seed": 0}, records=[])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000004"]
    assert sorted(p.name for p in final.iterdir()) == ["metrics.json", "model.safetensors", "tokenizer.json",
                                                       "trainer_state.pt"]
    assert checkpoint_folders(tmp_path) == [final]


def test_a_metrics_file_cut_short_by_a_kill_loses_only_its_last_line(tmp_path):
    good = [{"kind": "train", "step": 1, "loss": 0.5}, {"kind": "train", "step": 2, "loss": 0.4}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good) + '{"kind": "train", "st')
    with pytest.warns(UserWarning, match=r"last line \(3\) is cut short.*2 records kept"):
        log = MetricsLog(tmp_path, tensorboard=False)
    assert log.records == good
    log.log({"kind": "train", "step": 3, "loss": 0.3})  # the next record starts on a line of its own
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_an_unreadable_line_inside_a_metrics_file_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl' line 2 is not a JSON record"):
        MetricsLog(tmp_path, tensorboard=False)
