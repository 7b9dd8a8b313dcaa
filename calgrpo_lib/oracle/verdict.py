"""What an oracle answers: a :class:`Verdict` on one :class:`JudgeItem`.

A verdict names the *first erroneous step* of the candidate response (an index into
``calgrpo_lib.steps.split_steps(response)``), the exact text of the error (``quote``, a substring of the response,
with its character ``span``), a short ``reason`` and a ``status``:

- ``ok``: an error was found and located; ``step``, ``quote`` and ``span`` are set;
- ``no_error``: the oracle found no erroneous step;
- ``unlocalized``: the oracle answered but its answer cannot be placed in the response (quote not found, step out
  of range, unreadable reply, or "no error" on a response whose final answer contradicts the reference);
  ``step`` may still be set when the step number was valid;
- ``failed``: no answer at all (timeout, HTTP error, quota); training then falls back to sequence-level credit.

``cause`` says why a verdict is ``unlocalized`` or ``failed``; a verdict made by the fallback oracle after a
backend failure names that failure in ``fallback_from``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..validation import check_type

__all__ = ["Verdict", "JudgeItem", "STATUSES", "as_item"]

STATUSES = ("ok", "no_error", "unlocalized", "failed")


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge: the question, its reference (a full solution or just the final answer) and the
    candidate response."""

    question: str
    reference: str
    response: str

    def __post_init__(self) -> None:
        check_type("question", self.question, str)
        check_type("reference", self.reference, str)
        check_type("response", self.response, str)


def as_item(x: JudgeItem | tuple | dict) -> JudgeItem:
    """Accept a :class:`JudgeItem`, a ``(question, reference, response)`` tuple or a dict with those keys."""
    if isinstance(x, JudgeItem):
        return x
    if isinstance(x, tuple) and len(x) == 3:
        return JudgeItem(*x)
    if isinstance(x, dict):
        return JudgeItem(x["question"], x["reference"], x["response"])
    raise TypeError(f"item={x!r:.80} has type {type(x).__name__}; allowed: JudgeItem, a (question, reference, "
                    "response) tuple, or a dict with those keys")


@dataclass(frozen=True)
class Verdict:
    """The oracle's answer for one response (see the module docstring for the meaning of each status)."""

    status: str
    step: int | None = None
    quote: str = ""
    reason: str = ""
    cause: str = ""
    span: tuple[int, int] | None = None
    backend: str = ""
    model: str = ""
    cached: bool = False
    match: str = ""  # how the quote was found: "exact", "normalized", "fuzzy" (empty when not located)
    fallback_from: str = ""  # the cause of the failure this fallback verdict stands in for

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not allowed; allowed: {', '.join(map(repr, STATUSES))}")

    @property
    def predicted_step(self) -> int | None:
        """The ProcessBench-style prediction: the erroneous step, ``-1`` for "no error", ``None`` when the oracle
        gave no usable step (failed, or unlocalized without a valid step)."""
        if self.status == "no_error":
            return -1
        if self.status in ("ok", "unlocalized"):
            return self.step
        return None

    @property
    def localized(self) -> bool:
        """True when the verdict carries a span of the response to give negative credit to."""
        return self.status == "ok" and self.span is not None

    def to_dict(self) -> dict:
        """A JSON-ready dict of all fields."""
        d = asdict(self)
        d["span"] = list(self.span) if self.span is not None else None
        return d
