"""The policy: load a causal language model and its tokenizer, on the right device and dtype.

Two kinds of policy go through the same :func:`load_policy`:

- ``"tiny"``: a 3M-parameter Llama shipped inside the package (``calgrpo_lib/models/tiny/``), trained by
  :func:`calgrpo_lib.policy_build.build_tiny_policy` on the synthetic task. It loads offline in about a second and
  answers the ``build_prompt(question, "plain")`` prompt in GSM8K form, ending with ``#### n`` and its EOS token.
- any Hugging Face hub id (e.g. ``"Qwen/Qwen2.5-0.5B-Instruct"``) or local folder saved with ``save_pretrained``.

Sampling from a policy lives in :mod:`calgrpo_lib.sampling` (:func:`~calgrpo_lib.sampling.generate`), building
the tiny policy in :mod:`calgrpo_lib.policy_build`. Command line: ``python -m calgrpo_lib policy build --out DIR``
(re)builds the tiny policy; ``python -m calgrpo_lib policy eval [--model tiny]`` prints a policy's held-out greedy
accuracy (see :mod:`calgrpo_lib.cli`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .validation import check_choice, check_type

__all__ = [
    "TINY", "TINY_DIR", "BOS_TOKEN", "EOS_TOKEN", "PAD_TOKEN", "load_policy", "pick_device", "pick_dtype",
    "model_source", "hub_offline", "WEIGHT_FILES",
]

TINY = "tiny"
TINY_DIR = Path(__file__).resolve().parent / "models" / "tiny"
BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<|bos|>", "<|eos|>", "<|pad|>"
DEVICES = ("cuda", "mps", "cpu")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


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


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set now (``1``, ``true``, ``yes`` or ``on``): the hub may not be asked for
    anything. Read at each call, not at import, so a change of the environment counts."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def model_source(name_or_path: str | os.PathLike, field: str = "name_or_path", *,
                 shipped: tuple[str, Path, str] | None = (TINY, TINY_DIR, "policy build"),
                 example: str = "Qwen/Qwen2.5-0.5B-Instruct") -> tuple[str, str]:
    """Where a model would load from, checked without loading it: ``("folder", path)`` (``"tiny"`` is the shipped
    folder) or ``("hub", id)``. ``shipped`` is the shipped model's name, folder and rebuild command (``python -m
    calgrpo_lib <command> --out DIR``), or None for a kind of model the package ships none of (a process reward
    model); ``example`` the hub id the error messages show.

    A folder must hold ``config.json``, a weights file (:data:`WEIGHT_FILES`) and a tokenizer file; a name that
    looks like a path (``./x``, ``/x``, ``~/x``, ``a/b/c``) or names a file must be such a folder. With
    ``HF_HUB_OFFLINE`` set, a hub id must be in the local hub cache. Each failure raises ``FileNotFoundError``
    naming ``field``, the value and what is allowed.
    """
    check_type(field, name_or_path, (str, os.PathLike))
    name = os.fspath(name_or_path)
    tiny, tiny_dir, rebuild_command = shipped if shipped is not None else (None, None, "")
    named = f"{tiny!r}, " if tiny is not None else ""
    allowed = (f"allowed: {named}a folder saved with save_pretrained (config.json, weights, tokenizer), or a hub "
               f"id such as {example!r}")
    path = tiny_dir if name == tiny else Path(name).expanduser()
    if name == tiny or path.is_dir():
        missing = [what for what, names in (("config.json", ("config.json",)), ("weights", WEIGHT_FILES),
                                            ("tokenizer", _TOKENIZER_FILES))
                   if not any((path / n).is_file() for n in names)]
        if missing:
            rebuild = (f"; rebuild it with `python -m calgrpo_lib {rebuild_command} --out {tiny_dir}`"
                       if name == tiny else "")
            raise FileNotFoundError(f"{field}={name!r}: the folder {os.fspath(path)} is not a model folder (missing: "
                                    f"{', '.join(missing)}){rebuild}; {allowed}")
        return "folder", os.fspath(path)
    if name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or path.exists():
        raise FileNotFoundError(f"{field}={name!r} is not a folder; {allowed}")
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise FileNotFoundError(f"{field}={name!r} is a hub id, HF_HUB_OFFLINE is set and the local hub cache does "
                                    f"not hold it; download it on a machine with a network (`hf download {name}`), "
                                    f"or unset HF_HUB_OFFLINE; {allowed}")
    return "hub", name


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
    kind, path = model_source(name)
    local = kind == "folder"
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
