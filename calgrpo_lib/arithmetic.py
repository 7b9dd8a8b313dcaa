"""GSM8K arithmetic in one place: how a calculation line is written, read and evaluated, and how a mistake is put
into a chain of calculations.

- Lines: a calculation is written ``a op b = <<a op b=c>>c`` (:func:`calc_line`, the GSM8K calculator format);
  :func:`format_solution` writes a whole solution, :func:`parse_calc_line` reads one line of that strict format
  back and :func:`solution_calcs` every line of a reference solution. :func:`apply_op` computes ``a op b``.
- Values: :func:`evaluate` is the value of a plain arithmetic expression, :func:`parse_value` of a number as written
  (``$1,200.50``, ``15%``), and :func:`close_enough` says whether a written, possibly rounded result is right.
- Carries: :func:`forgotten_carry_shift` is how far a line lands when its carry or borrow is forgotten,
  :func:`carry_kind` which kind of carry it needs.
- Mistakes: :func:`rewrite_chain` adds an error to lines of a chain of calculations and recomputes every later line
  from the wrong running value (one slipped line, or every carry forgotten); :func:`corrupt_solution` changes one
  calculated result of free GSM8K text, and with ``propagate=True`` carries it through the later annotations.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .steps import split_steps

__all__ = ["Calc", "apply_op", "calc_line", "parse_calc_line", "solution_calcs", "format_solution", "evaluate",
           "parse_value", "close_enough", "forgotten_carry_shift", "carry_kind", "rewrite_chain", "Corruption",
           "corrupt_solution", "corrupt_problems"]

Calc = tuple[int, str, int, int]  # one calculation line (a, op, b, c): "a op b = <<a op b=c>>c"

_LINE = re.compile(r"^(\d+) ([-+*/]) (\d+) = <<\d+[-+*/]\d+=(\d+)>>\d+$")
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow}

# ----------------------------------------------------------------------------------------------- lines


def apply_op(a: int, op: str, b: int) -> int:
    """``a op b`` for ``op`` in ``+ - * /``; ``/`` is integer division (the task's divisions are exact)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a // b
    raise ValueError(f"op={op!r} is not an operation; allowed: '+', '-', '*', '/'")


def calc_line(a: int, op: str, b: int, c: int) -> str:
    """The calculation line ``a op b = <<a op b=c>>c`` (``c`` as given, so a wrong result can be written)."""
    return f"{a} {op} {b} = <<{a}{op}{b}={c}>>{c}"


def parse_calc_line(line: str) -> Calc | None:
    """``(a, op, b, c)`` of a line written by :func:`calc_line` (non-negative integers, ``c`` the annotation's
    result), or ``None`` for any other line."""
    m = _LINE.match(line)
    return None if m is None else (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))


def solution_calcs(steps: Sequence[str]) -> list[Calc] | None:
    """Every line of a reference solution (its steps before ``####``) as ``(a, op, b, c)``; ``None`` when one of
    them is not a calculation line."""
    calcs = []
    for step in steps:
        calc = parse_calc_line(step)
        if calc is None:
            return None
        calcs.append(calc)
    return calcs


def format_solution(calcs: Sequence[tuple[int, str, int]]) -> tuple[tuple[str, ...], str, int]:
    """Write ``[(a, op, b), ...]`` as GSM8K lines; return (steps, full answer text, final value)."""
    steps, c = [], 0
    for a, op, b in calcs:
        c = apply_op(a, op, b)
        steps.append(calc_line(a, op, b, c))
    return tuple(steps), "\n".join([*steps, f"#### {c}"]), c


# ----------------------------------------------------------------------------------------------- values


def parse_value(text: str) -> tuple[float, bool] | None:
    """``(value, is_percent)`` of a number as written (``$1,200.50``, ``15%``, ``\\$3``), or ``None``."""
    t = text.replace("\\", "").replace("$", "").replace(",", "").replace(" ", "")
    pct = t.endswith("%")
    try:
        v = float(t.rstrip("%"))
    except ValueError:
        return None
    return (v, pct) if math.isfinite(v) else None


