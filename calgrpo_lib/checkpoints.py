"""Checkpoints of a training run, and the rules of the run folder they live in.

A run folder (``output_dir``) holds ``metrics.jsonl`` / ``metrics.csv`` (see :mod:`calgrpo_lib.metrics_log`),
``tensorboard/``, the oracle's cache, an RM run's ``reward_calibration.json`` and ``checkpoints/``, one folder per
checkpoint, ``checkpoints/step-NNNNNN``:

- the model and tokenizer (``save_pretrained``: ``model.safetensors``, ``config.json``, the tokenizer files); a LoRA
  run's model is its adapters only (``adapter_model.safetensors``, ``adapter_config.json``, peft's ``README.md``), its
  base being the run's ``config["model"]``; the manifest's ``kind`` (``"full"`` or ``"lora"``) says which;
- ``trainer_state.safetensors``: the optimizer's state tensors (``optimizer.<param>.<name>``) and the torch RNG
  state (``torch_rng``, uint8);
- ``trainer_state.json``: the step, the Python RNG state, the optimizer's param groups and its non-tensor state
  values, the run's config, the state of the run's other parts (``extra_state``, e.g. the reward model's
  calibration);
- ``metrics.json``: the run's records so far;
- ``manifest.json``, written last: every other file's relative path, size and sha256.

Nothing is unpickled when a run resumes: tensors come from safetensors files, everything else from JSON, so a
crafted checkpoint cannot run code. Checkpoints of earlier versions (a pickled ``trainer_state.pt``, no manifest) are
not read, not even with ``torch.load(weights_only=True)``: one format, with its manifest, is the only one to trust.

A checkpoint is written into a temporary folder (``.tmp-step-*``) renamed at the end, so a run killed while writing
keeps its previous checkpoint; the next save removes the temporary folders such a kill left. On resume,
:func:`latest_good_checkpoint` checks the newest checkpoint against its manifest (no manifest, a missing file, a size
or sha256 that differs: damaged) and falls back to the newest good one, warning which it skipped and why; when none
is good it raises, listing them, and deletes nothing.

Run folder rules (:func:`check_run_folder`, called before any model work): a new run refuses a folder that holds
another run (metric records or checkpoints) unless ``resume=True`` continues it or ``overwrite=True`` replaces it
(:func:`replace_run` deletes its checkpoints, metrics and TensorBoard files, saying so). A resume compares the
checkpoint's config with the new one and refuses fields that change results (all but :data:`RESUME_FREE_FIELDS`)
unless ``allow_config_change=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from .lora import ADAPTER_FILES, is_peft, load_adapter_weights

__all__ = ["MANIFEST", "CALIBRATION_FILE", "RESUME_FREE_FIELDS", "CheckpointError", "RunFolderError",
           "checkpoint_folders", "save_checkpoint", "load_checkpoint", "verify_checkpoint", "latest_good_checkpoint",
           "read_checkpoint_config", "read_checkpoint_state", "resume_config_diff", "check_resume_config",
           "run_folder_contents", "check_run_folder", "replace_run"]

MANIFEST = "manifest.json"  #: the file a checkpoint is complete with, written last
CALIBRATION_FILE = "reward_calibration.json"  #: a run folder's record of its RM warm-up (calgrpo_lib.scoring)
MANIFEST_FORMAT = "calgrpo-checkpoint/2"  #: ``format`` of a manifest (1 was the pickled ``trainer_state.pt``)
_STATE = ("trainer_state.safetensors", "trainer_state.json")
_REQUIRED = {"full": ("model.safetensors", *_STATE), "lora": (*ADAPTER_FILES, *_STATE)}  #: by the manifest's kind

#: Config fields a resume may change without ``allow_config_change``: they change where and how fast a run goes,
#: or what it records, not what it learns. Every other field (seed, learning_rate, credit_mode, lam, model, task,
#: num_generations, loss_type, eval_size, ... and any field added later) must match the checkpoint's.
RESUME_FREE_FIELDS: dict[str, str] = {
    "max_steps": "extending a run (or stopping it earlier) is legitimate; counts under a linear or cosine "
                 "lr_scheduler_type, whose learning rates run to max_steps",
    "eval_every": "when held-out evaluations run; greedy, they leave the training untouched",
    "save_every": "when checkpoints are written",
    "output_dir": "where the run folder is (it may have been moved)",
    "resume": "this invocation's choice to continue",
    "overwrite": "this invocation's choice about an earlier run",
    "allow_config_change": "this switch itself",
    "oracle_concurrency": "how many oracle calls run at once; the verdicts are the same",
    "oracle_timeout_s": "how long a judge call may take; a slow judge's timeouts fall back (counted in the metrics)",
    "oracle_batch_timeout_s": "how long a step's judge calls may take together (as oracle_timeout_s)",
    "oracle_cache": "where verdicts are cached",
    "oracle_base_url": "where the judge is served (oracle_model names what is served)",
    "oracle_trust_remote_code": "whether a hub judge's own code may run (oracle_model names the judge)",
    "device": "where the run computes (a resumed run may move to another machine); the last bits of floats may differ",
    "gradient_checkpointing": "a memory knob: activations recomputed in the backward pass, the same gradients up to "
                              "float rounding (with lora_dropout > 0: other dropout masks)",
    "microbatch_size": "a memory knob: the same gradients, accumulated in other slices, up to float rounding",
    "extra": "free-form notes",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: damaged, or (on resume) no good one among those found."""


