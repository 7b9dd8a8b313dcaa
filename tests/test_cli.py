"""The command line's other commands: ``export`` (a checkpoint as a merged model folder) and ``doctor``."""

from __future__ import annotations

from calgrpo_lib.cli import main
from calgrpo_lib.config import preset
from calgrpo_lib.policy import load_policy
from calgrpo_lib.trainer import Trainer


def _one_step_run(tmp_path, **fields):
    config = preset("tiny", max_steps=1, prompts_per_step=2, num_generations=2, max_new_tokens=16, eval_size=0,
                    output_dir=str(tmp_path / "run"), **fields)
    Trainer(config, progress=False).train()
    return tmp_path / "run" / "checkpoints" / "step-000001"


def test_export_writes_a_merged_lora_checkpoint_that_loads(tmp_path, capsys):
    checkpoint = _one_step_run(tmp_path, use_peft=True, lora_r=4)
    out = tmp_path / "merged"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert f"merged model folder: {out}" in capsys.readouterr().out
    model, _ = load_policy(str(out), device="cpu")
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2  # not empty any more
    assert "calgrpo: error:" in capsys.readouterr().err


def test_export_refuses_a_damaged_checkpoint(tmp_path, capsys):
    checkpoint = _one_step_run(tmp_path)
    with open(checkpoint / "model.safetensors", "r+b") as f:
        f.truncate(100)
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "model.safetensors" in err and not (tmp_path / "out").exists()


def test_doctor_runs_offline_and_names_the_device(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-doctor-cli-secret-123")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "device" in out and "AIza-doctor-cli-secret-123" not in out and "cli-secret" not in out


def test_train_prints_the_memory_estimate_first(tmp_path, monkeypatch, capsys):
    from calgrpo_lib.trainer import TrainResult

    monkeypatch.setattr("calgrpo_lib.trainer.train", lambda config, **kw: TrainResult(config, 1, None, None))
    assert main(["train", "--output-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("memory estimate on cpu (float32):") and "total" in out
