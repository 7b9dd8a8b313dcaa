"""How well an oracle localises errors, in the ProcessBench convention, and the ProcessBench evaluation itself.

**Metric.** On solutions with a known first error (label ``l >= 0``), the oracle is right when it names that step
(prediction ``p == l``); on correct solutions (``l == -1``), when it says "no error" (``p == -1``). With ``a_e`` the
accuracy on the erroneous solutions and ``a_c`` on the correct ones, ProcessBench's F1 is their harmonic mean
``F1 = 2 a_e a_c / (a_e + a_c)`` (0 when both are 0; an empty group has accuracy 0), so an oracle that always cries
"error" (or never does) scores 0; a benchmark's score is the mean F1 over its splits (:func:`average_f1`).
:func:`harmonic_f1` is the one place this is computed. A verdict without a usable step (``failed``, or
``unlocalized`` without a valid step: ``predicted_step is None``) is wrong in both groups. The *quote hit rate*
of :func:`localization_report` is the share of erroneous solutions whose verdict carries a span overlapping the
true erroneous text: what token-level credit needs on top of the step.

**Synthetic check** (:func:`localization_quality`): any oracle against the exact step checker on the synthetic
task, whose first errors the checker knows (a noisy oracle's F1 per noise level, :class:`~.noise.NoisyOracle`).

**Offsets** (:func:`step_offsets`): an erroneous solution's prediction is ``too_early`` (``0 <= p < l``),
``right`` (``p == l``), ``too_late`` (``p > l``), ``missed`` (``p == -1``) or ``no_verdict`` (``None``); a correct
solution's is ``right`` (``p == -1``), ``false_alarm`` (``p >= 0``) or ``no_verdict``.

**What the oracle sees** (:func:`benchmark_response`): a ProcessBench sample's steps, each with its line breaks
turned into spaces, joined one per line, so that :func:`calgrpo_lib.steps.split_steps` (the numbering of the
judge prompt and of every verdict) gives back exactly those steps, ``[0]`` ... ``[n-1]``. Two cases cannot keep
that numbering (a whitespace-only step; a single step, which ``split_steps`` cuts at sentence ends), so a verdict's
step is always mapped back through character offsets (:func:`benchmark_step`): the benchmark step holding the start
of the oracle's step. ProcessBench carries no reference solution: the oracle gets an empty reference unless the
caller supplies one (:func:`gsm8k_references`: the GSM8K test solution of the same question, for the gsm8k split).

:func:`evaluate_processbench` judges a split through ``Oracle.judge_batch`` in chunks of ``chunk_size`` (concurrent
and cached by the oracle; a progress bar per chunk) and returns a :class:`ProcessBenchReport`.
"""

from __future__ import annotations

import bisect
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..arithmetic import corrupt_solution
from ..data import ProcessBenchRecord
from ..steps import split_steps
from ..tasks import Problem, TaskConfig, generate_problems
from ..validation import check_int, check_type
from .runner import Oracle
from .stepcheck import check_solution
from .verdict import JudgeItem, Verdict

__all__ = ["LocalizationReport", "localization_report", "harmonic_f1", "OFFSETS_ERRONEOUS", "OFFSETS_CORRECT",
           "step_offsets", "benchmark_response", "ProcessBenchItem", "processbench_items", "benchmark_step",
           "gsm8k_references", "ProcessBenchReport", "processbench_report", "evaluate_processbench", "average_f1",
           "offsets_table", "localization_quality"]

OFFSETS_ERRONEOUS = ("too_early", "right", "too_late", "missed", "no_verdict")
OFFSETS_CORRECT = ("right", "false_alarm", "no_verdict")
_LINE_BREAK = re.compile(r"\s*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]\s*")  # what str.splitlines splits at


def harmonic_f1(error_accuracy: float, correct_accuracy: float) -> float:
    """ProcessBench's F1: ``2 a_e a_c / (a_e + a_c)``, and 0 when ``a_e + a_c == 0``."""
    total = error_accuracy + correct_accuracy
    return 2 * error_accuracy * correct_accuracy / total if total > 0 else 0.0


