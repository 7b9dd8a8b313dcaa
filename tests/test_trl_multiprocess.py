"""``accelerate launch -m calgrpo_lib train --engine trl`` with 2 processes on the CPU (gloo), then ``--resume``.

The shipped tiny policy, 2 prompts x 4 completions a step (4 completions per process) of at most 48 tokens at
temperature 1.5 (most of them wrong, with a span the exact step checker finds), the shipped
``calgrpo_lib/accelerate_configs/cpu_2proc.yaml``. Each launch prints one line per process with its own counts
(``calgrpo[rank r/2]: ...``), which the test holds against TRL's logged ``cal/*`` metrics (summed over processes)
in the checkpoint's ``trainer_state.json``. About 15 s per launch on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "calgrpo_lib" / "accelerate_configs" / "cpu_2proc.yaml"
PROMPTS, G, PROCESSES = 2, 4, 2
RANK_LINE = re.compile(r"calgrpo\[rank (\d)/(\d)\]: (\d+) completions, (\d+) wrong, (\d+) judged, "
                       r"(\d+) oracle requests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, max_steps: int, *more: str) -> tuple[str, dict[int, tuple[int, int, int, int]]]:
    """Run one 2-process launch; its output and, per rank, (completions, wrong, judged, oracle requests)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--main_process_port",
           str(_free_port()), "-m", "calgrpo_lib", "train", "--engine", "trl", "--device", "cpu", "--credit-mode",
           "cal_hybrid", "--prompts-per-step", str(PROMPTS), "--num-generations", str(G), "--max-new-tokens", "48",
           "--temperature", "1.5", "--train-size", "16", "--learning-rate", "1e-3", "--max-steps", str(max_steps),
           "--save-every", "2", "--output-dir", str(out), *more]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    ranks = {int(m[1]): tuple(int(x) for x in m.groups()[2:]) for m in RANK_LINE.finditer(output)}
    assert all(int(m[2]) == PROCESSES for m in RANK_LINE.finditer(output))
    assert sorted(ranks) == list(range(PROCESSES)), output[-4000:]  # every process trained and reported
    assert output.count("trl engine: ") == 1  # the summary, once (main process)
    return output, ranks


def _history(checkpoint: Path) -> tuple[int, list[dict]]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state["global_step"], [r for r in state["log_history"] if "cal/completions" in r]


def test_two_processes_judge_their_own_completions_checkpoint_once_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _, ranks = _launch(out, 2)
    # one checkpoint folder for the save step (written by the main process), holding each rank's RNG state
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2"]
    assert sorted(p.name for p in (out / "checkpoint-2").glob("rng_state_*.pth")) == ["rng_state_0.pth",
                                                                                        "rng_state_1.pth"]
    step, logs = _history(out / "checkpoint-2")
    assert step == 2 and [r["step"] for r in logs] == [1, 2]
    # the metrics are gathered: each step's cal/completions is the global batch, not one process's share
    assert all(r["cal/completions"] == PROMPTS * G for r in logs)
    # each process saw its own half of every batch and judged its own wrong completions, once each
    for completions, wrong, judged, requests in ranks.values():
        assert completions == 2 * PROMPTS * G // PROCESSES
        assert judged == wrong == requests
    logged_wrong = sum(r["cal/wrong"] for r in logs)  # the wrong completions of the global batches
    assert logged_wrong > 0
    assert sum(v[3] for v in ranks.values()) == logged_wrong == sum(r["cal/judged"] for r in logs)
    assert all(r["cal/oracle_calls"] + r["cal/oracle_cache_hits"] == r["cal/judged"] for r in logs)
    assert sum(r["cal/error_tokens"] for r in logs) > 0  # spans were found and used

    # a second launch continues from checkpoint-2 to step 3: only step 3 runs
    output, ranks = _launch(out, 3, "--resume")
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2",
                                                                                        "checkpoint-3"]
    step, logs = _history(out / "checkpoint-3")
    assert step == 3 and [r["step"] for r in logs] == [1, 2, 3]
    assert all(v[0] == PROMPTS * G // PROCESSES for v in ranks.values()), output[-2000:]
    assert sum(v[3] for v in ranks.values()) == logs[-1]["cal/wrong"] == logs[-1]["cal/judged"]


def test_the_accelerate_configs_ship_as_package_data() -> None:
    import tomllib
    from fnmatch import fnmatch

    import yaml

    shipped = sorted(p.name for p in CONFIG.parent.glob("*.yaml"))
    assert shipped == ["cpu_2proc.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "multi_gpu.yaml",
                       "single_gpu.yaml"]
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["calgrpo_lib"]
    for name in shipped:
        assert any(fnmatch(f"accelerate_configs/{name}", pattern) for pattern in data), name
        config = yaml.safe_load((CONFIG.parent / name).read_text())
        assert config["num_processes"] >= 1 and config["distributed_type"] in ("NO", "MULTI_GPU", "DEEPSPEED")
    assert yaml.safe_load(CONFIG.read_text())["num_processes"] == PROCESSES
