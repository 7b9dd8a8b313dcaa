"""Rehearse a real run offline: :func:`tiny_like` builds a small, randomly initialised model of the same
architecture family as a hub model, with a tokenizer of the same kind, saved as a Hugging Face folder that
:func:`calgrpo_lib.policy.load_policy` loads like the real one.

A preset that names a hub model (``qwen-gsm8k``: ``Qwen/Qwen2.5-0.5B-Instruct``) can then run end to end on a CPU
in seconds, with ``model=<the folder>``: the same model class, the same tokenizer class and pre-tokenizer, the same
special tokens and chat template, the same generation stop tokens, so the code a real run goes through (chat
prompts, batched generation with the family's stop tokens, span mapping on byte-level BPE offsets, checkpoints of a
tied-embedding model, a judge model behind a chat template) is the code the rehearsal goes through. It cannot say
anything about what a trained model would learn: its weights are random.

**Kept from the real model** (from :data:`KNOWN_MODELS`, or from the ``config.json`` of a local copy):

- the model class and ``model_type`` (``Qwen2ForCausalLM`` / ``qwen2``: bias on q/k/v, none on o; ``LlamaForCausalLM``
  / ``llama``: no bias), RMSNorm with the real ``rms_norm_eps``, SiLU MLP;
- grouped-query attention: fewer key/value heads than query heads, in the real ratio where ``num_heads`` allows it
  (else the largest divisor of ``num_heads`` below it);
- ``tie_word_embeddings`` (tied for Qwen2.5 up to 3B and Llama 3.2, untied for Qwen2.5-7B), RoPE with the real
  ``rope_theta`` (and Llama 3's ``llama3`` frequency scaling), the real ``max_position_embeddings``;
- the tokenizer family: byte-level BPE with the family's pre-tokenizer (Qwen2: one digit per token, NFC; Llama 3:
  up to three digits per token), its special tokens appended after the learned vocabulary, its EOS / pad / BOS
  choice (Qwen2.5-Instruct: eos ``<|im_end|>``, pad ``<|endoftext|>``, no BOS; Llama 3 Instruct: BOS
  ``<|begin_of_text|>`` added by the tokenizer and again by the chat template, eos ``<|eot_id|>``, no pad), its
  tokenizer class (``Qwen2Tokenizer``; ``PreTrainedTokenizerFast`` for Llama 3) and its chat template (written here:
  the same rendered text for system / user / assistant messages, no tool calls);
- the ``generation_config`` (stop tokens, and the sampling defaults, which ``transformers.generate`` applies),
  weights stored in bfloat16 as on the hub.

**Shrunk**: width (``hidden_size``, default 64), depth (``num_layers``, default 2), heads (``num_heads``, default
4), MLP width (the real ratio to the width, unless given), and the vocabulary (a BPE of about ``vocab_size``
tokens trained in a second on ``texts``; default the synthetic task's questions and solutions), with one embedding
row per token unless ``embedding_rows`` asks for the hub's count (Qwen2.5 has a few hundred rows past its
tokenizer; an id past the tokenizer decodes to nothing). Everything is deterministic for a ``seed``: the same
arguments give byte-identical files.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .rewards import SOLUTION_INSTRUCTION
from .tokenizers_zoo import corpus_texts
from .validation import check_int, check_type

__all__ = ["Family", "FAMILIES", "KNOWN_MODELS", "family_of", "tiny_like", "QWEN_CHAT_TEMPLATE",
           "LLAMA3_CHAT_TEMPLATE"]

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# ChatML as Qwen2.5 renders it: a system turn always (the default one when the conversation has none), then every
# turn as <|im_start|>role\ncontent<|im_end|>\n, and <|im_start|>assistant\n to ask for a reply.
QWEN_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_text = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_text = '" + QWEN_DEFAULT_SYSTEM + "' -%}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system_text + '<|im_end|>\\n' -}}"
    "{%- for turn in turns -%}"
    "{{- '<|im_start|>' + turn['role'] + '\\n' + turn['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
# Llama 3 Instruct: BOS, a system header carrying the knowledge-cutoff lines (a fixed date: the real template
# prints today's), then <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> per turn, contents trimmed.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_text = messages[0]['content'] | trim -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system_text = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n"
    "Today Date: 26 Jul 2024\\n\\n' + system_text + '<|eot_id|>' -}}"
    "{%- for turn in turns -%}"
    "{{- '<|start_header_id|>' + turn['role'] + '<|end_header_id|>\\n\\n' + turn['content'] | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
_QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = _QWEN_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


@dataclass(frozen=True)
class Family:
    """What a family of models shares: classes, tokenizer, special tokens, chat template, generation defaults."""

    name: str
    model_type: str  #: config.json's model_type
    architecture: str  #: the transformers model class
    tokenizer_class: str
    split_regex: str  #: the pre-tokenizer's split pattern (before byte-level mapping)
    nfc: bool  #: NFC normalisation before pre-tokenizing
    special_tokens: tuple[str, ...]  #: appended after the learned vocabulary, in this order
    eos: str
    pad: str | None
    bos: str | None  #: the tokenizer's BOS token (None: none)
    add_bos: bool  #: the tokenizer puts BOS in front of every text it encodes
    stop_tokens: tuple[str, ...]  #: generation_config.eos_token_id
    chat_template: str
    generation: dict[str, Any] = field(default_factory=dict)  #: sampling defaults of generation_config.json


FAMILIES: dict[str, Family] = {
    "qwen2.5": Family(
        "qwen2.5", "qwen2", "Qwen2ForCausalLM", "Qwen2Tokenizer", _QWEN_SPLIT, True,
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), eos="<|im_end|>", pad="<|endoftext|>", bos=None,
        add_bos=False, stop_tokens=("<|im_end|>", "<|endoftext|>"), chat_template=QWEN_CHAT_TEMPLATE,
        generation={"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}),
    "llama3": Family(
        "llama3", "llama", "LlamaForCausalLM", "PreTrainedTokenizerFast", _LLAMA3_SPLIT, False,
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
         "<|eot_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"), eos="<|eot_id|>", pad=None,
        bos="<|begin_of_text|>", add_bos=True, stop_tokens=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        chat_template=LLAMA3_CHAT_TEMPLATE, generation={"do_sample": True, "temperature": 0.6, "top_p": 0.9}),
}

def _qwen25(hidden_size: int, num_hidden_layers: int, num_attention_heads: int, num_key_value_heads: int,
            intermediate_size: int, tie_word_embeddings: bool, vocab_size: int = 151936) -> dict[str, Any]:
    """The structural fields of a Qwen2.5 Instruct model's config.json, as the hub has them (q, k and v have a
    bias and o none: ``model_type`` ``qwen2`` says so, no field does)."""
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
            "hidden_size": hidden_size, "intermediate_size": intermediate_size, "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads, "num_key_value_heads": num_key_value_heads,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
            "tie_word_embeddings": tie_word_embeddings, "use_sliding_window": False, "vocab_size": vocab_size}


def _llama32(hidden_size: int, num_hidden_layers: int, num_attention_heads: int, head_dim: int) -> dict[str, Any]:
    """The structural fields of a Llama 3.2 Instruct model's config.json, as the hub has them."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": hidden_size, "intermediate_size": 8192, "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads, "num_key_value_heads": 8, "head_dim": head_dim,
            "attention_bias": False, "mlp_bias": False, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
            "rope_theta": 500000.0, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "tie_word_embeddings": True, "vocab_size": 128256}


