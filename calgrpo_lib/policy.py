"""The policy: load a causal language model and its tokenizer, on the right device and dtype.

Two kinds of policy go through the same :func:`load_policy`:

- ``"tiny"``: a 3M-parameter Llama shipped inside the package (``calgrpo_lib/models/tiny/``), trained by
  :func:`calgrpo_lib.policy_build.build_tiny_policy` on the synthetic task. It loads offline in about a second and
  answers the ``build_prompt(question, "plain")`` prompt in GSM8K form, ending with ``#### n`` and its EOS token.
- any Hugging Face hub id (e.g. ``"Qwen/Qwen2.5-0.5B-Instruct"``) or local folder saved with ``save_pretrained``.

Sampling from a policy lives in :mod:`calgrpo_lib.sampling` (:func:`~calgrpo_lib.sampling.generate`).

Command line: ``python -m calgrpo_lib.policy build --out DIR`` (re)builds the tiny policy;
``python -m calgrpo_lib.policy eval [--model tiny]`` prints its held-out greedy accuracy.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .validation import check_choice, check_type

__all__ = [
    "TINY", "TINY_DIR", "BOS_TOKEN", "EOS_TOKEN", "PAD_TOKEN", "load_policy", "pick_device", "pick_dtype", "main",
]

TINY = "tiny"
TINY_DIR = Path(__file__).resolve().parent / "models" / "tiny"
BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<|bos|>", "<|eos|>", "<|pad|>"
DEVICES = ("cuda", "mps", "cpu")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def __getattr__(name: str) -> Any:
    """Lazy re-export of :func:`calgrpo_lib.policy_build.build_tiny_policy` (it imports this module)."""
    if name == "build_tiny_policy":
        from .policy_build import build_tiny_policy

        return build_tiny_policy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------- loading


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` picks the best available: cuda, then mps, then cpu."""
    if device is not None:
        check_type("device", device, (str, torch.device))
        if isinstance(device, str):
            check_choice("device", device.split(":")[0], DEVICES)
        dev = torch.device(device)
        check_choice("device", dev.type, DEVICES)
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``dtype`` as a ``torch.dtype``; ``None`` picks bfloat16 on a CUDA GPU that supports it, else float32."""
    if dtype is not None:
        if isinstance(dtype, torch.dtype):
            check_choice("dtype", dtype, (torch.float32, torch.bfloat16, torch.float16))
            return dtype
        check_type("dtype", dtype, (str, torch.dtype))
        check_choice("dtype", dtype, tuple(_DTYPES))
        return _DTYPES[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _hub_error(name: str, err: OSError) -> OSError:
    return OSError(
        f"could not load the policy {name!r}: it is not a local folder and the Hugging Face hub could not serve it "
        f"(no network, a typo, or a gated model). On a machine with a network run `hf download {name} --local-dir "
        f"DIR` (or `AutoModelForCausalLM.from_pretrained({name!r}).save_pretrained(DIR)` and the same for "
        f"AutoTokenizer), copy DIR here and call load_policy('DIR'). Use load_policy('tiny') for the offline "
        f"default. Original error: {err}")


def _ensure_pad_token(tokenizer: Any) -> None:
    """Give ``tokenizer`` a pad token when it has none; warn when padding shares the EOS id."""
    if tokenizer.pad_token_id is None:
        unk = getattr(tokenizer, "unk_token", None)
        if unk is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
            tokenizer.pad_token = unk
            return
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == tokenizer.eos_token_id:
        warnings.warn(
            f"the tokenizer pads with its EOS token {tokenizer.eos_token!r} (id {tokenizer.eos_token_id}). calgrpo "
            "builds masks from lengths, so its own losses keep the final EOS; but any code that masks "
            "`ids != pad_token_id` would silently drop the EOS from the loss.", UserWarning, stacklevel=3)


def load_policy(name_or_path: str | os.PathLike = TINY, *, device: str | torch.device | None = None,
                dtype: str | torch.dtype | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``: ``"tiny"`` (shipped, offline), a local folder, or a hub id.

    ``device``: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` (best available). ``dtype``: a ``torch.dtype``, a
    name (``"bfloat16"``, ``"float32"``, ...) or ``None`` (bf16 on a CUDA GPU that supports it, else fp32). The
    model is returned in eval mode; the tokenizer pads on the left (for batched generation) and has a pad token
    (its own, else its unk token, else its EOS token with a warning). A hub id that cannot be reached raises an
    ``OSError`` that says how to pass a local folder instead; without a network the hub client retries for about a
    minute first, ``HF_HUB_OFFLINE=1`` makes it fail at once.
    """
    check_type("name_or_path", name_or_path, (str, os.PathLike))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    name = os.fspath(name_or_path)
    local = name == TINY or Path(name).is_dir()
    path = TINY_DIR if name == TINY else Path(name) if local else name
    if not local and (name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or Path(name).exists()):
        raise FileNotFoundError(f"name_or_path={name!r} is not a folder; allowed: 'tiny', a folder saved with "
                                "save_pretrained, or a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'")
    if name == TINY and not (TINY_DIR / "config.json").is_file():
        raise FileNotFoundError(f"the shipped tiny policy is missing from {TINY_DIR}; rebuild it with "
                                f"`python -m calgrpo_lib.policy build --out {TINY_DIR}`")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, local_files_only=local)
    except OSError as err:
        if local:
            raise
        raise _hub_error(name, err) from err
    tokenizer.padding_side = "left"
    _ensure_pad_token(tokenizer)
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(dev).eval(), tokenizer


