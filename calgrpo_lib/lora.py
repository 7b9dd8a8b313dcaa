"""LoRA adapters on a policy (through ``peft``), gradient checkpointing, and merged export.

LoRA (Hu et al., 2021) leaves a linear layer's weight ``W`` ``(out, in)`` frozen and trains a low-rank update::

    W' = W + (alpha / r) * B A          A: (r, in)   B: (out, r)
    y  = W x + (alpha / r) * B A dropout(x)

``A`` starts random (peft's Kaiming-uniform), ``B`` at zero, so the adapted policy starts equal to the base one. Only
the ``A`` and ``B`` of each targeted module are trained (``r * (in + out)`` parameters each); every base weight
(embeddings, norms, the targeted and untargeted linear layers, ``lm_head``) is frozen. ``r`` = ``lora_r``, ``alpha`` =
``lora_alpha``, the dropout ``lora_dropout`` (active in training mode only), the targeted modules
``lora_target_modules`` (TRL's names): comma-separated module names (``"q_proj,v_proj"``: every module whose name ends
so), ``"all-linear"`` (every linear layer but the output layer) or ``None`` (peft's default for the architecture;
Llama and Qwen2: ``q_proj, v_proj``).

- :func:`prepare_policy`: what the trainer does to a freshly loaded policy: :func:`add_lora` when ``use_peft``, then
  :func:`enable_gradient_checkpointing` when ``gradient_checkpointing``; neither: the model itself, untouched.
- The KL reference of a LoRA run is the base model, i.e. the same module with its adapters off
  (:func:`adapters_disabled`): no second copy of the weights.
- Checkpoints of a LoRA run hold the adapters only (:data:`ADAPTER_FILES`, written by ``PeftModel.save_pretrained``);
  :func:`load_adapter_weights` puts them back into the wrapped model on resume.
- :func:`merge_and_save` writes an adapted model as a plain Hugging Face folder (adapters merged into the weights,
  ``W'`` above); :func:`export_checkpoint` does so from a run's checkpoint folder (full or LoRA), rebuilding a LoRA
  checkpoint's model from its base (the run's ``config["model"]``). :func:`calgrpo_lib.policy.load_policy` loads
  the result.

Gradient checkpointing recomputes each decoder layer's activations in the backward pass (``use_reentrant=False``;
transformers also makes the input embeddings' output require gradients, which peft needs for frozen embeddings). It
only acts in training mode with gradients on: sampling (eval mode) keeps its KV cache, and
:func:`calgrpo_lib.rollout.sequence_forward` scores without a shared prompt cache while it is on (a checkpointed
layer drops any cache). ``peft`` (0.21) reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a
model, a ``FutureWarning`` under transformers 5.24 that no call of ours can avoid: it is silenced for those calls only.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from .policy import load_policy
from .validation import check_float, check_int, check_type

__all__ = ["ADAPTER_FILES", "POLICY_FIELDS", "add_lora", "is_peft", "linear_module_names", "parse_target_modules",
           "trainable_parameters", "adapters_disabled", "enable_gradient_checkpointing", "prepare_policy",
           "load_adapter_weights", "merge_and_save", "export_checkpoint"]

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")  #: what PeftModel.save_pretrained writes
#: The GRPOConfig fields :func:`prepare_policy` takes (``prepare_policy(model, **{f: getattr(cfg, f) for f in ...})``).
POLICY_FIELDS = ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "gradient_checkpointing")
_PEFT_FUTURE_WARNING = "`is_gradient_checkpointing` is deprecated"


@contextmanager
def _peft_wrapping() -> Iterator[None]:
    """Silence the one FutureWarning peft's wrapping raises under transformers 5.24 (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PEFT_FUTURE_WARNING, category=FutureWarning)
        yield


def is_peft(model: Any) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (adapters on a base model). Imports nothing: a model can only be one
    once peft is imported."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last name parts of ``model``'s ``torch.nn.Linear`` modules, sorted (Llama: ``down_proj,
    gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj``): the names ``lora_target_modules`` can use."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and name})