#: hub id -> the structural fields of its config.json as a plain dict, as the hub has them (token ids, dtype and
#: version fields left out); the family follows from ``model_type``. ``vocab_size`` is the embedding's row count,
#: more than the tokenizer's tokens. :func:`calgrpo_lib.memory.read_model_config` falls back to these offline.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-0.5B-Instruct": _qwen25(896, 24, 14, 2, 4864, True),
    "Qwen/Qwen2.5-1.5B-Instruct": _qwen25(1536, 28, 12, 2, 8960, True),
    "Qwen/Qwen2.5-3B-Instruct": _qwen25(2048, 36, 16, 2, 11008, True),
    "Qwen/Qwen2.5-7B-Instruct": _qwen25(3584, 28, 28, 4, 18944, False, vocab_size=152064),
    "meta-llama/Llama-3.2-1B-Instruct": _llama32(2048, 16, 32, 64),
    "meta-llama/Llama-3.2-3B-Instruct": _llama32(3072, 28, 24, 128),
}
#: hub id prefix -> family, for hub ids not in KNOWN_MODELS (their shape is the family's first known model's)
_PREFIXES = {"Qwen/Qwen2.5-": "qwen2.5", "meta-llama/Llama-3.2-": "llama3", "meta-llama/Llama-3.1-": "llama3",
             "meta-llama/Meta-Llama-3": "llama3"}
_MODEL_TYPES = {"qwen2": "qwen2.5", "llama": "llama3"}
#: the config.json fields tiny_like reads with no default
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _known() -> str:
    return (f"hub ids {sorted(KNOWN_MODELS)}, ids starting with {sorted(_PREFIXES)}, or a local model folder whose "
            f"config.json has model_type in {sorted(_MODEL_TYPES)}")


