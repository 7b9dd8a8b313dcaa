"""Benchmark: TRL's ``GRPOTrainer`` and calgrpo's ``Trainer`` side by side: step time and peak memory.

    python bench/vs_trl.py [--steps 10] [--warmup 2] [--threads N]        # CPU, the shipped tiny policy
    python bench/vs_trl.py --build-qwen DIR                               # a random ~0.5B Qwen2, built offline
    python bench/vs_trl.py --device cuda --model DIR                      # GPU variant on that model

Both trainers run the same policy on the same work per optimizer step: ``--prompts`` prompts x ``--generations``
samples (default 8 x 8), exactly ``--max-new-tokens`` new tokens per sample (min_new_tokens = max_new_tokens, so the
completion lengths match whatever the policy would write), loss ``dapo``, beta 0 (no reference model), one
optimisation pass per batch (num_iterations 1), temperature 1, group-scaled rewards, the same AdamW learning rate
(constant), gradient clipping at 1, no gradient checkpointing, and the same prompts per step (step ``s`` takes the
synthetic problems ``s*B .. s*B+B-1``; TRL's sampler runs unshuffled). The reward is
``rewards.batch_rewards(texts, targets, "gsm8k", 0.8, 0.2).total`` for both.

Each trainer runs in a fresh subprocess, one after the other, with the same torch thread count, so its peak memory
is its own: on CPU the growth of the process's peak RSS (``resource.getrusage`` ``ru_maxrss``) from after the imports
to the end, on CUDA ``torch.cuda.max_memory_allocated``. Step time is the median wall time of ``--steps`` optimizer
steps after ``--warmup`` warm-up steps: ours around ``Trainer.step()``, TRL's from ``on_step_begin`` to
``on_step_end`` of a ``TrainerCallback`` (CUDA is synchronised at both ends). Needs ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import hashlib
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

WORKERS = ("ours", "trl")
LABELS = {"ours": "calgrpo Trainer", "trl": "TRL GRPOTrainer"}
REWARD = ("gsm8k", 0.8, 0.2)  # reward format, answer weight, format weight (the tiny preset's)
QWEN_05B = {  # the shape of Qwen2.5-0.5B: 24 layers, 896 wide, GQA 14/2 heads, 151,936-row tied embedding: ~494M
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1e6,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}


# ----------------------------------------------------------------------------------------------- helpers


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _prompt_digest(prompts: list[str]) -> str:
    """Order-free digest of one step's distinct prompts, to check both trainers saw the same ones."""
    return hashlib.sha256("\x00".join(sorted(set(prompts))).encode()).hexdigest()[:16]


