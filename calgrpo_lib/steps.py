"""Split a solution into numbered steps, keeping exact character offsets.

A *step* is one non-empty line of a solution (GSM8K puts one calculation per line; the final ``#### n`` line is a
step too, so a wrong final answer can be pointed at). A solution written as a single paragraph is split at
sentence ends instead. Offsets always index the original text, so ``text[s.start:s.end] == s.text``.

Both the oracle (which numbers the steps in its prompt) and the span finder (which prefers a quote found in the
step the oracle named) use this one function, so they agree on what "step 3" is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Step", "split_steps", "numbered_steps"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$(\\])")


@dataclass(frozen=True)
class Step:
    """One step of a solution: its 0-based index and its character span ``[start, end)`` in the original text."""

    index: int
    start: int
    end: int
    text: str


def _stripped_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    trail = len(piece) - len(piece.rstrip())
    s, e = start + lead, end - trail
    return [(s, e)] if e > s else []


def split_steps(text: str) -> list[Step]:
    """Return the steps of ``text``: its non-empty lines, or its sentences when it has a single line."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in text.splitlines(keepends=True):
        spans += _stripped_pieces(text, pos, pos + len(line))
        pos += len(line)
    if len(spans) == 1:
        s, e = spans[0]
        cuts = [m.start() + s for m in _SENTENCE_END.finditer(text[s:e])]
        if cuts:
            bounds = [s, *cuts, e]
            spans = [p for a, b in zip(bounds, bounds[1:]) for p in _stripped_pieces(text, a, b)]
    return [Step(i, a, b, text[a:b]) for i, (a, b) in enumerate(spans)]


def numbered_steps(text: str) -> str:
    """Render the steps as ``[0] ...`` lines, the form in which an oracle sees a response."""
    return "\n".join(f"[{s.index}] {s.text}" for s in split_steps(text))
