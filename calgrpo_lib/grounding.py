"""Which numbers a solution may use without deriving them: the numbers a question states (in digits or words),
simple percentage and fraction forms of them, and everyday constants (minutes per hour, days per week, ...).

:func:`stated_numbers` reads a text; :class:`NumberPool` answers "was this value stated or derived?" with the
rounding tolerance of :func:`calgrpo_lib.arithmetic.close_enough`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from .arithmetic import close_enough
from .claims import find_numbers

__all__ = ["stated_numbers", "NumberPool", "CONSTANTS"]

# Units of everyday conversions and small counts, which GSM8K solutions use without stating them.
CONSTANTS = frozenset([*range(0, 13), 24, 30, 52, 60, 100, 365, 1000,
                       0.5, 0.25, 0.75, 0.1, 0.01, 1.5])
_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1e6, "billion": 1e9}
_ORDINALS = {"half": 2, "halves": 2, "third": 3, "quarter": 4, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
             "eighth": 8, "ninth": 9, "tenth": 10}
_MULTIPLES = {"twice": 2, "double": 2, "doubles": 2, "doubled": 2, "pair": 2, "pairs": 2, "couple": 2,
              "triple": 3, "triples": 3, "tripled": 3, "thrice": 3, "quadruple": 4, "dozen": 12, "dozens": 12}
_WORD = re.compile(r"[a-z]+")


def _word_numbers(text: str) -> set[float]:
    out: set[float] = set()
    words = _WORD.findall(text.lower())
    for i, w in enumerate(words):
        base = w[:-1] if w.endswith("s") and w[:-1] in _ORDINALS else w
        if w in _UNITS:
            out.add(float(_UNITS.index(w)))
        elif w in _TENS:
            v = _TENS[w]
            nxt = words[i + 1] if i + 1 < len(words) else ""
            out |= {float(v), float(v + _UNITS.index(nxt))} if nxt in _UNITS[1:10] else {float(v)}
        elif w in _SCALES:
            out.add(float(_SCALES[w]))
        elif base in _ORDINALS:
            out |= {float(_ORDINALS[base]), 1.0 / _ORDINALS[base], 1.0 - 1.0 / _ORDINALS[base]}
        elif w in _MULTIPLES:
            out.add(float(_MULTIPLES[w]))
        if w in _SCALES and i > 0:  # "three hundred", "2 thousand"
            prev = words[i - 1]
            if prev in _UNITS or prev in _TENS:
                out.add((_UNITS.index(prev) if prev in _UNITS else _TENS[prev]) * _SCALES[w])
    return out


def stated_numbers(text: str) -> set[float]:
    """Numbers ``text`` states, with the forms a solution may use directly: a percentage ``p`` also as ``p/100``,
    ``1 - p/100``, ``1 + p/100`` and ``100 - p``; a fraction ``a/b`` also as its value and ``1 - a/b``; a word
    ("twelve", "half", "twice", "dozen", "three hundred") as its number."""
    out: set[float] = set(_word_numbers(text))
    for n in find_numbers(text):
        v = n.value
        out.add(v)
        if n.percent or v <= 100:
            out |= {v / 100, 1 - v / 100, 1 + v / 100, 100 - v}
    for m in re.finditer(r"(\d+)\s*/\s*(\d+)", text):
        a, b = int(m.group(1)), int(m.group(2))
        if b:
            out |= {a / b, 1 - a / b}
    for m in re.finditer(r"(\d+)(?:,\d{3})*\s+(thousand|million|billion)", text.lower()):
        out.add(float(m.group(0).split()[0].replace(",", "")) * _SCALES[m.group(2)])
    return {v for v in out if math.isfinite(v)}


class NumberPool:
    """A set of allowed values; ``contains(number_text, value)`` accepts a written (possibly rounded) value."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._values: set[float] = set(values)

    def add(self, *values: float) -> None:
        """Allow more values."""
        self._values.update(values)

    def contains(self, value: float, text: str = "") -> bool:
        """Whether ``value`` (written as ``text``) is one of the allowed values, up to its written rounding."""
        if value in self._values:
            return True
        digits = text.rstrip("% \\")
        return any(close_enough(value, digits, v) for v in self._values)

    def __len__(self) -> int:
        return len(self._values)
