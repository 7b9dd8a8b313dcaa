"""From an oracle's error quote to the tokens it covers.

The oracle names a wrong answer's first mistake by step number and exact quote ("step 1: ``17 * 3 = 52``"). To put
negative credit on those tokens we need two maps, and both must be exact:

1. **quote -> character span** (:func:`find_quote`). A cascade: the quote verbatim (``exact``); else after
   normalising both sides (``normalized``: whitespace, case, curly quotes, dashes, LaTeX delimiters and ``\\times``,
   thousands separators, GSM8K ``<<...>>`` annotations, a missing or extra final period); else the best
   approximate match above a threshold (``fuzzy``, rapidfuzz ``partial_ratio_alignment``). Normalising keeps an
   index map from every normalised character back to the original characters it came from, so the span returned
   always indexes the *original* text. (Lower-casing, stripping punctuation and then counting characters in the
   stripped text, as a public precursor did, shifts the span by every removed character.) With several
   occurrences, the one in the step the oracle named wins; steps come from :func:`calgrpo_lib.steps.split_steps`,
   the function the oracle numbers steps with.
2. **character span -> token indices** (:func:`token_char_offsets`, :func:`span_to_token_mask`). Offsets are
   computed for the *generated token ids*: the text is their decoding; when the ids decoded one by one add up to
   that text, their lengths are the offsets; else, if re-tokenizing the text gives back the same ids, the fast
   tokenizer's offset mapping is used; otherwise the offsets come from decoding growing prefixes of the ids.
   Re-tokenizing prefixes of the *text* (``len(tok(text[:start]))``) is wrong: a prefix ending in a space or cut
   inside a word tokenizes differently from the whole, and sampled ids need not be the canonical tokenization.

Conventions for offsets ``(start, end)`` of a response's tokens, in characters of the decoded text:

- they tile the text: characters between two tokens' offsets (a space a tokenizer left out) go to the *next*
  token, trailing ones to the last token;
- a character whose UTF-8 bytes are split across tokens (byte-level BPE) is in the span of *every* such token;
- special tokens (EOS, padding, chat-template markers: anything ``decode(skip_special_tokens=True)`` drops) get
  the empty span ``(p, p)`` and so never enter a mask; so do ids the tokenizer does not know (a model whose
  vocabulary is padded beyond the tokenizer's), which decode to nothing;
- a token partly inside a character span counts as inside (credit on a whole token is the finest we can give).

:func:`error_token_masks` does all of it for a batch and returns the ``(N, T)`` bool mask the credit functions
take, plus :class:`SpanStats`. A wrong answer whose row is all False falls back to sequence credit downstream.
"""

from __future__ import annotations

import bisect
import itertools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from .steps import Step, split_steps
from .validation import check_choice, check_float, check_int, check_type

__all__ = ["MATCH_KINDS", "FAIL_REASONS", "SpanMatch", "SpanStats", "normalize_with_map", "find_quote",
           "token_char_offsets", "token_texts", "span_to_token_mask", "decode_responses", "encode_responses",
           "error_token_masks"]

MATCH_KINDS = ("exact", "normalized", "fuzzy")
FAIL_REASONS = ("empty_quote", "not_found", "too_long")
OFFSET_METHODS = ("auto", "reencode", "incremental")
_MIN_FUZZY_CHARS = 4  # shorter normalised quotes are only matched exactly or normalised

# ------------------------------------------------------------------------------------- quote -> character span


@dataclass(frozen=True)
class SpanMatch:
    """Where a quote was found: ``text[start:end]`` (original characters), how, and with what score.

    ``kind`` is ``"exact"``, ``"normalized"``, ``"fuzzy"`` or ``"none"`` (not found; then ``start == end == -1``
    and ``reason`` says why: ``"empty_quote"``, ``"not_found"``, or ``"too_long"`` when the span covered more tokens
    than allowed). ``score`` is 100 for exact and normalised matches, the rapidfuzz similarity (0-100) for fuzzy
    ones, and for a failure the best fuzzy score seen. ``in_step`` tells whether the span overlaps the step the
    oracle named (``None`` when no step was named or the step does not exist).
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
    least ``fuzzy_threshold``, 0-100; quotes under 4 normalised characters are never matched fuzzily). A step
    number past the last step is treated as no step. Never raises on a quote that is not there: the match then
    has ``kind="none"`` and a ``reason``.
    """
    check_type("text", text, str)
    check_type("quote", quote, str)
    if step is not None:
        check_int("step", step, 0, None)
    check_float("fuzzy_threshold", fuzzy_threshold, 0.0, 100.0)
    if not quote.strip():
        return _failure("empty_quote")
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
    """Fuzzy search, in the named step first, then in the whole text; spans widened to whole words."""
    if len(nquote) < _MIN_FUZZY_CHARS:
        return _failure("not_found")
    best_score = 0.0
    regions = ([_norm_range(nmap, target)] if target is not None else []) + [(0, len(norm))]
    for lo, hi in regions:
        score, span = _fuzzy_in(norm, nmap, nquote, lo, hi, threshold)
        best_score = max(best_score, score)
        if span is not None:
            return _found(_snap_to_words(text, *span), "fuzzy", score, target)
    return _failure("not_found", float(best_score))


