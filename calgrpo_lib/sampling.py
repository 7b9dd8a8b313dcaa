"""Sampling: draw completions from a causal LM in batches, KV-cached, and measure a policy by sampling.

:func:`generate` is the sampling primitive the GRPO trainer builds on. Its shapes, with ``N = len(prompts) *
num_return_sequences`` rows ordered prompt-major (the samples of prompt ``i`` are rows ``i*G .. i*G+G-1``)::

    prompt_ids      (N, P)  long   left-padded with pad_id     prompt_mask      (N, P)  1 = real prompt token
    completion_ids  (N, T)  long   right-padded with pad_id    completion_mask  (N, T)  1 = generated token

A completion stops at the first stop token (the tokenizer's EOS and the model's ``generation_config`` EOS ids);
that token is kept in ``completion_ids`` with mask 1, because it is part of the loss. ``min_new_tokens=k`` masks the
stop tokens to ``-inf`` for the first ``k`` tokens (as ``transformers``' ``min_new_tokens``), so every completion
holds at least ``k`` tokens before its stop token. ``texts[i]`` is the decoded completion without special tokens.
Masks are built from lengths, never by comparing ids with ``pad_id``.

The KV cache, shared and preallocated, with public ``transformers`` APIs only (>= 5.24, whose forward takes
``cache=``): a batch of ``N`` rows gets one ``transformers.StaticCache`` with room for ``P + max_new_tokens``
positions, allocated once, into which every forward writes its new keys and values in place (a ``DynamicCache``
concatenates the whole cache into a new tensor at every token; on a CPU that copy cost as much as the model). The
``G`` samples of a prompt share one prefill (:func:`prefill_shared`): the ``U`` distinct prompts run once, and the
cache's rows are copied to the ``N`` rows (``Cache.reorder_cache``, ``(U, ...) -> (N, ...)`` in every layer). The
attention then runs over all ``P + max_new_tokens`` cache positions, the ones not yet written masked out; this
samples the same tokens as attending over the written positions only (checked on the tiny policy: same
``completion_ids`` for the same seed), at the price of that attention over the unwritten positions (on a CPU, the
tiny policy samples ~20% slower than when it attended over the written positions only; bench/README.md).

:func:`greedy_answers`, :func:`greedy_accuracy` and :func:`group_stats` score a policy on problems: its greedy answers,
the held-out accuracy the trainer reports, and the share of GRPO groups that hold both a right and a wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .rewards import build_prompt, format_reward, is_correct
from .tasks import Problem
from .validation import check_float, check_int, check_new_tokens, check_type

__all__ = ["Generation", "generate", "greedy_answers", "greedy_accuracy", "group_stats", "prompt_groups",
           "prefill_shared"]

# ----------------------------------------------------------------------------------------------- sampling


@dataclass
class Generation:
    """A batch of sampled completions; see the module docstring for the shapes.

    Row ``r`` answers ``prompts[r // num_return_sequences]``. ``prompt_ids``/``prompt_mask`` are left-padded, so
    ``torch.cat([prompt_ids, completion_ids], 1)`` with ``torch.cat([prompt_mask, completion_mask], 1)`` is the
    full sequence a trainer scores. ``completion_mask`` covers the generated tokens including the final EOS.
    ``finished`` ``(N,)`` bool: the row ended with a stop token (``False``: it ran into ``max_new_tokens``).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    finished: torch.Tensor
    pad_id: int
    num_return_sequences: int = 1

    @property
    def completion_lengths(self) -> torch.Tensor:
        """``(N,)`` long: the number of generated tokens per row, EOS included."""
        return self.completion_mask.sum(1)


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def _encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt with the tokenizer's own special tokens (e.g. BOS), never a doubled BOS."""
    rows = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return [r[1:] if bos is not None and len(r) > 1 and r[0] == bos == r[1] else r for r in rows]


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None) -> torch.Tensor:
    """One token per row: argmax when ``temperature == 0``, else nucleus sampling of ``softmax(logits / T)``."""
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of identical consecutive prompt rows, as ``(first, inverse)``: ``first`` ``(U,)`` the row index where
    each run starts, ``inverse`` ``(N,)`` the run of every row, so ``prompt_ids[first][inverse] == prompt_ids``.

    The ``G`` samples of a prompt are consecutive rows with the same prompt, so ``U = B`` for a GRPO batch: their
    prompt is run through the model once and its KV cache shared (see :func:`calgrpo_lib.rollout.sequence_forward`).
    """
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(1) & (prompt_mask[1:] == prompt_mask[:-1]).all(1)  # (N-1,)
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=same.device), ~same])  # (N,)
    return starts.nonzero().squeeze(1), starts.long().cumsum(0) - 1


def prefill_shared(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, position_ids: torch.Tensor,
                   cache: Any = None) -> Any:
    """Forward the prompts with ``use_cache=True``, running each run of identical rows once (:func:`prompt_groups`)
    and copying its last-position logits and KV cache to every row of the run; returns the model output for all
    ``N`` rows (logits ``(N, 1, V)``, ``cache`` holding ``N`` rows of ``P`` positions).

    ``cache``: the ``transformers`` ``Cache`` to write into, e.g. a ``StaticCache`` with room for the tokens still
    to come (``None``: the model's default ``DynamicCache``). Equal, up to float rounding, to one forward over all
    rows; ``N / U`` times fewer prompt tokens pass the model. Gradients flow through the shared cache (each copy's
    gradient adds up on its run's single forward).
    """
    first, inverse = prompt_groups(prompt_ids, prompt_mask)  # (U,), (N,)
    if len(first) == prompt_ids.shape[0]:  # nothing shared
        return model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids, cache=cache,
                     use_cache=True, logits_to_keep=1)
    out = model(input_ids=prompt_ids[first], attention_mask=prompt_mask[first], position_ids=position_ids[first],
                cache=cache, use_cache=True, logits_to_keep=1)  # logits (U, 1, V)
    out.cache.reorder_cache(inverse)  # keys, values (U, heads, P, head_dim) -> (N, ...) in every layer
    out.logits = out.logits[inverse]  # (N, 1, V)
    return out


@torch.no_grad()
def _generate_rows(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
                   temperature: float, top_p: float, stop: torch.Tensor, pad_id: int, gen: torch.Generator | None,
                   min_new_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` per row with a KV cache; return ``(completion_ids, completion_mask, done)``.

    The stop tokens get ``-inf`` logits while fewer than ``min_new_tokens`` tokens are generated; this changes no
    draw from ``gen`` (one ``multinomial`` per token either way), so ``min_new_tokens=0`` samples exactly as before.
    """
    from transformers import StaticCache  # imported on first use, as everywhere in the library

    dev = prompt_ids.device
    attn = prompt_mask  # (N, P), grows by one column per token
    pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (N, P) real tokens only, so left padding shifts no position
    cache = StaticCache(config=model.config, max_cache_len=prompt_ids.shape[1] + max_new_tokens)  # allocated once
    out = prefill_shared(model, prompt_ids, attn, pos, cache=cache)  # the G samples of a prompt share its prefill
    next_pos = pos[:, -1:] + 1  # (N, 1)
    done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=dev)  # (N,) the row has written a stop token
    tokens, masks = [], []
    for t in range(max_new_tokens):
        logits = out.logits[:, -1]  # (N, V)
        if t < min_new_tokens:
            logits = logits.index_fill(-1, stop, float("-inf"))
        tok = _sample(logits, temperature, top_p, gen)  # (N,)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)  # finished rows write padding
        masks.append(~done)
        tokens.append(tok)
        done = done | torch.isin(tok, stop)
        if bool(done.all()) or len(tokens) == max_new_tokens:
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)  # (N, P + t + 1)
        out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos, cache=cache,
                    use_cache=True)  # logits (N, 1, V); writes position P + t of the cache in place
        next_pos = next_pos + 1
    return torch.stack(tokens, 1), torch.stack(masks, 1).long(), done  # (N, T), (N, T), (N,)


