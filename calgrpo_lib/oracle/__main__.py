"""``python -m calgrpo_lib.oracle evaluate``: any oracle on ProcessBench, from the command line.

::

    python -m calgrpo_lib.oracle evaluate --benchmark processbench --oracle gemini --split gsm8k
    python -m calgrpo_lib.oracle evaluate --oracle stepcheck --path ProcessBench/ --split all --limit 50 --json out.json
    python -m calgrpo_lib.oracle evaluate --oracle prm --model Qwen/Qwen2.5-Math-PRM-7B --trust-remote-code
    python -m calgrpo_lib.oracle evaluate --oracle gemini --cascade --split gsm8k     # the step checker first

The benchmark comes from the hub (``Qwen/ProcessBench``) or ``--path`` (see
:func:`calgrpo_lib.data.load_processbench`). The oracle is built by :func:`calgrpo_lib.oracle.backends.make_oracle`,
as a training run's ``run_oracle.build_oracle`` builds one: LLM judges and PRMs get a reply cache (``--cache``,
default ``results/cache/oracle.sqlite``) and no fallback unless ``--fallback stepcheck``, so the judge's own
failures count against it; ``--cascade`` puts the exact step checker before the judge
(:class:`~calgrpo_lib.oracle.cascade.CascadeOracle`) and prints which stage answered how often. ProcessBench carries
no reference solution: by default the oracle gets an empty reference; ``--reference gsm8k`` gives it, on the gsm8k
split, the GSM8K test solution of the same question. Prints, per split, the accuracies on erroneous and correct
samples and F1, a table of predicted-vs-true first-error offsets and the average F1; ``--json OUT`` writes the
numbers and the per-sample predictions. Exit status: 0, or 2 for a bad argument, a missing file or an oracle that
cannot be built.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..data import PROCESSBENCH_SPLITS, load_gsm8k, load_processbench
from .backends import BACKENDS
from .backends import make_oracle as make_judge
from .evaluation import ProcessBenchReport, average_f1, evaluate_processbench, gsm8k_references, offsets_table
from .gemini import DEFAULT_GEMINI_MODEL
from .prm import PRM_INTERFACES
from .runner import Oracle, OracleConfig
from .stepcheck import StepCheckOracle

__all__ = ["main", "build_parser", "make_oracle", "ORACLES"]

ORACLES = BACKENDS
DEFAULT_CACHE = "results/cache/oracle.sqlite"
_NO_REFERENCE = ("none: ProcessBench has no reference solution, so the oracle is given an empty reference and "
                 "judges the steps alone")
_GSM8K_REFERENCE = ("the GSM8K test solution of the same question (joined by question text), on the gsm8k split "
                    "only; other splits: none (an empty reference)")


def build_parser() -> argparse.ArgumentParser:
    """The ``evaluate`` command's arguments."""
    parser = argparse.ArgumentParser(prog="python -m calgrpo_lib.oracle", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="score an oracle on ProcessBench")
    ev.add_argument("--benchmark", choices=("processbench",), default="processbench")
    ev.add_argument("--oracle", choices=ORACLES, default="stepcheck")
    ev.add_argument("--split", choices=(*PROCESSBENCH_SPLITS, "all"), default="all")
    ev.add_argument("--path", default=None, help="a local copy: a JSON list, a JSONL file or a folder holding "
                    "{split}.json / {split}.jsonl (default: $CALGRPO_DATA_DIR/processbench, else the hub)")
    ev.add_argument("--limit", type=int, default=None, help="the first N samples of each split")
    ev.add_argument("--reference", choices=("none", "gsm8k"), default="none",
                    help="what the oracle gets as reference (default none; gsm8k: the GSM8K test solution)")
    ev.add_argument("--gsm8k-path", default=None, help="GSM8K test.jsonl or its folder, for --reference gsm8k")
    ev.add_argument("--model", default=None, help=f"judge model (gemini default {DEFAULT_GEMINI_MODEL}; needed "
                    "for openai, local and prm)")
    ev.add_argument("--prm-interface", choices=PRM_INTERFACES, default="step_head",
                    help="prm: step_head (Qwen2.5-Math-PRM) or next_token (Math-Shepherd)")
    ev.add_argument("--threshold", type=float, default=0.5, help="prm: a step scoring below this is an error")
    ev.add_argument("--trust-remote-code", action="store_true", help="prm: run the hub model's own code")
    ev.add_argument("--cascade", action="store_true", help="the exact step checker first, then the judge")
    ev.add_argument("--base-url", default=None, help="server of the gemini / openai judge")
    ev.add_argument("--concurrency", type=int, default=8)
    ev.add_argument("--timeout", type=float, default=60.0, help="seconds per judge call, retries included")
    ev.add_argument("--batch-timeout", type=float, default=None,
                    help="seconds per chunk (default: timeout x (chunk / concurrency rounded up + 1))")
    ev.add_argument("--retries", type=int, default=3)
    ev.add_argument("--chunk-size", type=int, default=None,
                    help="items per judge_batch call (the progress bar's step; default max(32, 2 x concurrency))")
    ev.add_argument("--cache", default=None, help=f"reply cache (default {DEFAULT_CACHE} for the LLM judges; "
                    "'none' for no cache)")
    ev.add_argument("--fallback", choices=("none", "stepcheck"), default="none",
                    help="who judges an item whose call failed (default none: it counts as no verdict)")
    ev.add_argument("--latency", type=float, default=0.2, help="seconds per call of the fake judge")
    ev.add_argument("--json", dest="json_out", default=None, help="write the numbers to this file")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def make_oracle(args: argparse.Namespace, chunk_size: int) -> Oracle:
    """The oracle ``args`` name (:func:`calgrpo_lib.oracle.backends.make_oracle`, as a training run's
    ``run_oracle.build_oracle`` does for a config), with a chunk's deadline scaled to the chunk."""
    batch = args.batch_timeout
    if batch is None:
        batch = args.timeout * (math.ceil(chunk_size / args.concurrency) + 1)
    run = OracleConfig(concurrency=args.concurrency, timeout_s=args.timeout, batch_timeout_s=batch,
                       retries=args.retries)
    cache = args.cache if args.cache is not None else (None if args.oracle == "fake" else DEFAULT_CACHE)
    if cache is not None and cache.lower() in ("", "none"):
        cache = None
    fallback = StepCheckOracle() if args.fallback == "stepcheck" else None
    return make_judge(args.oracle, model=args.model, base_url=args.base_url, config=run, cache=cache,
                      fallback=fallback, latency_s=args.latency, prm_interface=args.prm_interface,
                      prm_threshold=args.threshold, trust_remote_code=args.trust_remote_code, cascade=args.cascade)


