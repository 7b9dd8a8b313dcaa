"""The GRPO loop on the shipped tiny policy: one step's bookkeeping, a kill -9 resume, the run folder's rules (no
run replaces another unasked; a resume checks its checkpoint and its config), and learning on a budget."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from calgrpo_lib.checkpoints import CheckpointError, RunFolderError, verify_checkpoint
from calgrpo_lib.config import GRPOConfig
from calgrpo_lib.trainer import TIMING_KEYS, Trainer

SMALL = ["--prompts-per-step", "4", "--num-generations", "4", "--max-new-tokens", "48", "--eval-size", "0",
         "--save-every", "1", "--train-size", "256", "--seed", "3"]


def _cli(out_dir, max_steps, *extra):
    return [sys.executable, "-m", "calgrpo_lib", "train", "--preset", "tiny", *SMALL, "--output-dir", str(out_dir),
            "--max-steps", str(max_steps), *extra]


def _train_records(out_dir):
    with open(out_dir / "metrics.jsonl") as f:
        return [r for r in map(json.loads, f) if r["kind"] == "train"]


def _comparable(record):
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def test_one_step_logs_every_phase(tmp_path):
    config = GRPOConfig(max_steps=2, prompts_per_step=2, num_generations=4, max_new_tokens=48, eval_size=0,
                        train_size=64, output_dir=str(tmp_path), save_every=0, lr_scheduler_type="linear")
    trainer = Trainer(config, progress=False)
    record = trainer.step()
    for key in ("reward_mean", "reward_std", "reward_min", "reward_max", "accuracy", "format_rate",
                "zero_spread_frac", "kl" if config.beta else "loss", "clip_fraction", "entropy",
                "completion_len_mean", "oracle_calls", "oracle_cache_hits", "oracle_failures",
                "oracle_unlocalized", "span_hit_rate", *TIMING_KEYS):
        assert key in record, key
    assert record["step"] == 1 and trainer.step_count == 1
    assert 0.0 <= record["accuracy"] <= 1.0 and record["time_generation"] > 0
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("kind,step,") and len(lines) == 2
    second = trainer.step()  # the linear schedule halves the rate at the second of two steps
    assert (record["learning_rate"], second["learning_rate"]) == (1e-4, 5e-5)
    assert trainer.optimizer.param_groups[0]["lr"] == 5e-5


def test_kill_9_then_resume_repeats_the_uninterrupted_run(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_cli(reference, 8), check=True, capture_output=True, timeout=600)
    expected = {r["step"]: _comparable(r) for r in _train_records(reference)}
    assert sorted(expected) == list(range(1, 9))

    kill_at = random.Random(os.getpid()).randint(2, 3)  # a random step
    proc = subprocess.Popen(_cli(interrupted, 8), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (interrupted / "metrics.jsonl").exists() and len(_train_records(interrupted)) >= kill_at:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoints = sorted((interrupted / "checkpoints").glob("step-*"))
    assert checkpoints, "no checkpoint was written before the kill"
    resumed_from = int(checkpoints[-1].name.split("-")[1])
    assert resumed_from <= 3

    subprocess.run(_cli(interrupted, 8, "--resume"), check=True, capture_output=True, timeout=600)
    got = {r["step"]: _comparable(r) for r in _train_records(interrupted)}
    assert sorted(got) == list(range(1, 9))
    for step in range(resumed_from + 1, resumed_from + 6):
        assert got[step] == expected[step], f"step {step} differs after resuming from step {resumed_from}"


def test_sigterm_writes_a_checkpoint_and_the_cli_says_so(tmp_path):
    """``kill`` (SIGTERM, as a job scheduler stops a job) stops the run like Ctrl-C: a checkpoint of the last finished
    step (none would exist otherwise: ``--save-every 0``), a message, and a non-zero exit."""
    proc = subprocess.Popen(_cli(tmp_path, 50, "--save-every", "0"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines() if (tmp_path / "metrics.jsonl").exists() else []
        if sum('"kind": "train"' in line for line in lines) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    done = int(err.split("interrupted after step ")[1].split(";")[0])
    assert done >= 2 and [p.name for p in (tmp_path / "checkpoints").iterdir()] == [f"step-{done:06d}"]
    assert "--resume" in err


def test_ctrl_c_writes_a_checkpoint(tmp_path):
    config = GRPOConfig(max_steps=50, prompts_per_step=2, num_generations=2, max_new_tokens=32, eval_size=0,
                        train_size=64, output_dir=str(tmp_path), save_every=0)

    def interrupt(event, record):
        if event == "step" and record["step"] == 2:
            raise KeyboardInterrupt

    result = Trainer(config, callbacks=[interrupt], progress=False).train()
    assert result.interrupted and result.steps_done == 2
    assert (tmp_path / "checkpoints" / "step-000002" / "model.safetensors").exists()


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the run folder was checked")


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_run_in_an_old_run_folder_is_refused_unless_told_to_overwrite(tmp_path, monkeypatch):
    """Refused before any model work, naming the folder, what it holds and the two ways out, with nothing touched;
    with ``overwrite=True`` the old run is replaced: its "before" is its own evaluation, its metrics its own, the old
    run's checkpoints are gone, other files stay."""
    config = GRPOConfig(max_steps=2, prompts_per_step=2, num_generations=2, max_new_tokens=16, eval_size=4,
                        train_size=16, output_dir=str(tmp_path), save_every=1, eval_every=0)
    Trainer(config, progress=False).train()
    stale = tmp_path / "metrics.jsonl"
    stale.write_text(stale.read_text().replace('"accuracy": ', '"accuracy": 9', 1))  # mark the old "before"
    (tmp_path / "notes.txt").write_text("mine")
    held = _files(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr("calgrpo_lib.trainer.load_policy", _no_model)
        with pytest.raises(RunFolderError, match=rf"output_dir={re.escape(repr(str(tmp_path)))} holds another run "
                                                 r"\(\d+ metric records, 2 checkpoints\).*resume=True \(--resume\).*"
                                                 r"overwrite=True \(--overwrite\)"):
            Trainer(config.replace(max_steps=1), progress=False)
    assert _files(tmp_path) == held, "a refused run changed the folder"

    with pytest.warns(UserWarning, match=r"overwrite=True replaced the run it held \(\d+ metric records, 2 "
                                         r"checkpoints\); removed checkpoints/step-000001, checkpoints/step-000002, "
                                         r"metrics\.jsonl, metrics\.csv"):
        result = Trainer(config.replace(max_steps=1, overwrite=True), progress=False).train()
    assert result.eval_before["accuracy"] <= 1.0 and result.steps_done == 1
    records = [json.loads(line) for line in stale.read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("eval", 0), ("train", 1), ("eval", 1)]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _small(tmp_path, **changes):
    return GRPOConfig(**{"max_steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 16,
                         "eval_size": 0, "train_size": 16, "output_dir": str(tmp_path), "save_every": 1,
                         "seed": 3, **changes})


def test_resume_with_a_config_that_changes_results_is_refused_unless_allowed(tmp_path, monkeypatch):
    Trainer(_small(tmp_path), progress=False).train()
    changed = _small(tmp_path, resume=True, seed=4, learning_rate=3e-4, max_steps=2)
    with monkeypatch.context() as patch:
        patch.setattr("calgrpo_lib.trainer.load_policy", _no_model)
        with pytest.raises(RunFolderError, match=r"step-000001' was trained with another config \(learning_rate: "
                                                 r"0\.0001 -> 0\.0003, seed: 3 -> 4\); these fields change results.*"
                                                 r"allow_config_change=True \(--allow-config-change\)"):
            Trainer(changed, progress=False)
    Trainer(_small(tmp_path, resume=True, max_steps=2, eval_every=1, save_every=2), progress=False)  # bookkeeping
    with pytest.warns(UserWarning, match=r"with a changed config \(allow_config_change=True\): learning_rate: "
                                         r"0\.0001 -> 0\.0003, seed: 3 -> 4"):
        trainer = Trainer(changed.replace(allow_config_change=True), progress=False)
    result = trainer.train()
    assert result.steps_done == 2 and [r["step"] for r in result.history] == [1, 2]
    assert trainer.optimizer.param_groups[0]["lr"] == 3e-4


def test_a_resume_skips_a_damaged_checkpoint_and_repeats_the_run(tmp_path, monkeypatch):
    config = _small(tmp_path, max_steps=3)
    expected = {r["step"]: _comparable(r) for r in Trainer(config, progress=False).train().history}
    last = tmp_path / "checkpoints" / "step-000003" / "model.safetensors"
    data = bytearray(last.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])
    last.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"resuming from step-000002.*skipped.*step-000003: model\.safetensors "
                                         r"sha256 mismatch"):
        trainer = Trainer(config.replace(resume=True), progress=False)
    assert trainer.train().steps_done == 3
    assert {r["step"]: _comparable(r) for r in _train_records(tmp_path)} == expected  # step 3 redone, bit for bit
    assert verify_checkpoint(last.parent) is None  # rewritten whole by the resumed run

    for folder in (tmp_path / "checkpoints").iterdir():
        (folder / "manifest.json").unlink()
    with monkeypatch.context() as patch:
        patch.setattr("calgrpo_lib.trainer.load_policy", _no_model)
        with pytest.raises(CheckpointError, match=r"no good checkpoint.*step-000003: no manifest\.json; step-000002: "
                                                  r"no manifest\.json; step-000001: no manifest\.json"):
            Trainer(config.replace(resume=True), progress=False)
    assert len(list((tmp_path / "checkpoints").iterdir())) == 3


