"""Arithmetic claims in free text, with exact character offsets: what the step checker
(:class:`calgrpo_lib.oracle.StepCheckOracle`) re-checks.

A *claim* is an equality the text asserts: a GSM8K calculator annotation ``<<48/2=24>>24``, a plain equation
``16 - 3 - 4 = 9`` or ``9 * 2 = $18``, a chain ``60/2 = 30*3 = 90``, or LaTeX ``\\(120 \\times 3/4 = 90\\)``.
Operators ``+ - * / ^``, ``x``/``×``/``\\times``/``\\cdot``, ``÷``/``\\div`` and ``\\frac{a}{b}`` are understood;
numbers may carry thousands commas, ``$`` and ``%`` (a percentage is read both as ``p`` and ``p/100``; either
reading may make a claim hold). Each claim is re-evaluated exactly (:mod:`calgrpo_lib.arithmetic` evaluates and
compares); a claimed result that has ``d`` decimals is accepted when it is within ``10**-d`` of the true value
(GSM8K rounds and truncates: ``100/3 = 33.33``, ``25/6 = 4`` boxes), so a wrong result is off by at least one unit
of its last digit.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace

from .arithmetic import close_enough, evaluate, parse_value

__all__ = ["Number", "Claim", "find_claims", "find_numbers"]

_NUM = r"(?:\\?\$\s?)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:\s?\\?%)?|(?:\\?\$)?\.\d+(?:\\?%)?"
_TOKEN = re.compile(rf"""
  (?P<annot><<(?P<aexpr>[^<>=\n]*)=(?P<ares>[^<>=\n]*)>>)
