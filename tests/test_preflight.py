"""Every check before model work: a bad path, model folder, device, oracle prerequisite or seed fails at once,
with a message that names the field and the value, and no model is loaded (issue 22, finding 5)."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch

from calgrpo_lib.cli import main
from calgrpo_lib.config import GRPOConfig
from calgrpo_lib.preflight import PreflightError, preflight


def _fails(config: GRPOConfig, *fragments: str) -> str:
    """Build a Trainer from ``config`` (the way every run starts); it must fail in preflight naming ``fragments``."""
    from calgrpo_lib.trainer import Trainer

    with pytest.raises(PreflightError) as info:
        Trainer(config, progress=False)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def _run(tmp_path, **fields) -> GRPOConfig:
    return GRPOConfig(output_dir=str(tmp_path / "run"), **fields)


def test_a_missing_gsm8k_path_names_the_field_and_the_path(tmp_path, no_model_load):
    missing = tmp_path / "nowhere"
    _fails(_run(tmp_path, task="gsm8k", data_path=str(missing)), f"data_path={str(missing)!r}", "no GSM8K file at")


def test_an_empty_gsm8k_file_is_named(tmp_path, no_model_load):
    empty = tmp_path / "train.jsonl"
    empty.write_text("\n")
    _fails(_run(tmp_path, task="gsm8k", data_path=str(empty), eval_size=0), str(empty), "holds no GSM8K record")


def test_a_malformed_gsm8k_line_is_named_with_file_and_line_number(tmp_path, gsm8k_dir, no_model_load):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    good = (gsm8k_dir / "train.jsonl").read_text().splitlines()[0]
    (folder / "train.jsonl").write_text(good + "\n" + good[:-20] + "\n")  # line 2 cut short
    (folder / "test.jsonl").write_text(good + "\n")
    _fails(_run(tmp_path, task="gsm8k", data_path=str(folder)), f"{folder / 'train.jsonl'}, line 2: not JSON")


def test_a_gsm8k_record_without_a_final_answer_is_named(tmp_path, no_model_load):
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"question": "q?", "answer": "no final line"}) + "\n")
    _fails(_run(tmp_path, task="gsm8k", data_path=str(bad), eval_size=0), f"{bad}, line 1", "'#### n'")


def test_a_folder_that_is_not_a_model_is_named(tmp_path, no_model_load):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    _fails(_run(tmp_path, model=str(folder)), f"model={str(folder)!r}", "not a model folder",
           "config.json, weights, tokenizer")


def test_a_path_that_does_not_exist_is_not_taken_for_a_hub_id(tmp_path, no_model_load):
    _fails(_run(tmp_path, model="./no/such/model"), "model='./no/such/model' is not a folder")


def test_an_offline_hub_id_not_in_the_cache_is_named(tmp_path, monkeypatch, no_model_load):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    _fails(_run(tmp_path, model="Qwen/Qwen2.5-0.5B-Instruct"), "model='Qwen/Qwen2.5-0.5B-Instruct' is a hub id",
           "HF_HUB_OFFLINE")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused(tmp_path, no_model_load):
    _fails(_run(tmp_path, device="cuda"), "device='cuda'", "no CUDA GPU", "allowed here: 'cpu' or 'auto'")


@pytest.mark.parametrize("oracle", ["openai", "local"])
def test_an_llm_oracle_without_a_model_is_refused(tmp_path, oracle, no_model_load):
    _fails(_run(tmp_path, oracle=oracle), f"oracle={oracle!r} needs oracle_model", "oracle_model=None")


def test_a_local_judge_that_is_not_a_model_is_refused(tmp_path, no_model_load):
    _fails(_run(tmp_path, oracle="local", oracle_model=str(tmp_path)), f"oracle_model={str(tmp_path)!r}")


def test_an_openai_base_url_must_be_http(tmp_path, no_model_load):
    _fails(_run(tmp_path, oracle="openai", oracle_model="m", oracle_base_url="localhost:8000"),
           "oracle_base_url='localhost:8000' is not an http(s) URL")


def test_gemini_without_a_key_is_refused_before_model_work(tmp_path, monkeypatch, no_model_load):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file above
    _fails(_run(tmp_path, oracle="gemini"), "oracle='gemini' needs an API key", "GEMINI_API_KEY")


def test_gemini_with_a_key_passes_and_the_key_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-secret-preflight-key")
    preflight(_run(tmp_path, oracle="gemini"))  # no problem
    config = _run(tmp_path, oracle="gemini", oracle_cache=str(tmp_path / "file" / "cache.sqlite"))
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(PreflightError) as info:
        preflight(config)
    assert "AIza-secret-preflight-key" not in str(info.value)


def test_a_corrupt_cache_file_is_named(tmp_path, monkeypatch, no_model_load):
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"this is not a database" * 100)
    _fails(_run(tmp_path, oracle="gemini", oracle_cache=str(cache)), f"oracle_cache={str(cache)!r}",
           "not a readable SQLite file")


def test_a_good_cache_file_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    cache = tmp_path / "cache.sqlite"
    sqlite3.connect(cache).execute("CREATE TABLE t (x)").connection.close()
    preflight(_run(tmp_path, oracle="gemini", oracle_cache=str(cache)))


def test_a_cache_folder_that_cannot_be_created_is_named(tmp_path, monkeypatch, no_model_load):
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    path = blocker / "sub" / "cache.sqlite"
    _fails(_run(tmp_path, oracle="gemini", oracle_cache=str(path)), f"oracle_cache={str(path)!r}",
           "cannot be created or written")


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, no_model_load):
    file = tmp_path / "run"
    file.write_text("x")
    _fails(GRPOConfig(output_dir=str(file)), f"output_dir={str(file)!r} is a file")


def test_every_problem_is_listed_at_once(tmp_path, monkeypatch, no_model_load):
    message = _fails(_run(tmp_path, oracle="openai", model=str(tmp_path), task="gsm8k",
                          data_path=str(tmp_path / "none")),
                     "3 problems found", "model=", "data_path=", "oracle_model=None")
    assert message.count("\n  - ") == 3


def test_the_cli_prints_preflight_problems_and_exits_2(tmp_path, capsys, no_model_load):
    missing = tmp_path / "none.jsonl"
    assert main(["train", "--task", "gsm8k", "--data-path", str(missing), "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("calgrpo: error: 1 problem found before the run started (no model was loaded)")
    assert f"data_path={str(missing)!r}" in err and "Traceback" not in err


def test_the_default_config_passes(tmp_path):
    preflight(_run(tmp_path))


def test_a_seed_too_large_for_the_rng_is_refused_by_the_config():
    with pytest.raises(ValueError, match=r"seed=4294967296 is out of range; allowed: an int in \[0, 4294967295\]"):
        GRPOConfig(seed=2**32)


@pytest.mark.parametrize("field, value, fragment", [
    ("seed", -1, "seed=-1 is out of range"),
    ("learning_rate", 0.0, "learning_rate=0.0 is out of range"),
    ("output_dir", "", "output_dir='' is empty"),
    ("data_path", 123, "data_path=123 has type int"),
    ("extra", [1], "extra=[1] has type list"),
    ("credit_mode", "cal_hybrid", None),  # a valid assignment goes through
])
def test_assigning_a_field_is_checked_and_a_bad_value_leaves_the_config_unchanged(field, value, fragment):
    config = GRPOConfig()
    old = getattr(config, field)
    if fragment is None:
        setattr(config, field, value)
        assert getattr(config, field) == value
        return
    with pytest.raises((TypeError, ValueError), match=fragment.replace("[", r"\[").replace("(", r"\(")):
        setattr(config, field, value)
    assert getattr(config, field) == old


def test_assigning_an_unknown_field_is_refused():
    config = GRPOConfig()
    with pytest.raises(AttributeError, match="no field 'learnig_rate'"):
        config.learnig_rate = 1e-3
