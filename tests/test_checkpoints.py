"""Checkpoints and the metrics file: a resumed run reads safetensors and JSON only, never a pickle; a damaged
checkpoint is detected by its manifest and skipped; and what a kill left half-written does not break the next run."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import random
import types

import pytest
import torch
from safetensors.torch import save_file

from calgrpo_lib.checkpoints import (
    CheckpointError,
    checkpoint_folders,
    latest_good_checkpoint,
    load_checkpoint,
    resume_config_diff,
    save_checkpoint,
    verify_checkpoint,
)
from calgrpo_lib.metrics_log import MetricsLog


class _RunsCode:
    """An object whose unpickling would create the file ``marker`` (as a crafted ``trainer_state.pt`` could run a
    shell command)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Model(torch.nn.Linear):
    """A model with what checkpoints use of a Hugging Face one: ``save_pretrained`` and ``config``."""

    def __init__(self) -> None:
        super().__init__(3, 2)
        self.config = types.SimpleNamespace(tie_word_embeddings=False)

    def save_pretrained(self, folder) -> None:
        save_file(self.state_dict(), str(folder / "model.safetensors"))
        (folder / "config.json").write_text("{}")


class _Saves:
    """A stand-in for a tokenizer: ``save_pretrained`` writes one file."""

    def __init__(self, name: str) -> None:
        self.name = name

    def save_pretrained(self, folder) -> None:
        (folder / self.name).write_text("x")


def _trained() -> tuple[_Model, torch.optim.Optimizer]:
    model = _Model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(2):
        model(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def _save(root, step, model, optimizer, config=None):
    return save_checkpoint(root, step, model=model, tokenizer=_Saves("tokenizer.json"), optimizer=optimizer,
                           config={"seed": 0, "lam": 0.5, "extra": {"note": [1]}} if config is None else config,
                           records=[{"kind": "train", "step": step}])


def _no_pickle(*args, **kwargs):
    raise AssertionError("a checkpoint was unpickled")


def test_a_checkpoint_round_trips_without_pickle(tmp_path, monkeypatch):
    """Weights, optimizer state (tensors and param groups), both RNG states and the step come back exactly, and
    nothing is unpickled on the way (``torch.load`` and ``pickle`` refuse to run)."""
    torch.manual_seed(1)
    random.seed(2)
    model, optimizer = _trained()
    path = _save(tmp_path, 7, model, optimizer)
    saved_weights = {k: v.clone() for k, v in model.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    expected_torch, expected_python = torch.rand(3), random.random()  # what the RNGs give after the save

    other, other_optimizer = _trained()  # different weights, optimizer state and RNG positions
    monkeypatch.setattr(torch, "load", _no_pickle)
    monkeypatch.setattr(pickle, "load", _no_pickle)
    monkeypatch.setattr(pickle, "loads", _no_pickle)
    assert load_checkpoint(path, other, other_optimizer) == 7
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_python
    for key, value in other.state_dict().items():
        assert torch.equal(value, saved_weights[key]), key
    loaded = other_optimizer.state_dict()
    assert loaded["param_groups"] == saved_optimizer["param_groups"]
    assert loaded["param_groups"][0]["betas"] == (0.8, 0.95)  # a tuple again, as AdamW keeps it
    for param, entries in saved_optimizer["state"].items():
        assert set(loaded["state"][param]) == set(entries)
        for name, value in entries.items():
            assert torch.equal(loaded["state"][param][name], value), (param, name)
    assert not list(path.glob("*.pt")) and not list(path.glob("*.pkl"))


def test_a_pickled_trainer_state_is_never_opened(tmp_path):
    """A checkpoint of the pickled kind (or a crafted one) has no manifest: it is damaged, not loaded; and a pickle
    dropped into a good checkpoint is not read (the manifest does not list it, the loader never opens it)."""
    marker = tmp_path / "pwned"
    old = tmp_path / "old" / "step-000003"
    old.mkdir(parents=True)
    torch.save({"optimizer": {}, "step": 3, "payload": _RunsCode(str(marker))}, old / "trainer_state.pt")
    model, optimizer = _trained()
    assert verify_checkpoint(old) == "no manifest.json (a checkpoint of an earlier version, with trainer_state.pt)"
    with pytest.raises(CheckpointError, match=r"step-000003' is damaged: no manifest\.json.*not loaded"):
        load_checkpoint(old, model, optimizer)
    good = _save(tmp_path / "new", 4, model, optimizer)
    torch.save({"payload": _RunsCode(str(marker))}, good / "trainer_state.pt")
    assert verify_checkpoint(good) is None and load_checkpoint(good, model, optimizer) == 4
    assert not marker.exists(), "loading a checkpoint ran the code in it"


def test_the_manifest_lists_every_file_with_its_size_and_hash(tmp_path):
    model, optimizer = _trained()
    path = _save(tmp_path, 1, model, optimizer)
    manifest = json.loads((path / "manifest.json").read_text())
    names = sorted(p.name for p in path.iterdir() if p.name != "manifest.json")
    assert names == ["config.json", "metrics.json", "model.safetensors", "tokenizer.json", "trainer_state.json",
                     "trainer_state.safetensors"]
    assert sorted(manifest["files"]) == names and manifest["step"] == 1
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_the_files_a_checkpoint_needs_depend_on_its_kind(tmp_path):
    """A full model's checkpoint needs model.safetensors, a LoRA one its adapters (tests/test_lora.py saves one); a
    manifest without a kind (written before LoRA) is a full one."""
    model, optimizer = _trained()
    path = _save(tmp_path, 1, model, optimizer)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "full" and json.loads((path / "trainer_state.json").read_text())["kind"] == "full"
    for kind, problem in (("lora", "manifest.json lists no adapter_model.safetensors"),
                          ("xyz", "manifest.json names an unknown kind 'xyz'"), (None, None)):
        changed = {k: v for k, v in manifest.items() if k != "kind"} | ({} if kind is None else {"kind": kind})
        (path / "manifest.json").write_text(json.dumps(changed))
        assert verify_checkpoint(path) == problem


def _truncate(path):
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-10])


