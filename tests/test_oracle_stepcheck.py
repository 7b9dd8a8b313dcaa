"""StepCheckOracle, the arithmetic-claim reader and the corruption function it is benchmarked with."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calgrpo_lib.arithmetic import corrupt_problems, corrupt_solution
from calgrpo_lib.claims import find_claims
from calgrpo_lib.data import find_data_dir, load_gsm8k, oracle_problems
from calgrpo_lib.oracle import (
    MISTAKE_KINDS,
    JudgeItem,
    StepCheckOracle,
    check_solution,
    error_line,
    first_error_kind,
    localization_report,
)
from calgrpo_lib.steps import split_steps
from calgrpo_lib.tasks import generate_problems


@pytest.mark.parametrize("text, ok, quote", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.", True, "48/2 = <<48/2=24>>24"),
    ("Natalia sold 48/2 = <<48/2=25>>25 clips.", False, "48/2 = <<48/2=25>>25"),
    ("She makes 9 * 2 = $<<9*2=18>>18 a day.", True, "9 * 2 = $<<9*2=18>>18"),
    ("The total is 80,000+50,000=$<<80000+50000=130000>>130,000", True, None),
    ("He pays <<3*2=7>>7 dollars", False, "<<3*2=7>>7"),
    ("So 16 - 3 - 4 = 9 eggs", True, "16 - 3 - 4 = 9"),
    ("Each costs 12 x 3 = 36", True, "12 x 3 = 36"),
    ("Each costs 12 × 3 = 35", False, "12 × 3 = 35"),
    ("Split: 84 ÷ 4 = 21", True, None),
    (r"The tank has \(120 \times 3/4 = 90\) liters.", True, r"120 \times 3/4 = 90"),
    (r"So \(48 \div 2 = 25\).", False, r"48 \div 2 = 25"),
    (r"Half is \frac{1}{2} \cdot 10 = 5", True, None),
    ("The share is 4/20*100 = 20%", True, None),
    ("That is $1,200 * 15% = $180", True, None),
    ("Each box holds 25/6 = 4 full rows", True, None),  # GSM8K rounds down counts
    ("A third is 100/3 = 33.33", True, None),
    ("A third is 100/3 = 33.43", False, None),
    ("60/2 = 30*3 = 90", True, None),  # a sloppy chain: 60/2 = 30, then 30*3 = 90
    ("2/3 * x = 12 so x = 18", None, None),  # algebra with a variable: no claim
    (r"\frac{1}{0} + 2 = 5", None, None),  # not a number: no claim, no crash
    ("She has 9 books * 2/3 = <<9*2/3=6>>6 left", True, "<<9*2/3=6>>6"),  # words cut the plain side short
])
def test_claims(text: str, ok: bool | None, quote: str | None):
    claims = find_claims(text)
    if ok is None:
        assert claims == []
        return
    assert len(claims) >= 1 and all(c.ok for c in claims) == ok
    if quote is not None:
        bad = [c for c in claims if not c.ok] or claims
        assert text[bad[0].start:bad[0].end] == quote


QUESTION = "Tom has 15 marbles. He gives 4 to Ann and then buys twice as many as he has left. How many now?"
REFERENCE = "15 - 4 = <<15-4=11>>11\n11 * 2 = <<11*2=22>>22\n11 + 22 = <<11+22=33>>33\n#### 33"


@pytest.mark.parametrize("response, step, quote, kind", [
    (REFERENCE, None, None, None),
    ("Tom has 15 - 4 = 11 left.\nHe buys 11 * 2 = 22.\nNow 11 + 22 = 33.\n#### 33", None, None, None),
    ("Tom has 15 - 4 = 11 left.\nHe buys 11 * 2 = 24.\nNow 11 + 24 = 35.\n#### 35", 1, "11 * 2 = 24", "arithmetic"),
    ("Tom has 16 - 4 = 12 left.\nHe buys 12 * 2 = 24.\nNow 12 + 24 = 36.\n#### 36", 0, "16", "unknown_number"),
    ("Tom has 15 - 4 = 11 left.\nHe buys 11 * 2 = 22.\nNow 11 + 22 = 33.\n#### 35", 3, "#### 35", "final_answer"),
    ("Left: \\(15 - 4 = 11\\).\nBought: \\(11 \\times 2 = 23\\).\n#### 34", 1, r"11 \times 2 = 23", "arithmetic"),
])
def test_check_solution_finds_the_first_error(response, step, quote, kind):
    err = check_solution(QUESTION, REFERENCE, response, reference_numbers=False)
    if step is None:
        assert err is None
        return
    assert (err.step, response[err.start:err.end], err.kind) == (step, quote, kind)
    v = StepCheckOracle().judge(QUESTION, REFERENCE, response)
    assert (v.status, v.step, v.quote) == ("ok", step, quote)


def test_corruption_marks_the_first_error():
    for p in generate_problems(50, seed=3):
        for propagate in (False, True):
            c = corrupt_solution(p.answer, random.Random(p.question), propagate=propagate)
            assert c is not None and c.text != p.answer
            steps = split_steps(c.text)
            assert len(steps) == len(split_steps(p.answer))
            assert steps[c.step].start <= c.span[0] < c.span[1] <= steps[c.step].end
            assert str(int(c.new_value)) in c.quote and c.text[:c.span[0]] == p.answer[:c.span[0]]
            if propagate and c.step == len(steps) - 2:  # the last calculation: the final answer follows it
                assert c.text.endswith(f"#### {int(c.new_value)}")
            if not propagate:
                assert c.text.splitlines()[-1] == p.answer.splitlines()[-1]


def _score(problems, n_each: int = 0):
    oracle = StepCheckOracle()
    ok = oracle.judge_batch([JudgeItem(p.question, p.answer, p.answer) for p in problems])
    reports = []
    for propagate in (False, True):
        pairs = [(p, c) for p, c in zip(problems, corrupt_problems([p.answer for p in problems], seed=1,
                                                                   propagate=propagate)) if c is not None]
        verdicts = oracle.judge_batch([JudgeItem(p.question, p.answer, c.text) for p, c in pairs])
        reports.append(localization_report(verdicts, [(c.step, c.span) for _, c in pairs], ok))
    return reports


def test_stepcheck_on_corrupted_synthetic_solutions():
    for r in _score(generate_problems(200, seed=0, split="test")):
        assert r.n_erroneous == 200 and r.error_accuracy >= 0.95 and r.false_alarm_rate <= 0.02
        assert r.quote_hit_rate >= 0.95


def test_stepcheck_on_corrupted_gsm8k_solutions(gsm8k_dir):
    problems = load_gsm8k("test", gsm8k_dir)[:300]
    for r in _score(problems):
        assert r.n_erroneous >= 290
        assert r.error_accuracy >= 0.95 and r.false_alarm_rate <= 0.02 and r.quote_hit_rate >= 0.95


def test_problem_source_falls_back_to_the_synthetic_task(tmp_path, monkeypatch):
    monkeypatch.delenv("CALGRPO_DATA_DIR", raising=False)
    problems, source = oracle_problems(5, start=tmp_path)
    assert source == "synthetic" and len(problems) == 5
    data = tmp_path / "shared" / "data" / "gsm8k"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text('{"question": "q?", "answer": "1 + 1 = <<1+1=2>>2\\n#### 2"}\n')
    assert find_data_dir(start=tmp_path / "notebooks") == (tmp_path / "shared" / "data").resolve()
    problems, source = oracle_problems(start=tmp_path / "notebooks")
    assert source == "gsm8k" and problems[0].final == 2


_PIECES = [*"0123456789 +-*/x×÷=<>$%.,(){}#abc", "\n", "\\times", "\\frac{", "<<", ">>", "#### ", "\\("]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(question=_TEXT, response=_TEXT)
def test_the_checker_never_crashes_and_quotes_exactly(question: str, response: str):
    err = check_solution(question, "#### 7", response)
    if err is not None:
        step = split_steps(response)[err.step]
        assert step.start <= err.start < err.end <= step.end
    v = StepCheckOracle().judge(question, "#### 7", response)
    assert v.status in ("ok", "no_error", "unlocalized")
    if v.status == "ok":
        assert response[v.span[0]:v.span[1]] == v.quote


def test_first_error_kind_sorts_answers_by_their_first_mistake():
    question = "Ava has 48 apples. Ava buys 4 apples. How many apples does Ava have now?"
    reference = "48 + 4 = <<48+4=52>>52\n#### 52"
    answers = {"right": reference,
               "forgotten carry": "48 + 4 = <<48+4=42>>42\n#### 42",  # the carry into the tens left out
               "arithmetic": "48 + 4 = <<48+4=53>>53\n#### 53",  # off by one: not a forgotten carry
               "unknown_number": "48 + 37 = <<48+37=85>>85\n#### 85",  # 37 is not in the question
               "final_answer": "48 + 4 = <<48+4=52>>52\n#### 50",
               "no error found": "48 - 4 = <<48-4=44>>44\n#### 44"}  # the wrong operation, right arithmetic
    assert set(answers) == set(MISTAKE_KINDS)
    for kind, answer in answers.items():
        assert first_error_kind(question, reference, 52.0, answer) == kind, kind
    assert error_line(question, reference, answers["forgotten carry"]) == "carrying line: two-digit sum"
    assert error_line(question, reference, answers["no error found"]) == "no line found"
    small = "Ava has 12 apples. Ava buys 3 apples. How many apples does Ava have now?"
    assert error_line(small, "12 + 3 = <<12+3=15>>15\n#### 15", "12 + 3 = <<12+3=16>>16\n#### 16") == (
        "line without carry: +")
