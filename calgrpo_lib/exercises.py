"""Check a learner's function against the library's reference on random inputs.

In a notebook::

    def my_group_advantages(rewards):          # (B, G) -> (B, G)
        ...
    check_exercise("group_advantages", my_group_advantages)   # prints PASS, or FAIL with the input and a hint

The checker never raises because of the learner's code: an exception, a wrong shape or a wrong value is reported
as FAIL (with a hint) and ``False`` is returned. Exercises (``EXERCISES``):

- ``group_advantages``: ``f(rewards (B, G)) -> (B, G)``, ``(r - mean) / (unbiased std + 1e-4)`` per group, and 0 for
  groups whose rewards are all equal;
- ``rloo``: ``f(rewards (B, G)) -> (B, G)``, ``r_i - mean of the other G - 1 rewards of the group``;
- ``cal_hybrid``: ``f(seq_adv (N,), response_mask (N, T), error_mask (N, T), is_wrong (N,), lam) -> (N, T)``,
  ``A_i * m_it + lam * (-1) * e_it`` on wrong answers (``negative_reward = -1``);
- ``processbench_f1``: ``f(labels, preds) -> float``, ProcessBench's F1 of first-error predictions (labels: the
  true first wrong step, ``-1`` for a correct solution; preds: the oracle's step, ``-1`` for "no error", ``None``
  for no verdict): the harmonic mean of the accuracy on erroneous and on correct samples
  (:attr:`calgrpo_lib.oracle.ProcessBenchReport.f1`);
- ``cascade_step``: ``f(checker, judge) -> int | None``, the first wrong step a
  :class:`~calgrpo_lib.oracle.CascadeOracle` reports under its ``"earlier"`` rule, from the two stages' predicted
  steps (``checker``: a step, or ``-1`` when it flags nothing; ``judge``: a step, ``-1`` for "no error", or ``None``
  when its call failed or was not made);
- ``uniform_control``: the ``cal_hybrid`` exercise's signature, the ``uniform`` control: the same total push-down
  ``lam * (-1) * n_i`` on a wrong answer with ``n_i`` error tokens, spread evenly over its ``L_i`` real tokens;
- ``curve_auc``: ``f(steps: list[int], accs: list[float]) -> float``, the mean held-out accuracy over training:
  the trapezoid area under ``acc(k)`` divided by ``steps[-1] - steps[0]`` (:func:`calgrpo_lib.contrasts.curve_auc`).

- ``span_to_token_mask``: ``f(offsets: list[tuple[int, int]], start, end) -> list[bool]``, True for every token
  whose characters overlap ``[start, end)``, even partly; empty spans (special tokens) never
  (:func:`calgrpo_lib.spans.span_to_token_mask`);
- ``piece_offsets``: ``f(pieces: list[str]) -> list[tuple[int, int]]``, each token's ``(start, end)`` in the text
  its pieces add up to (:func:`calgrpo_lib.spans.piece_offsets`);
- ``prefix_credit``: ``f(seq_adv (N,), response_mask (N, T), error_mask (N, T), is_wrong (N,)) -> (N, T)``, the
  ``prefix`` credit mode: a wrong answer with a span gets ``max(A_i, 0)`` before its first error token and
  ``min(A_i, 0)`` from it on;
- ``loss_weights``: ``f(mask (N, T) bool, loss_type, max_completion_length) -> (N, T)``, the weight of each token
  in the aggregated loss for ``loss_type`` in ``grpo``, ``bnpo``, ``dr_grpo``
  (:func:`calgrpo_lib.loss.aggregation_weights`);
- ``batch_split``: ``f(prompts_per_step, num_generations, num_processes, microbatch_size) -> (int, int)``, each
  process's microbatch and its gradient accumulation steps (:func:`calgrpo_lib.config.process_batch_split`);
- ``pooled_hit_rate``: ``f(mapped: list[int], quotes: list[int]) -> float``, the span hit rate of a step run on
  several processes, from each process's counts of mapped quotes and quotes (0 when there are no quotes).

A learner's function may return a tensor, a number, ``None`` or a list (or tuple), matching the exercise: tensors
are compared to a tolerance, numbers to 1e-6, ``None``, integers and lists exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .advantages import group_advantages, rloo_advantages
from .config import process_batch_split
from .contrasts import curve_auc
from .credit import token_advantages
from .loss import aggregation_weights
from .oracle import ProcessBenchReport, Verdict, combine_verdicts
from .spans import piece_offsets, span_to_token_mask
from .validation import check_choice, check_int, check_type

__all__ = ["Exercise", "EXERCISES", "check_exercise"]


@dataclass(frozen=True)
class Exercise:
    """A task: random inputs (``make_inputs(generator) -> tuple of arguments``), the reference, a hint."""

    signature: str
    make_inputs: Callable[[torch.Generator], tuple]
    reference: Callable[..., Any]
    hint: str


def _random_rewards(gen: torch.Generator) -> tuple[torch.Tensor]:
    b = int(torch.randint(1, 6, (), generator=gen))
    g = int(torch.randint(2, 9, (), generator=gen))
    kind = int(torch.randint(0, 3, (), generator=gen))
    if kind == 0:  # pass / fail rewards: some groups all-right or all-wrong
        rewards = torch.randint(0, 2, (b, g), generator=gen).float()
    elif kind == 1:  # graded rewards
        rewards = torch.rand(b, g, generator=gen) * 2 - 0.5
    else:  # one flat group among graded ones
        rewards = torch.rand(b, g, generator=gen)
        rewards[0] = 0.5
    return (rewards,)


def _random_credit_inputs(gen: torch.Generator) -> tuple:
    n = int(torch.randint(1, 7, (), generator=gen))
    t = int(torch.randint(1, 12, (), generator=gen))
    lengths = torch.randint(0, t + 1, (n,), generator=gen)  # 0 = empty response
    response_mask = torch.arange(t)[None, :] < lengths[:, None]  # (N, T), right padding
    is_wrong = torch.rand(n, generator=gen) < 0.6
    starts = (torch.rand(n, generator=gen) * lengths).long()
    span = torch.randint(1, 4, (n,), generator=gen)
    pos = torch.arange(t)[None, :]
    error_mask = (pos >= starts[:, None]) & (pos < (starts + span)[:, None]) & response_mask
    error_mask &= is_wrong[:, None] & (torch.rand(n, generator=gen) < 0.8)[:, None]  # some oracle failures
    seq_adv = torch.randn(n, generator=gen)
    lam = float(torch.rand((), generator=gen) * 2)
    return seq_adv, response_mask, error_mask, is_wrong, lam


def _ref_group(rewards: torch.Tensor) -> torch.Tensor:
    return group_advantages(rewards, rewards.shape[1], scale="group", std="unbiased", eps=1e-4)


def _ref_rloo(rewards: torch.Tensor) -> torch.Tensor:
    return rloo_advantages(rewards, rewards.shape[1])


def _ref_hybrid(seq_adv, response_mask, error_mask, is_wrong, lam) -> torch.Tensor:
    return token_advantages(seq_adv, response_mask, error_mask, is_wrong, "cal_hybrid", negative_reward=-1.0,
                            lam=lam)[0]


def _ref_uniform(seq_adv, response_mask, error_mask, is_wrong, lam) -> torch.Tensor:
    return token_advantages(seq_adv, response_mask, error_mask, is_wrong, "uniform", negative_reward=-1.0,
                            lam=lam)[0]


def _random_curve(gen: torch.Generator) -> tuple[list[int], list[float]]:
    n = int(torch.randint(2, 8, (), generator=gen))
    gaps = torch.randint(1, 6, (n - 1,), generator=gen) * int(torch.randint(1, 11, (), generator=gen))
    steps = [int(torch.randint(0, 3, (), generator=gen))] + [0] * (n - 1)
    for i, gap in enumerate(gaps.tolist()):  # increasing, unevenly spaced evaluation steps
        steps[i + 1] = steps[i] + gap
    return steps, [round(float(a), 3) for a in torch.rand(n, generator=gen)]


def _ref_auc(steps: list[int], accs: list[float]) -> float:
    return curve_auc({"eval_curve": [{"step": k, "accuracy": a} for k, a in zip(steps, accs)]})


def _random_predictions(gen: torch.Generator) -> tuple[list[int], list[int | None]]:
    n = int(torch.randint(1, 13, (), generator=gen))
    labels = [int(x) - 1 for x in torch.randint(0, 5, (n,), generator=gen)]  # -1: a correct solution
    preds: list[int | None] = []
    for label in labels:
        roll = float(torch.rand((), generator=gen))
        if roll < 0.4:
            preds.append(label)  # right
        elif roll < 0.5:
            preds.append(None)  # no verdict
        else:
            preds.append(int(torch.randint(-1, 5, (), generator=gen)))  # a guess (-1: "no error")
    return labels, preds


def _ref_f1(labels: list[int], preds: list[int | None]) -> float:
    ids = tuple(str(i) for i in range(len(labels)))
    return ProcessBenchReport("exercise", ids, tuple(labels), tuple(preds), {}, "none", ()).f1


def _random_stage_steps(gen: torch.Generator) -> tuple[int, int | None]:
    checker = int(torch.randint(-1, 4, (), generator=gen))
    judge = int(torch.randint(-2, 4, (), generator=gen))
    return checker, None if judge == -2 else judge


def _stage_verdict(step: int | None, backend: str) -> Verdict:
    if step is None:
        return Verdict("failed", cause="timeout", backend=backend)
    if step == -1:
        return Verdict("no_error", backend=backend)
    return Verdict("ok", step=step, quote="q", span=(0, 1), backend=backend)


def _ref_cascade(checker: int, judge: int | None) -> int | None:
    verdict, _ = combine_verdicts(_stage_verdict(checker, "stepcheck"),
                                  _stage_verdict(judge, "judge"), "earlier")
    return verdict.predicted_step


def _random_pieces(gen: torch.Generator) -> list[str]:
    n = int(torch.randint(1, 10, (), generator=gen))
    words = ["7", "2", " +", " =", " <<", ">>", "\n", "####", " apples", "<|eos|>"]
    pieces = [words[int(i)] for i in torch.randint(0, len(words), (n,), generator=gen)]
    return ["" if p == "<|eos|>" else p for p in pieces]  # a special token decodes to nothing


def _random_span_inputs(gen: torch.Generator) -> tuple[list[tuple[int, int]], int, int]:
    offsets = piece_offsets(_random_pieces(gen))
    n_chars = offsets[-1][1]
    start = int(torch.randint(0, n_chars + 1, (), generator=gen))
    end = start + int(torch.randint(0, max(n_chars - start, 0) + 2, (), generator=gen))
    return offsets, start, end


def _random_prefix_inputs(gen: torch.Generator) -> tuple:
    seq_adv, response_mask, error_mask, is_wrong, _ = _random_credit_inputs(gen)
    seq_adv[torch.rand(seq_adv.shape, generator=gen) < 0.2] *= -1.0  # some wrong answers with A_i > 0
    return seq_adv, response_mask, error_mask, is_wrong


def _ref_prefix(seq_adv, response_mask, error_mask, is_wrong) -> torch.Tensor:
    return token_advantages(seq_adv, response_mask, error_mask, is_wrong, "prefix")[0]


def _random_mask_inputs(gen: torch.Generator) -> tuple[torch.Tensor, str, int]:
    n = int(torch.randint(1, 6, (), generator=gen))
    t = int(torch.randint(1, 9, (), generator=gen))
    lengths = torch.randint(0, t + 1, (n,), generator=gen)  # 0 = an empty (truncated) response
    mask = torch.arange(t)[None, :] < lengths[:, None]  # (N, T)
    loss_type = ("grpo", "bnpo", "dr_grpo")[int(torch.randint(0, 3, (), generator=gen))]
    return mask, loss_type, t + int(torch.randint(0, 5, (), generator=gen))


def _ref_weights(mask: torch.Tensor, loss_type: str, max_completion_length: int) -> torch.Tensor:
    return aggregation_weights(mask, loss_type, max_completion_length=max_completion_length)


def _random_split(gen: torch.Generator) -> tuple[int, int, int, int]:
    def pick(options: list[int]) -> int:
        return options[int(torch.randint(0, len(options), (), generator=gen))]

    prompts, g = int(torch.randint(1, 9, (), generator=gen)), pick([2, 4, 8])
    total = prompts * g
    processes = pick([n for n in range(1, 9) if total % n == 0])  # a split that works
    share = total // processes
    micro = pick([d for d in range(1, share + 1) if share % d == 0])
    if float(torch.rand((), generator=gen)) < 0.3:
        micro = total  # larger than a process's share: capped to it
    return prompts, g, processes, micro


def _random_counts(gen: torch.Generator) -> tuple[list[int], list[int]]:
    n = int(torch.randint(1, 9, (), generator=gen))
    quotes = [int(q) for q in torch.randint(0, 30, (n,), generator=gen)]
    if float(torch.rand((), generator=gen)) < 0.1:
        quotes = [0] * n  # no quote on any process
    mapped = [int(float(torch.rand((), generator=gen)) * (q + 1)) for q in quotes]
    return mapped, quotes


def _ref_pooled(mapped: list[int], quotes: list[int]) -> float:
    return sum(mapped) / sum(quotes) if sum(quotes) else 0.0


EXERCISES: dict[str, Exercise] = {
    "group_advantages": Exercise(
        "f(rewards: (B, G) float tensor) -> (B, G)", _random_rewards, _ref_group,
        "each row is one group: centre it on its own mean and scale it by its own spread (which std convention, "
        "and where does the 1e-4 go?); a row whose rewards are all equal must come out exactly 0, not nan"),
    "rloo": Exercise(
        "f(rewards: (B, G) float tensor) -> (B, G)", _random_rewards, _ref_rloo,
        "the baseline of answer i must not include r_i itself; there are G - 1 other answers in its group, and "
        "nothing is divided by a spread"),
    "cal_hybrid": Exercise(
        "f(seq_adv (N,), response_mask (N, T) bool, error_mask (N, T) bool, is_wrong (N,) bool, lam) -> (N, T)",
        _random_credit_inputs, _ref_hybrid,
        "start from plain GRPO's credit (each answer's advantage on each of its real tokens), then push down the "
        "error tokens, but only those of wrong answers; padding must stay exactly 0"),
    "processbench_f1": Exercise(
        "f(labels: list[int], preds: list[int | None]) -> float", _random_predictions, _ref_f1,
        "two accuracies, each over its own samples (labels of -1 are the correct solutions); a prediction counts "
        "only when it is exactly right, and None never is; when a group is empty its accuracy is 0, and so is the "
        "harmonic mean of two zeros"),
    "cascade_step": Exercise(
        "f(checker: int, judge: int | None) -> int | None", _random_stage_steps, _ref_cascade,
        "read the rules in calgrpo_lib.oracle.cascade's docstring: who answers when only one stage flags a step, "
        "when both do, and when the judge failed; -1 is a verdict too"),
    "uniform_control": Exercise(
        "f(seq_adv (N,), response_mask (N, T) bool, error_mask (N, T) bool, is_wrong (N,) bool, lam) -> (N, T)",
        _random_credit_inputs, _ref_uniform,
        "start from plain GRPO's credit; a wrong answer's extra push-down must add up to what cal_hybrid gives it, "
        "but no token of the response may get more of it than another; answers with no error tokens (right ones, "
        "oracle failures) get no extra, and padding stays exactly 0"),
    "curve_auc": Exercise(
        "f(steps: list[int], accs: list[float]) -> float", _random_curve, _ref_auc,
        "the evaluations are not evenly spaced, so weight each interval by its width; the result is an accuracy "
        "(a curve that stays at 0.6 gives 0.6), not an area in step units"),
    "span_to_token_mask": Exercise(
        "f(offsets: list[tuple[int, int]], start: int, end: int) -> list[bool]", _random_span_inputs,
        span_to_token_mask,
        "a token is inside when its characters and [start, end) share at least one character, also when it starts "
        "before start or ends after end; a token whose span is empty covers no character, and an empty [start, "
        "end) covers none either"),
    "piece_offsets": Exercise(
        "f(pieces: list[str]) -> list[tuple[int, int]]", lambda gen: (_random_pieces(gen),), piece_offsets,
        "each token starts where the previous one ended; an empty piece still gets a (start, end) pair"),
    "prefix_credit": Exercise(
        "f(seq_adv (N,), response_mask (N, T) bool, error_mask (N, T) bool, is_wrong (N,) bool) -> (N, T)",
        _random_prefix_inputs, _ref_prefix,
        "the first error token of a row is the first True of its error_mask; right answers and wrong answers "
        "without error tokens keep plain GRPO's credit; a wrong answer's A_i can be positive, and both parts "
        "together must still add up to A_i on every token; padding stays exactly 0"),
    "loss_weights": Exercise(
        "f(mask: (N, T) bool tensor, loss_type: str, max_completion_length: int) -> (N, T)", _random_mask_inputs,
        _ref_weights,
        "grpo averages each response over its own tokens and then over responses, bnpo averages over all tokens "
        "of the batch, dr_grpo divides by a constant that does not depend on the lengths; an empty response must "
        "not divide by zero, and padding weighs exactly 0"),
    "batch_split": Exercise(
        "f(prompts_per_step, num_generations, num_processes, microbatch_size) -> (int, int)", _random_split,
        process_batch_split,
        "first find how many completions each process holds; a microbatch cannot be larger than that; the "
        "accumulation steps are what makes the microbatches add up to the process's share"),
    "pooled_hit_rate": Exercise(
        "f(mapped: list[int], quotes: list[int]) -> float", _random_counts, _ref_pooled,
        "the processes do not hold the same number of quotes, so a process with more quotes must weigh more; a "
        "process with no quote has no rate of its own"),
}


def _describe(args: tuple) -> str:
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"tensor{tuple(a.shape)}={a.tolist()}" if a.numel() <= 24 else f"tensor{tuple(a.shape)}")
        else:
            parts.append(repr(a))
    return ", ".join(parts)


def _scalar_mismatch(got: Any, expected: float | int | None) -> str | None:
    """What is wrong with a number (or None) the learner returned, or None when it is right."""
    if expected is None or isinstance(expected, int):
        if got is None or expected is None:
            return None if got is expected else f"got {got!r}, expected {expected!r}"
        if isinstance(got, bool) or not isinstance(got, int):
            return f"your function returned {type(got).__name__} {got!r}, expected the int {expected!r}"
        return None if got == expected else f"got {got}, expected {expected}"
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"your function returned {type(got).__name__}, expected a float"
    return None if abs(float(got) - expected) <= 1e-6 else f"got {float(got):.6g}, expected {expected:.6g}"


def _sequence_mismatch(got: Any, expected: list | tuple) -> str | None:
    """What is wrong with a list (or tuple) the learner returned, or None when it is right (exact comparison)."""
    if not isinstance(got, (list, tuple)):
        return f"your function returned {type(got).__name__}, expected a {type(expected).__name__}"

    def plain(xs: Any) -> list:
        return [plain(x) if isinstance(x, (list, tuple)) else x for x in xs]

    if len(got) != len(expected):
        return f"got {len(got)} items, expected {len(expected)}"
    return None if plain(got) == plain(expected) else f"got {plain(got)}, expected {plain(expected)}"


def _first_mismatch(name: str, user_fn: Callable[..., Any], trials: int, seed: int) -> str | None:
    """None when ``user_fn`` matches the reference on every trial, else a message describing the first failure."""
    exercise = EXERCISES[name]
    gen = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        args = exercise.make_inputs(gen)
        expected = exercise.reference(*args)
        user_args = tuple(a.clone() if isinstance(a, torch.Tensor) else list(a) if isinstance(a, list) else a
                          for a in args)  # the learner may mutate
        where = f"trial {trial + 1}/{trials}, inputs: {_describe(args)}"
        try:
            got = user_fn(*user_args)
        except Exception as exc:  # the learner's code: report, never propagate
            return f"your function raised {type(exc).__name__}: {exc} ({where})"
        if isinstance(expected, (list, tuple)):
            problem = _sequence_mismatch(got, expected)
            if problem:
                return f"{problem} ({where})"
            continue
        if not isinstance(expected, torch.Tensor):
            problem = _scalar_mismatch(got, expected)
            if problem:
                return f"{problem} ({where})"
            continue
        if not isinstance(got, torch.Tensor):
            return f"your function returned {type(got).__name__}, expected a torch.Tensor ({where})"
        if tuple(got.shape) != tuple(expected.shape):
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} ({where})"
        if not torch.allclose(got.detach().to(expected.dtype), expected, atol=1e-4, rtol=1e-4, equal_nan=False):
            return f"values differ ({where})\n  expected: {expected.tolist()}\n  got:      {got.tolist()}"
    return None


def check_exercise(name: str, user_fn: Callable[..., Any], *, trials: int = 25, seed: int = 0) -> bool:
    """Compare ``user_fn`` with the reference of exercise ``name`` on ``trials`` random inputs; print the verdict.

    Returns True on PASS. A failure (exception, wrong type, shape or value) prints FAIL, the first failing input
    and a hint, and returns False; it does not raise.
    """
    check_choice("name", name, EXERCISES)
    if not callable(user_fn):
        raise TypeError(f"user_fn={user_fn!r} is not callable; allowed: a function {EXERCISES[name].signature}")
    check_int("trials", trials, 1, None)
    check_type("seed", seed, int)
    problem = _first_mismatch(name, user_fn, trials, seed)
    if problem is None:
        print(f"PASS {name}: matches the reference on {trials} random inputs")
        return True
    print(f"FAIL {name}: {problem}\n  hint: {EXERCISES[name].hint}")
    return False
