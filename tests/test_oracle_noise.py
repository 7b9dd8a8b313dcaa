"""NoisyOracle (calgrpo_lib.oracle.noise) and localization_quality (calgrpo_lib.oracle.evaluation): an oracle made
worse at measured rates, and the localisation quality (first-error accuracy, ProcessBench F1) each rate gives."""

from __future__ import annotations

import math
import random

import pytest

from calgrpo_lib.arithmetic import corrupt_solution
from calgrpo_lib.oracle import (
    NOISE_KINDS,
    CascadeOracle,
    JudgeItem,
    NoisyOracle,
    StepCheckOracle,
    localization_quality,
)
from calgrpo_lib.oracle.verdict import final_answers_disagree
from calgrpo_lib.steps import split_steps
from calgrpo_lib.tasks import TaskConfig, generate_problems


def _wrong_items(n: int, seed: int = 0) -> list[JudgeItem]:
    """Wrong answers of 3-5 calculation lines, the first error in any of them."""
    problems = generate_problems(n, seed=seed, split="train", config=TaskConfig(min_steps=3, max_steps=5))
    out = []
    for i, p in enumerate(problems):
        bad = corrupt_solution(p.answer, random.Random(i), propagate=True)
        out.append(JudgeItem(p.question, p.answer, bad.text))
    return out


@pytest.fixture(scope="module")
def items() -> list[JudgeItem]:
    return _wrong_items(1000)


@pytest.fixture(scope="module")
def exact(items) -> list:
    return StepCheckOracle().judge_batch(items)


def test_measured_rates_agree_with_the_configured_ones(items, exact):
    assert all(v.status == "ok" for v in exact)
    rates = {"missed": 0.2, "wrong_step": 0.15, "correct_step": 0.1}
    noisy = NoisyOracle(StepCheckOracle(), miss_rate=0.2, wrong_step_rate=0.15, correct_step_rate=0.1, seed=7)
    verdicts = noisy.judge_batch(items)
    counts = noisy.noise_counts
    n = len(items)
    assert sum(counts.values()) == n and counts["skipped"] == 0
    for kind, p in rates.items():
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[kind] - n * p) <= 4 * sigma, (kind, counts[kind], n * p)
    assert abs(counts["kept"] - n * 0.55) <= 4 * math.sqrt(n * 0.55 * 0.45)
    by = noisy.stats.answered_by
    assert by["oracle"] == counts["kept"] and all(by[f"noise_{k}"] == counts[k] for k in NOISE_KINDS)
    assert noisy.stats.requests == n and sum(noisy.stats.statuses.values()) == n

    for item, v, truth in zip(items, verdicts, exact):  # what each kind does
        kind, _ = noisy.draw(item)
        steps = split_steps(item.response)
        if kind == "kept":
            assert v == truth
        elif kind == "missed":
            disagree = final_answers_disagree(item.response, item.reference)  # what a judge's "no error" gets
            assert not v.localized and v.status == ("unlocalized" if disagree else "no_error")
            assert v.cause == ("contradicts_reference" if disagree else "")
        else:
            assert v.localized and v.step != truth.step and v.quote == steps[v.step].text
            assert v.span == (steps[v.step].start, steps[v.step].end)
            later = v.step > truth.step
            if kind == "wrong_step":
                assert later or truth.step == len(steps) - 1
            else:
                assert not later or truth.step == 0


def test_the_noise_depends_on_seed_and_item_only(items):
    make = lambda seed: NoisyOracle(StepCheckOracle(), miss_rate=0.3, wrong_step_rate=0.3, seed=seed)  # noqa: E731
    forward = make(1).judge_batch(items[:200])
    backward = make(1).judge_batch(items[:200][::-1])[::-1]
    assert forward == backward
    one_by_one = make(1)
    assert [one_by_one.judge_batch([it])[0] for it in items[:50]] == forward[:50]
    assert make(2).judge_batch(items[:200]) != forward


