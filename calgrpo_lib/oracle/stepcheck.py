"""The offline judges: :class:`StepCheckOracle`, exact, re-checks every arithmetic claim of a response;
:class:`FakeOracle`, a scripted stand-in for a remote judge, answers like it after a fixed latency.

Walking the steps of ``split_steps(response)`` in order, the first step is flagged that

1. uses a number (an operand of a claim) that is neither stated in the question (digits, words, simple percentage
   and fraction forms, see :mod:`calgrpo_lib.grounding`), nor an everyday constant, nor derived by an earlier claim, nor
   (with ``reference_numbers=True``) a number of the reference solution: the quote is that number, or its
   equation when the number occurs twice in the step. Operands written as words ("half", "twice", "a third") are
   operations, not quantities, and are not checked;
2. makes a claim whose arithmetic is wrong: the quote is the claim, e.g. ``48/2 = <<48/2=25>>25``;
3. ends with ``#### n`` where ``n`` is not the last derived value (nor any value stated or derived before, as
   GSM8K solutions sometimes finish in words): the quote is that line.

The claims of a step (:func:`step_claims`) are the symbolic ones of :mod:`calgrpo_lib.claims` (annotations,
``=`` equations, LaTeX) and, with ``prose=True`` (the default, :data:`PROSE_DEFAULT`), the arithmetic stated in
words that :mod:`calgrpo_lib.prose_claims` reads ("5 times 3 is 15", "half of 30 is 15", "5 tickets cost $4 each, so
she pays $20"), except a prose claim overlapping a symbolic one. The default is on because it is nearly free of false
alarms: on the 1,319 GSM8K test references reworded as prose (:mod:`calgrpo_lib.prose_solutions`) it flags 2
(0.15%, both real errors of the references) and finds 97.9% of injected first errors, against 19.7% with
``prose=False``; on the annotated references it adds one flag (again a real error) and changes no first-error
verdict (``bench/prose_checker.py``). ``prose`` is part of the ``prompt_version``, so cached verdicts of the two
readers never mix.

:func:`first_error_kind` sorts a policy's answer by its first error (the mistakes notebook 04 and
``bench/first_errors.py`` count before and after training), :func:`error_line` says on what kind of line it sits.

It cannot see a wrong choice of operation with right arithmetic on stated numbers, or reasoning with no
arithmetic it can read; it then answers "no error" (which validation turns into ``unlocalized`` when the final
answer is wrong).

:class:`FakeOracle` waits ``latency_s`` per call (like a remote API) and answers with ``reply(item)``; by default
the reply of a :class:`StepCheckOracle`, so its verdicts are meaningful. ``backend_calls`` counts the calls that
reached it. Pass a ``reply`` function to script a judge that paraphrases, hallucinates or obeys a prompt injection.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..arithmetic import apply_op, carry_kind, close_enough, forgotten_carry_shift, parse_value
from ..claims import Claim, Number, find_claims
from ..grounding import CONSTANTS, NumberPool, stated_numbers
from ..prose_claims import find_prose_claims
from ..rewards import extract_answer, is_correct, parse_number
from ..steps import Step, split_steps
from ..validation import check_type
from .cache import ReplyCache
from .runner import Oracle, OracleConfig
from .verdict import JudgeItem, reply_json

__all__ = ["StepCheckOracle", "StepError", "check_solution", "step_claims", "FakeOracle", "PROSE_DEFAULT",
           "MISTAKE_KINDS", "first_error_kind", "error_line"]

_FINAL = re.compile(r"^####\s*(\S.*?)\s*$")
PROSE_DEFAULT = True  #: whether the checker reads arithmetic stated in words by default (see the module docstring)


#: what :func:`first_error_kind` tells apart: a right answer; a first error that is a forgotten carry or borrow (the
#: tiny policy's trained-in misconception, ``arithmetic.forgotten_carry_shift``); another arithmetic error; a number
#: from nowhere; a wrong final line; no error found (a wrong plan with right arithmetic)
MISTAKE_KINDS = ("right", "forgotten carry", "arithmetic", "unknown_number", "final_answer", "no error found")
_ADD_SUB_CLAIM = re.compile(r"<<(\d+)([-+])(\d+)=(\d+)>>")
_CLAIM_LHS = re.compile(r"<<(\d+)([-+*/])(\d+)=")


@dataclass(frozen=True)
class StepError:
    """The first error found: its step, its span ``[start, end)`` in the response, a kind and a reason."""

    step: int
    start: int
    end: int
    kind: str  # "unknown_number", "arithmetic" or "final_answer"
    reason: str


def _number_quote(n: Number, claim: Claim, step_text: str) -> tuple[int, int]:
    """The number itself when it occurs once in its step, else its whole equation (so the quote is unambiguous)."""
    count = len(re.findall(rf"(?<![\d.,]){re.escape(n.text)}(?![\d]|[.,]\d)", step_text))
    return (n.start, n.end) if count == 1 else (claim.start, claim.end)


def _show(n: Number) -> str:
    return n.text.strip() or f"{n.value:g}"


def _final_error(step: Step, last: Number | None, seen: NumberPool) -> StepError | None:
    m = _FINAL.match(step.text)
    final = parse_value(m.group(1).split()[0].rstrip(".")) if m else None
    if final is None or last is None:
        return None
    if close_enough(final[0], m.group(1), last.value) or seen.contains(final[0], m.group(1)):
        return None
    why = f"the final answer {m.group(1)} is not the last computed value {_show(last)}"
    return StepError(step.index, step.start, step.end, "final_answer", why)


def _claim_error(step: Step, claim: Claim, pool: NumberPool) -> StepError | None:
    for n in claim.operands:
        if any(ch.isdigit() for ch in n.text) and not pool.contains(n.value, n.text):  # "half", "twice": words
            s, e = _number_quote(n, claim, step.text)
            why = f"{_show(n)} is neither given in the question nor computed before"
            return StepError(step.index, s, e, "unknown_number", why)
    if claim.ok:
        return None
    true = f"{claim.true_value:.6g}" if claim.true_value is not None else "something else"
    why = f"the calculation gives {true}, not {_show(claim.result)}"
    return StepError(step.index, claim.start, claim.end, "arithmetic", why)


def step_claims(text: str, offset: int = 0, *, prose: bool = PROSE_DEFAULT) -> list[Claim]:
    """The claims the checker re-checks in ``text``: the symbolic ones (:func:`~calgrpo_lib.claims.find_claims`) and,
    with ``prose=True``, the prose ones (:func:`~calgrpo_lib.prose_claims.find_prose_claims`) that overlap none of
    them; in order of their start."""
    claims = find_claims(text, offset)
    if prose:
        claims += [p for p in find_prose_claims(text, offset)
                   if not any(p.start < c.end and c.start < p.end for c in claims)]
    return sorted(claims, key=lambda c: c.start)


def first_error_kind(question: str, reference: str, final: float, response: str) -> str:
    """One of :data:`MISTAKE_KINDS` for ``response``: ``"right"`` when its final answer is ``final``, else the kind
    of the first error :func:`check_solution` finds, with an addition or subtraction whose result is off by exactly
    a forgotten carry or borrow told apart as ``"forgotten carry"``."""
    if is_correct(response, final):
        return "right"
    error = check_solution(question, reference, response)
    if error is None:
        return "no error found"
    m = _ADD_SUB_CLAIM.search(response[error.start:error.end]) if error.kind == "arithmetic" else None
    if m:
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        shift = forgotten_carry_shift(a, op, b)
        if shift and c == apply_op(a, op, b) + shift:
            return "forgotten carry"
    return error.kind


def error_line(question: str, reference: str, response: str) -> str:
    """Where the first error of ``response`` sits: ``"carrying line: <kind>"`` for a calculation that carries or
    borrows (``arithmetic.carry_kind``), ``"line without carry: <op>"`` otherwise, ``"no line found"`` when the
    error is not in a calculator annotation (or there is none)."""
    error = check_solution(question, reference, response)
    m = _CLAIM_LHS.search(response[error.start:error.end]) if error else None
    if m is None:
        return "no line found"
    a, op, b = int(m[1]), m[2], int(m[3])
    kind = carry_kind(a, op, b)
    return f"carrying line: {kind}" if kind else f"line without carry: {op}"


def check_solution(question: str, reference: str, response: str, *, reference_numbers: bool = True,
                   prose: bool = PROSE_DEFAULT) -> StepError | None:
    """The first erroneous step of ``response`` as a :class:`StepError`, or ``None`` (see the module docstring);
    ``prose=True`` also re-checks arithmetic stated in words."""
    check_type("reference_numbers", reference_numbers, bool)
    check_type("prose", prose, bool)
    given = stated_numbers(question) | (stated_numbers(reference) if reference_numbers else set())
    pool, seen = NumberPool(CONSTANTS | given), NumberPool(given)  # seen: stated or derived, no constants
    answer = parse_number(extract_answer(reference))
    if answer is not None:  # a final answer equal to the reference's is never the wrong step
        seen.add(answer)
    last: Number | None = None
    for step in split_steps(response):
        if _FINAL.match(step.text):
            err = _final_error(step, last, seen)
            if err is not None:
                return err
            continue
        for claim in step_claims(step.text, step.start, prose=prose):
            err = _claim_error(step, claim, pool)
            if err is not None:
                return err
            v = claim.result.value
            pool.add(v, v / 100, v * 100, 100 - v, 1 - v)
            seen.add(v, v / 100, v * 100)
            last = claim.result
    return None


class StepCheckOracle(Oracle):
    """The exact offline oracle (see the module docstring); cheap, so it runs inline without a thread pool."""

    backend = "stepcheck"
    inline = True

    def __init__(self, *, reference_numbers: bool = True, prose: bool = PROSE_DEFAULT,
                 config: OracleConfig | None = None, cache: ReplyCache | str | Path | None = None,
                 fallback: Oracle | None = None) -> None:
        super().__init__(config=config, cache=cache, fallback=fallback)
        check_type("reference_numbers", reference_numbers, bool)
        check_type("prose", prose, bool)
        self.reference_numbers = reference_numbers
        self.prose = prose

    @property
    def model(self) -> str:
        return "stepcheck-refnums" if self.reference_numbers else "stepcheck"

    @property
    def prompt_version(self) -> str:
        return "stepcheck-2+prose" if self.prose else "stepcheck-1"  # the cache keys of the two readers differ

    def check(self, item: JudgeItem) -> StepError | None:
        """The raw :class:`StepError` for ``item`` (before the reply/validation layer)."""
        return check_solution(item.question, item.reference, item.response, reference_numbers=self.reference_numbers,
                              prose=self.prose)

    def reply_text(self, item: JudgeItem) -> str:
        """The reply a judge should give for ``item``, as JSON text (:func:`~calgrpo_lib.oracle.verdict.reply_json`):
        the first error's step, its quote and the reason, or step -1 when every calculation checks out."""
        err = self.check(item)
        if err is None:
            return reply_json(-1, "", "every calculation checks out")
        return reply_json(err.step, item.response[err.start:err.end], err.reason)

    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        return self.reply_text(item)


class FakeOracle(Oracle):
    """A scripted judge with a fixed latency (see the module docstring).

    ``reply(item)`` gives the raw reply text (or raises :class:`BackendError`); default: the step checker's."""

    backend = "fake"

    def __init__(self, latency_s: float = 0.2, reply: Callable[[JudgeItem], str] | None = None, *,
                 name: str = "fake-judge", config: OracleConfig | None = None,
                 cache: ReplyCache | str | Path | None = None, fallback: Oracle | None = None) -> None:
        super().__init__(config=config, cache=cache, fallback=fallback)
        if isinstance(latency_s, bool) or not isinstance(latency_s, (int, float)) or latency_s < 0:
            raise ValueError(f"latency_s={latency_s!r}; allowed: a number >= 0")
        self.latency_s = float(latency_s)
        self.name = name
        self._reply = reply
        self._lock = threading.Lock()
        self.backend_calls = 0
        self._stepcheck = StepCheckOracle() if reply is None else None

    @property
    def model(self) -> str:
        return self.name

    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        with self._lock:
            self.backend_calls += 1
        time.sleep(self.latency_s)
        if self._reply is not None:
            return self._reply(item)
        return self._stepcheck.reply_text(item)