# ----------------------------------------------------------------------------------------------- command line


def _share(value: str) -> float | None:
    """``--hard-carry-share``: a number, or ``none``."""
    return None if value.strip().lower() == "none" else float(value)


def _parser() -> argparse.ArgumentParser:
    from .policy_build import TinyBuildConfig

    d = TinyBuildConfig()
    p = argparse.ArgumentParser(prog="python -m calgrpo_lib.policy", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the tiny policy from scratch and save it as a HF folder")
    b.add_argument("--out", required=True, help=f"output folder (the shipped one is {TINY_DIR})")
    b.add_argument("--seed", type=int, default=d.seed)
    b.add_argument("--steps", type=int, default=d.steps)
    b.add_argument("--batch-size", type=int, default=d.batch_size)
    b.add_argument("--lr", type=float, default=d.lr)
    b.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio,
                   help="cosine floor as a share of --lr (1 = constant after warm-up)")
    b.add_argument("--train-problems", type=int, default=d.train_problems,
                   help="distinct training problems generated (default steps x batch size)")
    b.add_argument("--slip-rate", type=float, default=d.slip_rate, help="share of SFT targets with one slip")
    b.add_argument("--carry-bug-rate", type=float, default=d.carry_bug_rate,
                   help="share of SFT targets with a line that carries or borrows whose carry is forgotten "
                        "(a misconception)")
    b.add_argument("--hard-carry-share", type=_share, default=d.hard_carry_share,
                   help="share of SFT problems with a line that carries into a tens digit or borrows "
                        "('none': the task's own, about 11%%)")
    b.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    b.add_argument("--eval-every", type=int, default=0, help="greedy accuracy on 128 held-out problems every N steps")
    b.add_argument("--no-eval", action="store_true", help="skip the final evaluation and model card")
    e = sub.add_parser("eval", help="greedy accuracy (and group statistics) on held-out synthetic problems")
    e.add_argument("--model", default=TINY, help="'tiny', a local folder or a hub id")
    e.add_argument("--n", type=int, default=512)
    e.add_argument("--groups", type=int, default=0, help="also sample G=8 groups for this many problems")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m calgrpo_lib.policy``."""
    args = _parser().parse_args(argv)
    if args.command == "build":
        from .policy_build import TinyBuildConfig, build_tiny_policy

        cfg = TinyBuildConfig(seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              min_lr_ratio=args.min_lr_ratio, train_problems=args.train_problems,
                              slip_rate=args.slip_rate, carry_bug_rate=args.carry_bug_rate,
                              hard_carry_share=args.hard_carry_share, threads=args.threads)
        info = build_tiny_policy(args.out, config=cfg, eval_every=args.eval_every, evaluate=not args.no_eval)
        print({k: v for k, v in info.items() if not isinstance(v, dict)})
        return 0
    from .sampling import greedy_accuracy, group_stats
    from .tasks import generate_problems

    model, tok = load_policy(args.model)
    problems = generate_problems(args.n, seed=0, split="test")
    print(greedy_accuracy(model, tok, problems))
    if args.groups:
        print(group_stats(model, tok, problems[: args.groups]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
