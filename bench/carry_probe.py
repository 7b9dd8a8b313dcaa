"""Benchmark: which carries a policy has learned, line by line, and what learning all of them would be worth.

The tiny policy's trained-in misconception forgets carries and borrows (``sft_data.dropped_carry_answer``). For
each held-out problem of the trainer (``generate_problems(n, seed=0, split="test")``) with such a chain, the first
line that carries or borrows is fed with the reference solution before it, up to ``<<a+b=``; the policy's
probability of the right result and of the forgotten-carry result (each as the whole number, digit tokens multiplied
out) is read off. Lines are sorted by kind: a sum of two one-digit numbers (``9 + 8``), a sum with a two-digit number
(``24 + 9``), and a borrow (``16 - 7``). "right > forgotten" counts lines where the right result is the likelier one.

``--ceiling`` also decodes every held-out problem greedily, line by line, and replaces each line that carries or
borrows by its right result before going on: the accuracy of a policy that learned every carry and nothing else.

    python bench/carry_probe.py tiny runs/tiny/checkpoints/step-000075 [--n 256] [--ceiling]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch

from calgrpo_lib.arithmetic import apply_op, calc_line, carry_kind, forgotten_carry_shift, solution_calcs
from calgrpo_lib.policy import load_policy
from calgrpo_lib.rewards import build_prompt, is_correct
from calgrpo_lib.sampling import generate
from calgrpo_lib.sft_data import dropped_carry_answer
from calgrpo_lib.tasks import Problem, generate_problems

KINDS = ("one-digit sum", "two-digit sum", "borrow")
_LINE = re.compile(r"^(\d+) ([-+*/]) (\d+) = <<")  # the start of a calculation line, as arithmetic.calc_line writes it


@torch.no_grad()
def result_probability(model, tok, prefix: str, result: str) -> float:
    """P(``result``) after ``prefix``: the product of its tokens' probabilities, tokenized apart as generation does."""
    p_ids = tok(prefix, add_special_tokens=True)["input_ids"]
    r_ids = tok(result, add_special_tokens=False)["input_ids"]
    logp = model(torch.tensor([p_ids + r_ids])).logits[0, len(p_ids) - 1:-1].log_softmax(-1)  # (R, V)
    return logp.gather(1, torch.tensor(r_ids)[:, None]).sum().exp().item()


def probe(model, tok, problems: list[Problem]) -> dict[str, list[tuple[float, float]]]:
    """``{kind: [(P(right), P(forgotten)) per problem]}`` at each problem's first carrying line."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in problems:
        calcs = solution_calcs(p.steps)
        k = next(i for i, (a, op, b, _) in enumerate(calcs) if forgotten_carry_shift(a, op, b))
        a, op, b, c = calcs[k]
        line = calc_line(a, op, b, c)
        prefix = build_prompt(p.question) + "\n".join(p.answer.split("\n")[:k] + [line[: line.rindex("=") + 1]])
        forgot = c + forgotten_carry_shift(a, op, b)
        out[carry_kind(a, op, b)].append((result_probability(model, tok, prefix, f"{c}>>"),
                                       result_probability(model, tok, prefix, f"{forgot}>>")))
    return out


def carries_forced_accuracy(model, tok, problems: list[Problem], max_lines: int = 6) -> float:
    """Greedy accuracy when every line that carries or borrows is replaced by its right result as it is written."""
    texts, open_ = [""] * len(problems), list(range(len(problems)))
    for _ in range(max_lines):
        if not open_:
            break
        outs = generate(model, tok, [build_prompt(problems[i].question) + texts[i] for i in open_],
                        max_new_tokens=24, batch_size=64).texts
        still = []
        for i, o in zip(open_, outs):
            line = o.split("\n")[0]
            m = _LINE.match(line)
            if m:  # a calculation line: fix it if it carries, then go on
                a, op, b = int(m[1]), m[2], int(m[3])
                if forgotten_carry_shift(a, op, b):
                    line = calc_line(a, op, b, apply_op(a, op, b))
                still.append(i)
            texts[i] += line + "\n"
        open_ = still
    return sum(is_correct(t, p.final) for t, p in zip(texts, problems)) / len(problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="'tiny' or model folders (a checkpoint folder works)")
    ap.add_argument("--n", type=int, default=256, help="held-out problems (the trainer's default eval_size)")
    ap.add_argument("--ceiling", action="store_true", help="also the accuracy with every carry forced right")
    args = ap.parse_args()
    problems = generate_problems(args.n, seed=0, split="test")
    carrying = [p for p in problems if dropped_carry_answer(p) is not None]
    print("| model | kind | lines | mean P(right) | mean P(forgotten) | right > forgotten |")
    print("| --- | --- | --- | --- | --- | --- |")
    ceilings = []
    for name in args.models:
        model, tok = load_policy(name, device="cpu")
        by_kind = probe(model, tok, carrying)
        for kind in KINDS:
            rows = by_kind.get(kind, [])
            if rows:
                right, forgot = (sum(r[j] for r in rows) / len(rows) for j in (0, 1))
                print(f"| {name} | {kind} | {len(rows)} | {right:.2f} | {forgot:.2f} | "
                      f"{sum(r > f for r, f in rows)} |", flush=True)
        if args.ceiling:
            ceilings.append((name, carries_forced_accuracy(model, tok, problems)))
    if ceilings:
        print(f"\n| model | greedy accuracy with every carry forced right ({args.n} problems) |\n| --- | --- |")
        for name, acc in ceilings:
            print(f"| {name} | {100 * acc:.1f}% |")


if __name__ == "__main__":
    main()
