"""Shared fixtures. GSM8K comes from local files only: $CALGRPO_DATA_DIR/gsm8k, else ../shared/data/gsm8k."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gsm8k_dir() -> Path | None:
    candidates = [Path(os.environ["CALGRPO_DATA_DIR"]) / "gsm8k"] if os.environ.get("CALGRPO_DATA_DIR") else []
    candidates.append(ROOT.parent / "shared" / "data" / "gsm8k")
    return next((c for c in candidates if (c / "test.jsonl").is_file()), None)


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """The folder with GSM8K train.jsonl/test.jsonl; skipped where absent, but a failure under CI."""
    found = _gsm8k_dir()
    if found is None:
        msg = "GSM8K files not found: set CALGRPO_DATA_DIR to a folder holding gsm8k/{train,test}.jsonl"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if anything tries to load a model (the checks before model work must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the checks")

    monkeypatch.setattr("calgrpo_lib.trainer.load_policy", refuse)
    monkeypatch.setattr("calgrpo_lib.policy.load_policy", refuse)
