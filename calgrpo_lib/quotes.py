"""From an oracle's error quote to the characters it covers: :func:`find_quote` (no torch, no tokenizer).

The oracle names a wrong answer's first mistake by step number and exact quote ("step 1: ``17 * 3 = 52``"). A
cascade finds it: the quote verbatim (``exact``); else after normalising both sides (``normalized``: whitespace,
case, curly quotes, dashes, LaTeX delimiters and ``\\times``, thousands separators, GSM8K ``<<...>>`` annotations,
a missing or extra final period); else the best approximate match above a threshold (``fuzzy``, rapidfuzz
``partial_ratio_alignment``). Normalising keeps an index map from every normalised character back to the original
characters it came from, so the span returned always indexes the *original* text. (Lower-casing, stripping
punctuation and then counting characters in the stripped text, as a public precursor did, shifts the span by every
removed character.) With several occurrences, the one in the step the oracle named wins; steps come from
:func:`calgrpo_lib.steps.split_steps`, the function the oracle numbers steps with.

A fuzzy match must not lie: the quote "``7 + 8 = 16``" scores 91 against the text "``7 + 8 = 15``", but accepting it
would blame a correct step for a number it never wrote. So a fuzzy candidate (after widening to whole words) is
accepted only if (1) its numbers, read by :func:`numbers_in` from the normalised text, equal the quote's numbers as
a sequence (same values, same order, none missing or extra; else ``numbers_differ``), and (2) the normalised quote
is at most :data:`QUOTE_LENGTH_FACTOR` times the normalised span plus :data:`QUOTE_LENGTH_SLACK` characters (else
``quote_too_long``: ``partial_ratio`` aligns the *shorter* string inside the longer, so a quote that is the whole
text plus anything scores 100). A quote that cannot fit the text at all is ``quote_too_long`` before any search:
raw, over :data:`QUOTE_LENGTH_FACTOR` x the text plus :data:`MAX_QUOTE_RAW_SLACK` characters (checked before
normalising, so a megabyte quote costs microseconds); normalised, over the factor x the whole normalised text plus
the slack (checked before rapidfuzz runs). A minus sign is read as part of a number only where it cannot be an
operator, and decimals compare by value (``15.50`` = ``15.5``); see :func:`numbers_in`. Exact and normalised matches
need no check: they are verbatim after normalisation, so their numbers agree by construction.

The next map, characters -> token indices, is :mod:`.spans`; an error span's extent (step, claim, result) is set by
:mod:`.granularity`.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from .steps import Step, split_steps
from .validation import check_float, check_int, check_type

__all__ = ["MATCH_KINDS", "FAIL_REASONS", "QUOTE_LENGTH_FACTOR", "QUOTE_LENGTH_SLACK", "MAX_QUOTE_RAW_SLACK",
           "SpanMatch", "normalize_with_map", "numbers_in", "find_quote"]

MATCH_KINDS = ("exact", "normalized", "fuzzy")
FAIL_REASONS = ("empty_quote", "not_found", "numbers_differ", "quote_too_long", "too_long")
_MIN_FUZZY_CHARS = 4  # shorter normalised quotes are only matched exactly or normalised
QUOTE_LENGTH_FACTOR = 1.5  # a fuzzy match's normalised quote may be at most this many times its normalised span...
QUOTE_LENGTH_SLACK = 6  # ... plus this many characters
MAX_QUOTE_RAW_SLACK = 64  # a raw quote over FACTOR * len(text) + this is rejected before it is even normalised

# ------------------------------------------------------------------------------------- quote -> character span


@dataclass(frozen=True)
class SpanMatch:
    """Where a quote was found: ``text[start:end]`` (original characters), how, and with what score.

    ``kind`` is ``"exact"``, ``"normalized"``, ``"fuzzy"`` or ``"none"`` (not found; then ``start == end == -1``
    and ``reason`` says why, one of :data:`FAIL_REASONS`):

    - ``"empty_quote"``: the quote is empty or only whitespace;
    - ``"not_found"``: no occurrence, and no approximate match scoring at least the threshold;
    - ``"numbers_differ"``: an approximate match scored enough, but the numbers of the text it covers are not the
      quote's numbers (``7 + 8 = 16`` against ``7 + 8 = 15``; see :func:`numbers_in`);
    - ``"quote_too_long"``: the quote is much longer (in normalised characters) than the text it would match, or
      than the whole text; a property of the quote, set by :func:`find_quote`;
    - ``"too_long"``: the span was found but covers more *tokens* than a caller allows (set by
      :func:`calgrpo_lib.spans.error_token_masks`, never by :func:`find_quote`).

    ``score`` is 100 for exact and normalised matches, the rapidfuzz similarity (0-100) for fuzzy ones, and for a
    failure the best fuzzy score seen (0 when no fuzzy search ran). ``in_step`` tells whether the span overlaps the
    step the oracle named (``None`` when no step was named or the step does not exist).
    """

    start: int
    end: int
    kind: str
    score: float
    reason: str = ""
    in_step: bool | None = None

    @property
    def ok(self) -> bool:
        """True when the quote was found."""
        return self.kind != "none"


def _failure(reason: str, score: float = 0.0) -> SpanMatch:
    return SpanMatch(-1, -1, "none", score, reason)


# Multi-character rewrites, tried at each position before the one-character rules. Each maps a match to its
# replacement; every replacement character points back at the whole match.
_REWRITES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\\(?:times|cdot|ast)(?![A-Za-z])"), "*"),
    (re.compile(r"\\div(?![A-Za-z])"), "/"),
    (re.compile(r"\\(?:left|right)(?![A-Za-z])|\\[()\[\]]|\$|\\[,;:!]"), ""),  # math delimiters and spacing
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""),  # thousands separator: 1,000 -> 1000
    (re.compile(r"(?<=\d)\.0+(?!\d)"), ""),  # 17.00 -> 17
    (re.compile(r"\s+"), " "),
]
_ANNOTATION = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotation: "= <<12+5=17>>17" reads "= 17"
_REWRITE_ANY = re.compile("|".join(f"({p.pattern})" for p, _ in _REWRITES))  # group k+1 = rule k
_CHAR_MAP = {**dict.fromkeys("‘’‚‛′`´", "'"), **dict.fromkeys("“”„‟″", '"'),
             **dict.fromkeys("‐‑‒–—―−﹣－", "-"), **dict.fromkeys("×·∗⋅✕", "*"), "÷": "/"}
_EDGE_JUNK = " .,;:!?'\""  # stripped from both ends of a normalised quote (missing / extra final period, quotes)


def _normalize_char(ch: str) -> str:
    if ch in _CHAR_MAP:
        return _CHAR_MAP[ch]
    if not ch.isascii():
        ch = unicodedata.normalize("NFKC", ch)
        ch = "".join(_CHAR_MAP.get(c, c) for c in ch)
    return ch.lower()


def _drop_spaces_near_symbols(chars: list[str], spans: list[tuple[int, int]]) -> tuple[list[str], list]:
    keep_c, keep_s = [], []
    for i, c in enumerate(chars):
        if c == " ":
            before = chars[i - 1] if i > 0 else ""
            after = chars[i + 1] if i + 1 < len(chars) else ""
            if not (before.isalnum() and after.isalnum()):
                continue
        keep_c.append(c)
        keep_s.append(spans[i])
    return keep_c, keep_s


def _append_chars(text: str, lo: int, hi: int, chars: list[str], spans: list[tuple[int, int]]) -> None:
    piece = text[lo:hi]
    if piece.isascii():
        chars += piece.lower()
        spans += [(i, i + 1) for i in range(lo, hi)]
        return
    for i in range(lo, hi):
        out = _normalize_char(text[i])
        chars += out
        spans += [(i, i + 1)] * len(out)


def normalize_with_map(text: str, *, drop_annotations: bool = True) -> tuple[str, list[tuple[int, int]]]:
    """Normalise ``text`` for matching and map every normalised character back to the original.

    Returns ``(norm, spans)`` with ``len(spans) == len(norm)``: ``norm[i]`` came from ``text[spans[i][0]:
    spans[i][1]]``. Rules: LaTeX delimiters (``\\(`` ``\\)`` ``\\[`` ``\\]`` ``$``), ``\\left``/``\\right`` and thin
    spaces ``\\,`` vanish; ``\\times``, ``\\cdot``, ``×``, ``·`` become ``*`` and ``\\div``, ``÷`` become ``/``; curly
    quotes and dashes become ASCII; thousands commas and ``.00`` decimals go; other non-ASCII is NFKC-normalised;
    runs of whitespace become one space, dropped next to a symbol (so ``12 + 5`` and ``12+5`` agree); everything is
    lower-cased; with ``drop_annotations``, GSM8K calculator annotations ``<<12+5=17>>`` vanish last (also when a
    tokenizer spaced them out as ``< < 12 + 5 = 17 > >``).
    """
    check_type("text", text, str)
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _REWRITE_ANY.finditer(text):
        _append_chars(text, pos, m.start(), chars, spans)
        out = _REWRITES[m.lastindex - 1][1]
        chars += out
        spans += [(m.start(), m.end())] * len(out)
        pos = m.end()
    _append_chars(text, pos, len(text), chars, spans)
    chars, spans = _drop_spaces_near_symbols(chars, spans)
    norm = "".join(chars)
    return _without_annotations(norm, spans) if drop_annotations else (norm, spans)


def _without_annotations(norm: str, spans: list[tuple[int, int]]) -> tuple[str, list[tuple[int, int]]]:
    keep = [True] * len(norm)
    for m in _ANNOTATION.finditer(norm):
        keep[m.start():m.end()] = [False] * (m.end() - m.start())
    return "".join(c for c, k in zip(norm, keep) if k), [sp for sp, k in zip(spans, keep) if k]


# A number: digits with an optional decimal part (or a bare ".5"), with a minus sign only where it cannot be an
# operator, i.e. not right after a letter, digit, "_", "." or a closing bracket ("10-5" is 10 and 5; "=-5" is -5).
_NUMBER = re.compile(r"(?:(?<![\w.)\]])-)?(?:\d+(?:\.\d+)?|\.\d+)")


def numbers_in(norm: str) -> tuple[Decimal, ...]:
    """The numbers of a *normalised* text (see :func:`normalize_with_map`), in order, as exact decimals.

    Normalisation has already removed thousands separators (``1,600`` -> ``1600``) and all-zero decimals (``15.0``
    -> ``15``), and turned ``\\times``, ``×``, ``·`` into ``*``; ``*``, ``x`` and ``/`` are operators, never part of a
    number (``12x25`` reads 12, 25). Values compare exactly, so ``15.50`` equals ``15.5`` and ``05`` equals ``5``. A
    minus sign belongs to the number only when it cannot be an operator: at the start, or after a symbol such as
    ``=``, ``(`` or a space-free ``+`` (``x = -5`` reads -5, ``10 - 5`` reads 10, 5). A full stop belongs to a number
    only with digits after it (``17.`` at a sentence end reads 17).
    """
    return tuple(Decimal(m.group()) for m in _NUMBER.finditer(norm))


def _occurrences(haystack: str, needle: str) -> list[int]:
    out, i = [], haystack.find(needle)
    while i >= 0:
        out.append(i)
        i = haystack.find(needle, i + 1)
    return out


def _step_rank(span: tuple[int, int], step: Step | None) -> tuple[int, int, int]:
    """Sort key: inside the step first, then overlapping it, then nearest to it; ties by position."""
    s, e = span
    if step is None:
        return (0, 0, s)
    inside = step.start <= s and e <= step.end
    overlaps = s < step.end and e > step.start
    distance = 0 if overlaps else min(abs(s - step.end), abs(step.start - e))
    return (0 if inside else 1 if overlaps else 2, distance, s)


def _best(spans: list[tuple[int, int]], step: Step | None) -> tuple[int, int] | None:
    return min(spans, key=lambda sp: _step_rank(sp, step)) if spans else None


def _overlaps(span: tuple[int, int], step: Step | None) -> bool | None:
    return None if step is None else (span[0] < step.end and span[1] > step.start)


def _fuzzy_in(norm: str, nmap: list[tuple[int, int]], nquote: str, lo: int, hi: int,
              threshold: float) -> tuple[float, tuple[int, int] | None]:
    """Best fuzzy match of ``nquote`` in ``norm[lo:hi]``: (score, original span) or (best score, None)."""
    from rapidfuzz import fuzz

    region = norm[lo:hi]
    if not region.strip():
        return 0.0, None
    al = fuzz.partial_ratio_alignment(nquote, region)
    if al is None or al.score < threshold:
        return (al.score if al is not None else 0.0), None
    ds, de = lo + al.dest_start, lo + al.dest_end
    while ds < de and norm[ds] == " ":
        ds += 1
    while de > ds and norm[de - 1] == " ":
        de -= 1
    if de <= ds:
        return al.score, None
    return al.score, (nmap[ds][0], nmap[de - 1][1])


def _too_long(nquote: str, n_chars: int) -> bool:
    """True when a normalised quote is too long to be a quote of ``n_chars`` normalised characters."""
    return len(nquote) > QUOTE_LENGTH_FACTOR * n_chars + QUOTE_LENGTH_SLACK


def _rejection(norm: str, nmap: list[tuple[int, int]], nquote: str, span: tuple[int, int]) -> str:
    """Why a fuzzy candidate (an original span, already snapped to words) must not be accepted; "" when it may."""
    starts = [s for s, _ in nmap]
    covered = norm[bisect.bisect_left(starts, span[0]):bisect.bisect_left(starts, span[1])]
    if _too_long(nquote, len(covered.strip())):
        return "quote_too_long"
    return "" if numbers_in(covered) == numbers_in(nquote) else "numbers_differ"


def _snap_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a fuzzy span so that it does not cut a word or number in two."""
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
        end += 1
    return start, end


def _norm_range(nmap: list[tuple[int, int]], step: Step) -> tuple[int, int]:
    starts = [s for s, _ in nmap]
    return bisect.bisect_left(starts, step.start), bisect.bisect_left(starts, step.end)


def _normalized_pair(text: str, quote: str) -> tuple[str, list[tuple[int, int]], str]:
    """Normalised text, its map and normalised quote. Calculator annotations are dropped from both unless the quote
    has one (then they are what it points at); if that finds nothing, the other choice is tried."""
    norm, nmap = normalize_with_map(text, drop_annotations=False)
    nquote = normalize_with_map(quote, drop_annotations=False)[0]
    dropped_text, dropped_quote = _without_annotations(norm, nmap), _without_annotations(nquote, [])[0]
    keep = (norm, nmap, nquote.strip(_EDGE_JUNK))
    drop = (*dropped_text, dropped_quote.strip(_EDGE_JUNK))
    first, second = (keep, drop) if dropped_quote != nquote else (drop, keep)
    if first[2] and first[2] in first[0]:
        return first
    return second if second[2] and second[2] in second[0] else (first if first[2] else second)


def find_quote(text: str, quote: str, step: int | None = None, *, fuzzy_threshold: float = 85.0) -> SpanMatch:
    """Find ``quote`` in ``text``; return the character span in the original ``text`` as a :class:`SpanMatch`.

    ``step`` is the 0-based step (see :func:`calgrpo_lib.steps.split_steps`) the oracle named, or ``None``. Order
    of preference: an exact occurrence in that step; a normalised one in that step; an exact one anywhere (the
    nearest to the step); a normalised one anywhere; a fuzzy match in the step; a fuzzy match anywhere (score at
    least ``fuzzy_threshold``, 0-100; quotes under 4 normalised characters are never matched fuzzily), accepted
    only when the text it covers has exactly the quote's numbers and the quote is not much longer than it (see the
    module docstring; else ``numbers_differ`` / ``quote_too_long``). A step number past the last step is treated as
    no step. Never raises on a quote that is not there: the match then has ``kind="none"`` and a ``reason``.
    """
    check_type("text", text, str)
    check_type("quote", quote, str)
    if step is not None:
        check_int("step", step, 0, None)
    check_float("fuzzy_threshold", fuzzy_threshold, 0.0, 100.0)
    if not quote.strip():
        return _failure("empty_quote")
    if len(quote) > QUOTE_LENGTH_FACTOR * len(text) + MAX_QUOTE_RAW_SLACK:  # cannot be a quote of it: skip all work
        return _failure("quote_too_long")
    steps = split_steps(text)
    target = steps[step] if step is not None and step < len(steps) else None

    ex = _best([(s, s + len(quote)) for s in _occurrences(text, quote)], target)
    if ex is not None and (target is None or _step_rank(ex, target)[0] == 0):  # nothing can beat it
        return _found(ex, "exact", 100.0, target)
    norm, nmap, nquote = _normalized_pair(text, quote)
    if not nquote:  # only punctuation (or only an annotation): verbatim or not at all
        return _found(ex, "exact", 100.0, target) if ex else _failure("not_found")
    no = _best([(nmap[s][0], nmap[s + len(nquote) - 1][1]) for s in _occurrences(norm, nquote)], target)
    candidates = [(sp, kind) for sp, kind in ((ex, "exact"), (no, "normalized")) if sp is not None]
    if target is not None:  # a match in the named step beats an exact match elsewhere
        candidates.sort(key=lambda c: _step_rank(c[0], target)[0] > 0)
    if candidates:
        return _found(candidates[0][0], candidates[0][1], 100.0, target)
    return _fuzzy_match(text, norm, nmap, nquote, target, fuzzy_threshold)


def _found(span: tuple[int, int], kind: str, score: float, target: Step | None) -> SpanMatch:
    return SpanMatch(span[0], span[1], kind, float(score), in_step=_overlaps(span, target))


def _fuzzy_match(text: str, norm: str, nmap: list[tuple[int, int]], nquote: str, target: Step | None,
                 threshold: float) -> SpanMatch:
    """Fuzzy search, in the named step first, then in the whole text; spans widened to whole words, then checked
    (numbers, length; see the module docstring). The failure reason is that of the first rejected candidate."""
    if len(nquote) < _MIN_FUZZY_CHARS:
        return _failure("not_found")
    if _too_long(nquote, len(norm)):  # longer than any span of the text could allow: no need to search
        return _failure("quote_too_long")
    best_score, reason = 0.0, ""
    regions = ([_norm_range(nmap, target)] if target is not None else []) + [(0, len(norm))]
    for lo, hi in regions:
        score, span = _fuzzy_in(norm, nmap, nquote, lo, hi, threshold)
        best_score = max(best_score, score)
        if span is None:
            continue
        span = _snap_to_words(text, *span)
        why = _rejection(norm, nmap, nquote, span)
        if not why:
            return _found(span, "fuzzy", score, target)
        reason = reason or why
    return _failure(reason or "not_found", float(best_score))
