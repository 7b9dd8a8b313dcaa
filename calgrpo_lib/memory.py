"""How much memory a run needs, estimated before any model loads: :func:`estimate_memory`, :func:`fits`.

The model's shape comes from its ``config.json`` alone (a local folder, ``"tiny"``, or the local hub cache; offline, a
known hub id's config numbers from :data:`calgrpo_lib.rehearsal.KNOWN_MODELS`; no weights are read), the batch and the
lengths from the :class:`~calgrpo_lib.config.GRPOConfig`. Every term follows what the library's code allocates
(bytes; ``b`` = bytes per element of the model's dtype, ``N = prompts_per_step * num_generations`` completions of
``T = max_new_tokens`` tokens after prompts of ``P`` tokens, ``n`` = ``microbatch_size`` rows (at most ``N``) from
``U = ceil(n / G)`` distinct prompts, ``L`` layers, width ``h``, MLP width ``i``, ``q`` / ``k`` = query / key-value
heads times the head size, ``V`` the vocabulary):

- **weights**: the parameter count (from the shapes, tied embeddings counted once) times ``b``;
- **reference**: the KL's reference policy, a second copy of the weights when ``beta > 0`` and not ``use_peft``
  (a LoRA run's reference is its base model, adapters off: no copy);
- **gradients**: one per trained parameter (every parameter; with ``use_peft`` the adapters' ``r * (in + out)``
  per targeted linear layer, in float32 as peft keeps adapters of a half-precision model);
- **optimizer**: ``torch.optim.AdamW``'s two moment tensors per trained parameter, in the parameter's dtype;
- **kv_cache**: the ``StaticCache`` of sampling: ``N`` rows (all the step's completions at once) x ``(P + T)``
  positions x ``L`` x 2 (keys, values) x ``k`` x ``b``;
- **generation**: sampling's largest temporaries: the prefill of the ``U`` distinct prompts, or one decoding
  step's float32 softmax over ``N x V`` (about 8 copies with ``top_p < 1``: sort, cumsum, scatter);
- **activations**: what autograd keeps for the backward of one microbatch (measured by saved-tensor hooks on the
  Llama / Qwen2 decoder layer of transformers 5.24): per layer and token ``6h + 3q + 4i`` elements (two RMSNorms'
  input, normalised input and output; query after RoPE, attention output and its contiguous copy; the MLP's gate,
  up, SiLU output and product) over the ``U * P + n * T`` tokens of the shared-prompt forward, plus the keys and
  values over ``n x (P + T)`` positions (again at ``q`` width when grouped-query attention repeats them). With
  ``use_peft`` the frozen linear layers and norms keep no input (``2h + 2q + 3i`` per layer and token), and each
  adapted linear layer keeps its input in float32, the dropout's mask (bool on CUDA, float32 on a CPU) and ``A x``
  (``r`` floats). With ``gradient_checkpointing`` each layer keeps only its input (``h`` per token, over
  ``n * (P + T)`` tokens: no shared prompt) and one layer is recomputed at a time;
- **logits**: ``n x (T + 1) x V`` elements, held ``b + 16`` bytes each at the peak: the logits, their float32
  scaled copy kept for the log-softmax's backward, and the three float32 temporaries of the entropy
  (``log_softmax``, ``exp``, product). For a small model with a large vocabulary this is the largest term;
- **overhead**: one documented term for memory beyond live tensors. On a CPU, :data:`CPU_OVERHEAD` bytes: one-time
  allocations of a run (the autograd engine, oneDNN's buffers, a step's Python objects), 8-60 MiB measured beyond
  the terms above with the tiny policy and a 20M Qwen2 (tests/test_memory.py). Two things are left out. The
  library code a run executes for the first time (kernels of the backward pass and the optimizer paged in from
  ``libtorch``, 20-40 MiB, varying with what the page cache holds): clean file pages the system can drop. And
  glibc's cache of freed blocks: it keeps blocks of up to 32 MiB for reuse, which measured 1.3-1.8x the live peak
  in RSS; :func:`release_freed_memory` turns it off, and the estimate assumes that. The trainer does not call it:
  it made the tiny preset's CPU step ~40% slower (2.1-2.3 s -> 3.05 s, peak RSS 1,137 -> 904 MiB, bench/README.md),
  so a CPU run left as it is may hold up to ~1.8x the estimate in RSS. On a GPU: not yet measured (0;
  ``bench/gpu_check.py`` prints ``max_memory_reserved`` beside
  ``max_memory_allocated``, against which the estimate is checked).

A step's peak is the larger of its two phases, in a run's steady state (from its second step on, the gradients of
the previous step live until the next update zeroes them): **generation** = weights + reference + gradients +
optimizer + kv_cache + generation; **training** = weights + reference + optimizer + activations + logits +
gradients (all of them when a step has several microbatches, else the output layer's, the first the backward
computes). ``total`` = that peak + overhead. Completions are counted at their longest (``T = max_new_tokens``): the
estimate is the step whose every completion runs to the limit. Time per step is not estimated: it needs a measured
throughput of the device (``bench/gpu_check.py`` measures it on a GPU).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import GRPOConfig
from .policy import hub_offline, model_source, pick_device, pick_dtype
from .rehearsal import KNOWN_MODELS
from .validation import check_type

__all__ = ["MemoryEstimate", "ModelShape", "estimate_memory", "fits", "model_shape", "read_model_config",
           "available_memory", "release_freed_memory", "COMPONENTS", "CPU_OVERHEAD", "MMAP_THRESHOLD", "PROMPT_TOKENS",
           "STYLE_TOKENS", "LORA_DEFAULT_TARGETS", "GiB"]

GiB = 2**30
#: the byte fields of a MemoryEstimate, in table order
COMPONENTS = ("weights", "reference", "gradients", "optimizer", "kv_cache", "generation", "activations", "logits",
              "overhead", "total")
CPU_OVERHEAD = 16 * 2**20  #: bytes a CPU run holds beyond the estimated tensors (module docstring)
MMAP_THRESHOLD = 2**20  #: release_freed_memory's default: blocks from 1 MiB up are mapped and unmapped one by one
#: P, the widest prompt of a step in tokens, by task: synthetic, measured with the tiny policy's tokenizer (33-62
#: tokens, "Question: ...\nAnswer:\n"); GSM8K: the widest of 16 questions is ~440 characters on average (985 at most),
#: ~4 characters per token in a byte-level BPE; plus the prompt style's own text (chat: template and a system prompt)
PROMPT_TOKENS = {"synthetic": 64, "gsm8k": 160}
STYLE_TOKENS = {"plain": 0, "r1_zero": 56, "chat": 64}
#: peft's default LoRA targets (peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
LORA_DEFAULT_TARGETS = ("q_proj", "v_proj")
_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only model the estimate needs, read from its config (Llama / Qwen2 / Qwen3 /
    Mistral layout: RMSNorm, attention with q/k/v/o projections, gated SiLU MLP)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    qkv_bias: bool  #: bias on q, k, v (Qwen2 always; Llama's attention_bias)
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool  #: RMSNorm on queries and keys per head (Qwen3)

    def linears(self) -> dict[str, tuple[int, int, bool]]:
        """``{name: (in, out, bias)}`` of the linear layers of one decoder layer."""
        h, i, q, k = self.hidden_size, self.intermediate_size, self.num_heads * self.head_dim, \
            self.num_kv_heads * self.head_dim
        return {"q_proj": (h, q, self.qkv_bias), "k_proj": (h, k, self.qkv_bias), "v_proj": (h, k, self.qkv_bias),
                "o_proj": (q, h, self.o_bias), "gate_proj": (h, i, self.mlp_bias), "up_proj": (h, i, self.mlp_bias),
                "down_proj": (i, h, self.mlp_bias)}

    @property
    def params(self) -> int:
        """The parameter count (tied input and output embeddings counted once)."""
        layer = sum(a * b + (b if bias else 0) for a, b, bias in self.linears().values())
        layer += 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embed + self.hidden_size

    def lora_targets(self, targets: str | None) -> list[str]:
        """The linear layers of a decoder layer that ``lora_target_modules`` = ``targets`` adapts (names,
        ``"all-linear"``, or ``None`` for peft's default :data:`LORA_DEFAULT_TARGETS`)."""
        linears = self.linears()
        if targets is None:
            names = list(LORA_DEFAULT_TARGETS)
        elif targets.strip() == "all-linear":
            names = list(linears)
        else:
            names = [t.strip().rsplit(".", 1)[-1] for t in targets.split(",") if t.strip()]
        return [n for n in names if n in linears]

    def lora_params(self, r: int, targets: str | None) -> int:
        """Adapter parameters of LoRA rank ``r`` on ``targets`` (see :meth:`lora_targets`): ``r * (in + out)`` per
        adapted linear layer."""
        linears = self.linears()
        return self.num_layers * sum(r * (linears[n][0] + linears[n][1]) for n in self.lora_targets(targets))


def read_model_config(name: str) -> dict[str, Any] | None:
    """The ``config.json`` of model ``name`` (``"tiny"``, a folder, or a hub id in the local hub cache; online, a hub
    id not cached is fetched: its config.json only) as a dict, or ``None`` when it cannot be read (no error: the
    model check of :mod:`calgrpo_lib.preflight` reports a bad model).

    A hub id of :data:`calgrpo_lib.rehearsal.KNOWN_MODELS` whose config.json cannot be had (not cached with
    ``HF_HUB_OFFLINE`` set, or the download fails) gives a copy of its entry there instead: the structural fields
    of that model's config.json on the hub, so a known model is estimated offline too."""
    data = _config_json(name)
    if data is None and isinstance(name, str) and name in KNOWN_MODELS and not Path(name).expanduser().exists():
        return copy.deepcopy(KNOWN_MODELS[name])
    return data


def _config_json(name: str) -> dict[str, Any] | None:
    try:
        kind, path = model_source(name)
        if kind == "folder":
            file: Any = Path(path) / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache

            file = try_to_load_from_cache(path, "config.json")
            if not isinstance(file, str):
                if hub_offline():
                    return None
                from huggingface_hub import hf_hub_download

                file = hf_hub_download(path, "config.json")
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 -- any failure only means: no estimate
        return None
    return data if isinstance(data, dict) else None


def model_shape(model_config: Any) -> ModelShape:
    """The :class:`ModelShape` of a model config: a ``transformers`` ``PretrainedConfig`` or its ``config.json`` as a
    dict (a multimodal config's ``text_config``). Raises ``ValueError`` naming a missing field."""
    cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else model_config
    check_type("model_config", cfg, dict)
    cfg = cfg.get("text_config") or cfg
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if not isinstance(cfg.get(k), int)]
    if missing:
        raise ValueError(f"model_config lacks {missing}; allowed: the config of a decoder-only model (Llama, Qwen2, "
                         "...) with these fields")
    model_type = str(cfg.get("model_type", ""))
    heads = cfg["num_attention_heads"]
    return ModelShape(
        model_type, cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], heads,
        int(cfg.get("num_key_value_heads") or heads), int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
        bool(cfg.get("tie_word_embeddings", False)),  # transformers' Llama / Qwen2 default: untied
        model_type == "qwen2" or bool(cfg.get("attention_bias", False)), bool(cfg.get("attention_bias", False)),
        bool(cfg.get("mlp_bias", False)), model_type.startswith("qwen3"))