def _rope(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``rope_parameters`` of a config.json, from them or from the older ``rope_theta`` and ``rope_scaling``."""
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    rope.setdefault("rope_theta", float(cfg.get("rope_theta", 10000.0)))
    rope["rope_type"] = rope.pop("type", rope.get("rope_type", "default"))
    return rope


def family_of(hub_id: str | os.PathLike) -> tuple[Family, dict[str, Any]]:
    """The family and the real config.json fields of ``hub_id`` (a copy): a hub id of :data:`KNOWN_MODELS`, one
    with a known prefix (the family's first known model's fields), or a local folder whose ``config.json`` has a
    known ``model_type`` and the fields ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads`` and
    ``intermediate_size``. Anything else raises ``ValueError`` listing what is known."""
    check_type("hub_id", hub_id, (str, os.PathLike))
    name = os.fspath(hub_id)
    if name in KNOWN_MODELS:
        cfg = KNOWN_MODELS[name]
        return FAMILIES[_MODEL_TYPES[cfg["model_type"]]], copy.deepcopy(cfg)
    config_file = Path(name).expanduser() / "config.json"
    if config_file.is_file():
        cfg = json.loads(config_file.read_text())
        family = _MODEL_TYPES.get(cfg.get("model_type", ""))
        if family is None:
            raise ValueError(f"hub_id={name!r}: its config.json has model_type={cfg.get('model_type')!r}, which "
                             f"tiny_like does not know; allowed: {_known()}")
        missing = [k for k in _REQUIRED if not isinstance(cfg.get(k), int)]
        if missing:
            raise ValueError(f"hub_id={name!r}: its config.json lacks {missing}; allowed: a config.json with the "
                             f"integer fields {list(_REQUIRED)}")
        return FAMILIES[family], cfg
    for prefix, family in _PREFIXES.items():
        if name.startswith(prefix):
            cfg = next(c for c in KNOWN_MODELS.values() if _MODEL_TYPES[c["model_type"]] == family)
            return FAMILIES[family], copy.deepcopy(cfg)
    raise ValueError(f"hub_id={name!r} is not a model family tiny_like knows; allowed: {_known()}")


def _kv_heads(num_heads: int, cfg: dict[str, Any]) -> int:
    """Key-value heads for ``num_heads`` query heads: the real model's ratio where ``num_heads`` allows it."""
    real = int(cfg["num_attention_heads"])
    ratio = max(1, real // int(cfg.get("num_key_value_heads") or real))
    group = max(g for g in range(1, min(ratio, num_heads) + 1) if num_heads % g == 0)
    return num_heads // group


def _train_tokenizer(family: Family, texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(fuse_unk=False, byte_fallback=False))
    if family.nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(family.split_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(list(family.special_tokens))  # after the learned vocabulary, as on the hub
    common = {"eos_token": family.eos, "pad_token": family.pad, "bos_token": family.bos, "unk_token": None,
              "chat_template": family.chat_template, "model_max_length": 131072,
              "clean_up_tokenization_spaces": False,
              "additional_special_tokens": [t for t in family.special_tokens
                                            if t not in (family.eos, family.pad, family.bos)]}
    if family.tokenizer_class == "Qwen2Tokenizer":
        from transformers import Qwen2Tokenizer

        model = json.loads(tok.to_str())["model"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        vocab = {**model["vocab"], **{t: tok.token_to_id(t) for t in family.special_tokens}}
        return Qwen2Tokenizer(vocab=vocab, merges=merges, errors="replace", **common)
    bos_id = tok.token_to_id(family.bos)
    tok.post_processor = processors.TemplateProcessing(single=f"{family.bos} $A", pair=f"{family.bos} $A $B:1",
                                                       special_tokens=[(family.bos, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **common)


def _model_config(family: Family, cfg: dict[str, Any], tokenizer: Any, hidden_size: int, num_layers: int,
                  num_heads: int, intermediate_size: int, rows: int) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in family.special_tokens}
    stops = [ids[t] for t in family.stop_tokens]
    common = dict(vocab_size=rows, hidden_size=hidden_size, intermediate_size=intermediate_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  num_key_value_heads=_kv_heads(num_heads, cfg), hidden_act="silu",
                  max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                  rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                  tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), rope_parameters=_rope(cfg),
                  initializer_range=0.02, attention_dropout=0.0, use_cache=True,
                  bos_token_id=ids.get(family.bos) if family.bos else ids.get("<|endoftext|>"),
                  eos_token_id=stops[0] if len(stops) == 1 or family.name == "qwen2.5" else stops)
    if family.model_type == "qwen2":
        return Qwen2Config(**common, use_sliding_window=False, sliding_window=None, max_window_layers=num_layers)
    return LlamaConfig(**common, attention_bias=False, mlp_bias=False)


def tiny_like(hub_id: str | os.PathLike, out_dir: str | os.PathLike, *, hidden_size: int = 64, num_layers: int = 2,
              num_heads: int = 4, intermediate_size: int | None = None, vocab_size: int = 1024,
              embedding_rows: int | None = None, texts: list[str] | None = None, seed: int = 0) -> Path:
    """Build a small randomly initialised model shaped like ``hub_id`` (see the module docstring) and save it, with
    its tokenizer and generation config, to ``out_dir``; return ``out_dir`` as a ``Path``.

    ``hub_id``: a hub id of :data:`KNOWN_MODELS`, another id of a known family (prefix), or a local model folder
    whose ``config.json`` names a known ``model_type`` (its shape is read from it). ``hidden_size`` must be a
    multiple of ``num_heads``; ``intermediate_size`` defaults to the real model's ratio to the width (a multiple
    of 8). ``embedding_rows`` pads the embedding to that many rows, as on the hub (``KNOWN_MODELS[id]["vocab_size"]``;
    None: one row per token); with the real ``hidden_size``, ``num_layers``, ``num_heads`` and ``intermediate_size``
    of :data:`KNOWN_MODELS` it gives a model of the real size (for a memory or GPU check). The tokenizer is a
    byte-level BPE of at most ``vocab_size`` learned tokens (it may stop earlier on a small
    corpus) trained on ``texts`` (default: 400 synthetic problems' questions and solutions plus the chat
    instruction), then the family's special tokens. The weights are drawn with ``torch.manual_seed(seed)`` and
    saved in bfloat16, so the same arguments give the same files. Needs no network.
    """
    family, cfg = family_of(hub_id)
    check_type("out_dir", out_dir, (str, os.PathLike))
    check_int("hidden_size", hidden_size, 8, 8192)
    check_int("num_layers", num_layers, 1, 256)
    check_int("num_heads", num_heads, 1, hidden_size)
    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise ValueError(f"hidden_size={hidden_size} must be num_heads={num_heads} times an even head size (RoPE); "
                         f"allowed: e.g. hidden_size={num_heads * 16}")
    if intermediate_size is None:
        intermediate_size = max(8, round(hidden_size * cfg["intermediate_size"] / cfg["hidden_size"] / 8) * 8)
    check_int("intermediate_size", intermediate_size, 1, None)
    check_int("vocab_size", vocab_size, 300, 200_000)
    if embedding_rows is not None:
        check_int("embedding_rows", embedding_rows, 1, 1_000_000)
    check_int("seed", seed, 0, 2**32 - 1)
    if texts is None:
        texts = [*corpus_texts(200, seed=0), SOLUTION_INSTRUCTION, QWEN_DEFAULT_SYSTEM]
    check_type("texts", texts, list)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a non-empty list of str; got {len(texts)} items")
    import transformers
    from transformers import GenerationConfig

    tokenizer = _train_tokenizer(family, texts, vocab_size)
    rows = len(tokenizer)
    if embedding_rows is not None:
        if embedding_rows < rows:
            raise ValueError(f"embedding_rows={embedding_rows} is fewer than the tokenizer's {rows} tokens; allowed: "
                             f">= {rows}, or None (one row per token)")
        rows = embedding_rows
    config = _model_config(family, cfg, tokenizer, hidden_size, num_layers, num_heads, intermediate_size, rows)
    config.architectures = [family.architecture]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, family.architecture)(config).eval()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in family.special_tokens}
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=[ids[t] for t in family.stop_tokens],
        pad_token_id=tokenizer.pad_token_id, **family.generation)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(
        f"# tiny_like({os.fspath(hub_id)!r})\n\nA randomly initialised `{family.architecture}` "
        f"({sum(p.numel() for p in model.parameters()):,} parameters: hidden {hidden_size}, {num_layers} layers, "
        f"{num_heads} query / {config.num_key_value_heads} key-value heads) with a {len(tokenizer)}-token "
        f"{family.tokenizer_class} and the {family.name} chat template, built offline by "
        f"`calgrpo_lib.rehearsal.tiny_like` (seed {seed}) to rehearse a run of the real model. Its outputs are "
        "noise.\n")
    return out
