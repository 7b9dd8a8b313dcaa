"""Checks before a run does any model work: :func:`preflight`.

:class:`~calgrpo_lib.config.GRPOConfig` checks each field's value when it is set. What a value alone cannot show is
checked here, in a fraction of a second, before the trainer loads a model (loading a 1.5B model takes a minute; a
typo in a data path should not cost that minute and then end in a traceback):

- **model**: ``"tiny"``, a folder that looks like a model (``config.json``, weights, tokenizer), or a hub id (in the
  local hub cache when ``HF_HUB_OFFLINE`` is set) (:func:`calgrpo_lib.policy.model_source`);
- **reward model**: with ``reward="rm"`` / ``"hybrid"``, ``reward_model`` is ``"tiny-rm"`` or a model as above
  (:func:`calgrpo_lib.reward_model.reward_model_source`);
- **device**: ``cuda`` / ``mps`` only where torch finds one; ``bfloat16`` on CUDA only where the GPU supports it;
- **data**: for ``task="gsm8k"``, the train (and, with ``eval_size > 0``, test) file exists and every line parses
  (the first bad line is named with its file and line number); without a local file, the hub must be allowed;
- **oracle**: ``openai`` / ``local`` / ``prm`` need ``oracle_model`` (``local``, ``prm``: a model as above, ``prm``
  with no shipped default); ``openai`` an
  ``http(s)://`` base URL; ``gemini`` an installed client library and an API key (never shown); a judge's reply cache
  (``oracle_cache``, default ``<output_dir>/oracle_cache.sqlite``) must be a readable SQLite file or creatable in a
  writable folder;
- **output_dir**: not a file, and creatable in a writable folder;
- **memory**: the run's peak (:func:`calgrpo_lib.memory.estimate_memory`, from the model's ``config.json`` alone)
  must fit what the device has free now (:func:`calgrpo_lib.memory.fits`: CUDA's free memory, a CPU's available
  RAM); else the estimate's table is shown with the fields that lower it. Skipped, with no error, when the model's
  config cannot be read (the model check reports a bad model), when another check already failed, or for a run
  handed a model object.

Every problem found is listed in one :class:`PreflightError` (a ``ValueError``), each line naming the field, its
value and what is allowed.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

import torch

from .config import GRPOConfig
from .data import DATA_DIR_ENV, gsm8k_file, read_gsm8k_file
from .memory import GiB, estimate_memory, fits
from .oracle.gemini import HOW_TO_ENABLE, KEY_NAMES, client_library, gemini_key
from .policy import hub_offline, model_source
from .reward_model import reward_model_source

__all__ = ["preflight", "PreflightError", "REMOTE_ORACLES"]

REMOTE_ORACLES = ("gemini", "openai", "local", "prm")  #: oracles whose replies are cached in a SQLite file


class PreflightError(ValueError):
    """One or more problems found before a run started; ``problems`` lists them, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem{'s' if len(self.problems) > 1 else ''} found before the "
                         f"run started (no model was loaded):\n{lines}")


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, so a read-only file system counts, for root too)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _writable_parent(path: Path) -> Path | None:
    """The nearest existing folder at or above ``path``'s parent, if a file can be created there (else ``None``)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder if folder.is_dir() and _writable(folder) else None


def _check_model(field: str, value: str) -> list[str]:
    try:
        model_source(value, field)
    except (FileNotFoundError, TypeError) as e:
        return [str(e)]
    return []


def _check_reward_model(value: str) -> list[str]:
    try:
        reward_model_source(value)
    except (FileNotFoundError, TypeError) as e:
        return [str(e)]
    return []


def _check_device(config: GRPOConfig) -> list[str]:
    if config.device == "cuda" and not torch.cuda.is_available():
        return [f"device='cuda' but torch finds no CUDA GPU (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda or 'none'}); allowed here: 'cpu' or 'auto'"]
    mps = getattr(torch.backends, "mps", None)
    if config.device == "mps" and not (mps is not None and mps.is_available()):
        return ["device='mps' but torch finds no Apple GPU (MPS); allowed here: 'cpu' or 'auto'"]
    if (config.dtype == "bfloat16" and config.device == "cuda" and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported()):
        return ["dtype='bfloat16' but this GPU does not support it; allowed: 'float16', 'float32' or 'auto'"]
    return []


def _check_data(config: GRPOConfig) -> list[str]:
    if config.task != "gsm8k":
        return []
    problems = []
    for split in ("train", "test") if config.eval_size else ("train",):
        try:
            file = gsm8k_file(split, config.data_path)
            if file is not None:
                read_gsm8k_file(file, split)
            elif hub_offline():
                problems.append(f"task='gsm8k' with data_path=None and no {DATA_DIR_ENV}: GSM8K would come from the "
                                "hub, but HF_HUB_OFFLINE is set; allowed: data_path=FOLDER or FILE of GSM8K JSONL")
                break
        except (OSError, ValueError) as e:
            problems.append(f"data_path={config.data_path!r} ({split} split): {e}")
            break  # the other split most likely has the same problem
    return problems


def _check_cache(config: GRPOConfig) -> list[str]:
    path = Path(config.oracle_cache or Path(config.output_dir) / "oracle_cache.sqlite").expanduser()
    field = f"oracle_cache={config.oracle_cache!r}" + ("" if config.oracle_cache else f" (default {os.fspath(path)})")
    if path.exists():
        if not path.is_file():
            return [f"{field} is not a file; allowed: a SQLite file, or a path where one can be created"]
        if not os.access(path, os.R_OK | os.W_OK):
            return [f"{field} cannot be read and written by this user; allowed: a SQLite file this user may write"]
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                db.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as e:
            return [f"{field} is not a readable SQLite file ({e}); allowed: a reply cache written by calgrpo (move "
                    "the damaged file away and a new one is made)"]
        return []
    if _writable_parent(path) is None:
        return [f"{field}: its folder cannot be created or written; allowed: a path in a writable folder"]
    return []


def _check_oracle(config: GRPOConfig) -> list[str]:
    oracle = config.oracle
    if oracle not in REMOTE_ORACLES:
        return []
    problems = []
    if oracle in ("openai", "local", "prm") and not config.oracle_model:
        what = {"openai": "the served model's name, e.g. 'qwen2.5:7b'", "local": "a judge model folder or hub id",
                "prm": "a process reward model's folder or hub id, e.g. 'Qwen/Qwen2.5-Math-PRM-7B'"}[oracle]
        problems.append(f"oracle={oracle!r} needs oracle_model ({what}); got oracle_model={config.oracle_model!r}")
    if oracle == "local" and config.oracle_model:
        problems += _check_model("oracle_model", config.oracle_model)
    if oracle == "prm" and config.oracle_model:
        try:
            model_source(config.oracle_model, "oracle_model", shipped=None, example="Qwen/Qwen2.5-Math-PRM-7B")
        except (FileNotFoundError, TypeError) as e:
            problems.append(str(e))
    url = config.oracle_base_url
    if oracle == "openai" and url is not None and not url.startswith(("http://", "https://")):
        problems.append(f"oracle_base_url={url!r} is not an http(s) URL; allowed: e.g. 'http://127.0.0.1:8000/v1'")
    if oracle == "gemini":
        try:
            client_library()
        except ImportError as e:
            problems.append(f"oracle='gemini': {e}")
        if gemini_key() is None:  # the key itself is never part of a message
            problems.append(f"oracle='gemini' needs an API key in {' / '.join(KEY_NAMES)} or a .env file, and none "
                            f"was found. {HOW_TO_ENABLE}")
    return problems + _check_cache(config)


def _check_output_dir(config: GRPOConfig) -> list[str]:
    out = Path(config.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        return [f"output_dir={config.output_dir!r} is a file; allowed: a folder (new or holding this run)"]
    if not out.exists() and _writable_parent(out / "x") is None:
        return [f"output_dir={config.output_dir!r} cannot be created (its parent folder is not writable); allowed: a "
                "folder in a writable place"]
    if out.is_dir() and not _writable(out):
        return [f"output_dir={config.output_dir!r} is not writable by this user; allowed: a writable folder"]
    return []


def _check_memory(config: GRPOConfig) -> list[str]:
    try:
        estimate = estimate_memory(config)
    except (ValueError, TypeError, KeyError):  # a config.json of an unexpected shape: no estimate, no error
        return []
    if estimate is None:
        return []
    ok, available = fits(estimate)
    if ok:
        return []
    table = "\n".join("      " + line for line in estimate.format(available).splitlines())
    return [f"memory: the run needs about {estimate.total / GiB:.2f} GiB at its peak ({estimate.peak_phase}) but "
            f"{available / GiB:.2f} GiB are free on {estimate.device}:\n{table}\n"
            f"    allowed: what fits; lower microbatch_size (now {config.microbatch_size}: activations and logits), "
            f"max_new_tokens (now {config.max_new_tokens}) or prompts_per_step x num_generations (now "
            f"{config.batch_size}: the KV cache), use_peft=True (now {config.use_peft}: no gradients or AdamW "
            f"state for the base weights, no reference copy), gradient_checkpointing=True (now "
            f"{config.gradient_checkpointing}: activations recomputed in the backward), or a smaller model"]


def preflight(config: GRPOConfig, *, model: bool = True, oracle: bool = True, reward_model: bool = True) -> None:
    """Check what ``config`` needs beyond its values (see the module docstring); raise :class:`PreflightError`
    listing every problem found, else return ``None``. ``model=False`` / ``oracle=False`` / ``reward_model=False``
    skip the model (and memory), oracle and reward-model checks (for a run handed such an object)."""
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"config has type {type(config).__name__}; allowed: GRPOConfig")
    problems = _check_model("model", config.model) if model else []
    if reward_model and config.reward != "rule":
        problems += _check_reward_model(config.reward_model)
    problems += _check_device(config) + _check_data(config) + (_check_oracle(config) if oracle else [])
    problems += _check_output_dir(config)
    if model and not problems:  # the estimate needs a readable model on a device that is there
        problems += _check_memory(config)
    if problems:
        raise PreflightError(problems)
