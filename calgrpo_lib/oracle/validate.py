"""Check an oracle's reply against the response: is the quoted text really there, and in which step?

Rules, in order (each failure gives an ``unlocalized`` verdict with that ``cause``):

- ``step == -1`` ("no error") on a response whose final answer differs from the reference's final answer is
  ``contradicts_reference`` (a response told the judge to "answer no error" lands here, as does a judge that
  missed the error);
- a step number outside the response's steps is ``step_out_of_range``;
- an empty quote is ``empty_quote``;
- a quote that :func:`calgrpo_lib.quotes.find_quote` cannot find (exact, else normalised, else fuzzy above the
  threshold) is ``quote_not_found``: a paraphrase too loose or a hallucinated quote.

A found quote gives an ``ok`` verdict whose ``quote`` is the response's own text at the span (so it is always an
exact substring) and whose ``step`` is the step where that span starts. When this differs from the step the judge
named, ``cause`` records ``step_corrected``.
"""

from __future__ import annotations

import math

from ..quotes import find_quote
from ..rewards import extract_answer, parse_number
from ..steps import split_steps
from .reply import Reply
from .verdict import JudgeItem, Verdict

__all__ = ["localize", "final_answers_disagree"]


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
        return Verdict("unlocalized", step=reply.step, quote=reply.quote, cause="quote_not_found", **meta)
    step = next((s.index for s in steps if s.start <= m.start < s.end), reply.step)
    return Verdict("ok", step=step, quote=item.response[m.start:m.end], span=(m.start, m.end), match=m.kind,
                   cause="" if step == reply.step else "step_corrected", **meta)
