"""GSM8K reference answers rewritten as prose, the test material of the prose step checker
(:mod:`calgrpo_lib.prose_claims`): :func:`reword_solution` and :func:`prose_mistake`.

Rules of :func:`reword_solution`, line by line (so ``split_steps`` of the result has one step per step of the
reference, in the same order):

- ``#### n`` becomes "So the answer is n.";
- every calculator annotation ``<<a*b=c>>`` is dropped, keeping the number shown after it (``$`` and ``%``
  included): ``9 * 2 = $<<9*2=18>>18`` -> ``9 * 2 = $18``. When the words around it no longer state the
  calculation (``He has <<3*2=6>>6 dollars``), the annotation's own expression is written out instead, in words
  (``He has 3 times 2, which is 6 dollars``) or, with parentheses or powers, as ``(3+4)*2 = 14``;
- every equation the prose reader understands is then put in words, with a seeded choice among the wordings:
  ``a * b = c`` -> "a times b is c", "a multiplied by b gives c", "twice b makes c" (``a`` = 2),
  "p% of a comes to c" (``b`` = ``p%``); ``a / b`` -> "a divided by b", "half of a" / "a third of a" /
  "a quarter of a" (``b`` = 2, 3, 4); ``+`` -> "plus", ``-`` -> "minus"; ``=`` -> is, makes, gives, equals, comes
  to, is equal to, ", which is". Units stay where they were ("20 sheep plus 160 sheep makes 180 sheep").

Each wording is checked to be read back by :func:`~calgrpo_lib.prose_claims.find_prose_claims` (or, for a kept
``=`` equation, by :func:`~calgrpo_lib.claims.find_claims`) with the same result; a wording that is not read back
is not used. So the checker sees every calculation of the reference, and a mistake put in one of them stays
visible. The same ``rng`` (an int seed or a :class:`random.Random`) gives the same text.

:func:`prose_mistake` puts one arithmetic mistake into a reference (:func:`calgrpo_lib.arithmetic.corrupt_solution`:
one calculated result changed, optionally carried through the later lines), then rewords it; it returns the text
and the index of its first erroneous step.

:func:`prose_benchmark` makes a small benchmark in ProcessBench's format from GSM8K-style problems (what notebook 02
and the tests evaluate oracles on when the real ProcessBench is not at hand): every other problem reworded
correctly (label -1), the others with one mistake (label: its step).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from .arithmetic import close_enough, corrupt_solution, evaluate, parse_value
from .claims import Claim, find_claims
from .data import ProcessBenchRecord
from .prose_claims import find_prose_claims
from .rewards import extract_answer, parse_number
from .steps import split_steps
from .validation import check_float, check_type

__all__ = ["reword_solution", "prose_mistake", "prose_benchmark", "OP_WORDS", "VERB_WORDS"]

#: wordings of each operation, ``{a}``/``{b}`` being the operands with their units
OP_WORDS: dict[str, tuple[str, ...]] = {"*": ("times", "multiplied by"), "+": ("plus",), "-": ("minus",),
                                        "/": ("divided by",)}
#: wordings of ``=`` (a leading comma is written right after the left side)
VERB_WORDS: tuple[str, ...] = ("is", "makes", "gives", "equals", "comes to", "is equal to", ", which is")
_PARTS = {2: "half", 3: "a third", 4: "a quarter"}
_ANNOT = re.compile(r"(?P<eq>=\s*)?(?P<dollar>\$\s?)?<<(?P<expr>[^<>=\n]*)=(?P<res>[^<>=\n]*)>>"
                    r"(?P<shown>-?(?:\d[\d,]*(?:\.\d+)?|\.\d+))?")
_FINAL = re.compile(r"^(\s*)####\s*(.*?)\s*$")
_EXPR_TOKEN = re.compile(r"\d+(?:\.\d+)?|\.\d+|[-+*/x^()%]|\s+|.")
_SYM = {"*": "*", "x": "*", "X": "*", "×": "*", "+": "+", "-": "-", "−": "-", "/": "/", "÷": "/"}
_GAP_OP = re.compile(r"^(?P<u>.*?)\s*(?P<op>[+*/×÷−-]|(?<![A-Za-z])[xX])\s*$")
_GAP_EQ = re.compile(r"^(?P<u>.*?)\s*=\s*$")
_MODES = ("plain", "words", "symbols", "aside")


def _rng(rng: random.Random | int) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int):
        raise TypeError(f"rng={rng!r} has type {type(rng).__name__}; allowed: an int seed or a random.Random")
    return random.Random(rng)


def _verb(rng: random.Random, left: str) -> str:
    v = rng.choice(VERB_WORDS)
    return f"{left}{v} " if v.startswith(",") else f"{left} {v} "


def _expr_words(expr: str, rng: random.Random) -> str | None:
    """An annotation's expression in words ("3*2" -> "3 times 2"); ``None`` with parentheses, powers or ``%``."""
    out = []
    for tok in _EXPR_TOKEN.findall(expr):
        if tok.isspace():
            continue
        if tok in "()^%" or not (tok[0].isdigit() or tok[0] == "." or tok in _SYM):
            return None
        out.append(rng.choice(OP_WORDS[_SYM[tok]]) if tok in _SYM else tok)
    return " ".join(out) if len(out) >= 3 else None


