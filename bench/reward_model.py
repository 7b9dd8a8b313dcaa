"""Benchmark: the shipped tiny outcome reward model ("tiny-rm"): how long it takes to load offline, and how well it
tells right answers from wrong ones.

What it measures (CPU, ``--threads`` torch threads):

- **load time** of ``RewardModel.load("tiny-rm", device="cpu")``, median of ``--repeats`` runs, three ways:
  *cold*, each in a fresh Python subprocess that has already imported ``torch``, ``transformers`` and
  ``calgrpo_lib.reward_model`` (neither the interpreter's start nor those imports are timed), whose first load also
  imports the transformers Llama classes (once per process, as for the tiny policy); *cold after the classes*, the
  same with ``transformers.LlamaForSequenceClassification`` imported first (that import timed apart): reading the
  folder, building the model and its tokenizer; and *warm*, in this process after one load. The acceptance
  criterion is "loads offline in < 1 s", with ``HF_HUB_OFFLINE=1``.
- **held-out accuracy** at threshold 0 (score > 0 means "right") and the **within-group ranking rate** (over the
  groups holding both a right and a wrong answer, the share of (right, wrong) pairs where the right one scores
  higher, ties half; :mod:`calgrpo_lib.reward_model_eval`), re-scoring every line of the shipped ``heldout.jsonl``
  (answers of test-split problems, disjoint from training), with the time that scoring took. ``--fresh N`` also
  scores 4 answers freshly sampled from the tiny policy for each of ``N`` other test problems.

Run: ``HF_HUB_OFFLINE=1 python bench/reward_model.py [--repeats 5] [--threads 2] [--fresh 0]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from calgrpo_lib.reward_model import TINY_RM_DIR, RewardModel
from calgrpo_lib.reward_model_eval import read_heldout, rm_metrics, score_rows

_COLD = """
import time, torch, transformers
torch.set_num_threads({threads})
from calgrpo_lib.reward_model import RewardModel
t0 = time.perf_counter()
if {classes_first}:
    from transformers import LlamaForSequenceClassification
t1 = time.perf_counter()
RewardModel.load("tiny-rm", device="cpu")
print(t1 - t0, time.perf_counter() - t1)
"""


def cold_load_seconds(threads: int, classes_first: bool = False) -> tuple[float, float]:
    """``(seconds importing the Llama classes first, seconds of the load)`` in a fresh subprocess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = _COLD.format(threads=threads, classes_first=classes_first)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    imported, loaded = out.strip().splitlines()[-1].split()
    return float(imported), float(loaded)


def warm_load_seconds() -> float:
    t0 = time.perf_counter()
    RewardModel.load("tiny-rm", device="cpu")
    return time.perf_counter() - t0


def _report(name: str, m: dict, seconds: float) -> None:
    r = m["ranking"]
    lo, hi = r["groups_won_95"]
    print(f"{name}: accuracy {100 * m['accuracy']:.1f}% of {m['n']} ({100 * m['right_share']:.1f}% right); "
          f"ranking rate {100 * r['rate']:.1f}% over {r['pairs']} pairs in {r['mixed_groups']} groups "
          f"(groups won/lost/tied {r['groups_won']}/{r['groups_lost']}/{r['groups_tied']}, "
          f"share won 95% CI {100 * lo:.1f}-{100 * hi:.1f}%); "
          f"scored in {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", type=int, default=0, help="also score answers for N freshly sampled problems")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    cold = [cold_load_seconds(args.threads)[1] for _ in range(args.repeats)]
    split = [cold_load_seconds(args.threads, classes_first=True) for _ in range(args.repeats)]
    rm = RewardModel.load("tiny-rm", device="cpu")
    warm = [warm_load_seconds() for _ in range(args.repeats)]

    def ms(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1000:.0f} ms (max {max(xs) * 1000:.0f})"

    print(f"RewardModel.load('tiny-rm'), median of {args.repeats} (goal < 1000 ms): cold, fresh process after "
          f"importing torch/transformers/calgrpo_lib: {ms(cold)}; of which importing the Llama classes "
          f"{ms([s[0] for s in split])} and the load after them {ms([s[1] for s in split])}; warm {ms(warm)}")
    rows = read_heldout(TINY_RM_DIR / "heldout.jsonl")
    t0 = time.perf_counter()
    scores = score_rows(rm, rows)
    _report("heldout.jsonl", rm_metrics(rows, scores), time.perf_counter() - t0)
    if args.fresh:
        from calgrpo_lib.policy import load_policy
        from calgrpo_lib.reward_model_build import sample_answers
        from calgrpo_lib.tasks import generate_problems

        model, tok = load_policy("tiny", device="cpu")
        fresh = sample_answers(model, tok, generate_problems(args.fresh, seed=1234, split="test"), 4, seed=1234)
        t0 = time.perf_counter()
        scores = score_rows(rm, fresh)
        _report(f"fresh ({args.fresh} test problems x 4)", rm_metrics(fresh, scores), time.perf_counter() - t0)


if __name__ == "__main__":
    main()