@dataclass(frozen=True)
class MemoryEstimate:
    """A run's memory need in bytes, by component (see the module docstring), and what it was computed for."""

    weights: int
    reference: int
    gradients: int
    optimizer: int
    kv_cache: int
    generation: int
    activations: int
    logits: int
    overhead: int
    total: int
    peak_phase: str  #: "generation" or "training": the phase of the peak
    params: int
    trainable_params: int
    dtype: str
    device: str
    rows: int  #: N, completions sampled per step (all at once)
    prompt_tokens: int  #: P
    completion_tokens: int  #: T
    microbatch: int  #: n, rows per forward/backward

    @property
    def gib(self) -> dict[str, float]:
        """Each component of :data:`COMPONENTS` in GiB."""
        return {name: getattr(self, name) / GiB for name in COMPONENTS}

    def format(self, available: int | None = None) -> str:
        """A table, one component per line in GiB, and the total against ``available`` bytes when given."""
        notes = {"weights": f"{self.params / 1e6:.1f}M params x {self.dtype}",
                 "gradients": f"{self.trainable_params / 1e6:.2f}M trained params",
                 "optimizer": "AdamW, 2 moments per trained param",
                 "kv_cache": f"{self.rows} rows x {self.prompt_tokens}+{self.completion_tokens} tokens",
                 "activations": f"microbatch of {self.microbatch} rows", "logits": "microbatch x vocab, fp32 copies",
                 "total": f"peak in {self.peak_phase}"}
        lines = [f"memory estimate on {self.device} ({self.dtype}):"]
        lines += [f"  {name:<12}{getattr(self, name) / GiB:9.3f} GiB  {notes.get(name, '')}".rstrip()
                  for name in COMPONENTS]
        if available is not None:
            lines.append(f"  {'available':<12}{available / GiB:9.3f} GiB")
        return "\n".join(lines)


