"""Measure an outcome reward model on labelled answers: accuracy at threshold 0, the within-group ranking rate
and its sign test, and how often each kind of wrong answer passes for right.

With ``s`` the scores and ``y`` the labels (1 right, 0 wrong), over the groups ``g`` (the answers to one problem)
that hold both right answers ``R_g`` and wrong ones ``W_g``::

    accuracy = mean_i [ (s_i > 0) == y_i ]
    rank     = sum_g sum_{i in R_g, j in W_g} ([s_i > s_j] + 0.5 [s_i = s_j])  /  sum_g |R_g| |W_g|

(0.5 is chance). The groups are independent, the pairs within a group are not, so the sign test counts groups: a
group is won when its own ranking rate is above 0.5, lost when below; :func:`wilson_interval` bounds the share won.
The answers' file is ``heldout.jsonl`` of a built model (:mod:`calgrpo_lib.reward_model_build`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .reward_model import RewardModel
from .rewards import answer_reward, build_prompt, extract_answer, format_reward
from .sampling import generate
from .validation import check_int

__all__ = ["ranking_rate", "wilson_interval", "wrong_kind", "rm_metrics", "score_rows", "read_heldout",
           "policy_answer_profile", "SAMPLE_LINES", "WRONG_KINDS"]

SAMPLE_LINES = 128  # the first lines of heldout.jsonl the tests re-score; the card states their accuracy too
WRONG_KINDS = {"consistent": "every calculation right, a wrong number or operation taken from the question",
               "miscalculated": "a line whose result is not its calculation (a slip, a forgotten carry)",
               "malformed": "no single well-formed `#### n` ending (cut off at the token limit, or garbled)"}


def ranking_rate(scores: Sequence[float], labels: Sequence[float], groups: Sequence[int]) -> dict[str, Any]:
    """The within-group ranking rate of the module docstring: ``{"rate", "pairs", "mixed_groups", "groups_won",
    "groups_lost", "groups_tied"}``; ``rate`` is ``None`` when no group holds both a right and a wrong answer."""
    by_group: dict[int, list[tuple[float, float]]] = {}
    for s, y, g in zip(scores, labels, groups):
        by_group.setdefault(int(g), []).append((float(s), float(y)))
    total, pairs, won, lost, tied, mixed = 0.0, 0, 0, 0, 0, 0
    for members in by_group.values():
        right = [s for s, y in members if y > 0.5]
        wrong = [s for s, y in members if y <= 0.5]
        if not right or not wrong:
            continue
        mixed += 1
        wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
        n = len(right) * len(wrong)
        total, pairs = total + wins, pairs + n
        won, lost, tied = won + (wins > n / 2), lost + (wins < n / 2), tied + (wins == n / 2)
    return {"rate": total / pairs if pairs else None, "pairs": pairs, "mixed_groups": mixed, "groups_won": won,
            "groups_lost": lost, "groups_tied": tied}


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial share ``k / n`` (``z = 1.96``: 95%); ``(0, 1)`` when ``n = 0``."""
    check_int("n", n, 0, None)
    check_int("k", k, 0, n)
    if n == 0:
        return 0.0, 1.0
    p, d = k / n, 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


_CALC = re.compile(r"<<\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?[\d.]+)\s*>>")


def wrong_kind(response: str) -> str:
    """How a wrong answer is wrong: ``malformed`` (no single well-formed ``#### n`` end), ``miscalculated`` (a
    ``<<a op b=c>>`` whose ``c`` is not ``a op b``) or ``consistent`` (every calculation right: a wrong number or
    operation taken from the question)."""
    if not format_reward(response, "gsm8k"):
        return "malformed"
    for a, op, b, c in _CALC.findall(response):
        a, b = int(a), int(b)
        value = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else (a / b if b else math.nan)
        if not math.isclose(value, float(c)):
            return "miscalculated"
    return "consistent"


def rm_metrics(rows: Sequence[dict[str, Any]], scores: Sequence[float]) -> dict[str, Any]:
    """Accuracy at threshold 0, mean BCE, the ranking rate with its sign test over groups, and the false-positive
    rate (share scored > 0) of the wrong answers of each kind (:func:`wrong_kind`) and of all of them."""
    s = torch.tensor([float(x) for x in scores], dtype=torch.float64)  # (N,)
    y = torch.tensor([float(r["label"]) for r in rows], dtype=torch.float64)  # (N,)
    n = len(rows)
    rank = ranking_rate(s.tolist(), y.tolist(), [r["group"] for r in rows])
    decided = rank["groups_won"] + rank["groups_lost"]
    kinds: dict[str, list[bool]] = {}
    for r, x in zip(rows, s.tolist()):
        if r["label"] <= 0.5:
            kinds.setdefault(wrong_kind(r["response"]), []).append(x > 0)
    fp = {k: {"n": len(v), "scored_right": sum(v) / len(v)} for k, v in sorted(kinds.items())}
    return {"n": n, "right_share": y.mean().item() if n else None,
            "accuracy": ((s > 0).double() == y).double().mean().item() if n else None,
            "bce": torch.nn.functional.binary_cross_entropy_with_logits(s, y).item() if n else None,
            "true_positive_rate": (s[y > 0.5] > 0).double().mean().item() if (y > 0.5).any() else None,
            "true_negative_rate": (s[y <= 0.5] <= 0).double().mean().item() if (y <= 0.5).any() else None,
            "ranking": {**rank, "groups_won_95": list(wilson_interval(rank["groups_won"], decided))},
            "wrong_kinds": fp}


def score_rows(rm: RewardModel, rows: Sequence[dict[str, Any]]) -> list[float]:
    """``rm``'s scores of the rows' ``(question, response)`` pairs."""
    return rm.score([r["question"] for r in rows], [r["response"] for r in rows]).tolist()


def read_heldout(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``heldout.jsonl`` (``group``, ``question``, ``response``, ``label``, ``score``)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def policy_answer_profile(model: Any, tokenizer: Any, problems: Sequence[Any], rm: RewardModel, *,
                          max_new_tokens: int = 64, prompt_style: str = "plain") -> dict[str, Any]:
    """How a policy's greedy answers to ``problems`` look to the verifier and to the RM ``rm``: ``accuracy``,
    ``rm_score_mean``, ``wrong_called_right`` (wrong answers the RM scores > 0, its blind spots), ``answer_counts``
    (final answer -> how many times it was given, most common first), ``target_counts`` (the same for the right
    answers) and the ``texts`` themselves. A policy that games the RM raises ``rm_score_mean`` and
    ``wrong_called_right`` without raising ``accuracy``."""
    check_int("max_new_tokens", max_new_tokens, 1, None)
    if not problems:
        raise ValueError("problems is empty; allowed: at least one problem")
    prompts = [build_prompt(p.question, prompt_style, tokenizer) for p in problems]
    texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=0.0).texts
    right = [answer_reward(t, p.final) for t, p in zip(texts, problems)]
    scores = rm.score([p.question for p in problems], texts).tolist()
    return {"accuracy": sum(right) / len(right), "rm_score_mean": sum(scores) / len(scores),
            "wrong_called_right": sum(1 for s, r in zip(scores, right) if r == 0 and s > 0),
            "answer_counts": dict(Counter(extract_answer(t) for t in texts).most_common()),
            "target_counts": dict(Counter(f"{p.final:g}" for p in problems).most_common()), "texts": texts}