@dataclass(frozen=True)
class LocalizationReport:
    """Accuracies, F1, quote hit rate and verdict statuses of one benchmark run."""

    n_erroneous: int
    n_correct: int
    error_accuracy: float
    correct_accuracy: float
    f1: float
    quote_hit_rate: float
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def false_alarm_rate(self) -> float:
        """Share of correct solutions flagged as erroneous (or not judged): ``1 - correct_accuracy``."""
        return 1.0 - self.correct_accuracy

    def __str__(self) -> str:
        return (f"first-error-step accuracy {self.error_accuracy:.2%} on {self.n_erroneous} erroneous | "
                f"'no error' accuracy {self.correct_accuracy:.2%} on {self.n_correct} correct "
                f"(false alarms {self.false_alarm_rate:.2%}) | ProcessBench F1 {self.f1:.3f} | "
                f"quote hit rate {self.quote_hit_rate:.2%}")


def _overlaps(a: tuple[int, int] | None, b: tuple[int, int]) -> bool:
    return a is not None and a[0] < b[1] and a[1] > b[0]


def localization_report(err_verdicts: Sequence[Verdict], err_truth: Sequence[tuple[int, tuple[int, int]]],
                        ok_verdicts: Sequence[Verdict] = ()) -> LocalizationReport:
    """Score verdicts on erroneous solutions (``err_truth[i] = (first error step, true span)``) and on correct
    ones (``ok_verdicts``)."""
    if len(err_verdicts) != len(err_truth):
        raise ValueError(f"len(err_verdicts)={len(err_verdicts)} but len(err_truth)={len(err_truth)}; "
                         "allowed: equal lengths")
    hits = sum(v.predicted_step == step for v, (step, _) in zip(err_verdicts, err_truth))
    quote_hits = sum(v.localized and _overlaps(v.span, span) for v, (_, span) in zip(err_verdicts, err_truth))
    fine = sum(v.predicted_step == -1 for v in ok_verdicts)
    acc_e = hits / len(err_verdicts) if err_verdicts else 0.0
    acc_c = fine / len(ok_verdicts) if ok_verdicts else 0.0
    statuses = Counter(v.status for v in [*err_verdicts, *ok_verdicts])
    return LocalizationReport(len(err_verdicts), len(ok_verdicts), acc_e, acc_c, harmonic_f1(acc_e, acc_c),
                              quote_hits / len(err_verdicts) if err_verdicts else 0.0, dict(statuses))


def localization_quality(oracle: Oracle, n: int = 200, *, n_correct: int | None = None, seed: int = 0,
                         propagate: bool = True, task: TaskConfig | None = None) -> LocalizationReport:
    """How well ``oracle`` localises first errors on the synthetic task, as a :class:`LocalizationReport`
    (``error_accuracy``: first-error step accuracy; ``f1``: :func:`harmonic_f1` with the "no error" accuracy).

    ``n`` wrong answers: reference solutions of ``generate_problems(n + n_correct, seed, "test", task)`` with one
    result made wrong (:func:`calgrpo_lib.arithmetic.corrupt_solution`; ``propagate=True``, as the tiny policy
    errs, the later lines carry the wrong value on); their first error, step and span, is the exact step checker's
    (:func:`~.stepcheck.check_solution`). ``n_correct`` (default ``n``) correct answers: the other problems'
    references, unchanged. The oracle judges all of them in one :meth:`Oracle.judge_batch`.
    """
    check_type("oracle", oracle, Oracle)
    check_int("n", n, 1, None)
    n_correct = n if n_correct is None else n_correct
    check_int("n_correct", n_correct, 0, None)
    check_int("seed", seed, 0, None)
    problems = generate_problems(n + n_correct, seed=seed, split="test", config=task)
    wrong, truth = [], []
    for i, p in enumerate(problems[:n]):
        bad = corrupt_solution(p.answer, random.Random(f"{seed}/{i}"), propagate=propagate)
        err = check_solution(p.question, p.answer, bad.text) if bad is not None else None
        if err is None:
            raise ValueError(f"problem {p.id!r} gave no checkable wrong answer; allowed: a task whose solutions have "
                             "calculator annotations (the synthetic task's always do)")
        wrong.append(JudgeItem(p.question, p.answer, bad.text))
        truth.append((err.step, (err.start, err.end)))
    right = [JudgeItem(p.question, p.answer, p.answer) for p in problems[n:]]
    verdicts = oracle.judge_batch([*wrong, *right])
    return localization_report(verdicts[:n], truth, verdicts[n:])