def test_zero_noise_passes_everything_through(items, exact):
    noisy = NoisyOracle(StepCheckOracle())
    assert noisy.judge_batch(items[:100]) == exact[:100]
    assert noisy.noise_counts == {"kept": 100, "missed": 0, "wrong_step": 0, "correct_step": 0, "skipped": 0}


def test_verdicts_that_are_not_ok_pass_through_and_one_step_is_skipped():
    p = generate_problems(1, seed=0)[0]
    right = JudgeItem(p.question, p.answer, p.answer)  # no error: no_error passes through, not counted
    one_step = JudgeItem("Ava has 2 apples and buys 3.", "2 + 3 = <<2+3=5>>5\n#### 5", "2 + 3 = 6")
    noisy = NoisyOracle(StepCheckOracle(), wrong_step_rate=1.0)
    v_right, v_one = noisy.judge_batch([right, one_step])
    assert v_right.status == "no_error"
    assert v_one.status == "ok" and v_one.step == 0  # nowhere else to go
    assert noisy.noise_counts["skipped"] == 1 and noisy.noise_counts["wrong_step"] == 0


def test_a_miss_on_an_answer_agreeing_with_the_reference_is_no_error():
    item = JudgeItem("Ava has 2 apples and buys 3.", "#### 5", "2 + 3 = <<2+3=6>>6\n#### 5")
    v = NoisyOracle(StepCheckOracle(), miss_rate=1.0).judge(*vars(item).values())
    assert v.status == "no_error" and v.span is None


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"miss_rate": 1.5}, r"miss_rate=1.5 is out of range; allowed: a number in \[0.0, 1.0\]"),
    ({"wrong_step_rate": -0.1}, r"wrong_step_rate=-0.1 is out of range"),
    ({"correct_step_rate": float("nan")}, r"correct_step_rate=nan is not a finite number"),
    ({"miss_rate": 0.5, "wrong_step_rate": 0.4, "correct_step_rate": 0.2},
     r"miss_rate=0.5 \+ wrong_step_rate=0.4 \+ correct_step_rate=0.2 = 1.1; allowed: rates whose sum is <= 1"),
    ({"seed": -1}, r"seed=-1 is out of range"),
])
def test_bad_rates_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoisyOracle(StepCheckOracle(), **kwargs)


def test_only_an_oracle_can_be_wrapped():
    with pytest.raises(TypeError, match="oracle has type str; allowed: an Oracle"):
        NoisyOracle("stepcheck")
    cascade = NoisyOracle(CascadeOracle(judge=StepCheckOracle()), miss_rate=0.5)  # any oracle, composites too
    assert cascade.model.startswith("noisy(") and "miss_rate=0.5" in repr(cascade)


def test_localization_quality_falls_as_noise_rises():
    exact = localization_quality(StepCheckOracle(), n=150, seed=1)
    assert (exact.error_accuracy, exact.correct_accuracy, exact.f1, exact.quote_hit_rate) == (1.0, 1.0, 1.0, 1.0)
    assert (exact.n_erroneous, exact.n_correct) == (150, 150)
    assert localization_quality(NoisyOracle(StepCheckOracle()), n=150, seed=1).f1 == 1.0
    f1s = []
    for level in (0.0, 0.2, 0.4, 0.6):
        noisy = NoisyOracle(StepCheckOracle(), miss_rate=level / 2, wrong_step_rate=level / 4,
                            correct_step_rate=level / 4, seed=3)
        report = localization_quality(noisy, n=150, seed=1)
        assert report.correct_accuracy == 1.0  # no error on a correct answer: nothing to spoil
        assert report.error_accuracy == pytest.approx(1 - level, abs=4 * math.sqrt(level * (1 - level) / 150) + 1e-9)
        f1s.append(report.f1)
    assert f1s[0] == 1.0 and all(a > b for a, b in zip(f1s, f1s[1:])), f1s


def test_localization_quality_checks_its_arguments():
    with pytest.raises(TypeError, match="oracle=None has type NoneType; allowed: Oracle"):
        localization_quality(None)
    with pytest.raises(ValueError, match="n=0 is out of range"):
        localization_quality(StepCheckOracle(), n=0)
