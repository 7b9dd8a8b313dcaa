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


# ------------------------------------------------------------------------------------------ --engine trl


def _trl_config(capsys, *flags):
    assert main(["train", "--engine", "trl", "--print-config", *flags]) == 0
    import json

    return json.loads(capsys.readouterr().out)


def test_engine_trl_maps_our_flags_to_trls_config(tmp_path, monkeypatch, capsys):
    import pytest

    pytest.importorskip("trl")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    flags = ["--device", "cpu", "--prompts-per-step", "4", "--num-generations", "4", "--microbatch-size", "8",
             "--max-new-tokens", "32", "--max-steps", "5", "--save-every", "2", "--num-iterations", "2",
             "--learning-rate", "3e-4", "--beta", "0.04", "--seed", "7", "--credit-mode", "prefix",
             "--eval-size", "0", "--output-dir", str(tmp_path / "r")]
    got = _trl_config(capsys, *flags)
    assert {k: got[k] for k in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_generations",
                                "max_completion_length", "max_steps", "save_steps", "num_iterations", "logging_steps",
                                "learning_rate", "beta", "seed", "credit_mode", "use_cpu", "bf16", "use_vllm")} == {
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "num_generations": 4,
        "max_completion_length": 32, "max_steps": 10, "save_steps": 4, "num_iterations": 2, "logging_steps": 1,
        "learning_rate": 3e-4, "beta": 0.04, "seed": 7, "credit_mode": "prefix", "use_cpu": True, "bf16": False,
        "use_vllm": False}
    assert got["output_dir"] == str(tmp_path / "r")
    from calgrpo_lib.trl_engine import trl_config  # under accelerate launch, the CLI passes WORLD_SIZE processes

    ours = preset("tiny", device="cpu", prompts_per_step=4, num_generations=4, microbatch_size=8, min_new_tokens=4,
                  output_dir=str(tmp_path / "r"))
    got = trl_config(ours, num_processes=2, use_vllm=True, vllm_mode="server")  # 16 completions over 2 processes
    assert (got.per_device_train_batch_size, got.gradient_accumulation_steps) == (8, 1)
    assert (got.use_vllm, got.vllm_mode, got.generation_kwargs) == (True, "server", {"min_tokens": 4})
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        trl_config(ours, num_processes=3)


def test_engine_trl_names_flags_it_has_no_counterpart_for(tmp_path, capsys):
    import pytest

    pytest.importorskip("trl")
    out = str(tmp_path / "r")
    assert main(["train", "--engine", "trl", "--eval-size", "10", "--reward", "hybrid", "--output-dir", out]) == 2
    err = capsys.readouterr().err
    assert "--eval-size 10" in err and "--reward 'hybrid'" in err and "no counterpart" in err
    assert main(["train", "--engine", "trl", "--resume", "--output-dir", out]) == 2
    assert "no checkpoint-N folder" in capsys.readouterr().err


def test_trl_only_flags_need_engine_trl(tmp_path, capsys):
    assert main(["train", "--use-vllm", "--report-to", "wandb", "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--report-to, --use-vllm only with --engine trl" in err


def test_engine_trl_without_trl_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys

    import calgrpo_lib

    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` raises ImportError
    monkeypatch.delitem(sys.modules, "calgrpo_lib.trl_engine", raising=False)
    monkeypatch.delattr(calgrpo_lib, "trl_engine", raising=False)
    assert main(["train", "--engine", "trl", "--output-dir", str(tmp_path / "r")]) == 2
    assert "pip install 'calgrpo[trl]'" in capsys.readouterr().err
