"""Benchmark: how well an oracle finds the first erroneous step of corrupted GSM8K solutions.

Each GSM8K test solution gets one calculated result changed (:func:`calgrpo_lib.arithmetic.corrupt_solution`), once
without and once with propagating the wrong value to the later steps; the oracle judges every corrupted solution
and every unmodified reference solution. Printed per variant (ProcessBench convention):

- first-error-step accuracy on the corrupted solutions;
- "no error" accuracy on the unmodified ones (1 - false-alarm rate) and the F1 of the two (harmonic mean);
- quote hit rate: verdicts whose located span overlaps the corrupted text.

The reference the oracle sees is the full reference solution (``--reference solution``, default) or only its final
answer (``--reference answer``). Acceptance for ``stepcheck``: accuracy >= 95% on >= 1,000 corrupted solutions and
false alarms <= 2% on the 1,319 references. Run ``python bench/oracle_localization.py [--oracle stepcheck|fake|
gemini|openai|local] [--n 1319]``; GSM8K is read from ``$CALGRPO_DATA_DIR`` or a ``shared/data`` folder nearby
(without it the synthetic task is used and said so).
"""

from __future__ import annotations

import argparse
import sys
import time

from calgrpo_lib.arithmetic import corrupt_problems
from calgrpo_lib.data import oracle_problems
from calgrpo_lib.oracle import (
    HOW_TO_ENABLE,
    FakeOracle,
    GeminiOracle,
    JudgeItem,
    LocalJudgeOracle,
    OpenAICompatibleOracle,
    Oracle,
    OracleConfig,
    StepCheckOracle,
    gemini_key,
    localization_report,
)

ORACLES = ("stepcheck", "fake", "gemini", "openai", "local")


def build(args: argparse.Namespace) -> Oracle:
    """The oracle named on the command line."""
    cfg = OracleConfig(concurrency=args.concurrency, timeout_s=args.timeout, batch_timeout_s=args.batch_timeout)
    if args.oracle == "stepcheck":
        return StepCheckOracle(reference_numbers=args.reference == "solution")
    if args.oracle == "fake":
        return FakeOracle(latency_s=0.0, config=cfg, cache=args.cache)
    if args.oracle == "gemini":
        if gemini_key() is None:
            sys.exit(f"no Gemini key. {HOW_TO_ENABLE}")
        kw = {"model": args.model} if args.model else {}
        return GeminiOracle(**kw, config=cfg, cache=args.cache)
    if args.oracle == "openai":
        return OpenAICompatibleOracle(args.model or "qwen2.5:7b-instruct", args.base_url or "http://127.0.0.1:8000/v1",
                                      config=cfg, cache=args.cache)
    from calgrpo_lib.policy import load_policy

    model, tokenizer = load_policy(args.model or "tiny")
    return LocalJudgeOracle(model, tokenizer, model_name=args.model or "tiny", config=cfg, cache=args.cache)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracle", choices=ORACLES, default="stepcheck")
    ap.add_argument("--n", type=int, default=None, help="problems (default: the whole test split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", choices=("solution", "answer"), default="solution")
    ap.add_argument("--model", default=None)
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--cache", default=None, help="sqlite file for cached replies")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--batch-timeout", type=float, default=6 * 3600.0,
                    help="limit of the whole benchmark batch, in seconds (training uses 2 x --timeout per step)")
    args = ap.parse_args(argv)

    problems, source = oracle_problems(args.n, "test", args.seed)
    oracle = build(args)
    refs = [p.answer if args.reference == "solution" else str(p.final) for p in problems]
    print(f"oracle={args.oracle} model={oracle.model!r} data={source} problems={len(problems)} "
          f"reference={args.reference}")
    t0 = time.perf_counter()
    clean = oracle.judge_batch([JudgeItem(p.question, r, p.answer) for p, r in zip(problems, refs)])
    for propagate in (False, True):
        corrupted = corrupt_problems([p.answer for p in problems], seed=args.seed, propagate=propagate)
        cases = [(p, r, c) for p, r, c in zip(problems, refs, corrupted) if c is not None]
        verdicts = oracle.judge_batch([JudgeItem(p.question, r, c.text) for p, r, c in cases])
        report = localization_report(verdicts, [(c.step, c.span) for _, _, c in cases], clean)
        print(f"[propagate={propagate!s:5}] {report}")
        print(f"    statuses {report.statuses}")
    print(f"time {time.perf_counter() - t0:.1f}s | {oracle.stats}")


if __name__ == "__main__":
    main()