def _pad_right(t: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)


def _check_generate_args(prompts: Any, max_new_tokens: int, temperature: float, top_p: float,
                         num_return_sequences: int, seed: int | None, batch_size: int | None,
                         min_new_tokens: int = 0) -> None:
    check_type("prompts", prompts, (list, tuple))
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts={str(prompts)[:80]!r}; allowed: a non-empty list of strings")
    check_new_tokens(max_new_tokens, min_new_tokens)
    check_float("temperature", temperature, 0.0)
    check_float("top_p", top_p, 0.0, 1.0, low_open=True)
    check_int("num_return_sequences", num_return_sequences, 1, None)
    if seed is not None:
        check_int("seed", seed, None, None)
    if batch_size is not None:
        check_int("batch_size", batch_size, 1, None)


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 128,
             temperature: float = 0.0, top_p: float = 1.0, num_return_sequences: int = 1, seed: int | None = None,
             batch_size: int | None = None, min_new_tokens: int = 0) -> Generation:
    """Sample ``num_return_sequences`` completions per prompt, batched and KV-cached.

    ``temperature=0`` is greedy; ``> 0`` samples from ``softmax(logits / temperature)`` restricted to the top-``p``
    nucleus. ``seed`` makes sampling reproducible (same seed, batch size and device -> same tokens); ``None`` uses
    torch's global generator. ``batch_size`` caps the rows run together (default: all ``N`` rows at once).
    ``min_new_tokens`` (``0 <= min_new_tokens <= max_new_tokens``) forbids the stop tokens before that many tokens,
    so every completion is at least that long (``min_new_tokens == max_new_tokens``: all exactly that long, as for
    timing runs); ``0`` (default) changes nothing. Returns a :class:`Generation`; see the module docstring.
    """
    _check_generate_args(prompts, max_new_tokens, temperature, top_p, num_return_sequences, seed, batch_size,
                         min_new_tokens)
    dev = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = torch.tensor(_stop_ids(model, tokenizer), device=dev)
    rows = [r for r in _encode_prompts(tokenizer, prompts) for _ in range(num_return_sequences)]
    prompt_ids, prompt_mask = _left_pad(rows, pad_id)
    gen = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    step = batch_size or len(rows)
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for s in range(0, len(rows), step):
            ids, mask = _left_pad(rows[s: s + step], pad_id)
            chunks.append(_generate_rows(model, ids.to(dev), mask.to(dev), max_new_tokens, temperature, top_p,
                                         stop, pad_id, gen, min_new_tokens))
    finally:
        model.train(was_training)
    width = max(c[0].shape[1] for c in chunks)
    completion_ids = torch.cat([_pad_right(c[0], width, pad_id) for c in chunks]).cpu()
    completion_mask = torch.cat([_pad_right(c[1], width, 0) for c in chunks]).cpu()
    finished = torch.cat([c[2] for c in chunks]).cpu()
    texts = [tokenizer.decode(ids[m.bool()].tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False)
             for ids, m in zip(completion_ids, completion_mask)]
    return Generation(prompt_ids, prompt_mask, completion_ids, completion_mask, texts, finished, pad_id,
                      num_return_sequences)


