"""Arithmetic stated in prose: the reader (prose_claims), the rewording of GSM8K references (prose_solutions) and
the step checker using both."""

from __future__ import annotations

import random

import pytest

from calgrpo_lib.claims import find_claims
from calgrpo_lib.oracle import JudgeItem, StepCheckOracle, check_solution
from calgrpo_lib.oracle.stepcheck import PROSE_DEFAULT, step_claims
from calgrpo_lib.prose_claims import find_prose_claims
from calgrpo_lib.prose_solutions import prose_mistake, reword_solution
from calgrpo_lib.steps import split_steps


@pytest.mark.parametrize("text, claim, operands, result, ok", [
    ("So 5 times 3 is 15 apples.", "5 times 3 is 15", ["5", "3"], "15", True),
    ("5 multiplied by 3 equals 16", "5 multiplied by 3 equals 16", ["5", "3"], "16", False),
    ("12 plus 3 makes 15", "12 plus 3 makes 15", ["12", "3"], "15", True),
    ("20 minus 5 is 15", "20 minus 5 is 15", ["20", "5"], "15", True),
    ("30 divided by 2 is 14", "30 divided by 2 is 14", ["30", "2"], "14", False),
    ("Then half of 30 is 15.", "half of 30 is 15", ["half", "30"], "15", True),
    ("a third of 12 is 4", "a third of 12 is 4", ["a third", "12"], "4", True),
    ("two thirds of 9 is 7", "two thirds of 9 is 7", ["two thirds", "9"], "7", False),
    ("twice 8 is 16", "twice 8 is 16", ["twice", "8"], "16", True),
    ("25% of 80 = 20", "25% of 80 = 20", ["25%", "80"], "20", True),
    ("25 percent of 80 is 21", "25 percent of 80 is 21", ["25 percent", "80"], "21", False),
    ("3/4 of 12 is 9", "3/4 of 12 is 9", ["3", "4", "12"], "9", True),
    ("$4 times 5 is $20", "$4 times 5 is $20", ["$4", "5"], "$20", True),
    ("5 boxes of 12 eggs is 60 eggs", "5 boxes of 12 eggs is 60", ["5", "12"], "60", True),
    ("5 boxes of 12 eggs is 50 eggs", "5 boxes of 12 eggs is 50", ["5", "12"], "50", False),
    ("5 apples at $4 each, so $20", "5 apples at $4 each, so $20", ["5", "$4"], "$20", True),
    ("5 tickets cost $4 each, so she pays $24", "5 tickets cost $4 each, so she pays $24", ["5", "$4"], "$24", False),
    ("20 sheep + 160 sheep + 80 sheep = 260 sheep", "20 sheep + 160 sheep + 80 sheep = 260", ["20", "160", "80"],
     "260", True),
    ("1,200 minus 200 comes to 1,000", "1,200 minus 200 comes to 1,000", ["1,200", "200"], "1,000", True),
    ("12 divided by 48 is 25%", "12 divided by 48 is 25%", ["12", "48"], "25%", True),
    ("5 times 3, which is 15 eggs", "5 times 3, which is 15", ["5", "3"], "15", True),
    ("2 plus 3 times 4 is 20", "2 plus 3 times 4 is 20", ["2", "3", "4"], "20", True),  # left to right
    ("2 plus 3 times 4 is 14", "2 plus 3 times 4 is 14", ["2", "3", "4"], "14", True),  # precedence
    ("2 plus 3 times 4 is 15", "2 plus 3 times 4 is 15", ["2", "3", "4"], "15", False),
    ("100 divided by 3 is 33.33", "100 divided by 3 is 33.33", ["100", "3"], "33.33", True),  # rounded
])
def test_each_form_is_read_with_exact_spans(text, claim, operands, result, ok):
    claims = find_prose_claims(text)
    assert len(claims) == 1
    c = claims[0]
    assert (text[c.start:c.end], [text[n.start:n.end] for n in c.operands]) == (claim, operands)
    assert [n.text for n in c.operands] == operands and text[c.result.start:c.result.end] == result
    assert (c.ok, c.kind) == (ok, "prose")


def test_offsets_are_shifted_and_values_kept():
    (c,) = find_prose_claims("xx $4 times 5 is $21", offset=100)
    assert (c.start, c.end, c.result.value, c.true_value, c.ok) == (103, 120, 21.0, 20.0, False)
    assert [(n.value, n.start, n.end) for n in c.operands] == [(4.0, 103, 105), (5.0, 112, 113)]
    (p,) = find_prose_claims("25% of 80 = 20")
    assert p.operands[0].percent and p.operands[0].value == 25.0