class RunFolderError(ValueError):
    """The run folder holds something this run may not touch or continue as asked."""


def checkpoint_folders(root: str | os.PathLike) -> list[Path]:
    """The checkpoint folders under ``root``, oldest step first (none when ``root`` does not exist)."""
    root = Path(root)
    return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.exists() else []


# ------------------------------------------------------------------------------------------ save and load
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state dict split into tensors (for safetensors) and JSON-ready values."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for param, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param}.{name}"] = value.detach().cpu().contiguous()
            else:
                values.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "state_values": values}


def _optimizer_state(tensors: dict[str, torch.Tensor], saved: dict[str, Any],
                     optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The inverse of :func:`_optimizer_parts`, ready for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        if key.startswith("optimizer."):
            _, param, name = key.split(".", 2)
            state.setdefault(int(param), {})[name] = tensor
    for param, entries in saved["state_values"].items():
        state.setdefault(int(param), {}).update(entries)
    groups = saved["param_groups"]
    for group, current in zip(groups, optimizer.param_groups):  # JSON made tuples (AdamW's betas) lists
        for key, value in group.items():
            if isinstance(value, list) and isinstance(current.get(key), tuple):
                group[key] = tuple(value)
    return {"state": state, "param_groups": groups}


def save_checkpoint(root: str | os.PathLike, step: int, *, model: Any, tokenizer: Any,
                    optimizer: torch.optim.Optimizer, config: dict[str, Any], records: list[dict[str, Any]],
                    extra_state: dict[str, Any] | None = None) -> Path:
    """Write ``<root>/step-NNNNNN`` (replacing one of the same step) and return it.

    The current RNG states are stored with it, so call this right after the step it records. ``config`` is stored
    as JSON (``GRPOConfig.to_dict()``; a value JSON cannot hold, in ``extra``, as its ``repr``). Temporary folders
    that a run killed while writing left behind (``.tmp-step-*``) are removed first; the manifest is written last,
    before the folder is renamed into place. ``extra_state`` (JSON values) is the state of the run's other parts,
    e.g. its reward scorer's; :func:`read_checkpoint_state` gives it back.
    """
    from safetensors.torch import save_file

    root = Path(root)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    for left in root.glob(".tmp-step-*"):  # this one from an earlier try, or others a killed run left behind
        shutil.rmtree(left, ignore_errors=True)
    tmp.mkdir(parents=True)
    kind = "lora" if is_peft(model) else "full"
    model.save_pretrained(tmp)  # a PeftModel saves its adapters only
    tokenizer.save_pretrained(tmp)
    tensors, optimizer_values = _optimizer_parts(optimizer)
    save_file({**tensors, "torch_rng": torch.get_rng_state()}, str(tmp / "trainer_state.safetensors"))
    state = {"step": step, "kind": kind, "python_rng": random.getstate(), "optimizer": optimizer_values,
             "config": config, "extra_state": extra_state or {}}
    (tmp / "trainer_state.json").write_text(json.dumps(state, default=repr), encoding="utf-8")  # extra: any value
    (tmp / "metrics.json").write_text(json.dumps(records), encoding="utf-8")
    files = {p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "step": step, "kind": kind, "files": files},
                                           indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def verify_checkpoint(path: str | os.PathLike) -> str | None:
    """``None`` when the checkpoint folder ``path`` matches its manifest, else why not, in a few words (``"no
    manifest.json"``, ``"model.safetensors is 10 bytes, the manifest says 5100"``, ``"model.safetensors sha256
    mismatch"``, ...). Files the manifest does not list are ignored (and never read by :func:`load_checkpoint`)."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        older = " (a checkpoint of an earlier version, with trainer_state.pt)" if (path / "trainer_state.pt").exists() \
            else ""
        return f"no {MANIFEST}{older}"
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files, kind = manifest["files"], manifest.get("kind", "full")  # no kind: written before LoRA, full
        entries = [(name, int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{MANIFEST} unreadable ({type(err).__name__})"
    if kind not in _REQUIRED:
        return f"{MANIFEST} names an unknown kind {kind!r}"
    missing = [name for name in _REQUIRED[kind] if name not in files]
    if missing:
        return f"{MANIFEST} lists no {missing[0]}"
    for name, size, sha256 in entries:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"{MANIFEST} names a file outside the checkpoint ({name!r})"
        file = path / name
        if not file.is_file():
            return f"{name} missing"
        if file.stat().st_size != size:
            return f"{name} is {file.stat().st_size} bytes, the manifest says {size}"
        if _sha256(file) != sha256:
            return f"{name} sha256 mismatch"
    return None


def load_checkpoint(path: str | os.PathLike, model: Any, optimizer: torch.optim.Optimizer, *,
                    verify: bool = True) -> int:
    """Restore the model weights (a LoRA checkpoint's: the adapters, into ``model`` wrapped with the same LoRA
    settings), the optimizer and the RNG states of the checkpoint folder ``path``; return its step. Reads safetensors
    and JSON only (no pickle). ``verify`` first checks the folder against its manifest and raises
    :class:`CheckpointError` saying what is damaged (pass ``False`` when :func:`verify_checkpoint` just did), as it
    does for a checkpoint of the other kind than ``model`` (LoRA adapters, a full model)."""
    from safetensors.torch import load_file

    path = Path(path)
    problem = verify_checkpoint(path) if verify else None
    if problem is not None:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} is damaged: {problem}; it was not loaded. Allowed: a "
                              f"complete checkpoint written by save_checkpoint")
    state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    tensors = load_file(str(path / "trainer_state.safetensors"))
    kind, wanted = state.get("kind", "full"), "lora" if is_peft(model) else "full"
    if kind != wanted:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds a {kind} model, the model to load it into is a "
                              f"{wanted} one; it was not loaded. Allowed: the use_peft of the run that wrote it")
    if kind == "lora":
        try:
            load_adapter_weights(model, path)
        except ValueError as err:
            raise CheckpointError(f"checkpoint {os.fspath(path)!r}: {err}") from err
    else:
        weights = load_file(str(path / "model.safetensors"), device=str(next(model.parameters()).device))
        model.load_state_dict(weights, strict=False)
        if getattr(model.config, "tie_word_embeddings", False):
            model.tie_weights()
    optimizer.load_state_dict(_optimizer_state(tensors, state["optimizer"], optimizer))
    torch.set_rng_state(tensors["torch_rng"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return int(state["step"])


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config (a dict, as ``GRPOConfig.to_dict()`` gave it) stored in the checkpoint folder ``path``."""
    return json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))["config"]


