"""From an error's character span to the tokens it covers, for a batch of generated responses.

The quote -> character span map is :func:`calgrpo_lib.quotes.find_quote`. This module maps characters to tokens
(:func:`token_char_offsets`, :func:`span_to_token_mask`), and both must be exact. Offsets are computed for the
*generated token ids*: the text is their decoding; when the ids decoded one by one add up to that text, their
lengths are the offsets; else, if re-tokenizing the text gives back the same ids, the fast tokenizer's offset
mapping is used; otherwise the offsets come from decoding growing prefixes of the ids. Re-tokenizing prefixes of the
*text* (``len(tok(text[:start]))``) is wrong: a prefix ending in a space or cut inside a word tokenizes differently
from the whole, and sampled ids need not be the canonical tokenization.

Conventions for offsets ``(start, end)`` of a response's tokens, in characters of the decoded text:

- they tile the text: characters between two tokens' offsets (a space a tokenizer left out) go to the *next*
  token, trailing ones to the last token;
- a character whose UTF-8 bytes are split across tokens (byte-level BPE) is in the span of *every* such token;
- special tokens (EOS, padding, chat-template markers: anything ``decode(skip_special_tokens=True)`` drops) get
  the empty span ``(p, p)`` and so never enter a mask; so do ids the tokenizer does not know (a model whose
  vocabulary is padded beyond the tokenizer's), which decode to nothing;
- a token partly inside a character span counts as inside (credit on a whole token is the finest we can give).

:func:`error_token_masks` does all of it for a batch (quote -> characters -> tokens) and returns the ``(N, T)`` bool
mask the credit functions take, plus :class:`SpanStats`. A wrong answer whose row is all False falls back to
sequence credit downstream.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from .granularity import SPAN_GRANULARITIES, narrow_span
from .quotes import FAIL_REASONS, MATCH_KINDS, SpanMatch, find_quote
from .validation import check_choice, check_float, check_int, check_type

__all__ = ["SpanStats", "token_char_offsets", "token_texts", "piece_offsets", "span_to_token_mask", "decode_responses",
           "encode_responses", "error_token_masks", "OFFSET_METHODS"]

OFFSET_METHODS = ("auto", "reencode", "incremental")

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


def piece_offsets(pieces: list[str]) -> list[tuple[int, int]]:
    """Offsets of tokens whose decoded pieces, concatenated, are the text: ``(sum of the earlier pieces' lengths,
    that plus the piece's length)`` each; an empty piece (a special token) gets the empty span there."""
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
                offsets[k], used[k] = piece_offsets(pieces), "pieces"
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
    counts quoted responses whose given text differed from the decoding (the quote was then searched in the decoding);
    ``not_narrowed`` counts found quotes that could not be brought to the requested granularity
    (:func:`calgrpo_lib.quotes.narrow_span`) and kept the coarser span instead.
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
    not_narrowed: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of quotes that became a non-empty token mask (0 when there were no quotes)."""
        return self.num_mapped / self.num_quotes if self.num_quotes else 0.0

    def to_dict(self) -> dict[str, float]:
        """Flat numbers for logging: counts, ``hit_rate``, ``hit_rate/<kind>`` and ``fail/<reason>``."""
        out = {"num_responses": self.num_responses, "num_quotes": self.num_quotes, "num_mapped": self.num_mapped,
               "hit_rate": self.hit_rate, "num_in_named_step": self.num_in_named_step,
               "text_mismatches": self.text_mismatches, "not_narrowed": self.not_narrowed}
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
                      fuzzy_threshold: float = 85.0, texts: list[str] | None = None,
                      granularity: str | None = None) -> tuple[torch.Tensor, SpanStats]:
    """Bool mask ``(N, T)`` of the error-span tokens of each response, and :class:`SpanStats`.

    - ``completion_ids`` int ``(N, T)``: generated ids, padded left or right; ``completion_mask`` ``(N, T)``: True
      (or 1) on the response's own tokens (EOS included or not; special tokens never enter the mask anyway).
    - ``quotes[i]``: ``(quote, step)`` from the oracle for response ``i`` (``step`` 0-based or ``None``), or
      ``None`` for no quote (correct answers, oracle failures): that row stays all False.
    - A span covering more than ``max_error_span_tokens`` tokens is dropped (all False row, counted as
      ``"too_long"``): an oracle quoting the whole answer is no better than sequence credit.
    - ``texts``: optional decoded texts the oracle saw; a quoted response whose text differs from the decoding is
      counted in ``text_mismatches`` (the quote is still searched in the decoding, whose offsets are known).
    - ``granularity``: ``None`` keeps each found span as the quote gives it; ``"step"``, ``"claim"`` or ``"result"``
      first brings it to that granularity (:func:`calgrpo_lib.quotes.narrow_span`; ``matches`` then hold the new
      spans), and a span that could not be narrowed keeps the coarser one and counts in ``not_narrowed``.

    Only responses with a quote are decoded and given offsets, so correct answers cost nothing.
    """
    _check_batch(completion_ids, completion_mask, quotes)
    check_int("max_error_span_tokens", max_error_span_tokens, 1, None)
    check_float("fuzzy_threshold", fuzzy_threshold, 0.0, 100.0)
    if granularity is not None:
        check_choice("granularity", granularity, SPAN_GRANULARITIES)
    if texts is not None and (not isinstance(texts, (list, tuple)) or len(texts) != len(quotes)):
        raise ValueError(f"texts must be None or a list of {len(quotes)} str, got {type(texts).__name__}")
    rows, positions = _response_rows(completion_ids, completion_mask)
    quoted = [i for i, q in enumerate(quotes) if q is not None]  # only these need offsets
    decoded, offsets, used = _batch_offsets(tokenizer, [rows[i] for i in quoted])
    mask = torch.zeros(completion_ids.shape, dtype=torch.bool)
    matches: list[SpanMatch | None] = [None] * len(quotes)
    kinds, fails, not_narrowed = Counter(), Counter(), 0
    for k, i in enumerate(quoted):
        quote, step = quotes[i]
        m = find_quote(decoded[k], quote, step, fuzzy_threshold=fuzzy_threshold)
        if m.ok and granularity is not None:
            start, end, reached = narrow_span(decoded[k], m.start, m.end, granularity)
            m, not_narrowed = SpanMatch(start, end, m.kind, m.score, m.reason, m.in_step), not_narrowed + (not reached)
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
                      dict(Counter(used)), mismatches, tuple(matches), not_narrowed)
    return mask, stats