@pytest.mark.parametrize("text", [
    "He runs 3 times a week.", "She is 15 years old.", "one of the 5 boys is 12", "12 more than 3 is 15",
    "12 more than 3 times 2 is 18", "5 times 3 is 15 more than 0", "He has 3 times as many as 5 is 9",
    "5 times 3 is about 16", "5 times 3 is 16 percent", "2 times 3 is 6 dozen", "2 times 3 dozen is 6",
    "5 boxes of 12 eggs is 60 boxes", "5 tickets cost $4 each, so she gets $25 back",
    "Since 2/5 is equal to 12.8 hectares", "2L + 8 = 22", "3r + 5w = 42", "60g * 4/5 = 240g/5 = 48",
    "his 25 classmates + his 1 teacher + 1 himself = 27 people", "He sprints 3 times 3 is 9 times a week",
    "so that's 60 divided by 4 is 16 4-packs", "Nikita = (1/2) 278 + 11 = 150 points", "<<3*4=13>>13",
    "6 is the 2nd of 12", "He is 5 and 3 times 4 is 12",
])
def test_quiet_when_unsure(text):
    assert find_prose_claims(text) == []


def test_reader_errors_name_the_parameter_and_what_is_allowed():
    with pytest.raises(TypeError, match=r"text=3 has type int; allowed: str"):
        find_prose_claims(3)
    with pytest.raises(ValueError, match=r"offset=-1 is out of range; allowed: an int >= 0"):
        find_prose_claims("5 times 3 is 15", offset=-1)


# ------------------------------------------------------------------------------------------------ the checker

QUESTION = "Tom buys 5 boxes of 12 eggs. He eats a third of them and sells the rest at $2 each. How much does he get?"
REFERENCE = "5 * 12 = <<5*12=60>>60\n60 / 3 = <<60/3=20>>20\n60 - 20 = <<60-20=40>>40\n40 * 2 = <<40*2=80>>80\n#### 80"
PROSE = ["5 boxes of 12 eggs is 60 eggs.", "He eats a third of 60, which is 20 eggs.",
         "So 60 minus 20 is 40 eggs.", "40 eggs at $2 each, so he earns $80.", "#### 80"]


@pytest.mark.parametrize("line, wrong, quote", [
    (1, "He eats a third of 60, which is 25 eggs.", "a third of 60, which is 25"),
    (2, "So 60 minus 20 is 30 eggs.", "60 minus 20 is 30"),
    (3, "40 eggs at $2 each, so he earns $90.", "40 eggs at $2 each, so he earns $90"),
    (0, "5 boxes of 12 eggs is 50 eggs.", "5 boxes of 12 eggs is 50"),
])
def test_the_checker_finds_the_first_error_in_prose(line, wrong, quote):
    steps = list(PROSE)
    steps[line] = wrong
    text = "\n".join(steps)
    err = check_solution(QUESTION, REFERENCE, text)
    assert (err.step, text[err.start:err.end], err.kind) == (line, quote, "arithmetic")
    assert check_solution(QUESTION, REFERENCE, text, prose=False) is None  # no "=": the symbolic reader sees nothing
    v = StepCheckOracle().judge(QUESTION, REFERENCE, text)
    assert (v.status, v.step, v.quote) == ("ok", line, quote)


def test_the_checker_stays_quiet_on_correct_prose_and_grounds_digits_only():
    assert check_solution(QUESTION, REFERENCE, "\n".join(PROSE)) is None
    err = check_solution(QUESTION, REFERENCE, "5 boxes of 13 eggs is 65 eggs.\n#### 65", reference_numbers=False)
    assert (err.kind, err.step) == ("unknown_number", 0)  # 13 is stated nowhere; "a third" is a word, not checked


def test_prose_claims_overlapping_symbolic_ones_are_dropped():
    text = "So 9 * 2 = 18. Then 5 times 3 is 15 and 2 * 3 is 6"
    claims = step_claims(text, prose=True)
    assert [(c.kind, text[c.start:c.end]) for c in claims] == [("equation", "9 * 2 = 18"), ("prose", "5 times 3 is 15")]
    assert [text[c.start:c.end] for c in find_prose_claims(text)] == ["9 * 2 = 18", "5 times 3 is 15"]
    assert step_claims(text, prose=False) == find_claims(text)


