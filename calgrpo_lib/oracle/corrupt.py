"""Inject a known first error into a correct solution, for benchmarks, tests and the notebook.

:func:`corrupt_solution` picks a calculation step with a GSM8K calculator annotation (``48/2 = <<48/2=24>>24``)
and changes its result to a wrong value (``<<48/2=25>>25``), off by at least 1 from the true value so that the
step is unambiguously wrong. With ``propagate=False`` the later steps still use the right value (a slip the
solver did not carry on); with ``propagate=True`` they use the wrong value and redo their own arithmetic
correctly, as a solver who believed it would, down to the final ``#### n``. Either way the first erroneous step is
the corrupted one, and :class:`Corruption` records it with the span of the wrong result.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..steps import split_steps
from .claims import close_enough, evaluate, parse_value

__all__ = ["Corruption", "corrupt_solution", "corrupt_problems"]

_ANNOT = re.compile(r"<<(?P<expr>[^<>=\n]*)=(?P<res>[^<>=\n]*)>>(?P<shown>\d[\d,]*(?:\.\d+)?)?")
_EXPR_NUM = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_FINAL = re.compile(r"####\s*(?P<n>-?[\d,]*\.?\d+)")


@dataclass(frozen=True)
class Corruption:
    """A corrupted solution: ``text``, the index of its first erroneous ``step`` (into ``split_steps(text)``), the
    ``span`` of the wrong result in ``text`` (annotation and shown number), and the values before and after."""

    text: str
    original: str
    step: int
    span: tuple[int, int]
    old_value: float
    new_value: float
    propagate: bool

    @property
    def quote(self) -> str:
        """The erroneous text, ``text[span]``."""
        return self.text[self.span[0]:self.span[1]]


def _fmt(value: float, like: str) -> str:
    """``value`` written like ``like`` (same decimals, thousands commas if ``like`` had them)."""
    m = re.search(r"\.(\d+)", like)
    decimals = len(m.group(1)) if m else (0 if float(value).is_integer() else 2)
    s = f"{value:,.{decimals}f}" if "," in like else f"{value:.{decimals}f}"
    return s.rstrip("0").rstrip(".") if "." in s and not m else s


def _wrong_value(rng: random.Random, value: float, true: float) -> float | None:
    steps = [1, 2, 3, 10, max(1, round(abs(value) * 0.1))]
    options = [value + s * d for s in steps for d in (1, -1)]
    options = [v for v in options if v != value and abs(v - true) >= 1 and (v >= 0 or value < 0)]
    return rng.choice(options) if options else None


def _eval_expr(expr: str) -> float | None:
    return evaluate(expr.replace("x", "*").replace("^", "**"))


def _candidates(text: str, final_start: int) -> list[re.Match]:
    out = []
    for m in _ANNOT.finditer(text[:final_start]):
        true, res = _eval_expr(m.group("expr")), parse_value(m.group("res").strip())
        if true is not None and res is not None and close_enough(res[0], m.group("res").strip(), true):
            out.append(m)
    return out


def corrupt_solution(solution: str, rng: random.Random | int = 0, *, propagate: bool = False) -> Corruption | None:
    """Change one calculated result of ``solution`` (see the module docstring); ``None`` when it has no checkable
    calculator annotation before its final line."""
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    final = _FINAL.search(solution)
    cands = _candidates(solution, final.start() if final else len(solution))
    if not cands:
        return None
    m = rng.choice(cands)
    old = parse_value(m.group("res").strip())[0]
    new = _wrong_value(rng, old, _eval_expr(m.group("expr")))
    if new is None:
        return None
    edits = [(m.start("res"), m.end("res"), _fmt(new, m.group("res")))]
    if m.group("shown"):
        edits.append((m.start("shown"), m.end("shown"), _fmt(new, m.group("shown"))))
    if propagate:
        edits += _propagate(solution, m.end(), final, {old: new})
    text, span = _apply(solution, edits, (m.start(), m.end("shown") if m.group("shown") else m.end()))
    step = next(s.index for s in split_steps(text) if s.start <= span[0] < s.end)
    return Corruption(text, solution, step, span, old, new, propagate)


def _sub_numbers(piece: str, values: dict[float, float], offset: int, like_expr: bool) -> list[tuple]:
    edits = []
    pattern = _EXPR_NUM if like_expr else re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?")
    for n in pattern.finditer(piece):
        v = float(n.group().replace(",", ""))
        hit = next((new for old, new in values.items() if math.isclose(v, old, rel_tol=1e-9)), None)
        if hit is not None:
            edits.append((offset + n.start(), offset + n.end(), _fmt(hit, n.group())))
    return edits


def _propagate(text: str, start: int, final: re.Match | None, values: dict[float, float]) -> list[tuple]:
    """Edits that carry the changed values through the later annotations, their plain text and the final line."""
    edits, pos = [], start
    stop = final.start() if final else len(text)
    for m in _ANNOT.finditer(text, start, stop):
        edits += _sub_numbers(text[pos:m.start()], values, pos, like_expr=False)  # "24 * 3 = " before "<<"
        expr_edits = _sub_numbers(m.group("expr"), values, m.start("expr"), like_expr=True)
        pos = m.end()
        if not expr_edits:
            continue
        expr = m.group("expr")
        for s, e, r in sorted(expr_edits, reverse=True):
            expr = expr[: s - m.start("expr")] + r + expr[e - m.start("expr"):]
        old, new = _eval_expr(m.group("expr")), _eval_expr(expr)
        edits += expr_edits
        res = parse_value(m.group("res").strip())
        if old is None or new is None or res is None or math.isclose(old, new):
            continue
        new = round(new, 2)
        values[res[0]] = new
        edits.append((m.start("res"), m.end("res"), _fmt(new, m.group("res"))))
        if m.group("shown"):
            edits.append((m.start("shown"), m.end("shown"), _fmt(new, m.group("shown"))))
    if final:
        edits += _sub_numbers(text[pos:final.start()], values, pos, like_expr=False)
        edits += _sub_numbers(final.group("n"), values, final.start("n"), like_expr=False)
    return edits


def _apply(text: str, edits: list[tuple[int, int, str]], span: tuple[int, int]) -> tuple[str, tuple[int, int]]:
    """Apply non-overlapping edits; return the new text and where ``span`` moved to."""
    out, pos, shift_start, shift_end = [], 0, 0, 0
    for s, e, r in sorted(set(edits)):
        if s < pos:
            continue
        out += [text[pos:s], r]
        delta = len(r) - (e - s)
        shift_start += delta if e <= span[0] else 0
        shift_end += delta if e <= span[1] else 0
        pos = e
    out.append(text[pos:])
    return "".join(out), (span[0] + shift_start, span[1] + shift_end)


def corrupt_problems(solutions: Sequence[str], seed: int = 0, *, propagate: bool = False) -> list[Corruption | None]:
    """:func:`corrupt_solution` on each solution, with a seeded random stream per solution."""
    return [corrupt_solution(s, random.Random(f"{seed}/{i}"), propagate=propagate) for i, s in enumerate(solutions)]
