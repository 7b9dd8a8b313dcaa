"""A short, prepared GPU run for a lent GPU machine (run it as ``bash bench/gpu_check.sh``; see bench/README.md).

Two cases, a few ``Trainer.step()`` each, on one CUDA GPU:

- ``tiny-gpu``: the preset as shipped (the tiny policy, 32 prompts x 16 samples, microbatch 512), every completion
  run to ``max_new_tokens`` (``min_new_tokens = max_new_tokens``: the worst case the memory estimate describes);
- ``qwen2.5-0.5b-shaped``: a randomly initialised ``Qwen2ForCausalLM`` with the numbers of Qwen/Qwen2.5-0.5B-Instruct's
  config.json (:data:`QWEN25_05B`, from ``calgrpo_lib.rehearsal.KNOWN_MODELS``; no download), in float32, with the
  ``qwen-gsm8k`` preset's batch, lengths and loss (16 prompts x 8 samples, 384 new tokens, microbatch 16) on synthetic
  prompts; the tokenizer is the tiny policy's (sampled ids it lacks decode to nothing, which changes no timing).

For each case it prints and writes: the median time per phase (the step record's ``time_*`` keys), generation tokens
per second, ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` growth, and the memory estimate
(:func:`calgrpo_lib.memory.estimate_memory`, with the default prompt length and with the one measured) beside the
measured peak. Without a CUDA GPU it prints ``no CUDA GPU found; nothing measured`` and exits 0. ``--cpu-smoke``
runs the same code on the CPU with tiny sizes (1 step each; peak RSS growth instead of CUDA memory), so the script
itself is tested without a GPU (tests/test_doctor.py).

The results go to ``--out``, else ``$OUT/gpu_check.json`` when ``OUT`` is set, else ``results/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from calgrpo_lib.config import preset  # noqa: E402
from calgrpo_lib.memory import GiB, estimate_memory, release_freed_memory  # noqa: E402
from calgrpo_lib.rehearsal import KNOWN_MODELS  # noqa: E402
from calgrpo_lib.trainer import TIMING_KEYS, Trainer  # noqa: E402

NO_GPU = "no CUDA GPU found; nothing measured"
#: the config.json fields of Qwen/Qwen2.5-0.5B-Instruct on the hub (calgrpo_lib.rehearsal), which size memory and time
QWEN25_05B = dict(KNOWN_MODELS["Qwen/Qwen2.5-0.5B-Instruct"])
SMOKE_QWEN = {**QWEN25_05B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 352, "vocab_size": 1024}


class _Probe(Trainer):
    """A Trainer that remembers each rollout's prompt width ``P`` (to estimate with the measured length too)."""

    prompt_widths: list[int]

    def rollout(self):  # noqa: ANN201 -- the Trainer's own return type
        out = super().rollout()
        self.prompt_widths = [*getattr(self, "prompt_widths", []), out.completion_start]
        return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _import_model_code() -> None:
    """Import what the runs import on first use, so that the CPU smoke's RSS baseline holds it (as in
    tests/test_memory.py); on a GPU it changes nothing measured."""
    import transformers.models.llama.modeling_llama  # noqa: F401
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, StaticCache  # noqa: F401