def _trained_bytes(config: GRPOConfig, shape: ModelShape, b: int) -> tuple[int, int]:
    """``(trained params, bytes per trained param)``."""
    if config.use_peft:
        return shape.lora_params(config.lora_r, config.lora_target_modules), 4
    return shape.params, b


def _activations(config: GRPOConfig, shape: ModelShape, n: int, U: int, P: int, T: int, b: int, cpu: bool) -> int:
    h, i, L = shape.hidden_size, shape.intermediate_size, shape.num_layers
    q, k = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    kv_width = 2 * (k + (q if q != k else 0))  # keys and values, repeated to q width under grouped-query attention
    per_token = 6 * h + 3 * q + 4 * i + shape.num_heads
    lora = 0  # bytes per token and layer of the adapters: each keeps its float32 input, the dropout's mask, A x
    if config.use_peft:  # frozen linear layers and norms keep no input: 2 norm inputs, q, attention out, 3 MLP
        per_token = 2 * h + 2 * q + 3 * i + shape.num_heads
        names = shape.lora_targets(config.lora_target_modules)
        mask = 0 if config.lora_dropout == 0 else (4 if cpu else 1)  # CPU dropout: a float mask; CUDA: bool
        lora = sum(shape.linears()[name][0] for name in names) * (4 + mask) + 4 * config.lora_r * len(names)
    rope_mask = (n * T + U * P) * 2 * shape.head_dim + n * T * (P + T) + U * P * P  # cos/sin, attention masks
    if config.gradient_checkpointing:  # layer inputs only; one layer recomputed at a time; no shared prompt
        tokens = n * (P + T)
        one_layer = b * (tokens * per_token + n * (P + T) * kv_width) + tokens * lora
        return b * (L * tokens * h + tokens * 2 * shape.head_dim + n * (P + T) ** 2 + tokens * 3 * h) + one_layer
    tokens = U * P + n * T
    stream = b * (tokens * per_token + (n * (P + T) + U * P) * kv_width) + tokens * lora
    return L * stream + b * (rope_mask + (n * T + U) * 3 * h)  # + the final norm