def parse_target_modules(value: str | None) -> str | list[str] | None:
    """``lora_target_modules`` as peft takes it: ``None`` (peft's default), ``"all-linear"``, or the list of the
    comma-separated names (spaces stripped, empty parts dropped)."""
    check_type("lora_target_modules", value, (str, type(None)))
    if value is None or value.strip() == "all-linear":
        return None if value is None else "all-linear"
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ValueError(f"lora_target_modules={value!r} names no module; allowed: comma-separated module names such "
                         "as 'q_proj,v_proj', 'all-linear', or None (peft's default for the architecture)")
    return names


def _target_error(value: Any, model: torch.nn.Module, what: str) -> ValueError:
    return ValueError(f"lora_target_modules={value!r}: {what}; allowed: comma-separated names of this model's linear "
                      f"modules ({', '.join(linear_module_names(model))}), 'all-linear', or None (peft's default)")


def add_lora(model: torch.nn.Module, *, r: int = 16, alpha: int = 32, dropout: float = 0.05,
             target_modules: str | None = None) -> Any:
    """Wrap ``model`` (a transformers causal LM) with fresh LoRA adapters: a ``peft.PeftModel`` whose only trainable
    parameters are the adapters' ``A`` ``(r, in)`` and ``B`` ``(out, r)`` (see the module docstring); ``model``'s own
    weights are frozen in place. ``A`` is drawn from torch's global generator (seed it for a reproducible run).

    ``target_modules``: see :func:`parse_target_modules`; a name that matches no module of ``model`` raises a
    ``ValueError`` naming ``lora_target_modules`` and listing the model's linear module names. Errors name the
    ``GRPOConfig`` fields these arguments come from (``lora_r``, ``lora_alpha``, ``lora_dropout``). A model that is
    already a PeftModel is refused (pass its base model).
    """
    from peft import LoraConfig, get_peft_model

    check_int("lora_r", r, 1, None)
    check_int("lora_alpha", alpha, 1, None)
    check_float("lora_dropout", dropout, 0.0, 1.0, high_open=True)
    if is_peft(model):
        raise ValueError("model is already a peft.PeftModel; allowed: a plain transformers model (its base model, "
                         "model.get_base_model()) to add fresh adapters to")
    targets = parse_target_modules(target_modules)
    if isinstance(targets, list):
        names = [name for name, _ in model.named_modules() if name]
        unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if unmatched:
            raise _target_error(target_modules, model, f"{', '.join(map(repr, unmatched))} matches no module")
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    try:
        with _peft_wrapping():
            return get_peft_model(model, config)
    except ValueError as err:  # e.g. no default targets for this architecture, or a target of an unsupported type
        if "target" not in str(err).lower():
            raise
        raise _target_error(target_modules, model, f"peft refused it ({err})") from err


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that require gradients, in ``model.parameters()`` order (all of them for a full fine-tune,
    the adapters' for a LoRA model): what the optimizer gets."""
    return [p for p in model.parameters() if p.requires_grad]


def adapters_disabled(model: Any) -> Any:
    """A context manager in which a PeftModel computes as its base model (``PeftModel.disable_adapter``); for any
    other model, one that changes nothing."""
    return model.disable_adapter() if is_peft(model) else nullcontext()


def enable_gradient_checkpointing(model: Any) -> None:
    """Turn on gradient (activation) checkpointing of ``model``'s decoder layers, non-reentrant, through
    transformers' ``activation_checkpointing_enable`` (its older name, ``gradient_checkpointing_enable``, is deprecated
    in 5.24); on a PeftModel, on its base model. Raises ``ValueError`` for an architecture that does not support it."""
    base = model.get_base_model() if is_peft(model) else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ValueError(f"gradient_checkpointing=True: {type(base).__name__} does not support gradient "
                         "checkpointing; allowed: gradient_checkpointing=False for this model")
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def prepare_policy(model: torch.nn.Module, *, use_peft: bool = False, lora_r: int = 16, lora_alpha: int = 32,
                   lora_dropout: float = 0.05, lora_target_modules: str | None = None,
                   gradient_checkpointing: bool = False) -> Any:
    """The policy a run trains: ``model`` with LoRA adapters when ``use_peft`` (:func:`add_lora`), gradient
    checkpointing on when ``gradient_checkpointing``; with neither, ``model`` itself, untouched. Arguments: the
    ``GRPOConfig`` fields of the same names (:data:`POLICY_FIELDS`)."""
    if use_peft:
        model = add_lora(model, r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=lora_target_modules)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def load_adapter_weights(model: Any, folder: str | os.PathLike) -> None:
    """Load the adapter weights saved in ``folder`` (``adapter_model.safetensors``, by ``save_pretrained``) into the
    PeftModel ``model`` built with the same LoRA settings (``peft.set_peft_model_state_dict``). Raises ``ValueError``
    when ``model`` is not a PeftModel or the saved adapters do not fit it (a key it lacks, or an adapter weight of
    it the file does not hold)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not is_peft(model):
        raise ValueError(f"{os.fspath(folder)!r} holds LoRA adapters but the model has none; allowed: a model wrapped "
                         "by add_lora (use_peft=True)")
    weights = load_file(str(Path(folder) / ADAPTER_FILES[0]), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, weights)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ValueError(f"the adapters in {os.fspath(folder)!r} do not fit the model (unexpected: "
                         f"{result.unexpected_keys[:3]}, missing: {missing[:3]}); allowed: adapters saved from a model "
                         "with the same base and LoRA settings (lora_r, lora_target_modules)")


def _new_folder(out_dir: str | os.PathLike) -> Path:
    check_type("out_dir", out_dir, (str, os.PathLike))
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out_dir={os.fspath(out_dir)!r} exists and is not an empty folder; allowed: a new or "
                              "empty folder (nothing is overwritten)")
    return out


def _save_merged(model: Any, tokenizer: Any, out: Path) -> Path:
    """Merge ``model``'s adapters into its weights, in place (``merge_and_unload``), and save it with ``tokenizer``."""
    plain = model.merge_and_unload() if is_peft(model) else model
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def merge_and_save(model: Any, tokenizer: Any, out_dir: str | os.PathLike) -> Path:
    """Write ``model`` with its adapters merged (``W' = W + (alpha / r) B A``) and ``tokenizer`` to ``out_dir`` (new
    or empty) as a plain Hugging Face model folder that :func:`calgrpo_lib.policy.load_policy` loads; return it.
    ``model`` itself is left as it was (a copy is merged); a model without adapters is saved as it is."""
    out = _new_folder(out_dir)
    return _save_merged(copy.deepcopy(model) if is_peft(model) else model, tokenizer, out)


def export_checkpoint(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      base_model: str | None = None, dtype: str | torch.dtype | None = None) -> Path:
    """From one of a run's checkpoint folders (``checkpoints/step-NNNNNN``) write a plain merged Hugging Face model
    folder (model and tokenizer) to ``out_dir`` (new or empty) and return it; loaded on the CPU.

    A full checkpoint's model is saved as it is. A LoRA checkpoint (:data:`ADAPTER_FILES`) is rebuilt: the base model
    ``base_model`` (default: the run's ``config["model"]`` in ``trainer_state.json``; it must be the model the run
    started from) through :func:`calgrpo_lib.policy.load_policy`, its adapters loaded
    (``PeftModel.from_pretrained``) and merged. ``dtype``: that of the folder written (default: the run's ``dtype``
    unless ``"auto"``, else float32). The checkpoint is not checked against its manifest here: the caller does that
    (:func:`calgrpo_lib.checkpoints.verify_checkpoint`).
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    check_type("checkpoint_dir", checkpoint_dir, (str, os.PathLike))
    src = Path(checkpoint_dir)
    state_file = src / "trainer_state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"checkpoint_dir={os.fspath(checkpoint_dir)!r} is not a checkpoint folder (no "
                                "trainer_state.json); allowed: a folder checkpoints/step-NNNNNN of a run")
    config = json.loads(state_file.read_text(encoding="utf-8"))["config"]
    if dtype is None and config.get("dtype", "auto") != "auto":
        dtype = config["dtype"]
    lora = (src / ADAPTER_FILES[1]).is_file()
    out = _new_folder(out_dir)
    if not lora:
        model, tokenizer = load_policy(src, device="cpu", dtype=dtype)
        return _save_merged(model, tokenizer, out)
    base_name = base_model if base_model is not None else config["model"]
    base, _ = load_policy(base_name, device="cpu", dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)  # the run's own tokenizer
    with _peft_wrapping():
        model = PeftModel.from_pretrained(base, src, is_trainable=False)
    return _save_merged(model, tokenizer, out)