def build_qwen(out: str | os.PathLike, *, seed: int = 0, dtype: str = "bfloat16", **shape: Any) -> Path:
    """Save a Qwen2ForCausalLM with random weights (default: the Qwen2.5-0.5B shape) and the tiny tokenizer to ``out``.

    Offline: the architecture comes from ``transformers.Qwen2Config``, the tokenizer is the shipped tiny one (523
    tokens; sampled ids above its vocabulary decode to nothing, which is fine for timing). ``shape`` overrides
    fields of :data:`QWEN_05B` (e.g. ``num_hidden_layers=2`` for a quick check).
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from calgrpo_lib.policy import load_policy

    _, tok = load_policy("tiny", device="cpu")
    cfg = Qwen2Config(**{**QWEN_05B, **shape}, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"saved a random Qwen2ForCausalLM ({n / 1e6:.0f}M parameters, {dtype}) and the tiny tokenizer to {path}")
    return path


# ----------------------------------------------------------------------------------------------- workers


class _Clock:
    """Wall-time of one step; CUDA is synchronised before reading the clock so queued kernels are counted."""

    def __init__(self, device: str) -> None:
        import torch

        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.times: list[float] = []
        self._t0 = 0.0

    def start(self) -> None:
        self.sync()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.sync()
        self.times.append(time.perf_counter() - self._t0)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, list, list[str]]:
    """The policy, the problems of every step in order, and their prompts (the same in both workers)."""
    import torch

    from calgrpo_lib.data import load_problems
    from calgrpo_lib.policy import load_policy
    from calgrpo_lib.rewards import build_prompt

    torch.manual_seed(args.seed)
    dtype = None if args.dtype == "auto" else args.dtype
    model, tok = load_policy(args.model, device=args.device, dtype=dtype)
    problems = load_problems("synthetic", "train", n=(args.warmup + args.steps) * args.prompts, seed=0)
    prompts = [build_prompt(p.question, "plain", tok) for p in problems]
    return model, tok, problems, prompts


def _run_ours(args: argparse.Namespace, clock: _Clock) -> dict[str, Any]:
    from calgrpo_lib.config import preset
    from calgrpo_lib.trainer import Trainer

    model, tok, problems, prompts = _setup(args)
    B, total = args.prompts, args.warmup + args.steps
    seen: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vs_trl_ours_") as out:
        config = preset("tiny", model=args.model, credit_mode="sequence", oracle="none", eval_size=0, save_every=0,
                        prompts_per_step=B, num_generations=args.generations, max_new_tokens=args.max_new_tokens,
                        min_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0, loss_type="dapo",
                        scale_rewards="group", beta=0.0, num_iterations=1, learning_rate=args.lr,
                        weight_decay=0.0, max_grad_norm=1.0, epsilon=0.2, epsilon_high=None,
                        microbatch_size=B * args.generations, max_steps=total, train_size=B,
                        reward_format=REWARD[0], answer_weight=REWARD[1], format_weight=REWARD[2],
                        output_dir=out, seed=args.seed, device=args.device, dtype=args.dtype)
        trainer = Trainer(config, model=model, tokenizer=tok, progress=False)
        lengths = []
        for step in range(total):
            # Step s gets problems s*B .. s*B+B-1, the order of TRL's unshuffled sampler: with exactly B training
            # problems and B prompts per step, the trainer's draw takes all of them (in its own row order)
            trainer.train_problems = problems[step * B: (step + 1) * B]
            seen.append(_prompt_digest(prompts[step * B: (step + 1) * B]))
            clock.start()
            record = trainer.step()
            clock.stop()
            lengths.append(record["completion_len_mean"])
        trainer.log.close()
    return {"prompt_digests": seen, "completion_len": [min(lengths), max(lengths)], "model": model}


def _run_trl(args: argparse.Namespace, clock: _Clock) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from calgrpo_lib.rewards import batch_rewards

    model, tok, problems, prompts = _setup(args)
    B, G, total = args.prompts, args.generations, args.warmup + args.steps
    seen: list[str] = []
    lengths: list[int] = []

    def reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]], target: list[float],
               **_: Any) -> list[float]:
        seen.append(_prompt_digest(prompts))
        lengths.extend(len(ids) for ids in completion_ids)
        return batch_rewards(completions, target, *REWARD).total

    class StepClock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            clock.start()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            clock.stop()

    data = Dataset.from_list([{"prompt": text, "target": float(p.final)} for text, p in zip(prompts, problems)])
    cpu = args.device == "cpu"
    with tempfile.TemporaryDirectory(prefix="vs_trl_trl_") as out:
        config = GRPOConfig(
            output_dir=out, use_cpu=cpu, bf16=False, fp16=False, report_to=[], logging_strategy="no",
            save_strategy="no", eval_strategy="no", disable_tqdm=True, dataloader_pin_memory=not cpu,
            per_device_train_batch_size=B * G, gradient_accumulation_steps=1, num_generations=G,
            max_completion_length=args.max_new_tokens, generation_kwargs={"min_new_tokens": args.max_new_tokens},
            temperature=1.0, top_p=1.0, loss_type="dapo", scale_rewards="group", beta=0.0, num_iterations=1,
            epsilon=0.2, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            max_grad_norm=1.0, shuffle_dataset=False, max_steps=total, seed=args.seed,
            mask_truncated_completions=False, log_completions=False,
            activation_checkpointing=False)  # TRL defaults to checkpointing on, ours has none
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data,
                              processing_class=tok, callbacks=[StepClock()])
        trainer.train()
    if model.is_activation_checkpointing:
        raise RuntimeError("TRL trained with activation checkpointing on; the comparison assumes it off")
    return {"prompt_digests": seen, "completion_len": [min(lengths), max(lengths)], "model": model}


def worker(args: argparse.Namespace) -> None:
    """One trainer in this process; writes its timings and memory as JSON to ``args.result``."""
    import torch

    import calgrpo_lib.trainer  # noqa: F401  (imports counted in the baseline, not in the phase)

    if args.worker == "trl":
        import trl  # noqa: F401
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = _peak_rss_bytes()
    clock = _Clock(args.device)
    out = (_run_ours if args.worker == "ours" else _run_trl)(args, clock)
    model = out.pop("model")
    if len(clock.times) != args.warmup + args.steps:
        raise RuntimeError(f"{args.worker}: timed {len(clock.times)} steps, expected {args.warmup + args.steps}")
    timed = clock.times[args.warmup:]
    result = {
        **out, "worker": args.worker, "step_times": clock.times, "median_s": statistics.median(timed),
        "min_s": min(timed), "max_s": max(timed), "threads_at_end": torch.get_num_threads(),
        "peak_rss_growth_bytes": _peak_rss_bytes() - rss_before, "peak_rss_bytes": _peak_rss_bytes(),
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "device_name": torch.cuda.get_device_name() if cuda else _cpu_name(),
        "model_class": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
    Path(args.result).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------- driver


def _run_worker(name: str, args: argparse.Namespace, result: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--result", str(result),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--prompts", str(args.prompts), "--generations", str(args.generations),
           "--max-new-tokens", str(args.max_new_tokens), "--lr", repr(args.lr), "--device", args.device,
           "--model", args.model, "--dtype", args.dtype, "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": os.environ.get("TRANSFORMERS_VERBOSITY", "error")}
    print(f"running {LABELS[name]} ({args.warmup} warm-up + {args.steps} timed steps) ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)  # the report alone goes to stdout
    return json.loads(result.read_text())


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f}"


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> float:
    """Print the machine, the versions, the table and ``ratio ours/TRL``; return the ratio."""
    ours, trl = results["ours"], results["trl"]
    cuda = args.device.startswith("cuda")
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')} · {platform.platform()} · {ours['device_name']} · "
          f"{os.cpu_count()} CPUs · python {platform.python_version()} · torch {_version('torch')} · "
          f"transformers {_version('transformers')} · trl {_version('trl')} · accelerate {_version('accelerate')}")
    print(f"# policy {args.model} ({ours['model_class']}, {ours['params'] / 1e6:.1f}M params, {ours['dtype']}) · "
          f"device {args.device} · torch threads {args.threads} (at the end: ours {ours['threads_at_end']}, TRL "
          f"{trl['threads_at_end']}) · {args.prompts} prompts x {args.generations} generations · "
          f"{args.max_new_tokens} new tokens (min = max) · loss dapo · beta 0 · num_iterations 1 · lr {args.lr:g} · "
          f"median of {args.steps} steps after {args.warmup} warm-up · run order: {', '.join(args.order)}")
    mem = "peak CUDA memory allocated (MiB)" if cuda else "peak RSS growth (MiB)"
    print()
    print(f"| trainer | median s/step | min s/step | max s/step | {mem} |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("trl", "ours"):
        r = results[name]
        m = r["peak_cuda_bytes"] if cuda else r["peak_rss_growth_bytes"]
        print(f"| {LABELS[name]} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {_mib(m)} |")
    ratio = ours["median_s"] / trl["median_s"]
    m_ours = ours["peak_cuda_bytes"] if cuda else ours["peak_rss_growth_bytes"]
    m_trl = trl["peak_cuda_bytes"] if cuda else trl["peak_rss_growth_bytes"]
    mem_ratio = f"{m_ours / m_trl:.2f}x" if m_trl else "n/a"
    print(f"| ours / TRL | {ratio:.2f}x | | | {mem_ratio} |")
    print()
    if cuda:
        print("memory: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), each trainer in its own "
              "process")
    else:
        print("memory: peak RSS growth = resource.getrusage(RUSAGE_SELF).ru_maxrss at the end minus the same after "
              "the imports (model load, trainer and steps included), each trainer in its own process; absolute "
              f"peaks: ours {_mib(ours['peak_rss_bytes'])} MiB, TRL {_mib(trl['peak_rss_bytes'])} MiB")
    same = ours["prompt_digests"] == trl["prompt_digests"]
    print(f"same prompts per step: {'yes' if same else 'NO'}; completion lengths (tokens): ours "
          f"{ours['completion_len'][0]:g}-{ours['completion_len'][1]:g} (per-step means), TRL "
          f"{trl['completion_len'][0]}-{trl['completion_len'][1]}")
    if args.steps < 10 or args.warmup < 2:
        print("note: fewer than 10 timed steps or 2 warm-up steps: a smoke run, not a measurement")
    print(f"ratio ours/TRL: {ratio:.2f}")
    return ratio


def _parser() -> argparse.ArgumentParser:
    from calgrpo_lib.config import preset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per trainer (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps before them (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (default: torch's default)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (default 8)")
    p.add_argument("--generations", type=int, default=8, help="samples per prompt, G (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="new tokens per sample, min = max (default 64)")
    p.add_argument("--lr", type=float, default=preset("tiny").learning_rate, help="learning rate of both")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--model", default="tiny", help="'tiny' (shipped) or a local folder, e.g. from --build-qwen")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="weights of both (auto: float32 on CPU, bfloat16 on a GPU that supports it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", default="trl", choices=WORKERS, help="which trainer runs first (default trl)")
    p.add_argument("--json", default=None, help="also write both results to this JSON file")
    p.add_argument("--build-qwen", metavar="DIR", default=None,
                   help="save a random Qwen2 of the Qwen2.5-0.5B shape (~494M params) with the tiny tokenizer to DIR "
                        "and exit")
    p.add_argument("--worker", choices=WORKERS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point: build the Qwen model, run one worker, or run both workers and print the comparison."""
    args = _parser().parse_args(argv)
    if args.build_qwen:
        build_qwen(args.build_qwen)
        return
    for name in ("steps", "prompts", "generations", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}={getattr(args, name)}; allowed: an int >= 1")
    if args.warmup < 0 or args.generations < 2:
        raise SystemExit("allowed: --warmup >= 0 and --generations >= 2")
    if args.threads is None:
        import torch

        args.threads = torch.get_num_threads()
    if args.worker:
        worker(args)
        return
    if _version("trl") == "not installed":
        raise SystemExit('TRL is not installed: pip install -e ".[bench]"')
    args.order = [args.first, *(w for w in WORKERS if w != args.first)]
    with tempfile.TemporaryDirectory(prefix="vs_trl_") as tmp:
        results = {name: _run_worker(name, args, Path(tmp) / f"{name}.json") for name in args.order}
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, **results}, indent=1))
    report(args, results)


if __name__ == "__main__":
    main()