# ----------------------------------------------------------------------------------------------- scoring


def _check_problems(problems: Any) -> None:
    check_type("problems", problems, (list, tuple))
    if not problems or not all(isinstance(p, Problem) for p in problems):
        raise ValueError(f"problems={str(problems)[:80]!r}; allowed: a non-empty list of tasks.Problem")


def greedy_answers(model: Any, tokenizer: Any, problems: Sequence[Problem], *, batch_size: int = 64,
                   max_new_tokens: int = 128, prompt_style: str = "plain") -> list[str]:
    """The greedy completion of each problem's prompt (``build_prompt(question, prompt_style)``): what
    :func:`greedy_accuracy` scores."""
    _check_problems(problems)
    check_int("batch_size", batch_size, 1, None)
    prompts = [build_prompt(p.question, prompt_style, tokenizer) for p in problems]
    return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size).texts


def greedy_accuracy(model: Any, tokenizer: Any, problems: Sequence[Problem], *, batch_size: int = 64,
                    max_new_tokens: int = 128, prompt_style: str = "plain") -> dict[str, float]:
    """Greedy-decode every problem; return ``{"accuracy", "format_rate", "n"}``.

    ``accuracy`` is the share of completions whose final answer equals ``problem.final``; ``format_rate`` the share
    ending in a well-formed ``#### n`` line (``format_reward(text, "gsm8k")``). Use ``prompt_style="chat"`` for
    instruct models; the tiny policy is trained on ``"plain"``.
    """
    texts = greedy_answers(model, tokenizer, problems, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           prompt_style=prompt_style)
    correct = [is_correct(t, p.final) for t, p in zip(texts, problems)]
    formatted = [format_reward(t, "gsm8k") for t in texts]
    n = len(problems)
    return {"accuracy": sum(correct) / n, "format_rate": sum(formatted) / n, "n": n}


def group_stats(model: Any, tokenizer: Any, problems: Sequence[Problem], *, group_size: int = 8,
                temperature: float = 1.0, seed: int = 0, batch_size: int = 256, max_new_tokens: int = 128,
                prompt_style: str = "plain") -> dict[str, float]:
    """Sample a GRPO group of ``group_size`` completions per problem and measure the learning signal.

    Returns ``{"mixed_rate", "all_right_rate", "all_wrong_rate", "sample_accuracy", "format_rate", "n_groups"}``.
    ``mixed_rate`` is the share of groups holding both a right and a wrong answer: only those groups have
    non-zero group-normalised advantages.
    """
    _check_problems(problems)
    check_int("group_size", group_size, 1, None)
    prompts = [build_prompt(p.question, prompt_style, tokenizer) for p in problems]
    g = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                 num_return_sequences=group_size, seed=seed, batch_size=batch_size)
    right = [is_correct(t, problems[i // group_size].final) for i, t in enumerate(g.texts)]
    groups = [right[i: i + group_size] for i in range(0, len(right), group_size)]
    n = len(groups)
    return {"mixed_rate": sum(0 < sum(x) < group_size for x in groups) / n,
            "all_right_rate": sum(all(x) for x in groups) / n, "all_wrong_rate": sum(not any(x) for x in groups) / n,
            "sample_accuracy": sum(right) / len(right),
            "format_rate": sum(format_reward(t, "gsm8k") for t in g.texts) / len(g.texts), "n_groups": n}
