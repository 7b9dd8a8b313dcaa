"""Benchmark: a batch of oracle calls runs concurrently, and a repeated batch costs no backend call.

A :class:`calgrpo_lib.oracle.FakeOracle` stands in for a remote judge with a fixed latency (default 200 ms per
call). Its replies are computed beforehand (the exact checker's replies on corrupted GSM8K solutions, so every
verdict goes through quote validation), because a remote judge's own compute does not run in our process.
Measured, median of ``--repeats`` runs: the wall time of one call, of a batch of 32 distinct calls at
concurrency 32 (goal: at most 1.3x one call), and of the same batch again (served by the cache: 0 backend calls).
Run ``python bench/oracle_concurrency.py [--latency 0.2] [--batch 32] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from calgrpo_lib.arithmetic import corrupt_problems
from calgrpo_lib.data import oracle_problems
from calgrpo_lib.oracle import FakeOracle, JudgeItem, OracleConfig, ReplyCache, StepCheckOracle


def _timed(oracle: FakeOracle, items: list[JudgeItem]) -> tuple[float, int]:
    calls = oracle.backend_calls
    t0 = time.perf_counter()
    oracle.judge_batch(items)
    return time.perf_counter() - t0, oracle.backend_calls - calls


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    problems, source = oracle_problems(args.batch * (args.repeats + 1) + args.repeats, "test", seed=0)
    corrupted = corrupt_problems([p.answer for p in problems], seed=0, propagate=True)
    items = [JudgeItem(p.question, p.answer, c.text if c else p.answer) for p, c in zip(problems, corrupted)]
    exact = StepCheckOracle()
    replies = {item: exact.reply_text(item) for item in items}  # the judge's answers, computed beforehand
    oracle = FakeOracle(latency_s=args.latency, reply=replies.__getitem__,
                        config=OracleConfig(concurrency=args.batch), cache=ReplyCache(":memory:"))
    FakeOracle(latency_s=0.0, reply=replies.__getitem__).judge_batch(items[-1:])  # warm-up: imports
    one, batch, again, again_calls = [], [], [], []
    for r in range(args.repeats):
        one.append(_timed(oracle, [items[r]])[0])
        chunk = items[args.repeats + r * args.batch: args.repeats + (r + 1) * args.batch]
        batch.append(_timed(oracle, chunk)[0])
        t, calls = _timed(oracle, chunk)
        again.append(t)
        again_calls.append(calls)
    t1, tb, ta = statistics.median(one), statistics.median(batch), statistics.median(again)
    print(f"data={source} latency={args.latency * 1000:.0f} ms, batch={args.batch}, concurrency={args.batch}, "
          f"median of {args.repeats}")
    print(f"one call          {t1 * 1000:7.1f} ms")
    print(f"batch of {args.batch:<3}      {tb * 1000:7.1f} ms  = {tb / t1:.2f}x one call (goal <= 1.30x); "
          f"first batch, threads starting: {batch[0] * 1000:.1f} ms = {batch[0] / t1:.2f}x")
    print(f"same batch again  {ta * 1000:7.1f} ms  backend calls: {max(again_calls)} (goal 0)")
    print(oracle.stats)


if __name__ == "__main__":
    main()