# --------------------------------------------------------------------------------- token ids -> char offsets


def _backend(tokenizer: Any):
    """The raw ``tokenizers.Tokenizer`` of a fast tokenizer (or the raw tokenizer itself)."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return backend
    raise TypeError(f"tokenizer has type {type(tokenizer).__name__}; allowed: a fast (Rust-backed) transformers "
                    "tokenizer or a tokenizers.Tokenizer, which give offsets")


def _special_ids(tokenizer: Any, backend: Any) -> frozenset[int]:
    ids = {i for i, tok in backend.get_added_tokens_decoder().items() if tok.special}
    ids.update(getattr(tokenizer, "all_special_ids", ()) or ())
    return frozenset(ids)


def _as_ids(name: str, token_ids: Any) -> list[int]:
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() != 1:
            raise ValueError(f"{name} has shape {tuple(token_ids.shape)}; allowed: one response, a 1-D tensor")
        token_ids = token_ids.tolist()
    check_type(name, token_ids, (list, tuple))
    for i, t in enumerate(token_ids):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"{name}[{i}]={t!r}; allowed: non-negative int token ids")
    return list(token_ids)


def _tile(offsets: list[tuple[int, int]], n_chars: int) -> list[tuple[int, int]]:
    """Give gaps between tokens to the next token and trailing characters to the last one."""
    out, prev = [], 0
    for s, e in offsets:
        s = prev if s > prev else s
        e = max(e, s)
        out.append((s, e))
        prev = max(prev, e)
    if out and out[-1][1] < n_chars:
        out[-1] = (out[-1][0], n_chars)
    return out


def _common_prefix_len(a: str, b: str, hint: int) -> int:
    i = hint if a.startswith(b[:hint]) else 0
    n = min(len(a), len(b))
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _offsets_from_pieces(pieces: list[str]) -> list[tuple[int, int]]:
    ends = list(itertools.accumulate(len(p) for p in pieces))
    return [(e - len(p), e) for p, e in zip(pieces, ends)]


def _incremental_offsets(backend: Any, ids: list[int], text: str) -> list[tuple[int, int]]:
    """Offsets from decoding growing prefixes of ``ids``: token i spans what prefix i+1 adds to prefix i.

    A prefix ending inside a multi-byte character decodes with a replacement character where ``text`` has the real
    one; the token then also covers that character, as does the token that completes it.
    """
    prefixes = backend.decode_batch([ids[: i + 1] for i in range(len(ids))], skip_special_tokens=True)
    out, committed = [], 0
    for p in prefixes:
        c = _common_prefix_len(p, text, committed)
        c = max(c, committed)
        pending = len(p) > c and c < len(text)
        out.append((committed, c + 1 if pending else c))
        committed = c
    return _tile(out, len(text))


def _drop_invisible(backend: Any, ids: list[int], offsets: list) -> list[tuple[int, int]]:
    """Empty the span of a token that starts where the next one starts but decodes to nothing.

    Metaspace tokenizers prepend ``▁`` to the text; when it is a token of its own, the offset mapping gives it the
    first character, which belongs to the next token (the decoder drops that ``▁``). Tokens sharing a split
    multi-byte character decode to a replacement character, not to nothing, and keep their span.
    """
    out = [tuple(o) for o in offsets]
    shared = [j for j in range(len(out) - 1) if out[j][0] == out[j + 1][0] and out[j][1] > out[j][0]]
    if shared:
        pieces = backend.decode_batch([[ids[j]] for j in shared], skip_special_tokens=True)
        for j, piece in zip(shared, pieces):
            if piece == "":
                out[j] = (out[j][0], out[j][0])
    return out


def _content_offsets(backend: Any, contents: list[list[int]], method: str) -> tuple[list[str], list[list], list[str]]:
    """Texts, offsets and the method used for each id list (special tokens already removed).

    ``"pieces"``: the ids decoded one by one concatenate to the text (byte-level BPE without a split character), so
    their lengths are the offsets; ``"reencode"``: re-tokenizing the text gives back the ids, so its offset mapping
    applies; ``"incremental"``: decoding growing prefixes of the ids. ``method`` "auto" tries them in this order.
    """
    texts = backend.decode_batch(contents, skip_special_tokens=True) if contents else []
    offsets: list = [None] * len(contents)
    used = ["incremental"] * len(contents)
    if method != "reencode":
        flat = backend.decode_batch([[t] for ids in contents for t in ids], skip_special_tokens=True)
        starts = list(itertools.accumulate((len(ids) for ids in contents), initial=0))
        for k, text in enumerate(texts):
            pieces = flat[starts[k]:starts[k + 1]]
            if "".join(pieces) == text:
                offsets[k], used[k] = _offsets_from_pieces(pieces), "pieces"
    todo = [k for k in range(len(contents)) if offsets[k] is None]
    if method != "incremental" and todo:
        encodings = backend.encode_batch([texts[k] for k in todo], add_special_tokens=False)
        for k, enc in zip(todo, encodings):
            if enc.ids == contents[k]:
                offsets[k] = _tile(_drop_invisible(backend, contents[k], enc.offsets), len(texts[k]))
                used[k] = "reencode"
            elif method == "reencode":
                raise ValueError(f"method='reencode' but re-tokenizing the decoded text {texts[k][:40]!r}... does not "
                                 "give back the ids; allowed: 'auto' or 'incremental' for non-canonical ids")
    for k in range(len(contents)):
        if offsets[k] is None:
            offsets[k] = _incremental_offsets(backend, contents[k], texts[k])
    return texts, offsets, used


def _with_special(ids: list[int], special: frozenset[int], offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, it, pos = [], iter(offsets), 0
    for t in ids:
        if t in special:
            out.append((pos, pos))
        else:
            s, e = next(it)
            out.append((s, e))
            pos = e
    return out


def _batch_offsets(tokenizer: Any, rows: list[list[int]], method: str = "auto"):
    backend = _backend(tokenizer)
    special = _special_ids(tokenizer, backend)
    contents = [[t for t in ids if t not in special] for ids in rows]
    texts, offsets, used = _content_offsets(backend, contents, method)
    return texts, [_with_special(ids, special, off) for ids, off in zip(rows, offsets)], used


def token_char_offsets(tokenizer: Any, token_ids: Any, *, method: str = "auto") -> tuple[str, list[tuple[int, int]]]:
    """Decode one response's generated ids and give each id its ``(start, end)`` character span in that text.

    ``tokenizer`` is a fast ``transformers`` tokenizer or a ``tokenizers.Tokenizer``; ``token_ids`` a list or 1-D
    tensor of the response's ids only (no prompt, no padding: use :func:`error_token_masks` for padded batches).
    The text is ``decode(ids, skip_special_tokens=True)`` without clean-up, the text an oracle should be shown
    (see :func:`decode_responses`). ``method``: ``"auto"`` takes the lengths of the ids decoded one by one when
    they add up to the text, else the offset mapping of re-tokenizing the text when that gives back the same ids,
    else decodes growing prefixes of the ids; ``"reencode"`` forces the offset mapping (and raises when the ids are
    not the canonical tokenization), ``"incremental"`` works from the ids alone (one by one, else prefixes).
    Conventions (tiling, split characters, empty spans of special tokens): see the module docstring.
    """
    check_choice("method", method, OFFSET_METHODS)
    ids = _as_ids("token_ids", token_ids)
    texts, offsets, _ = _batch_offsets(tokenizer, [ids], method)
    return texts[0], offsets[0]


def token_texts(tokenizer: Any, token_ids: Any) -> list[str]:
    """Each token's piece of the decoded response (``text[start:end]`` of its offsets), special tokens by name.

    The pieces are what a heat map should show: they concatenate to the text (a character split across tokens
    appears in each of them), unlike ``convert_ids_to_tokens`` (``Ġ``, ``▁``, ``##`` markers, byte symbols).
    """
    ids = _as_ids("token_ids", token_ids)
    text, offsets = token_char_offsets(tokenizer, ids)
    special = _special_ids(tokenizer, _backend(tokenizer))
    names = _backend(tokenizer).id_to_token
    return [names(t) if t in special else text[s:e] for t, (s, e) in zip(ids, offsets)]


def span_to_token_mask(offsets: list[tuple[int, int]], start: int, end: int) -> list[bool]:
    """True for every token whose character span overlaps ``[start, end)``, even partly; empty spans never do."""
    check_int("start", start, 0, None)
    check_int("end", end, start, None)
    return [s < end and e > start and e > s for s, e in offsets]


# ----------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class SpanStats:
    """How well the quotes of a batch mapped to tokens.

    ``matches[i]`` is the :class:`SpanMatch` of response ``i`` (``None`` when it had no quote); ``by_kind`` counts
    mapped quotes per match kind, ``failures`` failed quotes per reason; ``offset_methods`` counts responses whose
    offsets came from re-tokenizing vs incremental decoding (responses with a quote only); ``text_mismatches``
    counts quoted responses whose given text differed from the decoding (the quote was then searched in the decoding).
    """

    num_responses: int
    num_quotes: int
    num_mapped: int
    num_in_named_step: int
    by_kind: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    offset_methods: dict[str, int] = field(default_factory=dict)
    text_mismatches: int = 0
    matches: tuple[SpanMatch | None, ...] = ()

    @property
    def hit_rate(self) -> float:
        """Share of quotes that became a non-empty token mask (0 when there were no quotes)."""
        return self.num_mapped / self.num_quotes if self.num_quotes else 0.0

    def to_dict(self) -> dict[str, float]:
        """Flat numbers for logging: counts, ``hit_rate``, ``hit_rate/<kind>`` and ``fail/<reason>``."""
        out = {"num_responses": self.num_responses, "num_quotes": self.num_quotes, "num_mapped": self.num_mapped,
               "hit_rate": self.hit_rate, "num_in_named_step": self.num_in_named_step,
               "text_mismatches": self.text_mismatches}
        out.update({f"hit_rate/{k}": self.by_kind.get(k, 0) / max(1, self.num_quotes) for k in MATCH_KINDS})
        out.update({f"fail/{r}": self.failures.get(r, 0) for r in FAIL_REASONS})
        return {k: float(v) for k, v in out.items()}


def _check_batch(completion_ids: Any, completion_mask: Any, quotes: Any) -> None:
    check_type("completion_ids", completion_ids, torch.Tensor)
    check_type("completion_mask", completion_mask, torch.Tensor)
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids has shape {tuple(completion_ids.shape)}; allowed: (N, T)")
    if completion_mask.shape != completion_ids.shape:
        raise ValueError(f"completion_mask has shape {tuple(completion_mask.shape)}; allowed: the shape of "
                         f"completion_ids, {tuple(completion_ids.shape)}")
    if completion_ids.dtype.is_floating_point or completion_ids.dtype == torch.bool:
        raise ValueError(f"completion_ids has dtype {completion_ids.dtype}; allowed: an integer dtype")
    check_type("quotes", quotes, (list, tuple))
    if len(quotes) != completion_ids.shape[0]:
        raise ValueError(f"len(quotes)={len(quotes)}; allowed: one entry per response, {completion_ids.shape[0]}")
    for i, q in enumerate(quotes):
        if q is None:
            continue
        if not (isinstance(q, (tuple, list)) and len(q) == 2 and isinstance(q[0], str)
                and (q[1] is None or (isinstance(q[1], int) and not isinstance(q[1], bool) and q[1] >= 0))):
            raise ValueError(f"quotes[{i}]={q!r}; allowed: None or a pair (quote: str, step: int >= 0 or None)")


def _response_rows(completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> tuple[list, list]:
    ids, keep = completion_ids.tolist(), completion_mask.bool().tolist()
    positions = [[t for t, k in enumerate(row) if k] for row in keep]
    return [[row[t] for t in pos] for row, pos in zip(ids, positions)], positions


def decode_responses(tokenizer: Any, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[str]:
    """The texts of a padded batch of responses exactly as :func:`error_token_masks` sees them: show these to the
    oracle, so that its quotes are substrings of the text the offsets index."""
    _check_batch(completion_ids, completion_mask, [None] * completion_ids.shape[0])
    backend = _backend(tokenizer)
    special = _special_ids(tokenizer, backend)
    rows, _ = _response_rows(completion_ids, completion_mask)
    return backend.decode_batch([[t for t in r if t not in special] for r in rows], skip_special_tokens=True)


def encode_responses(tokenizer: Any, texts: list[str], *, width: int | None = None, side: str = "right",
                     add_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize response texts into a padded batch shaped like sampled completions: ``(ids, mask)``, both ``(N, T)``.

    Each row is the canonical tokenization (no BOS), then EOS when ``add_eos``; rows are padded with the pad token
    on ``side`` ("right", as generated completions are, or "left") to ``width`` (default: the longest row; longer
    rows are cut, EOS included). ``mask`` is True on the tokens of the response. For examples, tests and benchmarks;
    training uses the ids the policy sampled.
    """
    check_type("texts", texts, (list, tuple))
    for i, t in enumerate(texts):
        check_type(f"texts[{i}]", t, str)
    check_choice("side", side, ("right", "left"))
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else eos
    if pad is None or (add_eos and eos is None):
        raise ValueError("tokenizer has no pad_token_id and no eos_token_id; allowed: a tokenizer with them")
    rows = [ids + ([eos] if add_eos else [])
            for ids in (e.ids for e in _backend(tokenizer).encode_batch(list(texts), add_special_tokens=False))]
    if width is not None:
        check_int("width", width, 1, None)
    t = width if width is not None else max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), t), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, row in enumerate(rows):
        row = row[:t]
        cols = slice(0, len(row)) if side == "right" else slice(t - len(row), t)
        ids[i, cols] = torch.tensor(row, dtype=torch.long)
        mask[i, cols] = True
    return ids, mask