def step_offsets(labels: Sequence[int], predictions: Sequence[int | None]) -> dict[str, dict[str, int]]:
    """``{"erroneous": {kind: count}, "correct": {kind: count}}`` over :data:`OFFSETS_ERRONEOUS` and
    :data:`OFFSETS_CORRECT` (see the module docstring)."""
    if len(labels) != len(predictions):
        raise ValueError(f"len(labels)={len(labels)} but len(predictions)={len(predictions)}; allowed: equal lengths")
    err, ok = dict.fromkeys(OFFSETS_ERRONEOUS, 0), dict.fromkeys(OFFSETS_CORRECT, 0)
    for label, p in zip(labels, predictions):
        if label == -1:
            ok["no_verdict" if p is None else "right" if p == -1 else "false_alarm"] += 1
        else:
            kind = ("no_verdict" if p is None else "missed" if p == -1 else "right" if p == label
                    else "too_early" if p < label else "too_late")
            err[kind] += 1
    return {"erroneous": err, "correct": ok}


# ------------------------------------------------------------------------------------ what the oracle sees


def benchmark_response(steps: Sequence[str]) -> tuple[str, tuple[int, ...]]:
    """``(response, starts)``: the steps, each with its line breaks (and the spaces around them) turned into one
    space and stripped, joined by ``"\\n"``; ``starts[k]`` is where step ``k`` begins in ``response``."""
    flat = [_LINE_BREAK.sub(" ", s).strip() for s in steps]
    starts, pos = [], 0
    for s in flat:
        starts.append(pos)
        pos += len(s) + 1
    return "\n".join(flat), tuple(starts)


@dataclass(frozen=True)
class ProcessBenchItem:
    """A record as the oracle judges it: the ``reference`` it is given, the ``response`` text and where each
    benchmark step starts in it."""

    record: ProcessBenchRecord
    reference: str
    response: str
    starts: tuple[int, ...]

    @property
    def judge_item(self) -> JudgeItem:
        """``(problem, reference, response)`` as a :class:`JudgeItem`."""
        return JudgeItem(self.record.problem, self.reference, self.response)


def processbench_items(records: Sequence[ProcessBenchRecord],
                       references: Sequence[str] | None = None) -> list[ProcessBenchItem]:
    """The items to judge; ``references[i]`` is record ``i``'s reference (default: ``""`` for all, ProcessBench
    has none)."""
    refs = list(references) if references is not None else [""] * len(records)
    if len(refs) != len(records):
        raise ValueError(f"len(references)={len(refs)} but len(records)={len(records)}; allowed: equal lengths")
    return [ProcessBenchItem(r, ref, *benchmark_response(r.steps)) for r, ref in zip(records, refs)]


def benchmark_step(item: ProcessBenchItem, verdict: Verdict) -> int | None:
    """The verdict's prediction in the benchmark's numbering: ``-1`` for "no error", ``None`` for no usable step,
    else the benchmark step holding the start of the oracle's step (an index into ``split_steps(response)``)."""
    p = verdict.predicted_step
    if p is None or p == -1:
        return p
    steps = split_steps(item.response)
    if not 0 <= p < len(steps):
        return None
    return bisect.bisect_right(item.starts, steps[p].start) - 1


def _question_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def gsm8k_references(records: Sequence[ProcessBenchRecord], problems: Sequence[Problem]) -> tuple[list[str], int]:
    """``(references, joined)``: for each record, the GSM8K solution (``Problem.answer``) of the problem with the
    same question (compared with whitespace collapsed and case folded), else ``""``; ``joined`` counts the hits."""
    by_question = {_question_key(p.question): p.answer for p in problems}
    refs = [by_question.get(_question_key(r.problem), "") for r in records]
    return refs, sum(bool(r) for r in refs)


# ---------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ProcessBenchReport:
    """One split's labels and predictions (benchmark numbering), and the numbers computed from them."""

    split: str
    ids: tuple[str, ...]
    labels: tuple[int, ...]
    predictions: tuple[int | None, ...]
    statuses: dict[str, int] = field(default_factory=dict)
    reference: str = "none"  # what the oracle was given as reference
    verdicts: tuple[Verdict, ...] = ()

    @property
    def n_erroneous(self) -> int:
        return sum(label != -1 for label in self.labels)

    @property
    def n_correct(self) -> int:
        return sum(label == -1 for label in self.labels)

    @property
    def error_accuracy(self) -> float:
        """``a_e``: share of erroneous samples whose prediction is their label (0 when there are none)."""
        n = self.n_erroneous
        return sum(p == lab for lab, p in zip(self.labels, self.predictions) if lab != -1) / n if n else 0.0

    @property
    def correct_accuracy(self) -> float:
        """``a_c``: share of correct samples predicted ``-1`` (0 when there are none)."""
        n = self.n_correct
        return sum(p == -1 for lab, p in zip(self.labels, self.predictions) if lab == -1) / n if n else 0.0

    @property
    def f1(self) -> float:
        """:func:`harmonic_f1` of the two accuracies."""
        return harmonic_f1(self.error_accuracy, self.correct_accuracy)

    @property
    def offsets(self) -> dict[str, dict[str, int]]:
        """:func:`step_offsets` of the split."""
        return step_offsets(self.labels, self.predictions)

    def __str__(self) -> str:
        return (f"{self.split}: {len(self.labels)} samples | accuracy on {self.n_erroneous} erroneous "
                f"{self.error_accuracy:.1%} | on {self.n_correct} correct {self.correct_accuracy:.1%} | "
                f"F1 {self.f1:.3f} | reference: {self.reference}")

    def to_dict(self) -> dict:
        """The numbers and the per-sample predictions, JSON-ready (no verdict objects)."""
        return {"split": self.split, "n": len(self.labels), "n_erroneous": self.n_erroneous,
                "n_correct": self.n_correct, "error_accuracy": self.error_accuracy,
                "correct_accuracy": self.correct_accuracy, "f1": self.f1, "offsets": self.offsets,
                "statuses": dict(self.statuses), "reference": self.reference,
                "samples": [{"id": i, "label": lab, "predicted": p}
                            for i, lab, p in zip(self.ids, self.labels, self.predictions)]}


