"""What a user needs to know before a real run: :func:`doctor_report`, :func:`print_doctor`
(``python -m calgrpo_lib doctor``).

One line per fact, each a ``(what, finding)`` pair: the versions of Python and the libraries a run uses; the device
and dtype a run would pick (:func:`calgrpo_lib.policy.pick_device` / :func:`~calgrpo_lib.policy.pick_dtype`), the
CUDA GPUs with their memory, the attention implementations; which optional libraries are installed (looked up with
``importlib.util.find_spec`` and the installed distributions' metadata: nothing heavy is imported); whether a Gemini
key is set (its name only, never any part of its value); whether ``HF_HUB_OFFLINE`` is set, else whether the hub
answers (one ``HEAD https://huggingface.co`` with a 3 s timeout); the GSM8K data folder; the shipped tiny policy.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import TextIO

import torch

from .data import DATA_DIR_ENV, find_data_dir
from .memory import GiB, available_memory
from .oracle.gemini import KEY_NAMES, gemini_key
from .policy import TINY, hub_offline, model_source, pick_device, pick_dtype

__all__ = ["doctor_report", "print_doctor", "OPTIONAL_LIBRARIES", "HUB_URL"]

HUB_URL = "https://huggingface.co"
#: (module looked up, distribution name, what it is for)
OPTIONAL_LIBRARIES = (
    ("peft", "peft", "LoRA (use_peft)"),
    ("trl", "trl", "train --engine trl (CALGRPOTrainer), bench/vs_trl.py"),
    ("accelerate", "accelerate", "accelerate launch of --engine trl on several processes"),
    ("google.genai", "google-genai", "oracle='gemini'"),
    ("vllm", "vllm", "an OpenAI-compatible judge server (oracle='openai')"),
    ("flash_attn", "flash-attn", "attn_implementation='flash_attention_2'"),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _hub_line(timeout_s: float) -> str:
    if hub_offline():
        return f"offline (HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']}): models must be in a folder or the local cache"
    import httpx

    try:
        response = httpx.head(HUB_URL, timeout=timeout_s, follow_redirects=True)
    except httpx.HTTPError as e:
        return f"not reachable ({type(e).__name__}); set HF_HUB_OFFLINE=1 to work from local files only"
    return f"reachable ({HUB_URL} answered {response.status_code})"


def _key_line() -> str:
    for name in KEY_NAMES:
        if os.environ.get(name, "").strip():
            return f"set ({name})"
    if gemini_key() is not None:  # found in a .env file; the value is never shown
        return "set (.env file)"
    return f"not set ({' / '.join(KEY_NAMES)}, or a .env file)"


def _gpu_lines() -> list[tuple[str, str]]:
    if not torch.cuda.is_available():
        return [("CUDA", f"no CUDA GPU (torch built for CUDA {torch.version.cuda or 'none'})")]
    lines = [("CUDA", f"{torch.cuda.device_count()} GPU(s), CUDA {torch.version.cuda}")]
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free = available_memory(f"cuda:{i}") or 0
        lines.append((f"cuda:{i}", f"{props.name}, {props.total_memory / GiB:.1f} GiB ({free / GiB:.1f} GiB free), "
                                   f"compute capability {props.major}.{props.minor}"))
    return lines


def _attention_line() -> str:
    found = ["sdpa"] if hasattr(torch.nn.functional, "scaled_dot_product_attention") else ["eager"]
    if _installed("flash_attn"):
        found.append("flash_attention_2 (flash_attn installed)")
    return ", ".join(found) + " (transformers uses sdpa by default)"


def doctor_report(*, hub_timeout_s: float = 3.0) -> list[tuple[str, str]]:
    """The environment a run would meet, as ``(what, finding)`` lines (see the module docstring). Only the hub check
    uses the network, and only when ``HF_HUB_OFFLINE`` is not set."""
    device = pick_device()
    ram = available_memory("cpu")
    lines = [("python", f"{platform.python_version()} ({sys.executable})"),
             ("calgrpo", _version("calgrpo")), ("torch", torch.__version__),
             ("transformers", _version("transformers")),
             ("device", f"{device.type} (what device='auto' picks)"),
             ("dtype", f"{str(pick_dtype(device)).removeprefix('torch.')} (what dtype='auto' picks on {device.type})"),
             ("CPU", f"{os.cpu_count()} cores" + (f", {ram / GiB:.1f} GiB RAM available" if ram else "")),
             *_gpu_lines(), ("attention", _attention_line())]
    for module, distribution, use in OPTIONAL_LIBRARIES:
        found = f"installed ({_version(distribution)})" if _installed(module) else "not installed"
        lines.append((distribution, f"{found}: {use}"))
    lines.append(("Gemini key", _key_line()))
    lines.append(("hub", _hub_line(hub_timeout_s)))
    data = find_data_dir("train")
    lines.append(("data folder", f"{data} (GSM8K train.jsonl there: {(data / 'gsm8k' / 'train.jsonl').is_file()})"
                  if data is not None else f"not found: set {DATA_DIR_ENV} to a folder holding gsm8k/train.jsonl "
                                           "(else GSM8K comes from the hub)"))
    try:
        lines.append(("tiny policy", f"present ({model_source(TINY)[1]})"))
    except FileNotFoundError as e:
        lines.append(("tiny policy", f"missing: {e}"))
    return lines


def print_doctor(file: TextIO | None = None, *, hub_timeout_s: float = 3.0) -> list[tuple[str, str]]:
    """Print :func:`doctor_report` as aligned lines to ``file`` (default stdout); returns the report."""
    report = doctor_report(hub_timeout_s=hub_timeout_s)
    width = max(len(what) for what, _ in report)
    for what, finding in report:
        print(f"{what:<{width}}  {finding}", file=file or sys.stdout)
    return report