def _generation(config: GRPOConfig, shape: ModelShape, N: int, P: int, T: int, b: int) -> int:
    h, i = shape.hidden_size, shape.intermediate_size
    q, k = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    U = config.prompts_per_step
    repeat = 2 * U * (P + T) * q if q != k else 0  # one layer's keys and values repeated for the prefill
    prefill = b * (U * P * (4 * h + 2 * q + 2 * k + 3 * i) + repeat + U * P * (P + T))
    copies = 8 if config.top_p < 1.0 else 3  # float32 (N, V) tensors of one sampling step
    decode = N * shape.vocab_size * (b + 4 * copies)
    return max(prefill, decode)


def estimate_memory(config: GRPOConfig, *, model_config: Any = None, device: str | torch.device | None = None,
                    prompt_tokens: int | None = None) -> MemoryEstimate | None:
    """The memory a run of ``config`` needs at its peak (see the module docstring), or ``None`` when the model's
    config cannot be read or lacks a decoder's numbers (never an error: see :func:`read_model_config`).

    ``model_config``: the model's config (a ``PretrainedConfig`` or dict; default: read from ``config.model``).
    ``device``: where the run trains (default: ``config.device``, ``"auto"`` as the trainer picks it), which also
    decides ``dtype="auto"`` and the overhead term. ``prompt_tokens``: ``P`` (default: :data:`PROMPT_TOKENS` of the
    task plus :data:`STYLE_TOKENS` of the prompt style). Reads one small file at most: a few milliseconds.
    """
    check_type("config", config, GRPOConfig)
    if model_config is not None:
        shape = model_shape(model_config)
    else:
        model_config = read_model_config(config.model)
        try:
            shape = model_shape(model_config) if model_config is not None else None
        except (ValueError, TypeError):  # a config.json of another kind of model
            shape = None
        if shape is None:
            return None
    dev = pick_device(device if device is not None else (None if config.device == "auto" else config.device))
    dtype = pick_dtype(dev, None if config.dtype == "auto" else config.dtype)
    b = _BYTES[dtype]
    P = prompt_tokens if prompt_tokens is not None else PROMPT_TOKENS[config.task] + STYLE_TOKENS[config.prompt_style]
    T = config.max_new_tokens
    N = config.batch_size
    eval_rows = min(64, config.eval_size)  # greedy evaluation, 64 rows at a time (Trainer.evaluate)
    rows = max(N, eval_rows)
    n = min(config.microbatch_size, N)
    U = math.ceil(n / config.num_generations)
    L, k = shape.num_layers, shape.num_kv_heads * shape.head_dim
    trained, tb = _trained_bytes(config, shape, b)
    weights = shape.params * b
    reference = weights if config.beta > 0 and not config.use_peft else 0
    gradients = trained * tb
    optimizer = 2 * trained * tb
    kv_cache = rows * (P + T) * L * 2 * k * b
    generation = _generation(config, shape, rows, P, T, b)
    activations = _activations(config, shape, n, U, P, T, b, dev.type == "cpu")
    logits = n * (T + 1) * shape.vocab_size * (b + 16)
    head_grad = 0 if config.use_peft else shape.vocab_size * shape.hidden_size * b
    persistent = weights + reference + optimizer
    gen_peak = persistent + gradients + kv_cache + generation
    train_peak = persistent + activations + logits + (gradients if N > n else head_grad)
    peak = max(gen_peak, train_peak)
    overhead = CPU_OVERHEAD if dev.type == "cpu" else 0
    return MemoryEstimate(weights, reference, gradients, optimizer, kv_cache, generation, activations, logits,
                          overhead, peak + overhead, "generation" if gen_peak > train_peak else "training",
                          shape.params, trained, str(dtype).removeprefix("torch."), dev.type, rows, P, T, n)