def processbench_report(split: str, items: Sequence[ProcessBenchItem], verdicts: Sequence[Verdict],
                        reference: str = "none") -> ProcessBenchReport:
    """The :class:`ProcessBenchReport` of ``verdicts`` on ``items`` (one verdict per item, in order)."""
    if len(items) != len(verdicts):
        raise ValueError(f"len(items)={len(items)} but len(verdicts)={len(verdicts)}; allowed: equal lengths")
    return ProcessBenchReport(split, tuple(it.record.id for it in items), tuple(it.record.label for it in items),
                              tuple(benchmark_step(it, v) for it, v in zip(items, verdicts)),
                              dict(Counter(v.status for v in verdicts)), reference, tuple(verdicts))


def evaluate_processbench(oracle: Oracle, records: Sequence[ProcessBenchRecord], *,
                          references: Sequence[str] | None = None, reference: str = "none", chunk_size: int = 32,
                          progress: bool = True) -> ProcessBenchReport:
    """Judge every record of one split with ``oracle`` (``judge_batch`` per chunk of ``chunk_size`` items, under a
    progress bar unless ``progress`` is False) and score the verdicts. ``references`` are what the oracle is given
    (default ``""`` each); ``reference`` describes them in the report."""
    check_int("chunk_size", chunk_size, 1, None)
    if not records:
        raise ValueError("records is empty; allowed: at least one ProcessBench record")
    splits = sorted({r.split for r in records})
    if len(splits) != 1:
        raise ValueError(f"records come from splits {splits}; allowed: the records of one split")
    items = processbench_items(records, references)
    from tqdm.auto import tqdm

    verdicts: list[Verdict] = []
    with tqdm(total=len(items), desc=f"ProcessBench {splits[0]}", unit="sample", disable=not progress) as bar:
        for start in range(0, len(items), chunk_size):
            chunk = items[start:start + chunk_size]
            verdicts += oracle.judge_batch([it.judge_item for it in chunk])
            bar.update(len(chunk))
    return processbench_report(splits[0], items, verdicts, reference)


def average_f1(reports: Sequence[ProcessBenchReport]) -> float:
    """The benchmark's score: the mean of the splits' F1 (0 for no split)."""
    return sum(r.f1 for r in reports) / len(reports) if reports else 0.0


def offsets_table(reports: Sequence[ProcessBenchReport]) -> str:
    """A text table, one row per split: the erroneous samples by offset kind, then the correct ones."""
    width = max([5, *(len(r.split) for r in reports)])
    err = [k.replace("_", " ") for k in OFFSETS_ERRONEOUS]
    ok = [k.replace("_", " ") for k in OFFSETS_CORRECT]
    head = (f"{'split':<{width}} | erroneous: " + "  ".join(err) + " | correct: " + "  ".join(ok))
    rows = [head, "-" * len(head)]
    for r in reports:
        o = r.offsets
        cells_e = "  ".join(f"{o['erroneous'][k]:>{len(h)}}" for k, h in zip(OFFSETS_ERRONEOUS, err))
        cells_c = "  ".join(f"{o['correct'][k]:>{len(h)}}" for k, h in zip(OFFSETS_CORRECT, ok))
        rows.append(f"{r.split:<{width}} | {'':<11}{cells_e} | {'':<9}{cells_c}")
    return "\n".join(rows)
