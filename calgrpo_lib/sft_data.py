"""What the tiny policy is trained on: the SFT problems, their targets and their token ids.

A target is the GSM8K reference solution of a synthetic problem, or a deliberately wrong one: a *slip*
(:func:`slip_answer`: one line off by 1, 2 or 10, the later lines computing on from it) or the *forgotten-carry*
misconception (:func:`dropped_carry_answer`: every carry and borrow forgotten). Both are written by
:func:`calgrpo_lib.arithmetic.rewrite_chain`. :func:`training_problems` picks the problems (only those where the
misconception can be written out, with a chosen share of hard carries), :func:`training_answers` draws each one's
target, :func:`encode_examples` turns prompt and target into token ids for supervised fine-tuning, and
:func:`batch_order` / :func:`collate` give the order and the padding of the SFT batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .arithmetic import carry_kind, forgotten_carry_shift, rewrite_chain, solution_calcs
from .rewards import build_prompt
from .tasks import Problem, TaskConfig, generate_problems
from .validation import check_float, check_int, check_type

__all__ = ["SLIPS", "slip_answer", "dropped_carry_answer", "misconception_applies", "has_hard_carry",
           "training_problems", "training_answers", "target_counts", "encode_examples", "batch_order", "collate"]

SLIPS = (-10, -2, -1, 1, 2, 10)  # how far a slipped line's result lands from the right one


def _slip_on(line: int, delta: int) -> Callable[[int, int, str, int], int]:
    """The ``shift`` of :func:`~calgrpo_lib.arithmetic.rewrite_chain` that adds ``delta`` to line ``line`` only."""
    return lambda k, a, op, b: delta if k == line else 0


def slip_answer(problem: Problem, rng: random.Random) -> str:
    """``problem.answer`` with one arithmetic slip: one line's result is off by 1, 2 or 10 and the following lines
    compute correctly from the wrong value, so the final answer is wrong. Such slips in a fifth of the SFT data
    teach the tiny policy to slip now and then when it samples (greedy decoding mostly does not), which gives GRPO
    groups with both right and wrong answers and errors that sit in one identifiable line. Falls back to the
    unchanged answer when no line can slip exactly."""
    calcs = solution_calcs(problem.steps)
    if calcs is None:
        return problem.answer
    for k in rng.sample(range(len(calcs)), len(calcs)):
        text = rewrite_chain(calcs, _slip_on(k, rng.choice(SLIPS)))
        if text is not None:
            return text
    return problem.answer


def dropped_carry_answer(problem: Problem) -> str | None:
    """``problem.answer`` with every carry and borrow forgotten (:func:`~calgrpo_lib.arithmetic.forgotten_carry_shift`):
    each line computes from the previous line's (possibly wrong) result with that rule; ``None`` when no line
    carries or borrows, or when the chain cannot continue exactly (an inexact division, a negative value).

    An addition whose units overflow loses the carry (``7 + 5 = 2``, ``48 + 4 = 42``: 10 short); a subtraction
    whose units need a borrow loses it (``54 - 8 = 56``: 10 over). A systematic misconception rather than a random
    slip: one rule on every line it applies to, so it is one thing to unlearn, and the step checker localizes the
    first line it breaks."""
    calcs = solution_calcs(problem.steps)
    if not calcs:
        return None
    return rewrite_chain(calcs, lambda k, a, op, b: forgotten_carry_shift(a, op, b))


def misconception_applies(problem: Problem) -> bool:
    """Whether the forgotten-carry rule can be written out for ``problem``: no line carries or borrows, or
    :func:`dropped_carry_answer` continues the chain exactly."""
    calcs = solution_calcs(problem.steps)
    return not any(forgotten_carry_shift(a, op, b) for a, op, b, _ in calcs or []) \
        or dropped_carry_answer(problem) is not None


def has_hard_carry(problem: Problem) -> bool:
    """Whether a line of ``problem``'s reference carries into a tens digit or borrows
    (:func:`~calgrpo_lib.arithmetic.carry_kind` ``"two-digit sum"`` or ``"borrow"``)."""
    return any(carry_kind(a, op, b) in ("two-digit sum", "borrow")
               for a, op, b, _ in solution_calcs(problem.steps) or [])


def training_problems(n: int, *, seed: int = 0, task: TaskConfig | None = None, carry_bug_rate: float = 0.0,
                      hard_carry_share: float | None = None) -> list[Problem]:
    """``n`` train-split problems of ``task``; with a misconception (``carry_bug_rate > 0``), only those where it can
    be written out, so that it is the same rule on every line that carries or borrows; with ``hard_carry_share``,
    that share of them (rounded) with a line that carries into a tens digit or borrows, in a seeded random order.
    Without either, ``generate_problems(n, seed, "train", task)``."""
    check_int("n", n, 0, None)
    check_float("carry_bug_rate", carry_bug_rate, 0.0, 1.0)
    if hard_carry_share is not None:
        check_float("hard_carry_share", hard_carry_share, 0.0, 1.0, high_open=True)
    task = task if task is not None else TaskConfig()
    check_type("task", task, TaskConfig)
    if not carry_bug_rate and hard_carry_share is None:
        return generate_problems(n, seed=seed, split="train", config=task)
    n_hard = None if hard_carry_share is None else round(n * hard_carry_share)
    size = n * 3 // 2
    while True:  # a larger pool starts with the same problems (generate_problems is a prefix of a longer call)
        pool = [p for p in generate_problems(size, seed=seed, split="train", config=task)
                if not carry_bug_rate or misconception_applies(p)]
        if n_hard is None:
            problems = pool[:n]
        else:
            hard = [has_hard_carry(p) for p in pool]
            problems = [p for p, h in zip(pool, hard) if h][:n_hard] + [p for p, h in zip(pool, hard) if not h][
                : n - n_hard]
        if len(problems) == n:
            if n_hard is not None:  # mix the two kinds in a seeded order
                random.Random(seed).shuffle(problems)
            return problems
        if size >= 64 * n:
            raise ValueError(f"only {len(problems)} of {size} generated problems fit the forgotten-carry rule and "
                             f"hard_carry_share={hard_carry_share}, fewer than the {n} needed; allowed: a task "
                             "whose problems mostly fit them")
        size *= 2


def training_answers(problems: Sequence[Problem], slip_rate: float, seed: int,
                     carry_bug_rate: float = 0.0) -> list[str]:
    """The SFT target of each problem: with probability ``carry_bug_rate`` (problems with a line that carries or
    borrows only) the answer with that carry dropped (:func:`dropped_carry_answer`), else with probability
    ``slip_rate`` a slipped one, else its reference solution. The two draws use separate random streams, so
    ``carry_bug_rate=0`` gives the same targets as before it existed."""
    check_float("slip_rate", slip_rate, 0.0, 1.0)
    check_float("carry_bug_rate", carry_bug_rate, 0.0, 1.0)
    rng, carry_rng = random.Random(f"calgrpo-slips/{seed}"), random.Random(f"calgrpo-carry/{seed}")
    out = []
    for p in problems:
        dropped = dropped_carry_answer(p) if carry_bug_rate > 0 and carry_rng.random() < carry_bug_rate else None
        slipped = rng.random() < slip_rate
        out.append(dropped if dropped is not None else slip_answer(p, rng) if slipped else p.answer)
    return out


def target_counts(problems: Sequence[Problem], answers: Sequence[str], carry_bug_rate: float) -> dict[str, int]:
    """How many targets differ from their reference (``slipped_examples``, forgotten carries included), how many
    problems have a hard carry (``hard_carry_examples``) and how many targets forget the carry
    (``carry_dropped_examples``, 0 when ``carry_bug_rate`` is 0): the counts the model card reports."""
    return {"slipped_examples": sum(a != p.answer for a, p in zip(answers, problems)),
            "hard_carry_examples": sum(map(has_hard_carry, problems)),
            "carry_dropped_examples": sum(a != p.answer and a == dropped_carry_answer(p)
                                          for a, p in zip(answers, problems)) if carry_bug_rate else 0}


def encode_examples(tokenizer: Any, problems: Sequence[Problem],
                    answers: Sequence[str] | None = None) -> list[tuple[list[int], int]]:
    """``(ids, prompt_len)`` per problem: ``bos + prompt`` then ``answer + eos``; the loss starts at ``prompt_len``.

    ``answers`` (default: each ``problem.answer``) are the targets, tokenized apart from the prompt, exactly as
    generation sees them.
    """
    prompts = tokenizer([build_prompt(p.question) for p in problems], add_special_tokens=True)["input_ids"]
    targets = list(answers) if answers is not None else [p.answer for p in problems]
    if len(targets) != len(problems):
        raise ValueError(f"answers has {len(targets)} items but problems has {len(problems)}; allowed: equal lengths")
    ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + a + [eos], len(p)) for p, a in zip(prompts, ids)]


def batch_order(lengths: Sequence[int], batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches of example indices: shuffled, then grouped by length within windows of 16 batches."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    window = batch_size * 16
    batches = []
    for s in range(0, len(order), window):
        chunk = sorted(order[s: s + window], key=lambda i: lengths[i])
        batches += [chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(batches), generator=gen).tolist()
    for k in range(steps):
        yield batches[shuffle[k % len(batches)]]


def collate(examples: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; ``labels`` are -100 on prompt and padding so the loss covers answer + EOS only."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for i, (ids, plen) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, plen: len(ids)] = torch.tensor(ids[plen:])
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
