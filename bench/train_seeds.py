"""Benchmark: the tiny preset's learning, seed by seed, in one run.

For each seed, trains the shipped tiny policy with the ``tiny`` preset (overrides from the command line) and
prints held-out greedy accuracy before -> after, the gain in points and the wall time. The issue's target: a
gain of >= 10 points within <= 150 steps (<= 5 min on 2 CPU cores) for each of 3 seeds.

    python bench/train_seeds.py --seeds 0 1 2 [--max-steps N] [--model DIR] [--learning-rate LR] \\
        [--credit-mode cal_hybrid]

Each seed's run goes to ``<--out>/seed<N>``; a rerun replaces the run of the same seed there (``overwrite=True``),
as a benchmark's folders hold its own runs only.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from calgrpo_lib.config import preset
from calgrpo_lib.trainer import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-steps", type=int, default=None, help="default: the tiny preset's")
    ap.add_argument("--credit-mode", default="cal_hybrid")
    ap.add_argument("--model", default="tiny", help="policy to train (default: the shipped tiny policy)")
    ap.add_argument("--learning-rate", type=float, default=None, help="default: the tiny preset's")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-seeds")
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · "
          f"torch {torch.__version__} · {torch.get_num_threads()} threads")
    print("| seed | credit | steps | before | after | gain (points) | wall time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for seed in args.seeds:
        given = {k: v for k, v in (("learning_rate", args.learning_rate), ("max_steps", args.max_steps))
                 if v is not None}
        config = preset("tiny", seed=seed, credit_mode=args.credit_mode, model=args.model, eval_every=args.eval_every,
                        save_every=0, output_dir=f"{args.out}/seed{seed}", overwrite=True,  # a rerun replaces
                        **given)
        result = train(config, progress=False)
        before, after = result.eval_before["accuracy"], result.eval_after["accuracy"]
        rows.append({"seed": seed, "before": before, "after": after, "wall_s": result.wall_time_s})
        print(f"| {seed} | {args.credit_mode} | {result.steps_done} | {before:.1%} | {after:.1%} | "
              f"{100 * (after - before):+.1f} | {result.wall_time_s / 60:.1f} min |", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