def _garble(path):
    file = path / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[-5:] = bytes(b ^ 0xFF for b in data[-5:])  # the same size, other bytes (inside the weights)
    file.write_bytes(bytes(data))


def _drop_manifest(path):
    (path / "manifest.json").unlink()


def _drop_state(path):
    (path / "trainer_state.safetensors").unlink()


@pytest.mark.parametrize("damage, why", [
    (_truncate, r"model\.safetensors is \d+ bytes, the manifest says \d+"),
    (_garble, r"model\.safetensors sha256 mismatch"),
    (_drop_manifest, r"no manifest\.json"),
    (_drop_state, r"trainer_state\.safetensors missing"),
])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, why):
    model, optimizer = _trained()
    first = _save(tmp_path, 1, model, optimizer)
    second = _save(tmp_path, 2, model, optimizer)
    damage(second)
    with pytest.warns(UserWarning, match=rf"resuming from step-000001.*skipped.*step-000002: {why}"):
        assert latest_good_checkpoint(tmp_path) == first
    with pytest.raises(CheckpointError, match=why):
        load_checkpoint(second, model, optimizer)
    assert second.exists(), "the damaged checkpoint was deleted"


def test_no_good_checkpoint_is_a_clear_error_and_deletes_nothing(tmp_path):
    model, optimizer = _trained()
    first, second = _save(tmp_path, 1, model, optimizer), _save(tmp_path, 2, model, optimizer)
    _garble(first)
    _truncate(second)
    with pytest.raises(CheckpointError, match=r"no good checkpoint to resume from in .*step-000002: model\.safetensors "
                                              r"is \d+ bytes.*; step-000001: model\.safetensors sha256 mismatch\. "
                                              r"Nothing was deleted.*overwrite=True"):
        latest_good_checkpoint(tmp_path)
    assert checkpoint_folders(tmp_path) == [first, second]
    assert latest_good_checkpoint(tmp_path / "none") is None  # no checkpoint at all: nothing to fall back from


def test_saving_removes_temporary_folders_a_killed_run_left_behind(tmp_path):
    left = tmp_path / ".tmp-step-000003-99999"  # a run killed while it wrote step 3
    left.mkdir()
    (left / "model.safetensors").write_text("half")
    model, optimizer = _trained()
    final = _save(tmp_path, 4, model, optimizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000004"]
    assert checkpoint_folders(tmp_path) == [final]


def test_resume_config_diff_ignores_bookkeeping_but_not_what_changes_results():
    old = {"seed": 0, "learning_rate": 1e-4, "max_steps": 10, "eval_every": 5, "output_dir": "a",
           "lr_scheduler_type": "constant", "extra": {}}
    new = {**old, "max_steps": 20, "eval_every": 2, "output_dir": "b", "extra": {"note": "x"}}
    assert resume_config_diff(old, new) == {}
    new.update(seed=1, learning_rate=1e-3)
    assert resume_config_diff(old, new) == {"seed": (0, 1), "learning_rate": (1e-4, 1e-3)}
    decaying = {**old, "lr_scheduler_type": "linear"}  # the schedule runs to max_steps: extending changes the rates
    assert resume_config_diff(decaying, {**decaying, "max_steps": 20}) == {"max_steps": (10, 20)}
    assert resume_config_diff(old, {**old, "beta": 0.1}) == {"beta": ("<absent>", 0.1)}


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