def _finite(x):
    """``x`` with NaN / inf floats (nested) replaced by ``None``, for strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _check(args: argparse.Namespace, splits: Sequence[str]) -> str:
    """The first problem with the arguments, or ``""``."""
    if args.limit is not None and args.limit < 1:
        return f"--limit {args.limit}: allowed: an int >= 1"
    if args.chunk_size is not None and args.chunk_size < 1:
        return f"--chunk-size {args.chunk_size}: allowed: an int >= 1"
    if args.reference == "gsm8k" and "gsm8k" not in splits:
        return (f"--reference gsm8k applies to the gsm8k split only, not --split {args.split}; allowed: --split "
                "gsm8k or all")
    if len(splits) > 1 and args.path is not None and not Path(args.path).is_dir():
        return (f"--split all with --path {args.path}: a file holds one split; allowed: a folder holding "
                "{split}.json for each split, or one --split")
    return ""


def _evaluate(args: argparse.Namespace) -> int:
    splits = list(PROCESSBENCH_SPLITS) if args.split == "all" else [args.split]
    problem = _check(args, splits)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        data = {s: load_processbench(s, args.path, args.limit) for s in splits}
        gsm8k = load_gsm8k("test", args.gsm8k_path) if args.reference == "gsm8k" else None
        chunk = args.chunk_size or max(32, 2 * args.concurrency)
        oracle = make_oracle(args, chunk)
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as e:  # OSError: FileNotFoundError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    limit = f", the first {args.limit} of each" if args.limit else ""
    name = f"cascade: stepcheck, then {args.oracle}" if args.cascade else args.oracle
    print(f"ProcessBench | oracle {name} (model {oracle.model or '-'}) | splits {', '.join(splits)}{limit}")
    print(f"reference given to the oracle: {_NO_REFERENCE if gsm8k is None else _GSM8K_REFERENCE}")
    reports: list[ProcessBenchReport] = []
    for split, records in data.items():
        refs, described = None, "none"
        if gsm8k is not None and split == "gsm8k":
            refs, joined = gsm8k_references(records, gsm8k)
            described = f"GSM8K test solution, {joined}/{len(records)} joined by question"
        reports.append(evaluate_processbench(oracle, records, references=refs, reference=described,
                                             chunk_size=chunk, progress=not args.no_progress))
        print(reports[-1], flush=True)
    print(offsets_table(reports))
    avg = average_f1(reports)
    print(f"average F1 over {len(reports)} split{'s' if len(reports) > 1 else ''}: {avg:.3f}")
    s = oracle.stats.summary()
    causes = f" {s['failures_by_cause']}" if s["failures_by_cause"] else ""
    print(f"oracle calls {s['calls']}, cache hits {s['cache_hits']}, retries {s['retries']}, failures "
          f"{s['failures']}{causes}, fallbacks {s['fallbacks']}")
    if s["answered_by"]:
        print("answered by: " + ", ".join(f"{stage} {n}" for stage, n in s["answered_by"].items()))
    if args.json_out:
        out = {"benchmark": "processbench", "oracle": args.oracle, "cascade": args.cascade, "model": oracle.model,
               "limit": args.limit,
               "reference": args.reference, "splits": {r.split: r.to_dict() for r in reports}, "average_f1": avg,
               "oracle_stats": s}
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(_finite(out), indent=2) + "\n")
        print(f"wrote {os.fspath(args.json_out)}")
    oracle.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return _evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