def error_token_masks(tokenizer: Any, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                      quotes: list[tuple[str, int | None] | None], *, max_error_span_tokens: int = 64,
                      fuzzy_threshold: float = 85.0, texts: list[str] | None = None) -> tuple[torch.Tensor, SpanStats]:
    """Bool mask ``(N, T)`` of the error-span tokens of each response, and :class:`SpanStats`.

    - ``completion_ids`` int ``(N, T)``: generated ids, padded left or right; ``completion_mask`` ``(N, T)``: True
      (or 1) on the response's own tokens (EOS included or not; special tokens never enter the mask anyway).
    - ``quotes[i]``: ``(quote, step)`` from the oracle for response ``i`` (``step`` 0-based or ``None``), or
      ``None`` for no quote (correct answers, oracle failures): that row stays all False.
    - A span covering more than ``max_error_span_tokens`` tokens is dropped (all False row, counted as
      ``"too_long"``): an oracle quoting the whole answer is no better than sequence credit.
    - ``texts``: optional decoded texts the oracle saw; a quoted response whose text differs from the decoding is
      counted in ``text_mismatches`` (the quote is still searched in the decoding, whose offsets are known).

    Only responses with a quote are decoded and given offsets, so correct answers cost nothing.
    """
    _check_batch(completion_ids, completion_mask, quotes)
    check_int("max_error_span_tokens", max_error_span_tokens, 1, None)
    check_float("fuzzy_threshold", fuzzy_threshold, 0.0, 100.0)
    if texts is not None and (not isinstance(texts, (list, tuple)) or len(texts) != len(quotes)):
        raise ValueError(f"texts must be None or a list of {len(quotes)} str, got {type(texts).__name__}")
    rows, positions = _response_rows(completion_ids, completion_mask)
    quoted = [i for i, q in enumerate(quotes) if q is not None]  # only these need offsets
    decoded, offsets, used = _batch_offsets(tokenizer, [rows[i] for i in quoted])
    mask = torch.zeros(completion_ids.shape, dtype=torch.bool)
    matches: list[SpanMatch | None] = [None] * len(quotes)
    kinds, fails = Counter(), Counter()
    for k, i in enumerate(quoted):
        quote, step = quotes[i]
        m = find_quote(decoded[k], quote, step, fuzzy_threshold=fuzzy_threshold)
        if m.ok:
            inside = span_to_token_mask(offsets[k], m.start, m.end)
            hits = [positions[i][j] for j, flag in enumerate(inside) if flag]
            if len(hits) > max_error_span_tokens:
                m = SpanMatch(m.start, m.end, "none", m.score, "too_long", m.in_step)
            else:
                mask[i, hits] = True
        (kinds if m.ok else fails)[m.kind if m.ok else m.reason] += 1
        matches[i] = m
    mismatches = sum(texts[i] != d for i, d in zip(quoted, decoded)) if texts is not None else 0
    stats = SpanStats(len(quotes), sum(q is not None for q in quotes), sum(kinds.values()),
                      sum(1 for m in matches if m is not None and m.ok and m.in_step), dict(kinds), dict(fails),
                      dict(Counter(used)), mismatches, tuple(matches))
    return mask, stats
