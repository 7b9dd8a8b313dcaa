"""calgrpo_lib.notebook: the quick/full switch, the run-folder reset, the GPU guard, config changes."""

import pytest

from calgrpo_lib.config import preset
from calgrpo_lib.notebook import config_changes, fresh_run_dir, gpu_run_allowed, notebook_settings, quick_mode

FULL, QUICK = {"max_steps": 150, "eval_size": 256, "seed": 0}, {"max_steps": 6, "eval_size": 32}


@pytest.mark.parametrize("value, quick", [("1", True), ("true", True), ("0", False), ("", False)])
def test_notebook_settings_follow_calgrpo_quick(monkeypatch, value, quick):
    monkeypatch.setenv("CALGRPO_QUICK", value)
    assert quick_mode() is quick
    expected = {"max_steps": 6, "eval_size": 32, "seed": 0} if quick else FULL
    assert notebook_settings(FULL, QUICK) == expected
    assert FULL["max_steps"] == 150  # inputs untouched


def test_notebook_settings_without_the_variable(monkeypatch):
    monkeypatch.delenv("CALGRPO_QUICK", raising=False)
    assert notebook_settings(FULL, QUICK) == FULL
    with pytest.raises(TypeError, match="quick"):
        notebook_settings(FULL, [("max_steps", 6)])


def test_fresh_run_dir_removes_runs_only(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    assert fresh_run_dir(run) == str(run) and not run.exists()
    assert fresh_run_dir(tmp_path / "new") == str(tmp_path / "new")
    trl_run = tmp_path / "trl"  # the trl engine's folder: TRL's checkpoint-N/
    (trl_run / "checkpoint-50").mkdir(parents=True)
    assert fresh_run_dir(trl_run) == str(trl_run) and not trl_run.exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "paper.txt").write_text("keep me")
    (other / "checkpoint-1.txt").write_text("a file, not TRL's checkpoint folder")
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        fresh_run_dir(other)
    assert (other / "paper.txt").exists()


def test_gpu_run_needs_the_opt_in(monkeypatch):
    monkeypatch.delenv("CALGRPO_RUN_GPU", raising=False)
    allowed, why = gpu_run_allowed()
    assert not allowed and "CALGRPO_RUN_GPU is not set" in why


def test_config_changes_lists_what_a_preset_changes():
    assert config_changes(preset("tiny")) == {}
    changes = config_changes(preset("qwen-gsm8k"))
    assert changes["model"] == "Qwen/Qwen2.5-0.5B-Instruct" and "credit_mode" not in changes
    assert config_changes(preset("tiny", seed=3), preset("tiny")) == {"seed": 3}
