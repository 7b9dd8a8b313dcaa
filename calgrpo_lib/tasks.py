"""The offline default task: seeded multi-step arithmetic word problems with GSM8K-style solutions.

A problem is one or more *chains*: a person starts with a quantity and a few events change it (buy more, give
away, multiply, share equally). With ``nesting=2`` two people each have a chain and a last step combines them.
Every reference solution is written in the GSM8K format, one calculation per line
(:func:`calgrpo_lib.arithmetic.format_solution`)::

    12 + 5 = <<12+5=17>>17
    17 * 3 = <<17*3=51>>51
    #### 51

Splits are disjoint by construction: each question is hashed into a bucket and belongs to exactly one split, so
``train`` and ``test`` never share a question, whatever the seeds. The same ``(n, seed, split, config)`` always
gives byte-identical problems.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from .arithmetic import apply_op, format_solution
from .validation import check_choice, check_int, check_type

__all__ = ["Problem", "TaskConfig", "generate_problems", "OPERATIONS", "SPLITS"]

OPERATIONS = ("+", "-", "*", "/")
SPLITS = ("train", "test")
_TEST_BUCKETS = 10  # 1 question in 10 goes to the test split (by hash of its text)

_NAMES = ("Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kim", "Leo", "Mia", "Noor",
          "Omar", "Pia", "Raj", "Sara", "Tom", "Uma", "Vik", "Wen", "Yuki", "Zoe")
_ITEMS = ("apples", "marbles", "stickers", "coins", "books", "cards", "pens", "shells", "stamps", "beads",
          "cookies", "tickets")
_START = ("{n} has {a} {item}.", "{n} starts with {a} {item}.", "{n} owns {a} {item}.")
_EVENTS = {
    "+": ("{n} buys {b} more.", "{n} finds {b} more {item}.", "{n} gets {b} more {item} as a gift."),
    "-": ("{n} gives away {b}.", "{n} loses {b} {item}.", "{n} sells {b} {item}."),
    "*": ("{n} then has {b} times as many.", "The number of {item} grows {b} times.",
          "{n} multiplies the {item} by {b}."),
    "/": ("{n} shares them equally among {b} bags and keeps one bag.", "{n} splits the {item} into {b} equal groups "
          "and keeps one group.", "{n} keeps one part after dividing the {item} into {b} equal parts."),
}
_ASK_ONE = ("How many {item} does {n} have now?", "How many {item} does {n} have at the end?")
_COMBINE = {
    "+": ("How many {item} do {n} and {m} have together?", "What is the total number of {item} of {n} and {m}?"),
    "-": ("How many more {item} does {n} have than {m}?",),
}


@dataclass(frozen=True)
class Problem:
    """One math word problem, synthetic or GSM8K, in one record type.

    ``answer`` is the full reference solution (calculation lines, then ``#### final``); ``steps`` are its lines
    before ``####``; ``final`` is the number after ``####``.
    """

    question: str
    answer: str
    steps: tuple[str, ...]
    final: int | float
    id: str = ""
    source: str = "synthetic"


@dataclass(frozen=True)
class TaskConfig:
    """Difficulty knobs of the synthetic task. Defaults are the difficulty the tiny policy is trained on.

    - ``min_steps``/``max_steps``: calculation lines per solution, 1-6 (the combining step of ``nesting=2`` counts).
    - ``max_digits``: operands drawn from ``1 .. 10**max_digits - 1`` unless ``operand_range`` is given.
    - ``operand_range``: inclusive ``(low, high)`` for operands, ``1 <= low <= high``. Multipliers and divisors are
      further capped at 12 so that numbers stay readable.
    - ``operations``: any of ``+ - * /``; ``/`` is always exact (the divisor divides the running value).
    - ``nesting``: 1 = one chain of events; 2 = two people's chains combined by a final ``+`` or ``-`` step.
    - ``wordings``: how many phrasings per sentence kind to draw from (1 = always the first, 3 = all).
    """

    min_steps: int = 2
    max_steps: int = 3
    max_digits: int = 1
    operand_range: tuple[int, int] | None = None
    operations: tuple[str, ...] = OPERATIONS
    nesting: int = 1
    wordings: int = 3
    _lohi: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_int("min_steps", self.min_steps, 1, 6)
        check_int("max_steps", self.max_steps, 1, 6)
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps={self.max_steps} is below min_steps={self.min_steps}; need min <= max")
        check_int("max_digits", self.max_digits, 1, 6)
        check_int("nesting", self.nesting, 1, 2)
        check_int("wordings", self.wordings, 1, 3)
        if self.nesting == 2 and self.max_steps < 3:
            raise ValueError(f"nesting=2 needs max_steps >= 3 (two chains and a combining step), got {self.max_steps}")
        check_type("operations", self.operations, (tuple, list))
        if not self.operations:
            raise ValueError(f"operations is empty; allowed: a non-empty subset of {OPERATIONS}")
        for op in self.operations:
            check_choice("operations", op, OPERATIONS)
        if not ({"+", "*"} & set(self.operations)):
            raise ValueError(f"operations={tuple(self.operations)} can shrink the value only; include '+' or '*'")
        if self.operand_range is None:
            lohi = (1, 10 ** self.max_digits - 1)
        else:
            if (not isinstance(self.operand_range, (tuple, list)) or len(self.operand_range) != 2
                    or not all(isinstance(v, int) for v in self.operand_range)):
                raise ValueError(f"operand_range={self.operand_range!r}; allowed: a pair of ints (low, high)")
            lohi = tuple(self.operand_range)
            if not 1 <= lohi[0] <= lohi[1]:
                raise ValueError(f"operand_range={self.operand_range!r} is empty or not positive; "
                                 "allowed: 1 <= low <= high")
        object.__setattr__(self, "operations", tuple(self.operations))
        object.__setattr__(self, "_lohi", lohi)


def _chain(rng: random.Random, cfg: TaskConfig, n_events: int, name: str, item: str, pick) -> tuple[list, list, int]:
    lo, hi = cfg._lohi
    value = rng.randint(max(lo, 2), max(hi, 2))
    sentences, calcs = [pick(_START).format(n=name, a=value, item=item)], []
    for _ in range(n_events):
        ops = list(cfg.operations)
        rng.shuffle(ops)
        for op in ops:  # first op that fits the running value
            if op == "+":
                b = rng.randint(lo, hi)
            elif op == "-":
                if value - lo < 1:
                    continue
                b = rng.randint(lo, min(hi, value - 1))
            elif op == "*":
                cap = min(hi, 12)
                if cap < 2:
                    continue
                b = rng.randint(2, cap)
            else:
                divisors = [d for d in range(max(lo, 2), min(hi, 12) + 1) if value % d == 0]
                if not divisors:
                    continue
                b = rng.choice(divisors)
            break
        else:  # nothing fits (e.g. only '-' and '/' on a small value): add
            op, b = "+", rng.randint(lo, hi)
        sentences.append(pick(_EVENTS[op]).format(n=name, b=b, item=item))
        calcs.append((value, op, b))
        value = apply_op(value, op, b)
    return sentences, calcs, value


def _one_problem(rng: random.Random, cfg: TaskConfig) -> tuple[str, list[tuple[int, str, int]]]:
    def pick(options: tuple[str, ...]) -> str:
        return rng.choice(options[: cfg.wordings])

    n_steps = rng.randint(cfg.min_steps, cfg.max_steps)
    item = rng.choice(_ITEMS)
    if cfg.nesting == 1 or n_steps < 3:
        name = rng.choice(_NAMES)
        sentences, calcs, _ = _chain(rng, cfg, n_steps, name, item, pick)
        return " ".join([*sentences, pick(_ASK_ONE).format(n=name, item=item)]), calcs
    name, other = rng.sample(_NAMES, 2)
    k = (n_steps - 1) // 2
    s1, c1, v1 = _chain(rng, cfg, k, name, item, pick)
    s2, c2, v2 = _chain(rng, cfg, n_steps - 1 - k, other, item, pick)
    op = "-" if v1 > v2 and rng.random() < 0.5 else "+"
    question = " ".join([*s1, *s2, pick(_COMBINE[op]).format(n=name, m=other, item=item)])
    return question, [*c1, *c2, (v1, op, v2)]


def _split_of(question: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % _TEST_BUCKETS
    return "test" if bucket == 0 else "train"


def generate_problems(n: int, seed: int = 0, split: str = "train", config: TaskConfig | None = None) -> list[Problem]:
    """Generate ``n`` distinct problems of ``split`` ("train" or "test"), deterministically from ``seed``."""
    check_int("n", n, 0, None)
    check_int("seed", seed, None, None)
    check_choice("split", split, SPLITS)
    cfg = config if config is not None else TaskConfig()
    check_type("config", cfg, TaskConfig)
    rng = random.Random(f"calgrpo-tasks/{seed}")
    seen: set[str] = set()
    out: list[Problem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise ValueError(f"could only find {len(out)} distinct {split} problems of n={n} with {cfg}; "
                             "widen operand_range or steps")
        question, calcs = _one_problem(rng, cfg)
        if question in seen or _split_of(question) != split:
            continue
        seen.add(question)
        steps, answer, final = format_solution(calcs)
        out.append(Problem(question, answer, steps, final, id=f"{split}-{seed}-{len(out)}", source="synthetic"))
    return out
