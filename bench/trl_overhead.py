"""Benchmark: what CAL credit costs inside TRL: ``CALGRPOTrainer`` (step checker) against plain ``GRPOTrainer``.

    python bench/trl_overhead.py [--steps 8] [--warmup 2] [--rounds 3] [--threads 1] [--credit-mode cal_hybrid]

Both run TRL's loop on the same policy, prompts (unshuffled, ``--prompts`` x ``--generations`` per step), seed and
settings: exactly ``--max-new-tokens`` new tokens per completion (min = max, so lengths match), loss ``dapo``, beta 0,
temperature 1, group-scaled rewards, the rule reward of ``calgrpo_lib.trl_engine.reward_func``, no activation
checkpointing. The only difference is CALGRPOTrainer's post-processing of each batch: decoding, correctness, the
oracle (``stepcheck``, exact and offline) on the wrong completions, span -> token masks and token credit.

Each trainer runs in a fresh subprocess, one after the other, with the same torch thread count, ``--rounds`` times in
alternating order (TRL first in rounds 1, 3, ...; CAL first in rounds 2, 4, ...), so that a machine whose speed drifts
during the run (another job starting, a CPU warming up) weighs on both alike. A trainer's step time is the median of
its timed steps pooled over the rounds: the wall time of ``--steps`` optimizer steps after ``--warmup`` per round
(``on_step_begin`` to ``on_step_end``, CUDA synchronised); the ratio CAL / TRL is that of the two medians, and the
per-round ratios are printed beside it. Peak memory is the growth of the process's peak RSS from after the imports
(CPU) or ``torch.cuda.max_memory_allocated`` (CUDA), the largest over the rounds. Needs ``pip install -e ".[trl]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

WORKERS = ("trl", "cal")
LABELS = {"trl": "TRL GRPOTrainer", "cal": "CALGRPOTrainer"}


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def worker(args: argparse.Namespace) -> None:
    """One trainer in this process; its timings, memory and CAL metrics go to ``args.result`` as JSON."""
    import torch
    import trl
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    from calgrpo_lib.data import load_problems
    from calgrpo_lib.policy import load_policy
    from calgrpo_lib.trl_engine import CALGRPOConfig, CALGRPOTrainer, problems_dataset, reward_func

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = _peak_rss_bytes()
    times: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            sync()
            times.append(time.perf_counter() - self.t0)

    torch.manual_seed(args.seed)
    model, tok = load_policy(args.model, device=args.device, dtype=None if args.dtype == "auto" else args.dtype)
    total = args.warmup + args.steps
    dataset = problems_dataset(load_problems("synthetic", "train", n=total * args.prompts, seed=0))
    cpu = not cuda
    with tempfile.TemporaryDirectory(prefix=f"trl_overhead_{args.worker}_") as out:
        common = dict(
            output_dir=out, use_cpu=cpu, bf16=False, fp16=False, report_to=[], logging_steps=1, save_strategy="no",
            eval_strategy="no", disable_tqdm=True, dataloader_pin_memory=not cpu,
            per_device_train_batch_size=args.prompts * args.generations, gradient_accumulation_steps=1,
            num_generations=args.generations, max_completion_length=args.max_new_tokens,
            generation_kwargs={"min_new_tokens": args.max_new_tokens}, temperature=1.0, top_p=1.0, loss_type="dapo",
            scale_rewards="group", beta=0.0, num_iterations=1, learning_rate=1e-4, lr_scheduler_type="constant",
            max_grad_norm=1.0, shuffle_dataset=False, max_steps=total, seed=args.seed, log_completions=False,
            mask_truncated_completions=False, activation_checkpointing=False)
        if args.worker == "cal":
            config = CALGRPOConfig(**common, credit_mode=args.credit_mode, oracle="stepcheck")
            cls = CALGRPOTrainer
        else:
            config = trl.GRPOConfig(**common)
            cls = trl.GRPOTrainer
        trainer = cls(model=model, reward_funcs=reward_func(), args=config, train_dataset=dataset,
                      processing_class=tok, callbacks=[StepClock()])
        trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r][args.warmup:]
    cal = {k: statistics.fmean(r[k] for r in logs) for k in logs[0] if k.startswith("cal/")} if logs else {}
    timed = times[args.warmup:]
    result = {"worker": args.worker, "step_times": times, "median_s": statistics.median(timed),
              "min_s": min(timed), "max_s": max(timed), "peak_rss_growth_bytes": _peak_rss_bytes() - rss_before,
              "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
              "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
              "params": sum(p.numel() for p in model.parameters()), "cal_metrics": cal,
              "completion_len": statistics.fmean(r["completions/mean_length"] for r in logs) if logs else None}
    Path(args.result).write_text(json.dumps(result))


def _run_worker(name: str, args: argparse.Namespace, result: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--result", str(result)]
    for flag in ("steps", "warmup", "threads", "prompts", "generations", "max_new_tokens", "credit_mode", "device",
                 "model", "dtype", "seed"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": os.environ.get("TRANSFORMERS_VERBOSITY", "error"),
           "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore::FutureWarning")}
    print(f"running {LABELS[name]} ({args.warmup} warm-up + {args.steps} timed steps) ...", file=sys.stderr,
          flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)
    return json.loads(result.read_text())


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f}"


def pool_rounds(rounds: list[dict[str, dict[str, Any]]], warmup: int) -> dict[str, dict[str, Any]]:
    """One result per trainer from its rounds: the timed steps of every round together (their median, min, max),
    the largest peak memory, the mean CAL metrics, and the per-round medians (``round_medians_s``); each round's own
    ``step_times`` stay in its round (the JSON's ``rounds``)."""
    pooled = {}
    for name in WORKERS:
        runs = [r[name] for r in rounds]
        timed = [t for r in runs for t in r["step_times"][warmup:]]
        metrics = {k: statistics.fmean(r["cal_metrics"][k] for r in runs) for k in runs[0]["cal_metrics"]}
        lengths = [r["completion_len"] for r in runs if r["completion_len"] is not None]
        first = {k: v for k, v in runs[0].items() if k != "step_times"}  # setup facts (device, params), not times
        pooled[name] = {**first, "median_s": statistics.median(timed), "min_s": min(timed), "max_s": max(timed),
                        "round_medians_s": [r["median_s"] for r in runs], "cal_metrics": metrics,
                        "peak_rss_growth_bytes": max(r["peak_rss_growth_bytes"] for r in runs),
                        "peak_cuda_bytes": max((r["peak_cuda_bytes"] or 0) for r in runs) or None,
                        "completion_len": statistics.fmean(lengths) if lengths else None}
    return pooled


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> float:
    """Print the setup, the table and ``ratio CAL/TRL`` of median step times; return that ratio."""
    plain, cal = results["trl"], results["cal"]
    cuda = args.device.startswith("cuda")
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')} · {platform.platform()} · {plain['device_name']} · "
          f"{os.cpu_count()} CPUs · torch {metadata.version('torch')} · transformers "
          f"{metadata.version('transformers')} · trl {metadata.version('trl')}")
    print(f"# policy {args.model} ({plain['params'] / 1e6:.1f}M params) · device {args.device} · torch threads "
          f"{args.threads} · {args.prompts} prompts x {args.generations} generations · {args.max_new_tokens} new "
          f"tokens (min = max) · CAL credit {args.credit_mode} with the step checker · median of {args.steps} steps "
          f"after {args.warmup} warm-up, x {args.rounds} rounds in alternating order")
    print()
    mem = "peak CUDA MiB" if cuda else "peak RSS growth MiB"
    print(f"| trainer | median step s | min s | max s | {mem} |")
    print("|---|---|---|---|---|")
    for name in WORKERS:
        r = results[name]
        m = r["peak_cuda_bytes"] if cuda else r["peak_rss_growth_bytes"]
        print(f"| {LABELS[name]} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {_mib(m)} |")
    ratio = cal["median_s"] / plain["median_s"]
    m_plain = plain["peak_cuda_bytes"] if cuda else plain["peak_rss_growth_bytes"]
    m_cal = cal["peak_cuda_bytes"] if cuda else cal["peak_rss_growth_bytes"]
    print(f"| CAL / TRL | {ratio:.2f}x | | | {f'{m_cal / m_plain:.2f}x' if m_plain else 'n/a'} |")
    print()
    per_round = [c / p for c, p in zip(cal["round_medians_s"], plain["round_medians_s"])]
    print("per round (median CAL / median TRL): " + ", ".join(f"{r:.3f}" for r in per_round)
          + f"; their median {statistics.median(per_round):.3f}")
    c = cal["cal_metrics"]
    if c:
        print(f"CAL per step (means over the timed steps): credit post-processing {c.get('cal/credit_time_s', 0):.4f} "
              f"s ({c.get('cal/credit_time_s', 0) / cal['median_s']:.1%} of the median step), of which oracle "
              f"{c.get('cal/oracle_time_s', 0):.4f} s, "
              f"wrong {c.get('cal/wrong', 0):.1f} of {c.get('cal/completions', 0):.0f}, oracle calls "
              f"{c.get('cal/oracle_calls', 0):.1f} (cache hits {c.get('cal/oracle_cache_hits', 0):.1f}), span hit "
              f"rate {c.get('cal/span_hit_rate', 0):.2f}, error tokens {c.get('cal/error_tokens', 0):.1f}, fallbacks "
              f"{c.get('cal/fallbacks', 0):.1f}")
    print(f"completion length (mean tokens): TRL {plain['completion_len']}, CAL {cal['completion_len']}")
    if args.steps < 10 or args.warmup < 2 or args.rounds < 2:
        print("note: fewer than 10 timed steps, 2 warm-up steps or 2 rounds: a smoke run, not a measurement")
    print(f"ratio CAL/TRL: {ratio:.2f}")
    return ratio


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps per trainer (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps before them (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="runs of both trainers, in alternating order (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (default 1)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step (default 4)")
    p.add_argument("--generations", type=int, default=8, help="samples per prompt, G (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="new tokens per sample, min = max (default 48)")
    p.add_argument("--credit-mode", default="cal_hybrid", choices=("sequence", "cal_sparse", "cal_hybrid", "prefix"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--model", default="tiny", help="'tiny' (shipped) or a local model folder")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write both results to this JSON file")
    p.add_argument("--worker", choices=WORKERS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    """Run one worker, or both one after the other and print the comparison."""
    args = _parser().parse_args(argv)
    for name in ("steps", "rounds", "threads", "prompts", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}={getattr(args, name)}; allowed: an int >= 1")
    if args.warmup < 0 or args.generations < 2:
        raise SystemExit(f"--warmup={args.warmup}, --generations={args.generations}; allowed: --warmup >= 0 and "
                         "--generations >= 2")
    if args.worker:
        worker(args)
        return
    rounds = []
    with tempfile.TemporaryDirectory(prefix="trl_overhead_") as tmp:
        for k in range(args.rounds):
            order = WORKERS if k % 2 == 0 else WORKERS[::-1]
            done = {name: _run_worker(name, args, Path(tmp) / f"{name}_{k}.json") for name in order}
            rounds.append({name: done[name] for name in WORKERS})
    results = pool_rounds(rounds, args.warmup)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": rounds, **results}, indent=1))
    report(args, results)


if __name__ == "__main__":
    main()