| (?P<frac>\\[dt]?frac\{{(?P<fn>[^{{}}]+)\}}\{{(?P<fd>[^{{}}]+)\}})
| (?P<num>{_NUM})
| (?P<op>\\times|\\cdot|\\div|[+\-*/×÷·−^]|(?:(?<=[\d)])|(?<=[\d)]\ ))[xX](?=\ ?[\d($.]))
| (?P<lp>\()|(?P<rp>\))
| (?P<eq>=|≈|\\approx)
| (?P<sp>[ \t]+|\\[,;:! ]|\\left|\\right|\\?\$)
| (?P<brk>\\\(|\\\)|\\\[|\\\]|.|\n)
""", re.VERBOSE)
_OPS = {"+": "+", "-": "-", "−": "-", "*": "*", "x": "*", "X": "*", "×": "*", "·": "*", "\\times": "*",
        "\\cdot": "*", "/": "/", "÷": "/", "\\div": "/", "^": "**"}


@dataclass(frozen=True)
class Number:
    """A number in the text: its value, span, text and whether it was written as a percentage."""

    value: float
    start: int
    end: int
    text: str
    percent: bool = False


@dataclass(frozen=True)
class Claim:
    """An asserted equality ``text[start:end]``: the numbers it uses, the result it claims, and whether it holds."""

    start: int
    end: int
    operands: tuple[Number, ...]
    result: Number
    ok: bool
    true_value: float | None
    kind: str  # "equation" or "annotation"


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int
    value: float | None = None
    percent: bool = False


def _tokens(text: str, offset: int = 0) -> list[_Tok]:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup if m.lastgroup in ("annot", "frac", "num", "op", "lp", "rp", "eq", "sp") else "brk"
        tok = _Tok(kind, m.group(), m.start() + offset, m.end() + offset)
        if kind == "num":
            parsed = parse_value(m.group())
            tok = _Tok("num", m.group(), tok.start, tok.end, *parsed) if parsed else replace(tok, kind="brk")
        elif kind == "frac":  # \frac{a}{b} is one number
            n, d = evaluate(_expr_text(m.group("fn"))), evaluate(_expr_text(m.group("fd")))
            ok = n is not None and d not in (None, 0.0)
            tok = _Tok("num", m.group(), tok.start, tok.end, n / d) if ok else replace(tok, kind="brk")
        out.append(tok)
    return out


def _expr_text(s: str) -> str:
    return "".join(_OPS.get(t.text, t.text) if t.kind == "op" else str(t.value) if t.kind == "num" else t.text
                   for t in _tokens(s) if t.kind != "sp")


def _trim(seg: list[_Tok]) -> list[_Tok]:
    """Drop unbalanced edge parentheses and leading binary operators."""
    seg = list(seg)
    while seg and (seg[0].kind == "rp" or (seg[0].kind == "op" and _OPS[seg[0].text] != "-")):
        seg.pop(0)
    while seg and seg[-1].kind in ("op", "lp"):
        seg.pop()
    depth = 0
    for t in seg:
        depth += (t.kind == "lp") - (t.kind == "rp")
    while depth > 0 and seg and seg[0].kind == "lp":
        seg.pop(0)
        depth -= 1
    while depth < 0 and seg and seg[-1].kind == "rp":
        seg.pop()
        depth += 1
    return seg


def _values(seg: list[_Tok]) -> set[float]:
    """All values of a segment, reading each percentage as ``p/100`` or ``p`` (at most 3 percentages)."""
    pcts = [i for i, t in enumerate(seg) if t.kind == "num" and t.percent][:3]
    vals = set()
    for choice in itertools.product((True, False), repeat=len(pcts)):
        as_pct = dict(zip(pcts, choice))
        expr = "".join(f"({t.value / 100 if as_pct.get(i) else t.value!r})" if t.kind == "num"
                       else _OPS[t.text] if t.kind == "op" else t.text for i, t in enumerate(seg))
        v = evaluate(expr)
        if v is not None:
            vals.add(v)
    return vals


def _nums(seg: list[_Tok]) -> tuple[Number, ...]:
    return tuple(Number(t.value, t.start, t.end, t.text, t.percent) for t in seg if t.kind == "num")


def _holds(left: set[float], right_tok: _Tok) -> bool:
    claims = {right_tok.value, right_tok.value / 100} if right_tok.percent else {right_tok.value}
    return any(close_enough(c, right_tok.text.rstrip("% \\"), v) for c in claims for v in left)


def _annotation(tok: _Tok, display: _Tok | None) -> Claim | None:
    m = _TOKEN.match(tok.text)
    inner = _tokens(m.group("aexpr"), tok.start + 2)
    seg = _trim([t for t in inner if t.kind != "sp"])
    res = parse_value(m.group("ares").strip())
    vals = _values(seg) if seg and all(t.kind != "brk" for t in seg) else set()
    if res is None or not vals:
        return None
    if not any(t.kind == "op" for t in seg):  # "16+16 = <<32=32>>32": a restatement, the text holds the sum
        seg = []
    res_start = tok.start + 3 + len(m.group("aexpr"))
    result = Number(res[0], res_start, tok.end - 2, m.group("ares"), res[1])
    ok = _holds(vals, _Tok("num", result.text, result.start, result.end, result.value, result.percent))
    end = tok.end
    if display is not None:  # "<<9*2=18>>18": the number shown must be the annotation's result
        shown = {display.value, display.value / 100} if display.percent else {display.value}
        ok = ok and any(close_enough(v, display.text.rstrip("% \\"), res[0]) or
                        close_enough(res[0], m.group("ares").strip(), v) for v in shown)
        end = display.end
        result = Number(display.value, display.start, display.end, display.text, display.percent)
    return Claim(tok.start, end, _nums(seg), result, ok, min(vals, key=lambda v: abs(v - res[0])), "annotation")


def _pair(left: list[_Tok], right: list[_Tok], ann: Claim | None) -> Claim | None:
    """The claim ``left = right`` (an attached annotation, when there is one, is the authoritative calculation:
    words often cut the plain left side short, as in ``9 books * 2/3 = <<9*2/3=6>>6``)."""
    first = right[0] if right[0].kind == "num" else None
    rv = _values(right)
    if ann is not None and not ann.operands and left:  # trivial annotation: check the plain equation instead
        ann = None if ann.ok else ann
    if ann is not None:
        result = first if len(right) == 1 and first is not None else ann.result
        whole = bool(left) and ann.true_value is not None and any(
            close_enough(v, "", ann.true_value) for v in _values(left))  # the plain left side is the same calculation
        return Claim(left[0].start if whole else ann.start, max(ann.end, right[-1].end), ann.operands,
                     Number(result.value, result.start, result.end, result.text, result.percent), ann.ok,
                     ann.true_value, "annotation")
    lv = _values(left)
    if not lv or not rv:
        return None
    if len(right) == 1:
        ok, result = _holds(lv, right[0]), right[0]
    elif any(close_enough(r, "", v) for r in rv for v in lv):  # "3 * 4 = 2 * 6"
        ok, result = True, _Tok("num", "", right[0].start, right[-1].end, next(iter(rv)))
    elif first is not None and _holds(lv, first):  # sloppy chain "60/2 = 30*3 = 90": claims 60/2 = 30
        ok, result = True, first
    else:
        ok, result = False, _Tok("num", "", right[0].start, right[-1].end, next(iter(rv)))
    true = min(lv, key=lambda v: abs(v - result.value))
    return Claim(left[0].start, result.end, _nums(left), Number(result.value, result.start, result.end, result.text,
                                                               result.percent), ok, true, "equation")


def _run_claims(run: list[_Tok]) -> list[Claim]:
    """Claims of one run of arithmetic tokens (no words inside)."""
    toks = [t for t in run if t.kind != "sp"]
    segments: list[list[_Tok]] = [[]]
    annots: dict[int, _Tok] = {}  # segment index -> the annotation at its start ("= <<...>>24")
    loose: list[_Tok] = []
    for t in toks:
        if t.kind == "eq":
            segments.append([])
        elif t.kind == "annot" and not segments[-1] and len(segments) > 1 and len(segments) - 1 not in annots:
            annots[len(segments) - 1] = t
        elif t.kind == "annot":
            loose.append(t)
        else:
            segments[-1].append(t)
    claims: list[Claim] = []
    for i in range(len(segments) - 1):
        raw_left, right = segments[i], _trim(segments[i + 1])
        left = _trim(raw_left)
        raw_right = segments[i + 1]
        open_right = sum((t.kind == "lp") - (t.kind == "rp") for t in raw_right) > 0  # "= (6 * x) ...": cut short
        truncated = (i == 0 and bool(raw_left) and raw_left[0].kind == "op") or open_right or bool(
            raw_right and raw_right[-1].kind == "op")  # "18 apples - 6 = 12", "= 3 * x": words cut it
        ann_tok = annots.get(i + 1)
        display = right[0] if len(right) == 1 and right and right[0].kind == "num" else None
        ann = _annotation(ann_tok, display) if ann_tok is not None else None
        if not right or (ann is None and (not left or truncated or (i == 0 and not any(t.kind == "op" for t in left)))):
            if ann_tok is not None:
                loose.append(ann_tok)
            continue
        claim = _pair(left, right, ann)
        if claim is not None:
            claims.append(claim)
    for a in loose:
        j = toks.index(a)
        display = toks[j + 1] if j + 1 < len(toks) and toks[j + 1].kind == "num" else None
        ann = _annotation(a, display)
        if ann is not None:
            claims.append(ann)
    return sorted(claims, key=lambda c: c.start)


def find_claims(text: str, offset: int = 0) -> list[Claim]:
    """Every arithmetic claim in ``text``, in order; offsets are shifted by ``offset``."""
    runs, cur = [], []
    for t in _tokens(text, offset):
        if t.kind == "brk":
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        runs.append(cur)
    return [c for run in runs if any(t.kind in ("eq", "annot") for t in run) for c in _run_claims(run)]


def find_numbers(text: str, offset: int = 0) -> list[Number]:
    """Every number written with digits in ``text`` (annotations included), with its span."""
    out = []
    for t in _tokens(text, offset):
        if t.kind == "num":
            out.append(Number(t.value, t.start, t.end, t.text, t.percent))
        elif t.kind == "annot":
            out += [n for n in find_numbers(t.text[2:-2], t.start + 2)]
    return out