def available_memory(device: str | torch.device) -> int | None:
    """Bytes free for a run on ``device`` now: CUDA's ``mem_get_info`` free bytes; on a CPU the kernel's
    ``MemAvailable`` (``/proc/meminfo``), else psutil's, else the free pages; ``None`` where unknown (MPS, or CUDA
    where torch finds no GPU: the device check of :mod:`calgrpo_lib.preflight` reports that)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0]) if torch.cuda.is_available() else None
    if dev.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fits(estimate: MemoryEstimate, device: str | torch.device | None = None) -> tuple[bool, int | None]:
    """``(whether estimate.total fits, the bytes available)`` on ``device`` (default: the estimate's); a device
    whose free memory is unknown fits (``(True, None)``)."""
    check_type("estimate", estimate, MemoryEstimate)
    available = available_memory(device if device is not None else estimate.device)
    return (True, None) if available is None else (estimate.total <= available, available)


def release_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Make the C allocator give freed tensors back to the system at once (Linux with glibc; elsewhere nothing is
    done and ``False`` returned): ``mallopt(M_MMAP_THRESHOLD, threshold)``, so every block of ``threshold`` bytes
    or more is mapped on its own and unmapped when freed.

    By default glibc raises that threshold as blocks are freed (up to 32 MiB) and keeps freed blocks below it for
    reuse; a CPU run's RSS then grew to 1.3-1.8x its live peak (tests/test_memory.py), which no estimate can follow.
    The price is time: the tiny preset's CPU steps ran ~40% slower with 1 MiB (2.1-2.3 s -> 3.05 s; peak RSS
    1,137 -> 904 MiB; bench/README.md), so the trainer leaves the allocator as it is. Process-wide and lasting;
    call it once before a CPU run whose memory must match the estimate (tests/test_memory.py does).
    """
    check_type("threshold", threshold, int)
    if threshold < 0 or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
