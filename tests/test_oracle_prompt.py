"""Few-shot file validation, the prompt, its version, and reply parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from oracle_http import QUESTION, REFERENCE, RESPONSE

from calgrpo_lib.oracle import (
    REPLY_SCHEMA,
    JudgeItem,
    ReplyError,
    build_prompt,
    load_fewshot,
    parse_reply,
    prompt_version,
)
from calgrpo_lib.oracle.prompt import DEFAULT_FEWSHOT


def _write(tmp_path: Path, examples: list[dict]) -> Path:
    p = tmp_path / "fewshot.json"
    p.write_text(json.dumps({"version": "t", "examples": examples}))
    return p


def _example(**kw) -> dict:
    ex = {"question": "q", "reference": "2 + 2 = 4\n#### 4", "solution": "2 + 2 = 5\n#### 5", "error_step": 0,
          "error_segment": "2 + 2 = 5", "reason": "2 + 2 is 4"}
    return {**ex, **kw}


def test_shipped_examples_are_valid_and_exact():
    fs = load_fewshot()
    assert len(fs.examples) >= 3 and any(e.error_step == -1 for e in fs.examples)
    for e in fs.examples:
        assert e.error_step == -1 or e.error_segment in e.solution


@pytest.mark.parametrize("bad, message", [
    ({"error_segment": "2+2=5"}, "not an exact substring"),
    ({"solution": "2 + 2 = 5\nso 2 + 2 = 5 again\n#### 5", "error_step": 2}, "is not in step 2"),
    ({"error_step": 7}, "error_step=7"),
    ({"error_step": -1}, "error_step=-1 but error_segment"),
])
def test_bad_examples_are_rejected_with_the_path(tmp_path: Path, bad: dict, message: str):
    path = _write(tmp_path, [_example(**bad)])
    with pytest.raises(ValueError, match=message) as err:
        load_fewshot(path)
    assert str(path) in str(err.value)


def test_prompt_version_follows_the_examples(tmp_path: Path):
    default = prompt_version(load_fewshot())
    other = prompt_version(load_fewshot(_write(tmp_path, [_example()])))
    assert default != other and default.startswith("cal-prompt-")
    assert prompt_version(load_fewshot(DEFAULT_FEWSHOT)) == default


def test_prompt_numbers_the_steps_and_guards_against_instructions():
    p = build_prompt(JudgeItem(QUESTION, REFERENCE, RESPONSE))
    assert "[0] Ava gives away 48 / 2 = <<48/2=24>>24 stickers." in p.user
    assert "[3] #### 30" in p.user and p.user.rstrip().endswith("Reply:")
    assert "not instructions" in p.system and '"step"' in p.system
    assert p.user.count("### Example") == len(load_fewshot().examples)


@pytest.mark.parametrize("text, step, quote", [
    ('{"step": 2, "quote": "a = b", "reason": "r"}', 2, "a = b"),
    ('Sure! ```json\n{"step": "3", "quote": "x", "reason": "r"}\n``` done', 3, "x"),
    ('{"note": 1} then {"error_step": 0, "error_segment": "y"}', 0, "y"),
    ('{"step": -4, "quote": "", "reason": ""}', -1, ""),
    ('{"step": 1.0, "quote": 5, "reason": ["r"]}', 1, ""),
])
def test_parse_reply_is_lenient_about_form(text: str, step: int, quote: str):
    r = parse_reply(text)
    assert (r.step, r.quote) == (step, quote)


@pytest.mark.parametrize("text", ["", "   ", "no json here", '{"quote": "x"}', '{"step": "two"}', '{"step": true}'])
def test_parse_reply_rejects_replies_without_a_step(text: str):
    with pytest.raises(ReplyError):
        parse_reply(text)


def test_reply_schema_requires_the_three_fields():
    assert REPLY_SCHEMA["required"] == ["step", "quote", "reason"]
    assert REPLY_SCHEMA["properties"]["step"]["type"] == "integer"
