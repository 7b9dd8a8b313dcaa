"""``doctor`` (calgrpo_lib.doctor) runs offline and never shows a secret; bench/gpu_check.sh falls back cleanly without
a GPU and its code runs on a CPU (issue 18, build items 4 and 5)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calgrpo_lib import doctor
from calgrpo_lib.doctor import doctor_report, print_doctor

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "AIzaFAKE-doctor-7hQ2xV9pLm4Rt8Kw"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE set, no Gemini key in the environment or a .env file, and no network call allowed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in doctor.KEY_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env above a fresh temporary folder

    def no_network(*args, **kwargs):
        raise AssertionError("doctor used the network although HF_HUB_OFFLINE is set")

    monkeypatch.setattr("httpx.head", no_network)


def _text(**kwargs) -> str:
    out = io.StringIO()
    print_doctor(out, **kwargs)
    return out.getvalue()


def test_doctor_runs_offline_and_prints_what_a_run_needs(offline):
    report = dict(doctor_report())
    for what in ("python", "torch", "transformers", "device", "dtype", "CUDA", "attention", "peft", "trl",
                 "accelerate", "google-genai", "vllm", "flash-attn", "Gemini key", "hub", "data folder",
                 "tiny policy"):
        assert what in report, what
    assert report["torch"] == torch.__version__
    assert report["device"].startswith(("cpu", "cuda", "mps")) and "sdpa" in report["attention"]
    assert report["hub"].startswith("offline (HF_HUB_OFFLINE=1)")
    assert report["Gemini key"].startswith("not set")
    assert report["tiny policy"].startswith("present")
    assert report["peft"].startswith("installed")  # a core dependency
    text = _text()
    assert "Gemini key" in text and text.count("\n") == len(report)


def test_doctor_never_prints_the_key(offline, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    text = _text()
    assert "set (GEMINI_API_KEY)" in text
    for part in (FAKE_KEY, FAKE_KEY[:8], "7hQ2xV9p", FAKE_KEY[-6:]):
        assert part not in text


def test_a_key_in_a_dotenv_file_is_found_and_not_shown(offline, tmp_path):
    (tmp_path / ".env").write_text(f"GEMINI_API_KEY={FAKE_KEY}\n")
    text = _text()
    assert "set (.env file)" in text and "7hQ2xV9p" not in text


def test_the_hub_is_asked_only_when_not_offline(offline, monkeypatch):
    import httpx

    calls = []

    def head(url, **kwargs):
        calls.append((url, kwargs["timeout"]))
        return httpx.Response(200)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("httpx.head", head)
    assert dict(doctor_report())["hub"].startswith("reachable")
    assert calls == [("https://huggingface.co", 3.0)]

    def unreachable(url, **kwargs):
        raise httpx.ConnectError("no route")

    monkeypatch.setattr("httpx.head", unreachable)
    assert dict(doctor_report())["hub"].startswith("not reachable (ConnectError)")


def test_a_missing_data_folder_says_how_to_set_it(offline, monkeypatch):
    monkeypatch.delenv("CALGRPO_DATA_DIR", raising=False)
    monkeypatch.setattr(doctor, "find_data_dir", lambda split: None)
    assert "set CALGRPO_DATA_DIR" in dict(doctor_report())["data folder"]


# ----------------------------------------------------------------------------------- bench/gpu_check.sh


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable, **extra}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the script would measure it")
def test_gpu_check_without_a_gpu_says_so_and_exits_0(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no CUDA GPU found; nothing measured"
    assert not (tmp_path / "r.json").exists()


def test_gpu_check_cpu_smoke_runs_the_script_s_code(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke"], capture_output=True,
                          text=True, timeout=300, env=_env(OUT=str(tmp_path)))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["cpu_smoke"] and [c["case"] for c in result["cases"]] == ["tiny-gpu", "qwen2.5-0.5b-shaped"]
    for case in result["cases"]:
        assert case["steps"] == 1 and case["peak_gib"] > 0 and case["estimate_gib"] > 0
        assert case["generation_tokens_per_s"] > 0 and set(case["median_times_s"]) >= {"time_generation", "time_step"}
        assert f"== {case['case']}" in done.stdout
    assert "estimate:" in done.stdout and "median seconds per phase" in done.stdout