def _qwen_policy(numbers: dict[str, Any], device: str) -> tuple[Any, Any, Any]:
    """A randomly initialised Qwen2 of ``numbers`` (bf16 on CUDA, fp32 on CPU) and the tiny policy's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from calgrpo_lib.policy import TINY_DIR

    tokenizer = AutoTokenizer.from_pretrained(TINY_DIR, local_files_only=True)
    tokenizer.padding_side = "left"
    config = Qwen2Config(**numbers, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    dtype = torch.float32  # the preset's: AdamW's small updates need float32 weights (calgrpo_lib.config)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, config


def _cases(smoke: bool, device: str, out_dir: Path) -> list[dict[str, Any]]:
    common = {"eval_size": 0, "train_size": 256, "device": device, "overwrite": True}
    if smoke:
        sizes = {"prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 8, "min_new_tokens": 8,
                 "microbatch_size": 4}
        tiny = preset("tiny-gpu", **common, **sizes, output_dir=str(out_dir / "tiny-gpu"))
        qwen = preset("qwen-gsm8k", **common, **sizes, output_dir=str(out_dir / "qwen"), dtype="float32")
        numbers = SMOKE_QWEN
    else:
        tiny = preset("tiny-gpu", **common, min_new_tokens=64, output_dir=str(out_dir / "tiny-gpu"))
        qwen = preset("qwen-gsm8k", **common, min_new_tokens=384, output_dir=str(out_dir / "qwen"))  # its float32
        numbers = QWEN25_05B
    qwen = qwen.replace(task="synthetic", prompt_style="plain", oracle="none", credit_mode="sequence")
    return [{"name": "tiny-gpu", "config": tiny, "numbers": None},
            {"name": "qwen2.5-0.5b-shaped", "config": qwen, "numbers": numbers}]


def _run_case(case: dict[str, Any], steps: int, deadline: float) -> dict[str, Any]:
    config, cuda = case["config"], case["config"].device == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss()
    model = tokenizer = model_config = None
    if case["numbers"] is not None:
        model, tokenizer, model_config = _qwen_policy(case["numbers"], config.device)
    trainer = _Probe(config, model=model, tokenizer=tokenizer, progress=False)
    if cuda:  # the peak from here on; the weights are in memory_allocated already, so they count
        torch.cuda.reset_peak_memory_stats()
    records = []
    for _ in range(steps):
        if records and time.perf_counter() > deadline:
            break
        records.append(trainer.step())
    if cuda:
        torch.cuda.synchronize()
        peak, reserved = torch.cuda.max_memory_allocated() - base, torch.cuda.max_memory_reserved()
        measured = "torch.cuda.max_memory_allocated growth"
    else:
        peak, reserved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base, None
        measured = "peak RSS growth"
    kwargs = {"model_config": model_config} if model_config is not None else {}
    estimate = estimate_memory(config, **kwargs)
    measured_p = max(trainer.prompt_widths)
    estimate_p = estimate_memory(config, prompt_tokens=measured_p, **kwargs)
    later = records[1:] or records  # the first step warms kernels up
    times = {k: statistics.median(r[k] for r in later) for k in TIMING_KEYS}
    tokens = statistics.median(r["completion_len_mean"] * config.batch_size for r in later)
    result = {
        "case": case["name"], "steps": len(records), "params": estimate.params, "dtype": estimate.dtype,
        "rows": config.batch_size, "prompt_tokens_measured": measured_p, "max_new_tokens": config.max_new_tokens,
        "microbatch_size": config.microbatch_size, "median_times_s": times,
        "generation_tokens_per_s": tokens / times["time_generation"], "measured": measured,
        "peak_gib": peak / GiB, "reserved_gib": None if reserved is None else reserved / GiB,
        "estimate_gib": estimate.total / GiB, "estimate_over_peak": estimate.total / peak,
        "estimate_measured_p_gib": estimate_p.total / GiB, "estimate_measured_p_over_peak": estimate_p.total / peak,
        "estimate": estimate.gib, "estimate_table": estimate.format(), "records": records,
    }
    del trainer, model
    return result


def _print(result: dict[str, Any]) -> None:
    times = ", ".join(f"{k.removeprefix('time_')} {v:.3f}" for k, v in result["median_times_s"].items())
    print(f"\n== {result['case']}: {result['params'] / 1e6:.1f}M params ({result['dtype']}), {result['rows']} rows x "
          f"(P={result['prompt_tokens_measured']} + T={result['max_new_tokens']}), microbatch "
          f"{result['microbatch_size']}, {result['steps']} steps")
    print(f"   median seconds per phase: {times}")
    print(f"   generation: {result['generation_tokens_per_s']:,.0f} tokens/s")
    reserved = "" if result["reserved_gib"] is None else f" (reserved {result['reserved_gib']:.3f} GiB)"
    print(f"   {result['measured']}: {result['peak_gib']:.3f} GiB{reserved}")
    r = result
    print(f"   estimate: {r['estimate_gib']:.3f} GiB (x{r['estimate_over_peak']:.2f} the measured peak); with the "
          f"measured P: {r['estimate_measured_p_gib']:.3f} GiB (x{r['estimate_measured_p_over_peak']:.2f})")
    print("\n".join("   " + line for line in result["estimate_table"].splitlines()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="steps per case (default 3; the first warms up)")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same code on the CPU with tiny sizes, 1 step")
    parser.add_argument("--out", default=None, help="JSON file (default $OUT/gpu_check.json or results/)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="no new step after this many seconds")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    device, steps = ("cpu", 1) if args.cpu_smoke else ("cuda", args.steps)
    if device == "cpu":
        release_freed_memory()  # the CPU estimate assumes it (calgrpo_lib.memory)
        torch.set_num_threads(1)  # tiny sizes: threads only contend
    _import_model_code()
    out = Path(args.out) if args.out else (Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "results")
    out = out if out.suffix == ".json" else out / "gpu_check.json"
    start = time.perf_counter()
    info = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu_smoke": args.cpu_smoke, "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    print(f"gpu_check on {info['device']} (torch {info['torch']}, CUDA {info['cuda']})")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in _cases(args.cpu_smoke, device, Path(tmp)):
            results.append(_run_case(case, steps, start + args.budget_s))
            _print(results[-1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**info, "wall_s": time.perf_counter() - start, "cases": results}, indent=1,
                              default=str))
    print(f"\nwritten: {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