def _safe_eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _safe_eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _safe_eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _safe_eval(node.left), _safe_eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6):
            raise ValueError("power too large")
        return _BIN[type(node.op)](a, b)
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def evaluate(expr: str) -> float | None:
    """The value of a plain arithmetic expression (``+ - * / **``, parentheses), or ``None``."""
    try:
        v = _safe_eval(ast.parse(expr, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return v if math.isfinite(v) else None


def close_enough(claimed: float, claimed_text: str, true: float) -> bool:
    """Whether a result written as ``claimed_text`` is a correct (possibly rounded or truncated) ``true`` value:
    equal up to ``1e-6`` relative, or, with ``d`` decimals written, within ``10**-d`` of it (``100/3 = 33.33``)."""
    if math.isclose(claimed, true, rel_tol=1e-6, abs_tol=1e-9):
        return True
    m = re.search(r"\.(\d+)", claimed_text)
    decimals = len(m.group(1)) if m else 0
    return abs(claimed - true) < 10.0 ** -decimals - 1e-9


# ----------------------------------------------------------------------------------------------- carries


def forgotten_carry_shift(a: int, op: str, b: int) -> int:
    """How far ``a op b`` lands when its carry is forgotten: -10 for an addition whose units overflow
    (``7 + 5 = 2``), +10 for a subtraction whose units need a borrow (``54 - 8 = 56``), 0 when nothing carries."""
    if op == "+" and a % 10 + b % 10 >= 10:
        return -10
    if op == "-" and a >= 10 and a % 10 < b % 10:
        return 10
    return 0


def carry_kind(a: int, op: str, b: int) -> str | None:
    """Which kind of carry the line ``a op b`` needs: ``"one-digit sum"`` (``9 + 8``), ``"two-digit sum"`` (a carry
    into a tens digit, ``24 + 9``), ``"borrow"`` (``16 - 7``), or ``None`` (no carry, or ``*``/``/``)."""
    if not forgotten_carry_shift(a, op, b):
        return None
    return "borrow" if op == "-" else "one-digit sum" if a < 10 and b < 10 else "two-digit sum"


# ----------------------------------------------------------------------------------------------- mistakes


def rewrite_chain(calcs: Sequence[Calc], shift: Callable[[int, int, str, int], int]) -> str | None:
    """The solution text of ``calcs`` with a mistake: line ``k`` computes ``apply_op(v, op, b) + shift(k, v, op, b)``
    from the running value ``v`` (the previous line's written result; the line's own ``a`` until the first change),
    so every line after a wrong one computes correctly from the wrong value, down to ``#### final``.

    ``None`` when no line changed, or when the chain cannot be written exactly: a negative result, or, after the first
    change, a line that does not continue the chain (its ``a`` is not the previous line's reference result), a
    division that no longer divides or a subtraction below zero."""
    lines, value, true, changed = [], 0, 0, False
    for k, (a, op, b, c) in enumerate(calcs):
        if not changed:
            value = a
        elif a != true or (op == "/" and value % b) or (op == "-" and value < b):
            return None
        delta = shift(k, value, op, b)
        new = apply_op(value, op, b) + delta
        if new < 0:
            return None
        lines.append(calc_line(value, op, b, new))
        changed, value, true = changed or bool(delta), new, c
    return "\n".join([*lines, f"#### {value}"]) if changed else None


# ----------------------------------------------------------------------------------------------- free text

_ANNOT = re.compile(r"<<(?P<expr>[^<>=\n]*)=(?P<res>[^<>=\n]*)>>(?P<shown>\d[\d,]*(?:\.\d+)?)?")
_EXPR_NUM = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_TEXT_NUM = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?")
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


def _eval_annotation(expr: str) -> float | None:
    """The value of a calculator annotation's expression (GSM8K writes ``x`` and ``^`` too)."""
    return evaluate(expr.replace("x", "*").replace("^", "**"))


def _candidates(text: str, final_start: int) -> list[re.Match]:
    out = []
    for m in _ANNOT.finditer(text[:final_start]):
        true, res = _eval_annotation(m.group("expr")), parse_value(m.group("res").strip())
        if true is not None and res is not None and close_enough(res[0], m.group("res").strip(), true):
            out.append(m)
    return out


def corrupt_solution(solution: str, rng: random.Random | int = 0, *, propagate: bool = False) -> Corruption | None:
    """Change one calculated result of ``solution`` to a wrong value, off by at least 1 from the true value
    (``<<48/2=24>>24`` -> ``<<48/2=25>>25``); ``None`` when it has no checkable calculator annotation before its
    final line. With ``propagate=False`` the later steps still use the right value (a slip the solver did not carry
    on); with ``propagate=True`` they use the wrong value and redo their own arithmetic, down to ``#### n``. Either
    way the first erroneous step is the corrupted one."""
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    final = _FINAL.search(solution)
    cands = _candidates(solution, final.start() if final else len(solution))
    if not cands:
        return None
    m = rng.choice(cands)
    old = parse_value(m.group("res").strip())[0]
    new = _wrong_value(rng, old, _eval_annotation(m.group("expr")))
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
    for n in (_EXPR_NUM if like_expr else _TEXT_NUM).finditer(piece):
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
        old, new = _eval_annotation(m.group("expr")), _eval_annotation(expr)
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