def read_checkpoint_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``extra_state`` stored in the checkpoint folder ``path`` (``{}`` when it holds none)."""
    return json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8")).get("extra_state") or {}


def latest_good_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest checkpoint under ``root`` that matches its manifest (``None`` when there is none at all).

    Damaged newer ones are skipped with one ``UserWarning`` naming each and why (``"step-000020: model.safetensors
    sha256 mismatch"``). When checkpoints exist but none is good, raises :class:`CheckpointError` listing them;
    nothing is deleted either way.
    """
    found = checkpoint_folders(root)
    skipped: list[str] = []
    for path in reversed(found):
        problem = verify_checkpoint(path)
        if problem is None:
            if skipped:
                warnings.warn(f"resuming from {path.name}, the newest good checkpoint in {os.fspath(root)!r}; skipped "
                              f"(damaged, left in place): {'; '.join(skipped)}", UserWarning, stacklevel=2)
            return path
        skipped.append(f"{path.name}: {problem}")
    if found:
        raise CheckpointError(f"no good checkpoint to resume from in {os.fspath(root)!r}: {'; '.join(skipped)}. "
                              "Nothing was deleted. Allowed: restore a checkpoint, or start afresh with "
                              "overwrite=True (--overwrite) instead of resume=True")
    return None


# ------------------------------------------------------------------------------------------- resume config
def resume_config_diff(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (stored value, new value)}`` for the fields that differ between a checkpoint's config and a new one
    and change results: all but :data:`RESUME_FREE_FIELDS`, and ``max_steps`` too under a decaying schedule. A
    field one of them lacks (a config of another version) shows as ``"<absent>"``."""
    new = json.loads(json.dumps(new, default=repr))  # the form the checkpoint stored it in (tuples as lists)
    absent = "<absent>"
    diff = {}
    decaying = any(c.get("lr_scheduler_type", "constant") != "constant" for c in (stored, new))
    for name in [*new, *sorted(set(stored) - set(new))]:  # the config's field order, then fields it lacks
        old_value, new_value = stored.get(name, absent), new.get(name, absent)
        if old_value != new_value and (name not in RESUME_FREE_FIELDS or (name == "max_steps" and decaying)):
            diff[name] = (old_value, new_value)
    return diff


def check_resume_config(stored: dict[str, Any], new: dict[str, Any], *, checkpoint: str | os.PathLike,
                        allow_change: bool = False) -> dict[str, tuple[Any, Any]]:
    """Refuse (:class:`RunFolderError`) to resume ``checkpoint`` with a config whose results-changing fields differ
    from the ``stored`` one, listing each ``field: old -> new``; with ``allow_change`` warn with the same list
    instead. Returns the differences (``{}`` when none)."""
    diff = resume_config_diff(stored, new)
    if not diff:
        return diff
    shown = ", ".join(f"{name}: {old!r} -> {value!r}" for name, (old, value) in diff.items())
    where = os.fspath(checkpoint)
    if not allow_change:
        raise RunFolderError(f"resume: the checkpoint {where!r} was trained with another config ({shown}); these "
                             "fields change results. Allowed: the checkpoint's values, or allow_config_change=True "
                             "(--allow-config-change) to continue with the new ones anyway")
    warnings.warn(f"resuming {where!r} with a changed config (allow_config_change=True): {shown}", UserWarning,
                  stacklevel=2)
    return diff


# --------------------------------------------------------------------------------------------- run folder
def run_folder_contents(output_dir: str | os.PathLike) -> tuple[int, list[Path]]:
    """``(metric records, checkpoint folders)`` of the run in ``output_dir``; reads no more than the lines of
    ``metrics.jsonl`` (cheap: meant for a check before any model work)."""
    folder = Path(output_dir)
    jsonl = folder / "metrics.jsonl"
    records = sum(1 for line in jsonl.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()) \
        if jsonl.is_file() else 0
    return records, checkpoint_folders(folder / "checkpoints")


def _describe(records: int, checkpoints: list[Path]) -> str:
    return f"{records} metric record{'' if records == 1 else 's'}, {len(checkpoints)} " \
           f"checkpoint{'' if len(checkpoints) == 1 else 's'}"


def check_run_folder(output_dir: str | os.PathLike, config: dict[str, Any]) -> Path | None:
    """Check ``output_dir`` for the run of ``config`` (a ``GRPOConfig.to_dict()``) before any model work; return the
    checkpoint to resume from (``None``: start at step 0). Deletes nothing.

    - ``resume``: the newest good checkpoint (see :func:`latest_good_checkpoint`; none at all is fine), whose config
      must agree with ``config`` (see :func:`check_resume_config`, ``allow_config_change``).
    - otherwise a folder holding another run (metric records or checkpoints) raises :class:`RunFolderError` naming
      it, what it holds and the ways out, unless ``overwrite`` (then :func:`replace_run` it).
    - ``resume`` and ``overwrite`` together raise: one continues the run, the other replaces it.
    """
    folder = Path(output_dir)
    if config.get("resume") and config.get("overwrite"):
        raise RunFolderError("resume=True and overwrite=True contradict each other (continue the run in output_dir, "
                             "or replace it); allowed: one of them")
    if config.get("resume"):
        latest = latest_good_checkpoint(folder / "checkpoints")
        if latest is not None:
            check_resume_config(read_checkpoint_config(latest), config, checkpoint=latest,
                                allow_change=bool(config.get("allow_config_change")))
        return latest
    records, checkpoints = run_folder_contents(folder)
    if (records or checkpoints) and not config.get("overwrite"):
        held = _describe(records, checkpoints)
        raise RunFolderError(f"output_dir={os.fspath(output_dir)!r} holds another run ({held}); a new run there "
                             "would mix with it. Allowed: resume=True (--resume) to continue it, overwrite=True "
                             "(--overwrite) to replace it (its checkpoints and metrics are deleted), or another "
                             "output_dir")
    return None


def replace_run(output_dir: str | os.PathLike) -> list[str]:
    """Delete the run in ``output_dir`` (its checkpoints, temporary checkpoint folders, ``metrics.jsonl``,
    ``metrics.csv``, ``tensorboard/`` and ``reward_calibration.json``) with a ``UserWarning`` saying what was
    removed; return the removed names (``[]``, and no warning, when it holds none). Other files (the oracle's
    cache, a user's notes) stay."""
    folder = Path(output_dir)
    records, checkpoints = run_folder_contents(folder)
    if not records and not checkpoints:
        return []
    removed = [f"checkpoints/{p.name}" for p in checkpoints]
    for path in checkpoints + sorted((folder / "checkpoints").glob(".tmp-step-*")):
        shutil.rmtree(path)
    for name in ("metrics.jsonl", "metrics.csv", "tensorboard", CALIBRATION_FILE):
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    warnings.warn(f"output_dir={os.fspath(output_dir)!r}: overwrite=True replaced the run it held "
                  f"({_describe(records, checkpoints)}); removed {', '.join(removed)}; other files kept", UserWarning,
                  stacklevel=2)
    return removed
