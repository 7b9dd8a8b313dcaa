"""Benchmark: what a policy's greedy mistakes are, by the first error the step checker finds.

For each model folder (or ``tiny``), greedy answers on the trainer's held-out problems
(``generate_problems(n, seed=0, split="test")``) are sorted into: right; first error a forgotten carry or borrow (the
tiny policy's trained-in misconception, ``arithmetic.forgotten_carry_shift``); another arithmetic error; a number
from nowhere; a wrong final line; or no error found (a wrong plan with right arithmetic):
``calgrpo_lib.oracle.first_error_kind``, which notebook 04 uses too. Run it on a policy before
and after GRPO (``<run>/checkpoints/step-000050``) to see which mistakes training removed; with two or more models it
also counts, problem by problem, what each kind of the first became in the last, and on which line the new error of
a forgotten carry that became another arithmetic error sits (a carrying line, by ``arithmetic.carry_kind``, or a
line without carry, by operation).

    python bench/first_errors.py tiny runs/tiny/checkpoints/step-000050 [--n 256]
"""

from __future__ import annotations

import argparse
from collections import Counter

from calgrpo_lib.oracle import MISTAKE_KINDS as KINDS
from calgrpo_lib.oracle import error_line, first_error_kind
from calgrpo_lib.policy import load_policy
from calgrpo_lib.rewards import build_prompt
from calgrpo_lib.sampling import generate
from calgrpo_lib.tasks import generate_problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="'tiny' or model folders (a checkpoint folder works)")
    ap.add_argument("--n", type=int, default=256, help="held-out problems (the trainer's default eval_size)")
    args = ap.parse_args()
    problems = generate_problems(args.n, seed=0, split="test")
    print("| model | " + " | ".join(KINDS) + " |")
    print("| --- " * (len(KINDS) + 1) + "|")
    kinds = []
    for name in args.models:
        model, tok = load_policy(name, device="cpu")
        prompts = [build_prompt(p.question, "plain", tok) for p in problems]
        texts = generate(model, tok, prompts, max_new_tokens=64, batch_size=64).texts  # as the trainer evaluates
        kinds.append([first_error_kind(p.question, p.answer, p.final, t) for p, t in zip(problems, texts)])
        counts = Counter(kinds[-1])
        print(f"| {name} | " + " | ".join(str(counts[k]) for k in KINDS) + " |", flush=True)
    if len(kinds) >= 2:  # per problem: what the first model's kind became in the last model
        moves = Counter(zip(kinds[0], kinds[-1]))
        print(f"\n| {args.models[0]} -> {args.models[-1]} | problems |\n| --- | --- |")
        for (was, now), n in sorted(moves.items(), key=lambda kv: -kv[1]):
            print(f"| {was} -> {now} | {n} |")
        moved = zip(problems, texts, kinds[0], kinds[-1])  # texts: the last model's answers
        where = Counter(error_line(p.question, p.answer, t) for p, t, was, now in moved
                        if was == "forgotten carry" and now == "arithmetic")
        print("\n| forgotten carry -> arithmetic: where the new error sits | problems |\n| --- | --- |")
        for line, n in where.most_common():
            print(f"| {line} | {n} |")


if __name__ == "__main__":
    main()
