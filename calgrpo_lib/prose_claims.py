"""Arithmetic stated in prose, with exact character offsets: "5 times 3 is 15", "half of 30 is 15", "5 tickets cost
$4 each, so she pays $20". The prose counterpart of :func:`calgrpo_lib.claims.find_claims` (which reads ``=``
equations and GSM8K annotations); :func:`find_prose_claims` returns the same :class:`~calgrpo_lib.claims.Claim`
objects, with ``kind="prose"``.

Grammar (words are matched case-insensitively; ``NUM`` is a number written with digits: ``15``, ``2.5``,
``1,200``, ``$4``, ``25%``, ``25 percent``; ``UNIT`` is up to three ordinary words after a number, such as
``boxes``, ``eggs``, ``GB``, never one of the reserved words below)::

    claim    := left VERB result
    left     := NUM UNIT (OP NUM UNIT)+                        5 times 3, $4 x 5, 20 sheep + 160 sheep
              | MULT NUM UNIT                                  twice 8, double 8, triple 8, thrice 8
              | PART "of" ["the"] NUM UNIT                     half of 30, a third of 12, two thirds of 9,
                                                               3/4 of 12, 25% of 80, 25 percent of 80
              | NUM UNIT "of" NUM UNIT                         5 boxes of 12 eggs (the result must repeat the
                                                               last unit: "is 60 eggs")
              | NUM UNIT PRICE $NUM EACH [","] LINK FILLER*    5 apples at $4 each, so ... $20
    OP       := times | multiplied by | x | × | * | plus | + | minus | − | - | divided by | ÷ | /
    VERB     := is | are | was | were | equals | equal | is equal to | makes | gives | gives us | comes to |
                totals | amounts to | adds up to | yields | results in | = | ", which is" | ", that is" | ...
    PART     := half | a half | one half | a/one ORD | NUMWORD ORDs | NUM ORDs | NUM "/" NUM | NUM%
    ORD      := third | quarter | fourth | fifth | ... | tenth
    PRICE    := at | cost | costs | costing | for | priced at | which cost(s)
    EACH     := each | apiece | a piece | per WORD
    LINK     := so | and so | VERB | for a total of | making | totaling
    FILLER   := a few plain words (she, pays, spends, the, total, in, all, ...), no number
    result   := [a total of] NUM

A chain mixing ``+``/``-`` with ``*``/``/`` holds when either the usual precedence or left-to-right reading gives
the result; a percentage reads as ``p`` or ``p/100`` in a chain and as ``p/100`` before "of". A result with ``d``
decimals is compared within ``10**-d`` (:func:`calgrpo_lib.arithmetic.close_enough`), as the symbolic reader does.
A word operand ("half", "twice", "a third") becomes a :class:`~calgrpo_lib.claims.Number` whose text has no digit.

Staying quiet when unsure is the rule (missing a claim is preferred to a false alarm). No claim: without an
operation ("She is 15 years old"); when an operation word is not followed by a number ("3 times a week", "3 times
as many"); when the left side may be the tail of a larger phrase, i.e. it starts right after a number or a word or
symbol such as ``than``, ``of``, ``by``, ``plus``, ``and``, ``+``, ``)`` ("12 more than 3 times 2 is 18"), or a few
words after an operation ("25 cats + his 1 dog + 1 rat = 27"); when the verb is not followed directly by a number
("is about 15"); when more arithmetic follows the result, or a word that changes its meaning within three words
(``more``, ``less``, ``than``, ``percent``, ``dozen``, ``hundred``, ``times as``, ``back``...); when a reserved word
stands among the units ("3 dozen", "5 more"); for a number glued to letters ("2L", "3r", "60g", "2nd"); for a bare
written fraction stated in words ("2/5 is 12.8 hectares" names a part; "2/5 = 0.4" is read). Annotations
``<<...>>`` are skipped.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from .arithmetic import close_enough, evaluate
from .claims import Claim, Number
from .validation import check_int, check_type

__all__ = ["find_prose_claims", "PROSE_VERBS"]

_TOKEN = re.compile(r"""
  (?P<annot><<[^<>\n]*>>)
