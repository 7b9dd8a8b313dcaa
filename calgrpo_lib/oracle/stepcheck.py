"""An exact, offline oracle: :class:`StepCheckOracle` re-checks every arithmetic claim of a response.

Walking the steps of ``split_steps(response)`` in order, the first step is flagged that

1. uses a number (an operand of a claim) that is neither stated in the question (digits, words, simple percentage
   and fraction forms, see :mod:`.grounding`), nor an everyday constant, nor derived by an earlier claim, nor
   (with ``reference_numbers=True``) a number of the reference solution: the quote is that number, or its
   equation when the number occurs twice in the step;
2. makes a claim whose arithmetic is wrong (:mod:`.claims`): the quote is the equation, e.g.
   ``48/2 = <<48/2=25>>25``;
3. ends with ``#### n`` where ``n`` is not the last derived value (nor any value stated or derived before, as
   GSM8K solutions sometimes finish in words): the quote is that line.

It cannot see a wrong choice of operation with right arithmetic on stated numbers, or reasoning with no
equations; it then answers "no error" (which validation turns into ``unlocalized`` when the final answer is wrong).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..rewards import extract_answer, parse_number
from ..steps import Step, split_steps
from .base import Oracle
from .cache import ReplyCache
from .claims import Claim, Number, close_enough, find_claims, parse_value
from .config import OracleConfig
from .grounding import CONSTANTS, NumberPool, stated_numbers
from .reply import reply_json
from .verdict import JudgeItem

__all__ = ["StepCheckOracle", "StepError", "check_solution"]

_FINAL = re.compile(r"^####\s*(\S.*?)\s*$")


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
        if not pool.contains(n.value, n.text):
            s, e = _number_quote(n, claim, step.text)
            why = f"{_show(n)} is neither given in the question nor computed before"
            return StepError(step.index, s, e, "unknown_number", why)
    if claim.ok:
        return None
    true = f"{claim.true_value:.6g}" if claim.true_value is not None else "something else"
    why = f"the calculation gives {true}, not {_show(claim.result)}"
    return StepError(step.index, claim.start, claim.end, "arithmetic", why)


def check_solution(question: str, reference: str, response: str, *, reference_numbers: bool = True) -> StepError | None:
    """The first erroneous step of ``response`` as a :class:`StepError`, or ``None`` (see the module docstring)."""
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
        for claim in find_claims(step.text, step.start):
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

    def __init__(self, *, reference_numbers: bool = True, config: OracleConfig | None = None,
                 cache: ReplyCache | str | Path | None = None) -> None:
        super().__init__(config=config, cache=cache)
        if not isinstance(reference_numbers, bool):
            raise TypeError(f"reference_numbers={reference_numbers!r}; allowed: True or False")
        self.reference_numbers = reference_numbers

    @property
    def model(self) -> str:
        return "stepcheck-refnums" if self.reference_numbers else "stepcheck"

    @property
    def prompt_version(self) -> str:
        return "stepcheck-1"

    def check(self, item: JudgeItem) -> StepError | None:
        """The raw :class:`StepError` for ``item`` (before the reply/validation layer)."""
        return check_solution(item.question, item.reference, item.response, reference_numbers=self.reference_numbers)

    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        err = self.check(item)
        if err is None:
            return reply_json(-1, "", "every calculation checks out")
        return reply_json(err.step, item.response[err.start:err.end], err.reason)