def _all_claims(text: str) -> list[Claim]:
    symbolic = find_claims(text)
    prose = [p for p in find_prose_claims(text) if not any(p.start < c.end and c.start < p.end for c in symbolic)]
    return symbolic + prose


def _strip(line: str, modes: list[str], rng: random.Random) -> tuple[str, list[int]]:
    """``line`` without annotations (each written as its mode says); the end of each annotation's result.

    Modes: ``plain`` drops the annotation; ``words`` writes its expression in words in its place (", so 3 times 2
    is 6"); ``symbols`` writes it as an equation (", so 3*2 = 6"); ``aside`` drops it and states the calculation in
    parentheses at the end of the line ("(that is, 3 times 2 is 6)"), where nothing after it can blur it."""
    out, pos, ends, asides = "", 0, [], []
    for m, mode in zip(_ANNOT.finditer(line), modes):
        out += line[pos:m.start()]
        eq, dollar = m.group("eq") or "", (m.group("dollar") or "").strip()
        shown = m.group("shown") or m.group("res").strip()
        words = _expr_words(m.group("expr"), rng) if mode in ("words", "aside") else None
        if mode in ("plain", "aside"):
            out += f"{eq}{m.group('dollar') or ''}{shown}"
            if mode == "aside":
                said = _verb(rng, words) if words else f"{m.group('expr').strip()} = "
                asides.append(f"that is, {said}{dollar}{shown}")
        else:
            out = out.rstrip() + (", so " if eq else " ") if out.strip() else out
            out += (_verb(rng, words) if words else f"{m.group('expr').strip()} = ") + f"{dollar}{shown}"
        ends.append(len(out) if mode != "aside" else -len(asides))
        pos = m.end()
    out += line[pos:]
    for k, aside in enumerate(asides, 1):
        out += f" ({aside})"
        ends = [len(out) - 1 if e == -k else e for e in ends]
    return out, ends


def _word_claim(line: str, c: Claim, rng: random.Random) -> str | None:
    """``line`` with the prose claim ``c`` (written with ``+ - * / =``) put in words; ``None`` if it has no symbol."""
    ops, units, nums = [], [], c.operands
    for a, b in zip(nums, nums[1:]):
        m = _GAP_OP.match(line[a.end:b.start])
        if m is None:
            return None
        ops.append(_SYM[m.group("op")])
        units.append(m.group("u"))
    last = _GAP_EQ.match(line[nums[-1].end:c.result.start]) if nums else None
    if last is None or not ops:
        return None
    units.append(last.group("u"))
    terms = [line[n.start:n.end] + u for n, u in zip(nums, units)]
    plain_b = len(nums) == 2 and not units[1].strip() and not nums[1].percent and "$" not in nums[1].text
    plain_a = len(nums) == 2 and not units[0].strip() and not nums[0].percent and "$" not in nums[0].text
    forms = [" ".join(t for pair in zip(terms, [*(rng.choice(OP_WORDS[o]) for o in ops), ""]) for t in pair).strip()]
    if plain_b and ops == ["/"] and nums[1].value in _PARTS:
        forms.insert(0, f"{_PARTS[int(nums[1].value)]} of {terms[0]}")
    if ops == ["*"] and plain_a and nums[0].value == 2:
        forms.insert(0, f"twice {terms[1]}")
    elif ops == ["*"] and plain_b and nums[1].value == 2:
        forms.insert(0, f"twice {terms[0]}")
    if ops == ["*"] and nums[1].percent and not units[1].strip():
        forms.insert(0, f"{line[nums[1].start:nums[1].end]} of {terms[0]}")
    if len(forms) > 1 and rng.random() < 0.5:
        forms = forms[1:] + forms[:1]  # the special form half of the time
    for left in forms:
        new = _verb(rng, left) + line[c.result.start:c.result.end]
        cand = line[:c.start] + new + line[c.result.end:]
        end = c.start + len(new)
        if any(p.start == c.start and p.end == end for p in find_prose_claims(cand)):
            return cand
    return None