| (?P<num>\$\s?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?!\d)|(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?%?|\$?\.\d+%?)
| (?P<word>[A-Za-z]+(?:'[a-z]+)?)
| (?P<sym>[+*/×÷−=-])
| (?P<punct>\S)
""", re.VERBOSE)

#: the verbs of equality, as word sequences ("," is a token of its own)
PROSE_VERBS: tuple[str, ...] = (
    "is equal to", "are equal to", "is", "are", "was", "were", "equals", "equal", "makes", "make", "gives us",
    "gives you", "gives", "give", "comes to", "come to", "comes out to", "totals", "amounts to", "adds up to",
    "add up to", "yields", "results in", "=", ", which is", ", that is", ", which makes", ", which gives",
    ", which comes to", "which is", "that is")
_VERBS = sorted((tuple(v.replace(",", " ,").split()) for v in PROSE_VERBS), key=len, reverse=True)
_OPS = {("times",): "*", ("multiplied", "by"): "*", ("x",): "*", ("×",): "*", ("*",): "*", ("plus",): "+",
        ("+",): "+", ("minus",): "-", ("−",): "-", ("-",): "-", ("divided", "by"): "/", ("÷",): "/", ("/",): "/"}
_VERB_WORDS = {w for v in _VERBS for w in v}
_MULT = {"twice": 2.0, "double": 2.0, "triple": 3.0, "thrice": 3.0}
_ORD = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4, "fourths": 4,
        "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6, "seventh": 7, "sevenths": 7, "eighth": 8, "eighths": 8,
        "ninth": 9, "ninths": 9, "tenth": 10, "tenths": 10}
_NUMWORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
             "ten": 10}
_PRICE = [("priced", "at"), ("which", "costs"), ("which", "cost"), ("at",), ("cost",), ("costs",), ("costing",),
          ("for",)]
_LINKS = [("for", "a", "total", "of"), ("and", "so"), ("so",), ("making",), ("totaling",), ("totalling",)]
_FILLER = {"she", "he", "they", "it", "we", "i", "you", "pays", "paid", "pay", "spends", "spent", "spend", "costs",
           "cost", "the", "total", "in", "all", "altogether", "is", "was", "are", "were", "will", "would", "needs",
           "need", "needed", "must", "owes", "that's", "that", "which", "comes", "to", "amounts", "a", "of", "be",
           "bill", "price", "overall", "earns", "earned", "makes", "made", "collects", "charges"}
_FILLER_MAX = 5
# words that never belong to a number's units: they operate on it, compare it or change its meaning
_RESERVED = ({w for k in _OPS for w in k} | {w for v in _VERBS for w in v} | set(_MULT) | set(_ORD) | set(_NUMWORDS)
             | {"of", "and", "or", "than", "more", "less", "fewer", "each", "per", "at", "cost", "costs", "for", "so",
                "the", "a", "an", "percent", "dozen", "dozens", "hundred", "thousand", "million", "billion", "over",
                "under", "to", "from", "by", "in", "on", "with", "then", "if", "but", "as", "apiece", "which", "that",
                "this", "these", "those", "about", "around", "almost", "nearly", "roughly", "approximately", "only",
                "extra", "another", "other", "left", "short", "remaining", "again", "instead", "not", "no"})
# a left side right after one of these is part of a larger phrase
_BEFORE_BAD = {"than", "of", "by", "from", "plus", "minus", "times", "over", "per", "divided", "multiplied", "added",
               "subtracted", "less", "more", "fewer", "twice", "half", "double", "triple", "and", "into", "x",
               "+", "-", "−", "*", "×", "÷", "/", "^", "(", "$", "%", "between", "or", "nor", "thrice", "every", "each",
               "except", "without", "besides", "also", "another", "–", ")"}
# a result followed (within three words) by one of these means something else
_AFTER_BAD = {"more", "less", "fewer", "than", "percent", "dozen", "dozens", "hundred", "thousand", "million",
              "billion", "plus", "minus", "divided", "multiplied", "x", "over", "short", "shy", "extra", "additional",
              "of", "apart", "off", "too", "bigger", "larger", "smaller", "greater", "higher", "lower", "older",
              "younger", "longer", "shorter", "heavier", "lighter", "faster", "slower", "cheaper", "squared", "cubed",
              "back", "change", "refund", "discount", "saved", "savings"}
_AFTER_STOP = {"and", "so", "then", "which", "but", "because", "since", "while", "for", "to", "with", "if", "when"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num", "glued" (a number with letters right after it), "word", "sym", "punct", "annot"
    text: str
    start: int
    end: int
    low: str
    value: float = 0.0
    percent: bool = False
    dollar: bool = False


def _tokens(text: str, offset: int) -> list[_Tok]:
    out = []
    for m in _TOKEN.finditer(text):
        kind, s = m.lastgroup or "punct", m.group()
        if kind == "num" and m.end() < len(text) and text[m.end()].isalpha():  # "2L", "3r", "60g", "2nd": not plain
            out.append(_Tok("glued", s, m.start() + offset, m.end() + offset, s.lower()))
        elif kind == "num":
            t = s.replace("$", "").replace(",", "").replace(" ", "")
            out.append(_Tok("num", s, m.start() + offset, m.end() + offset, s, float(t.rstrip("%")), s.endswith("%"),
                            s.startswith("$")))
        else:
            out.append(_Tok(kind, s, m.start() + offset, m.end() + offset, s.lower()))
    return out


@dataclass(frozen=True)
class _Operand:
    number: Number
    unit: tuple[str, ...]  # lower-case unit words
    end: int  # token index after the operand (units included)


class _Parser:
    """Recursive descent over the tokens of one text (see the module docstring for the grammar)."""

    def __init__(self, source: str, offset: int) -> None:
        self.source, self.offset = source, offset
        self.t = _tokens(source, offset)

    def low(self, i: int) -> str:
        return self.t[i].low if 0 <= i < len(self.t) else ""

    def seq(self, i: int, words: tuple[str, ...]) -> int | None:
        """The index after ``words`` when they start at ``i``."""
        return i + len(words) if all(self.low(i + k) == w for k, w in enumerate(words)) else None

    def first(self, i: int, options) -> tuple[tuple[str, ...], int] | None:
        return next(((w, j) for w in options if (j := self.seq(i, w)) is not None), None)

    def operand(self, i: int) -> _Operand | None:
        """``NUM [percent] UNIT{0,3}`` at ``i``."""
        if i >= len(self.t) or self.t[i].kind != "num":
            return None
        tok, j = self.t[i], i + 1
        percent, text_end = tok.percent, tok.end
        if not percent and self.low(j) == "percent":
            percent, text_end, j = True, self.t[j].end, j + 1
        number = Number(tok.value, tok.start, text_end, self._text(tok.start, text_end), percent)
        unit: list[str] = []
        while len(unit) < 3 and j < len(self.t) and self.t[j].kind == "word" and self.t[j].low not in _RESERVED:
            unit.append(self.t[j].low)
            j += 1
        return _Operand(number, tuple(unit), j)

    def _text(self, start: int, end: int) -> str:
        return self.source[start - self.offset:end - self.offset]

    def op(self, i: int) -> tuple[str, int] | None:
        hit = self.first(i, _OPS)
        return (_OPS[hit[0]], hit[1]) if hit else None

    def verb(self, i: int) -> int | None:
        hit = self.first(i, _VERBS)
        return None if hit is None else self.seq(hit[1], ("a", "total", "of")) or hit[1]

    def result(self, i: int) -> Number | None:
        """The claimed number at ``i``, if nothing after it changes its meaning."""
        if i >= len(self.t) or self.t[i].kind != "num":
            return None
        tok, j = self.t[i], i + 1
        if self.low(j) == "of":  # "is 15 of the 20"
            return None
        for k in range(j, min(j + 4, len(self.t))):
            nxt = self.t[k]
            if nxt.kind in ("num", "sym", "glued") or nxt.low in ("^", "(", "–"):
                return None  # "240g/5", "15 4-packs", "15 = ...": more arithmetic follows
            if nxt.kind != "word" or nxt.low in _AFTER_STOP:
                break
            if nxt.low in _AFTER_BAD:
                return None
            if nxt.low == "times" and k + 1 < len(self.t) and self.t[k + 1].kind in ("word", "num"):
                return None  # "9 times as many", "9 times 2"
        return _num(tok)

    # ------------------------------------------------------------------------------ left sides

    def chain(self, i: int) -> tuple[list[_Operand], list[str], int] | None:
        first = self.operand(i)
        if first is None:
            return None
        operands, ops, j = [first], [], first.end
        while (hit := self.op(j)) is not None:
            nxt = self.operand(hit[1])
            if nxt is None:
                return None  # "3 times a week": an operation on something that is not a number
            ops.append(hit[0])
            operands.append(nxt)
            j = nxt.end
        return (operands, ops, j) if ops else None

    def part(self, i: int) -> tuple[list[Number], float, int] | None:
        """``PART "of" ["the"]`` at ``i``: the numbers it is written with, its value, the index after "of"."""
        t, low = self.t, self.low
        nums: list[Number] = []
        j = i
        if low(i) in ("a", "one") and low(i + 1) in _ORD and not low(i + 1).endswith("s"):
            nums, value, j = [self._word(i, i + 1, 1 / _ORD[low(i + 1)])], 1 / _ORD[low(i + 1)], i + 2
        elif low(i) == "half":
            nums, value, j = [self._word(i, i, 0.5)], 0.5, i + 1
        elif low(i) in _NUMWORDS and low(i + 1) in _ORD and low(i + 1) != "half":
            value = _NUMWORDS[low(i)] / _ORD[low(i + 1)]
            nums, j = [self._word(i, i + 1, value)], i + 2
        elif i < len(t) and t[i].kind == "num" and not t[i].dollar:
            tok = t[i]
            if tok.percent or low(i + 1) == "percent":
                j = i + 1 + (not tok.percent)
                nums, value = [Number(tok.value, tok.start, t[j - 1].end, self._text(tok.start, t[j - 1].end), True)], \
                    tok.value / 100
            elif low(i + 1) == "/" and i + 2 < len(t) and t[i + 2].kind == "num" and t[i + 2].value and \
                    not (t[i + 2].percent or t[i + 2].dollar):
                d = t[i + 2]
                nums, value, j = [_num(tok), _num(d)], tok.value / d.value, i + 3
            elif low(i + 1) in _ORD and low(i + 1) not in ("half", "halves"):
                nums, value, j = [_num(tok), self._word(i + 1, i + 1, 1 / _ORD[low(i + 1)])], \
                    tok.value / _ORD[low(i + 1)], i + 2
            else:
                return None
        else:
            return None
        if low(j) != "of":
            return None
        j += 1
        return nums, value, (j + 1 if low(j) == "the" else j)

    def _word(self, a: int, b: int, value: float) -> Number:
        return Number(value, self.t[a].start, self.t[b].end, self._text(self.t[a].start, self.t[b].end))

    # ------------------------------------------------------------------------------ claims

    def cut_short(self, i: int) -> bool:
        """Whether a left side starting at token ``i`` may be the tail of a larger phrase: right after a number or a
        word or symbol of :data:`_BEFORE_BAD`, or an operation a few words before ("2 cats + his 1 dog + 1 rat")."""
        prev = self.t[i - 1] if i > 0 else None
        if prev is not None and (prev.low in _BEFORE_BAD or prev.kind in ("num", "glued")):
            return True
        k = i - 1
        while k >= 0 and i - k <= 3 and self.t[k].kind == "word" and self.t[k].low not in _VERB_WORDS:
            k -= 1
        return k >= 0 and k < i - 1 and (self.t[k].kind == "sym" or self.op(k) is not None)

    def claim_at(self, i: int) -> Claim | None:
        if self.cut_short(i):
            return None
        forms = (self._chain_claim, self._mult_claim, self._part_claim, self._of_claim, self._price_claim)
        return next((c for form in forms if (c := form(i)) is not None), None)

    def _finish(self, i: int, j: int, operands: list[Number], values: set[float],
                unit: tuple[str, ...] | None = None) -> Claim | None:
        """``VERB result`` at ``j``; ``unit``: the unit the result must repeat."""
        k = self.verb(j)
        res = self.result(k) if k is not None and values else None
        if res is None or (unit is not None and ((got := self.operand(k)) is None or got.unit[:len(unit)] != unit)):
            return None
        return _claim(self.t[i].start, operands, res, values)

    def _chain_claim(self, i: int) -> Claim | None:
        found = self.chain(i)
        if found is None:
            return None
        operands, ops, j = found
        if ops == ["/"] and not operands[0].unit and self.t[i].end == self.t[i + 1].start and self.low(j) != "=":
            return None  # "2/5 is 12.8 hectares": a written fraction is often a part, not a division
        return self._finish(i, j, [o.number for o in operands], _chain_values(operands, ops))

    def _mult_claim(self, i: int) -> Claim | None:
        if self.low(i) not in _MULT:
            return None
        x = self.operand(i + 1)
        if x is None or self.op(x.end) is not None:
            return None
        m = _MULT[self.low(i)]
        return self._finish(i, x.end, [self._word(i, i, m), x.number], {m * v for v in _readings(x.number)})

    def _part_claim(self, i: int) -> Claim | None:
        found = self.part(i)
        if found is None:
            return None
        nums, value, j = found
        x = self.operand(j)
        if x is None or self.op(x.end) is not None:
            return None
        return self._finish(i, x.end, [*nums, x.number], {value * v for v in _readings(x.number)})

    def _of_claim(self, i: int) -> Claim | None:
        q = self.operand(i)
        if q is None or not q.unit or q.number.percent or q.number.text.startswith("$") or self.low(q.end) != "of":
            return None
        x = self.operand(q.end + 1)
        if x is None or not x.unit or self.op(x.end) is not None:
            return None
        return self._finish(i, x.end, [q.number, x.number], {q.number.value * x.number.value}, unit=x.unit[-1:])

    def _price_claim(self, i: int) -> Claim | None:
        q = self.operand(i)
        if q is None or not q.unit or q.number.percent or q.number.text.startswith("$"):
            return None
        hit = self.first(q.end, _PRICE)
        p = self.operand(hit[1]) if hit else None
        if p is None or not p.number.text.startswith("$") or p.unit:
            return None
        j = p.end
        if self.low(j) in ("each", "apiece"):
            j += 1
        elif self.seq(j, ("a", "piece")) or (self.low(j) == "per" and self.t[j + 1:j + 2]
                                              and self.t[j + 1].kind == "word"):
            j += 2
        else:
            return None
        j += self.low(j) == ","
        link = self.first(j, _LINKS)
        k = link[1] if link else self.verb(j)
        if k is None:
            return None
        for _ in range(_FILLER_MAX):
            k += self.low(k) in _FILLER and self.t[k].kind == "word"
        res = self.result(k) if k < len(self.t) and self.t[k].dollar else None
        values = {q.number.value * p.number.value}
        return None if res is None else _claim(self.t[i].start, [q.number, p.number], res, values)


def _num(tok: _Tok) -> Number:
    return Number(tok.value, tok.start, tok.end, tok.text, tok.percent)


def _readings(n: Number) -> tuple[float, ...]:
    return (n.value / 100, n.value) if n.percent else (n.value,)


def _chain_values(operands: list[_Operand], ops: list[str]) -> set[float]:
    """Every value of the chain: precedence or left to right, each percentage as ``p/100`` or ``p``."""
    out: set[float] = set()
    for vals in itertools.product(*[_readings(o.number) for o in operands]) if len(operands) <= 6 else ():
        std = "".join(f"({v!r}){op}" for v, op in zip(vals, ops)) + f"({vals[-1]!r})"
        l2r = "(" * len(ops) + f"({vals[0]!r})" + "".join(f"{op}({v!r}))" for v, op in zip(vals[1:], ops))
        for expr in (std, l2r):
            out |= {v} if (v := evaluate(expr)) is not None else set()
    return out


def _claim(start: int, operands: list[Number], res: Number, values: set[float]) -> Claim:
    claimed = (res.value, res.value / 100) if res.percent else (res.value,)
    digits = res.text.rstrip("% ").lstrip("$ ")
    ok = any(close_enough(c, digits, v) for c in claimed for v in values)
    true = min(values, key=lambda v: min(abs(v - c) for c in claimed))
    return Claim(start, res.end, tuple(operands), res, ok, true, "prose")


def find_prose_claims(text: str, offset: int = 0) -> list[Claim]:
    """Every arithmetic claim ``text`` states in prose (see the module docstring), in order, not overlapping;
    offsets are shifted by ``offset``, so ``text[c.start - offset:c.end - offset]`` is the claim."""
    check_type("text", text, str)
    check_int("offset", offset, 0, None)
    parser = _Parser(text, offset)
    out: list[Claim] = []
    i = 0
    while i < len(parser.t):
        claim = parser.claim_at(i) if parser.t[i].kind in ("num", "word") else None
        out += [claim] if claim is not None else []
        i += 1
        while claim is not None and i < len(parser.t) and parser.t[i].start < claim.end:
            i += 1
    return out
