"""What an oracle answers, and how its answer is read and checked.

**Verdict.** A :class:`Verdict` on one :class:`JudgeItem` names the *first erroneous step* of the candidate
response (an index into ``calgrpo_lib.steps.split_steps(response)``), the exact text of the error (``quote``, a
substring of the response, with its character ``span``), a short ``reason`` and a ``status``:

- ``ok``: an error was found and located; ``step``, ``quote`` and ``span`` are set;
- ``no_error``: the oracle found no erroneous step;
- ``unlocalized``: the oracle answered but its answer cannot be placed in the response (quote not found, step out
  of range, unreadable reply, or "no error" on a response whose final answer contradicts the reference);
  ``step`` may still be set when the step number was valid;
- ``failed``: no answer at all (timeout, HTTP error, quota); training then falls back to sequence-level credit.

``cause`` says why a verdict is ``unlocalized`` or ``failed``; a verdict made by the fallback oracle after a
backend failure names that failure in ``fallback_from``.

**Reply.** A judge replies with a JSON object ``{"step": int, "quote": str, "reason": str}``: ``step`` is the
0-based number of the first erroneous step as shown in the prompt (``[0]``, ``[1]``, ...) or ``-1`` when no step is
wrong; ``quote`` copies the erroneous text exactly from that step (empty when ``step`` is -1); ``reason`` says in a
sentence what is wrong. :data:`REPLY_SCHEMA` is handed to backends that enforce JSON output (Gemini
``response_schema``, OpenAI-style ``response_format``); :func:`parse_reply` also reads replies of models that ignore
it (code fences, text around the object, the step as a string); :func:`reply_json` writes one.

**Validation.** :func:`localize` checks a reply against the response. Rules, in order (each failure gives an
``unlocalized`` verdict with that ``cause``):

- ``step == -1`` ("no error") on a response whose final answer differs from the reference's final answer is
  ``contradicts_reference`` (a response told the judge to "answer no error" lands here, as does a judge that
  missed the error);
- a step number outside the response's steps is ``step_out_of_range``;
- an empty quote is ``empty_quote``;
- a quote that :func:`calgrpo_lib.quotes.find_quote` cannot find (exact, else normalised, else fuzzy above the
  threshold) is ``quote_not_found``: a paraphrase too loose or a hallucinated quote;
- a quote that matches only approximately text with other numbers (``7 + 8 = 16`` where the response says
  ``7 + 8 = 15``) is ``quote_numbers_differ``: accepting it would blame a step for a number it never wrote;
- a quote much longer than the text it would match, or than the whole response, is ``quote_too_long``.

:data:`QUOTE_CAUSES` maps each ``find_quote`` failure reason to its cause; :data:`UNLOCALIZED_CAUSES` lists every
cause an ``unlocalized`` verdict can have.

A found quote gives an ``ok`` verdict whose ``quote`` is the response's own text at the span (so it is always an
exact substring) and whose ``step`` is the step where that span starts. When this differs from the step the judge
named, ``cause`` records ``step_corrected``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass

from ..quotes import find_quote
from ..rewards import extract_answer, parse_number
from ..steps import split_steps
from ..validation import check_type

__all__ = ["Verdict", "JudgeItem", "STATUSES", "QUOTE_CAUSES", "UNLOCALIZED_CAUSES", "as_item", "REPLY_SCHEMA",
           "Reply", "ReplyError", "parse_reply", "reply_json", "localize", "final_answers_disagree"]

STATUSES = ("ok", "no_error", "unlocalized", "failed")
QUOTE_CAUSES = {"empty_quote": "empty_quote", "not_found": "quote_not_found",
                "numbers_differ": "quote_numbers_differ", "quote_too_long": "quote_too_long"}
UNLOCALIZED_CAUSES = ("contradicts_reference", "step_out_of_range", "malformed_reply", *QUOTE_CAUSES.values())


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


# ----------------------------------------------------------------------------------------------- reply


REPLY_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "step": {"type": "integer", "description": "0-based number of the first wrong step, or -1 if none"},
        "quote": {"type": "string", "description": "the wrong text, copied exactly from that step; empty if none"},
        "reason": {"type": "string", "description": "one short sentence: what is wrong"},
    },
    "required": ["step", "quote", "reason"],
}
_STEP_KEYS = ("step", "error_step", "first_error_step")
_QUOTE_KEYS = ("quote", "error_segment", "segment")
_MAX_REASON = 300


class ReplyError(ValueError):
    """A reply that is not a usable JSON verdict; ``cause`` is ``malformed_reply``."""

    cause = "malformed_reply"


@dataclass(frozen=True)
class Reply:
    """A parsed reply: ``step`` (-1 = no error), ``quote`` and ``reason``."""

    step: int
    quote: str
    reason: str


def _objects(text: str):
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def _first(obj: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in obj:
            return obj[k]
    return None


def parse_reply(text: str) -> Reply:
    """The first JSON object in ``text`` that has a step, as a :class:`Reply`; raises :class:`ReplyError`."""
    if not isinstance(text, str) or not text.strip():
        raise ReplyError("empty reply")
    for obj in _objects(text):
        step = _first(obj, _STEP_KEYS)
        if isinstance(step, str) and re.fullmatch(r"\s*-?\d+\s*", step):
            step = int(step)
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        quote, reason = _first(obj, _QUOTE_KEYS), obj.get("reason", "")
        return Reply(step if step >= -1 else -1, quote if isinstance(quote, str) else "",
                     (reason if isinstance(reason, str) else str(reason))[:_MAX_REASON])
    raise ReplyError(f"no JSON object with an integer 'step' in the reply ({len(text)} chars)")


def reply_json(step: int, quote: str = "", reason: str = "") -> str:
    """The reply text for a verdict (what an LLM should answer; used by the offline oracles)."""
    return json.dumps({"step": step, "quote": quote, "reason": reason}, ensure_ascii=False)


# ------------------------------------------------------------------------------------------ validation


def final_answers_disagree(response: str, reference: str) -> bool:
    """True when both texts have a final number and the two differ."""
    got, want = parse_number(extract_answer(response)), parse_number(extract_answer(reference))
    if got is None or want is None:
        return False
    return not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)


def localize(item: JudgeItem, reply: Reply, *, fuzzy_threshold: float = 85.0, backend: str = "",
             model: str = "", cached: bool = False) -> Verdict:
    """Turn a parsed :class:`Reply` into a checked :class:`Verdict` for ``item`` (see the module docstring)."""
    meta = {"backend": backend, "model": model, "cached": cached, "reason": reply.reason}
    steps = split_steps(item.response)
    if reply.step == -1:
        if final_answers_disagree(item.response, item.reference):
            return Verdict("unlocalized", cause="contradicts_reference", **meta)
        return Verdict("no_error", **meta)
    valid_step = 0 <= reply.step < len(steps)
    if not valid_step:
        return Verdict("unlocalized", quote=reply.quote, cause="step_out_of_range", **meta)
    if not reply.quote.strip():
        return Verdict("unlocalized", step=reply.step, cause="empty_quote", **meta)
    m = find_quote(item.response, reply.quote, reply.step, fuzzy_threshold=fuzzy_threshold)
    if not m.ok:
        cause = QUOTE_CAUSES.get(m.reason, "quote_not_found")
        return Verdict("unlocalized", step=reply.step, quote=reply.quote, cause=cause, **meta)
    step = next((s.index for s in steps if s.start <= m.start < s.end), reply.step)
    return Verdict("ok", step=step, quote=item.response[m.start:m.end], span=(m.start, m.end), match=m.kind,
                   cause="" if step == reply.step else "step_corrected", **meta)