def _covered(text: str, ends: list[int], holds: list[bool | None]) -> list[bool]:
    """Whether each annotation's result is read back as the result of a claim that holds as the annotation did."""
    found = {c.result.end: c.ok for c in _all_claims(text)}
    return [h is None or found.get(e) == h for e, h in zip(ends, holds)]


def _holds(m: re.Match) -> bool | None:
    """Whether an annotation's arithmetic is right; ``None`` when it is no calculation (``<<40=40>>``,
    ``<<3/4=3/4>>``)."""
    expr = m.group("expr").strip()
    res = parse_value(m.group("res").strip())
    true = evaluate(expr.replace("x", "*").replace("^", "**"))
    if res is None or true is None or not any(ch in _SYM for ch in expr.lstrip("+-")):
        return None
    return close_enough(res[0], m.group("res").strip(), true)


def _reword_line(line: str, rng: random.Random) -> str:
    final = _FINAL.match(line)
    if final:
        return f"{final.group(1)}So the answer is {final.group(2).rstrip('.')}."
    holds = [_holds(m) for m in _ANNOT.finditer(line)]
    modes = ["plain"] * len(holds)  # an annotation without an operation ("x=<<40=40>>40") only restates a number
    state = random.Random(rng.random())
    while True:
        text, ends = _strip(line, modes, random.Random(state.random()))
        bad = [i for i, ok in enumerate(_covered(text, ends, holds)) if not ok and modes[i] != "aside"]
        if not bad:
            break
        for i in bad:
            modes[i] = _MODES[_MODES.index(modes[i]) + 1]
    before = len(_all_claims(text))
    worded = text
    for c in sorted(find_prose_claims(text), key=lambda c: -c.start):  # right to left: offsets stay valid
        new = _word_claim(worded, c, rng)
        if new is not None:
            worded = new
    return worded if len(_all_claims(worded)) >= before else text


def reword_solution(answer: str, rng: random.Random | int = 0) -> str:
    """``answer`` (a GSM8K reference) rewritten as prose without annotations (see the module docstring); seeded by
    ``rng`` and deterministic; its lines correspond one to one to ``answer``'s."""
    check_type("answer", answer, str)
    r = _rng(rng)
    return "\n".join(_reword_line(line, r) for line in answer.split("\n"))


def prose_mistake(answer: str, rng: random.Random | int = 0, *, propagate: bool = False) -> tuple[str, int] | None:
    """``(text, step)``: ``answer`` with one calculated result made wrong
    (:func:`~calgrpo_lib.arithmetic.corrupt_solution`, carried through the later lines with ``propagate=True``),
    reworded as prose; ``step`` indexes its first erroneous step in ``split_steps(text)``. ``None`` when no mistake
    can be put in."""
    check_type("answer", answer, str)
    check_type("propagate", propagate, bool)
    r = _rng(rng)
    c = corrupt_solution(answer, r, propagate=propagate)
    if c is None:
        return None
    return reword_solution(c.text, r), c.step


def prose_benchmark(problems: Sequence[Any], seed: int = 0, *, error_share: float = 0.5,
                    propagate: bool = False) -> list[ProcessBenchRecord]:
    """ProcessBench-format records (split ``"gsm8k"``, generator ``"calgrpo-prose"``) from ``problems``, each a
    :class:`~calgrpo_lib.tasks.Problem` or a ``(question, answer)`` pair with a GSM8K-style answer. Problem ``i``
    is reworded with the seed ``seed * 1_000_003 + i``; a share ``error_share`` of them (spread evenly) gets one
    mistake (:func:`prose_mistake`; a problem without a calculation to corrupt stays correct). Steps are the lines
    of the text (:func:`~calgrpo_lib.steps.split_steps`), so the label indexes the oracle's own numbering."""
    check_type("problems", problems, (list, tuple))
    check_type("seed", seed, int)
    check_float("error_share", error_share, 0.0, 1.0)
    records = []
    for i, p in enumerate(problems):
        question, answer = (p.question, p.answer) if hasattr(p, "question") else p
        check_type(f"problems[{i}] question", question, str)
        check_type(f"problems[{i}] answer", answer, str)
        rng = random.Random(seed * 1_000_003 + i)
        wrong = int((i + 1) * error_share) > int(i * error_share)  # error_share of the problems, spread evenly
        made = prose_mistake(answer, rng, propagate=propagate) if wrong else None
        text, label = made if made is not None else (reword_solution(answer, rng), -1)
        final = parse_number(extract_answer(text)) == parse_number(extract_answer(answer))
        records.append(ProcessBenchRecord(f"prose-{i}", question, tuple(s.text for s in split_steps(text)), label,
                                          final, "calgrpo-prose", "gsm8k"))
    return records