def test_resume_without_a_checkpoint_starts_over(tmp_path):
    """A run killed before its first checkpoint left records only: a resume starts from step 0, saying so."""
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "accuracy": 9}\n')
    with pytest.warns(UserWarning, match=r"holds 1 metric records but no checkpoint; starting from step 0"):
        result = Trainer(_small(tmp_path, resume=True), progress=False).train()
    assert [r["step"] for r in _train_records(tmp_path)] == [1] and result.history[0]["accuracy"] <= 1.0


def test_default_preset_raises_held_out_greedy_accuracy_on_a_small_budget(tmp_path):
    """The tiny preset's learning, on half its budget: 25 steps, the full held-out set (256 problems)."""
    from calgrpo_lib.config import preset
    from calgrpo_lib.trainer import train

    result = train(preset("tiny", max_steps=25, eval_every=0, save_every=0, output_dir=str(tmp_path)),
                   progress=False)
    before, after = result.eval_before["accuracy"], result.eval_after["accuracy"]
    assert result.steps_done == 25 and after >= before + 0.05, (before, after)


def test_half_precision_trained_weights_are_warned_about_and_lora_adapters_are_not(tmp_path):
    """AdamW updates its weights in place: at small learning rates a bfloat16 weight does not move (10 steps at lr
    1e-6 changed 2% of bf16 weights, 99.95% of float32 ones), so the trainer says so; LoRA adapters are float32."""
    import warnings

    from calgrpo_lib.policy import load_policy

    p = torch.nn.Parameter((torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 0.02).bfloat16())
    start = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=1e-6)
    for _ in range(10):
        p.grad = torch.ones_like(p)
        opt.step()
    assert (p.detach() != start).float().mean() < 0.1  # the fact the warning is about
    model, tok = load_policy("tiny", device="cpu", dtype="bfloat16")
    with pytest.warns(UserWarning, match=r"trained weights are torch.bfloat16.*use dtype='float32'"):
        Trainer(_small(tmp_path / "full", learning_rate=1e-6), model=model, tokenizer=tok, progress=False)
    model, tok = load_policy("tiny", device="cpu", dtype="bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        Trainer(_small(tmp_path / "lora", use_peft=True), model=model, tokenizer=tok, progress=False)


def test_a_second_ctrl_c_while_the_interrupt_checkpoint_is_written_does_not_cut_it_short(tmp_path):
    """Ctrl-C, then Ctrl-C again while the checkpoint of the first is being written: the checkpoint is complete
    (its manifest verifies) and the run returns interrupted instead of dying inside the save."""
    trainer = Trainer(_small(tmp_path, max_steps=3), progress=False)
    save = trainer.save_checkpoint

    def save_with_a_second_signal():
        os.kill(os.getpid(), signal.SIGINT)  # lands while the checkpoint is written
        return save()

    def first_signal(event, record):
        if event == "step" and record["step"] == 1:
            trainer.save_checkpoint = save_with_a_second_signal
            os.kill(os.getpid(), signal.SIGINT)

    trainer.callbacks.append(first_signal)
    result = trainer.train()
    assert result.interrupted and result.steps_done == 1
    assert verify_checkpoint(tmp_path / "checkpoints" / "step-000001") is None
