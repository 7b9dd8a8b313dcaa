import json

import pytest

from calgrpo_lib.data import gsm8k_problem, load_gsm8k, load_problems


def test_local_gsm8k_records(gsm8k_dir):
    p = load_gsm8k("train", gsm8k_dir)[0]
    assert p.source == "gsm8k" and p.id == "gsm8k-train-0"
    assert p.final == 72 and isinstance(p.final, int)
    assert p.steps[0].startswith("Natalia sold 48/2")
    assert load_gsm8k("test", gsm8k_dir / "test.jsonl")[0] == load_gsm8k("test", gsm8k_dir)[0]


def test_env_var_is_the_default_path(gsm8k_dir, monkeypatch):
    monkeypatch.setenv("CALGRPO_DATA_DIR", str(gsm8k_dir.parent))
    assert len(load_gsm8k("test")) == 1319


def test_missing_file_names_the_path_and_how_to_get_data(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"no GSM8K file at .*nowhere.*load_dataset\('openai/gsm8k'"):
        load_gsm8k("test", tmp_path / "nowhere")
    monkeypatch.setenv("CALGRPO_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CALGRPO_DATA_DIR="):
        load_gsm8k("test")


def test_hub_failure_says_how_to_pass_a_local_path(monkeypatch):
    monkeypatch.delenv("CALGRPO_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-calgrpo-hf-home")
    with pytest.raises(RuntimeError, match="could not load GSM8K split='test' from the Hugging Face hub.*path="):
        load_gsm8k("test")


def test_bad_split_and_bad_record(tmp_path):
    with pytest.raises(ValueError, match="split='validation'"):
        load_gsm8k("validation")
    with pytest.raises(ValueError, match="no '#### n' final answer"):
        gsm8k_problem({"question": "q", "answer": "no final"})
    f = tmp_path / "test.jsonl"
    f.write_text(json.dumps({"question": "q", "answer": "1+1=<<1+1=2>>2\n#### 2"}) + "\n")
    assert load_gsm8k("test", tmp_path)[0].final == 2


def test_load_problems_for_both_tasks(gsm8k_dir):
    assert len(load_problems("synthetic", "test", n=7, seed=1)) == 7
    a = load_problems("gsm8k", "test", n=5, seed=1, path=gsm8k_dir)
    assert a == load_problems("gsm8k", "test", n=5, seed=1, path=gsm8k_dir) and len(a) == 5
    with pytest.raises(ValueError, match="task='math'"):
        load_problems("math")
