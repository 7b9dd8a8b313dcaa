"""How much of a wrong answer an error span covers: :func:`narrow_span` brings the span an oracle's quote was found at
(:func:`calgrpo_lib.quotes.find_quote`) to a granularity (:data:`SPAN_GRANULARITIES`): the quote as found, its whole
step, the erroneous calculation in it, or only the wrong number that calculation states. Character offsets in, out;
no tokens (the next map, characters -> tokens, is :mod:`.spans`).
"""

from __future__ import annotations

import re

from .arithmetic import close_enough, parse_value
from .claims import Claim, find_claims, find_numbers
from .prose_claims import find_prose_claims
from .steps import Step, split_steps
from .validation import check_choice, check_int, check_type

__all__ = ["SPAN_GRANULARITIES", "narrow_span"]

SPAN_GRANULARITIES = ("quote", "step", "claim", "result")  #: what an error span covers (see narrow_span)
_FINAL_LINE = re.compile(r"####\s*\S")
_ANNOTATION_RESULT = re.compile(r"<<[^<>=\n]*=\s*([^<>=\n]*?)\s*>>")


def _claim_at(steps: list[Step], start: int, end: int) -> Claim | None:
    """The first wrong claim overlapping ``[start, end)``, else the only one (read as the step checker reads them)."""
    claims = []
    for st in (st for st in steps if st.start < end and start < st.end):
        sym = find_claims(st.text, st.start)
        claims += sym + [p for p in find_prose_claims(st.text, st.start) if not any(
            p.start < c.end and c.start < p.end for c in sym)]
    hit = [c for c in claims if c.start < end and start < c.end]
    return next((c for c in hit if not c.ok), hit[0] if len(hit) == 1 else None)


def narrow_span(text: str, start: int, end: int, granularity: str) -> tuple[int, int, bool]:
    """The error span ``text[start:end]`` at ``granularity`` (:data:`SPAN_GRANULARITIES`): ``(start, end, reached)``.
    ``"quote"``: the span as the oracle quoted it, unchanged. ``"step"``: the whole step
    (:func:`calgrpo_lib.steps.split_steps`) holding ``start`` (or the next one). ``"claim"``: the claim overlapping
    the span (:func:`~calgrpo_lib.claims.find_claims`, then prose claims): the first wrong one, else the only one; a
    ``#### n`` line is a claim itself. ``"result"``: only the wrong number the claim states (the ``42`` of ``48 + 4
    = 42``, the ``n`` of ``#### n``); of ``<<48+4=42>>42`` the ``42`` *inside* the annotation, where it is first
    written (the shown one copies it, rightly); of ``<<48+4=52>>42`` (right annotation, another number shown) the
    shown one; of a claim that holds, a span inside one of its numbers (an ungrounded operand). Not reached: the
    next coarser span, ``reached=False`` (``claim`` -> step, ``result`` -> claim or step).
    """
    check_type("text", text, str)
    check_int("start", start, 0, len(text))
    check_int("end", end, start + 1, len(text))
    check_choice("granularity", granularity, SPAN_GRANULARITIES)
    if granularity == "quote":
        return start, end, True
    step = next((st for st in split_steps(text) if start < st.end), None)
    if step is None or granularity == "step" or (granularity == "claim" and _FINAL_LINE.match(step.text)):
        return (start, end, False) if step is None else (step.start, step.end, True)
    if _FINAL_LINE.match(step.text):
        final = find_numbers(step.text, step.start)
        return (final[0].start, final[0].end, True) if final else (step.start, step.end, False)
    claim = _claim_at(split_steps(text), max(start, step.start), end)
    if claim is None or granularity == "claim":
        return (step.start, step.end, False) if claim is None else (claim.start, claim.end, True)
    if claim.ok:  # holds: keep a span inside one of its numbers (an ungrounded operand)
        inside = [n for n in find_numbers(text[claim.start:claim.end], claim.start) if n.start <= start <= end <= n.end]
        return (inside[0].start, inside[0].end, True) if inside else (claim.start, claim.end, False)
    m = _ANNOTATION_RESULT.search(text, claim.start, claim.end) if claim.kind == "annotation" else None
    res = parse_value(m.group(1)) if m and m.group(1) else None
    if res is not None and claim.true_value is not None and not close_enough(res[0], m.group(1), claim.true_value):
        return (*m.span(1), True)  # the wrong result inside the annotation
    return claim.result.start, claim.result.end, True