def test_prose_option_is_validated_and_keys_the_cache():
    assert PROSE_DEFAULT is True and StepCheckOracle().prose is True
    on, off = StepCheckOracle(), StepCheckOracle(prose=False)
    assert on.prompt_version != off.prompt_version
    item = JudgeItem(QUESTION, REFERENCE, "\n".join(PROSE))
    assert on.cache_key(item) != off.cache_key(item)
    with pytest.raises(TypeError, match=r"prose='yes' has type str; allowed: bool"):
        StepCheckOracle(prose="yes")
    with pytest.raises(TypeError, match=r"prose=1 has type int; allowed: bool"):
        check_solution(QUESTION, REFERENCE, "x", prose=1)


# ------------------------------------------------------------------------------------------------ rewording

ANSWER = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
          "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n#### 18")


def test_reword_drops_annotations_keeps_lines_and_is_seeded():
    texts = {reword_solution(ANSWER, seed) for seed in range(12)}
    assert len(texts) > 1  # varied wordings
    for seed in range(12):
        text = reword_solution(ANSWER, seed)
        assert text == reword_solution(ANSWER, random.Random(seed)) == reword_solution(ANSWER, seed)
        assert "<<" not in text and "=" not in text and text.endswith("So the answer is 18.")
        assert len(split_steps(text)) == len(split_steps(ANSWER)) and "$18" in text
        assert check_solution("Janet’s ducks lay 16 eggs. She eats 3 and bakes with 4, sells at $2.", ANSWER,
                              text) is None


def test_reword_writes_annotations_without_words_around_them():
    text = reword_solution("He has <<3*2=6>>6 dollars\n#### 6", 0)
    (c,) = find_prose_claims(text.splitlines()[0])
    assert c.ok and c.result.value == 6 and "<<" not in text


def test_prose_mistake_marks_the_first_wrong_step(gsm8k_dir):
    from calgrpo_lib.data import load_gsm8k

    problems = load_gsm8k("test", gsm8k_dir)[:60]
    right = total = 0
    for i, p in enumerate(problems):
        assert check_solution(p.question, p.answer, reword_solution(p.answer, i)) is None
        for propagate in (False, True):
            got = prose_mistake(p.answer, i, propagate=propagate)
            assert got == prose_mistake(p.answer, random.Random(i), propagate=propagate)  # deterministic
            if got is None:
                continue
            text, step = got
            assert "<<" not in text and 0 <= step < len(split_steps(text)) == len(split_steps(p.answer))
            err = check_solution(p.question, p.answer, text)
            total += 1
            right += err is not None and err.step == step
    assert total >= 110 and right / total >= 0.95


def test_prose_mistake_none_without_a_calculation_and_validated():
    assert prose_mistake("He has 6 dollars\n#### 6", 0) is None
    with pytest.raises(TypeError, match=r"rng='a' has type str; allowed: an int seed or a random.Random"):
        reword_solution(ANSWER, "a")
    with pytest.raises(TypeError, match=r"answer=None has type NoneType; allowed: str"):
        reword_solution(None)
    with pytest.raises(TypeError, match=r"propagate='no' has type str; allowed: bool"):
        prose_mistake(ANSWER, 0, propagate="no")


def test_prose_benchmark_is_processbench_shaped_seeded_and_labelled(gsm8k_dir):
    from calgrpo_lib.data import load_gsm8k
    from calgrpo_lib.oracle import StepCheckOracle, evaluate_processbench
    from calgrpo_lib.prose_solutions import prose_benchmark

    rows = [(p.question, p.answer) for p in load_gsm8k("test", gsm8k_dir)[:40]]
    records = prose_benchmark(rows, seed=3)
    assert records == prose_benchmark(rows, seed=3) and records != prose_benchmark(rows, seed=4)
    assert [r.id for r in records] == [f"prose-{i}" for i in range(40)]
    assert sum(r.erroneous for r in records) == 20 and all(r.split == "gsm8k" for r in records)
    assert all(-1 <= r.label < len(r.steps) for r in records)
    assert all("<<" not in s and "####" not in s for r in records for s in r.steps)
    assert all(r.final_answer_correct for r in records if not r.erroneous)
    assert sum(r.erroneous for r in prose_benchmark(rows, error_share=0.25)) == 10
    assert not any(r.erroneous for r in prose_benchmark(rows, error_share=0.0))
    report = evaluate_processbench(StepCheckOracle(), records, progress=False)
    assert report.offsets["erroneous"]["missed"] <= 2 and report.correct_accuracy >= 0.95  # the exact checker
    with pytest.raises(ValueError, match=r"error_share=1.5 is out of range"):
        prose_benchmark(rows, error_share=1.5)
    with pytest.raises(TypeError, match=r"problems\[0\] answer"):
        prose_benchmark([("q", 3)])
