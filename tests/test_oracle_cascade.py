"""CascadeOracle: the step checker first, a judge for the rest; the rules, the judge's faults, validation, counts,
and a ProcessBench evaluation on the shared fixture whose F1 equals a hand computation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from oracle_http import QUESTION, REFERENCE, RESPONSE
from processbench_fixture import hand_f1, write_benchmark

from calgrpo_lib.data import load_processbench
from calgrpo_lib.oracle import (
    BackendError,
    FakeOracle,
    JudgeItem,
    OracleConfig,
    QuotaExhausted,
    ReplyCache,
    StepCheckOracle,
    Verdict,
    evaluate_processbench,
    processbench_items,
    reply_json,
)
from calgrpo_lib.oracle.cascade import CASCADE_RULES, CascadeOracle, combine_verdicts
from calgrpo_lib.steps import split_steps

# RESPONSE: step 1 ("48 - 24 = 25") is its first arithmetic error; the checker flags it.
STEPS = [s.text for s in split_steps(RESPONSE)]
CORRECT = "Ava gives away 48 / 2 = <<48/2=24>>24 stickers.\nShe keeps 24 + 5 = <<24+5=29>>29.\n#### 29"
FAST = OracleConfig(retries=0, timeout_s=5.0)


def _judge(step: int, quote: str = "", **kw) -> FakeOracle:
    return FakeOracle(0.0, lambda item: reply_json(step, quote, "scripted"), **kw)


def test_rules_are_documented_and_combine_by_hand():
    assert CASCADE_RULES == ("earlier", "checker_first")
    checker_at_2 = Verdict("ok", step=2, quote="x", span=(5, 6), backend="stepcheck")
    judge_at_0 = Verdict("ok", step=0, quote="y", span=(0, 1), backend="fake")
    judge_at_3 = Verdict("ok", step=3, quote="z", span=(9, 10), backend="fake")
    none = Verdict("no_error", backend="fake")
    failed = Verdict("failed", cause="http_503", backend="fake")
    assert combine_verdicts(checker_at_2, judge_at_0) == (judge_at_0, "judge")  # the earlier step wins
    assert combine_verdicts(checker_at_2, judge_at_3) == (checker_at_2, "checker")
    assert combine_verdicts(checker_at_2, judge_at_0, "checker_first") == (checker_at_2, "checker")
    assert combine_verdicts(checker_at_2, none) == (checker_at_2, "checker")  # a slip the judge did not see
    assert combine_verdicts(Verdict("no_error"), judge_at_3) == (judge_at_3, "judge")
    assert combine_verdicts(Verdict("no_error"), none) == (none, "judge")
    v, stage = combine_verdicts(Verdict("no_error", backend="stepcheck"), failed)
    assert (v.status, v.backend, v.fallback_from, stage) == ("no_error", "stepcheck", "http_503", "checker")
    assert combine_verdicts(checker_at_2, None) == (checker_at_2, "checker")
    with pytest.raises(ValueError, match=r"rule='latest' is not allowed; allowed: 'earlier', 'checker_first'"):
        combine_verdicts(checker_at_2, none, "latest")


def test_an_earlier_mistake_of_another_kind_comes_from_the_judge():
    judge = _judge(0, STEPS[0], name="plan-judge")
    v = CascadeOracle(judge).judge(QUESTION, REFERENCE, RESPONSE)
    assert (v.status, v.step, v.quote, v.backend) == ("ok", 0, STEPS[0], "fake")
    assert judge.backend_calls == 1


def test_checker_first_settles_a_flagged_step_without_the_judge():
    judge = _judge(0, STEPS[0])
    oracle = CascadeOracle(judge, rule="checker_first")
    v = oracle.judge(QUESTION, REFERENCE, RESPONSE)
    assert (v.status, v.step, v.quote, v.backend) == ("ok", 1, "48 - 24 = 25", "stepcheck")
    assert judge.backend_calls == 0 and oracle.stats.calls == 0
    assert oracle.stats.answered_by == {"checker": 1}


def test_a_flag_at_step_0_is_never_sent_on_and_a_clean_answer_goes_to_the_judge():
    slip0 = "Ava gives away 48 / 2 = 25 stickers.\nShe has 25 + 5 = 30.\n#### 30"
    judge = _judge(1, "24 + 5 = <<24+5=29>>29")
    oracle = CascadeOracle(judge)
    first, second = oracle.judge_batch([(QUESTION, REFERENCE, slip0), (QUESTION, REFERENCE, CORRECT)])
    assert (first.step, first.backend) == (0, "stepcheck")
    assert (second.status, second.step, second.backend) == ("ok", 1, "fake")  # the judge's (wrong) flag answers
    assert judge.backend_calls == 1
    assert oracle.stats.answered_by == {"checker": 1, "judge": 1}
    assert oracle.stats.statuses == {"ok": 2} and oracle.stats.requests == 2


def test_judge_faults_leave_the_checkers_verdict_counted_as_fallbacks():
    def broken(item):
        raise BackendError("http_503", "overloaded", retryable=False, status=503)

    oracle = CascadeOracle(FakeOracle(0.0, broken, config=FAST))
    verdicts = oracle.judge_batch([(QUESTION, REFERENCE, RESPONSE), (QUESTION, REFERENCE, CORRECT)])
    assert [(v.status, v.step, v.backend, v.fallback_from) for v in verdicts] == [
        ("ok", 1, "stepcheck", "http_503"), ("no_error", None, "stepcheck", "http_503")]
    assert oracle.stats.failures == {"http_503": 2} and oracle.stats.calls == 2 and oracle.stats.fallbacks == 2
    summary = oracle.stats.summary()
    assert summary["failures_by_cause"] == {"http_503": 2} and summary["answered_by"] == {"checker": 2}


def test_a_hung_judge_cannot_hold_the_cascade_past_its_deadline():
    cfg = OracleConfig(retries=0, timeout_s=0.2, batch_timeout_s=0.3)
    oracle = CascadeOracle(FakeOracle(3.0, config=cfg))
    t0 = time.monotonic()
    v = oracle.judge(QUESTION, REFERENCE, RESPONSE)
    assert time.monotonic() - t0 < 1.5
    assert (v.status, v.step, v.backend, v.fallback_from) == ("ok", 1, "stepcheck", "timeout")
    assert oracle.stats.abandoned == 1 and oracle.stats.failures == {"timeout": 1}


def test_a_quota_stop_of_the_judge_is_the_cascades_and_resumes():
    def quota(item):
        raise QuotaExhausted("per day")

    oracle = CascadeOracle(FakeOracle(0.0, quota, config=FAST))
    oracle.judge(QUESTION, REFERENCE, CORRECT)
    assert oracle.stopped == "quota_exhausted"
    v = oracle.judge(QUESTION, REFERENCE, RESPONSE)  # the checker answers alone
    assert (v.status, v.step, v.backend) == ("ok", 1, "stepcheck")
    oracle.resume()
    assert oracle.stopped == ""


def test_the_judges_replies_are_validated_as_everywhere():
    def malformed(item):
        return "I think step two is wrong"

    oracle = CascadeOracle(FakeOracle(0.0, malformed))
    flagged, clean = oracle.judge_batch([(QUESTION, REFERENCE, RESPONSE), (QUESTION, REFERENCE, CORRECT)])
    assert (flagged.status, flagged.backend) == ("ok", "stepcheck")
    assert (clean.status, clean.cause) == ("unlocalized", "malformed_reply")
    hallucinated = CascadeOracle(_judge(0, "Ava sells 9 stickers")).judge(QUESTION, REFERENCE, CORRECT)
    assert (hallucinated.status, hallucinated.cause) == ("unlocalized", "quote_not_found")
    assert CascadeOracle(_judge(7, "x")).judge(QUESTION, REFERENCE, CORRECT).cause == "step_out_of_range"


def test_construction_errors_name_the_parameter():
    with pytest.raises(TypeError, match="judge has type str; allowed: an Oracle"):
        CascadeOracle("gemini")
    with pytest.raises(TypeError, match="checker has type int; allowed: an Oracle"):
        CascadeOracle(_judge(0), checker=3)
    with pytest.raises(ValueError, match=r"rule='both' is not allowed; allowed: 'earlier', 'checker_first'"):
        CascadeOracle(_judge(0), rule="both")
    same = _judge(0)
    with pytest.raises(ValueError, match="judge and checker are the same oracle"):
        CascadeOracle(same, checker=same)


def test_the_judges_cache_answers_a_repeated_batch_and_step_counts_show_the_stages(tmp_path: Path):
    judge = _judge(0, STEPS[0], cache=ReplyCache(tmp_path / "c.sqlite"))
    oracle = CascadeOracle(judge)
    items = [JudgeItem(QUESTION, REFERENCE, RESPONSE)]
    before = oracle.stats.snapshot()
    oracle.judge_batch(items)
    counts = oracle.stats.step_counts(before)
    assert counts["calls"] == 1 and counts["answered_by_judge"] == 1 and "answered_by_checker" not in counts
    before = oracle.stats.snapshot()
    oracle.judge_batch(items)
    counts = oracle.stats.step_counts(before)
    assert (counts["calls"], counts["cache_hits"], counts["answered_by_judge"]) == (0, 1, 1)
    assert judge.backend_calls == 1
    assert "cascade-earlier" in oracle.prompt_version and oracle.model == "stepcheck-refnums+fake-judge"


def test_processbench_f1_of_a_cascade_equals_the_hand_computation(gsm8k_dir: Path, tmp_path: Path):
    """The judge is scripted to name each sample's true first error (a perfect judge of the steps): the cascade
    keeps the checker's flags except where the judge names an earlier step, and takes the judge's answer where the
    checker flags nothing."""
    records = load_processbench("gsm8k", write_benchmark(gsm8k_dir, tmp_path))
    items = processbench_items(records)
    truth = {it.response: r.label for it, r in zip(items, records)}

    def perfect(item):
        label = truth[item.response]
        return reply_json(label, split_steps(item.response)[label].text if label >= 0 else "", "scripted")

    checker = evaluate_processbench(StepCheckOracle(), records, progress=False)
    cascade = evaluate_processbench(CascadeOracle(FakeOracle(0.0, perfect)), records, progress=False)
    labels = [r.label for r in records]
    by_hand = []
    for label, v in zip(labels, checker.verdicts):
        c = v.step
        by_hand.append((label if label != -1 and label < c else c) if v.status == "ok" else label)
    preds = [v.predicted_step for v in cascade.verdicts]
    assert preds == by_hand
    acc_e, acc_c, f1 = hand_f1(labels, preds)
    assert (cascade.error_accuracy, cascade.correct_accuracy, cascade.f1) == pytest.approx((acc_e, acc_c, f1))
    assert cascade.f1 > checker.f1  # the judge finds the wrong operation the checker cannot see
    assert cascade.offsets["erroneous"]["missed"] == 0
