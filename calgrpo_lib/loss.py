"""Losses for RL of language models: log-probs, the PPO-clip surrogate, the k3 KL and how tokens are averaged.

Shapes: ``N`` responses, ``T`` completion tokens (padded), ``V`` vocabulary, ``L`` prompt + completion length.
Everything per token is ``(N, T)`` and comes with a bool ``mask`` ``(N, T)``: True on the tokens that count (the
completion up to and including its first EOS, see :func:`completion_mask`).

The GRPO objective per token, with ratio ``rho_it = exp(logp_it - old_logp_it)`` and advantage ``A_it``::

    loss_it = -min(rho_it * A_it, clip(rho_it, 1 - epsilon, 1 + epsilon_high) * A_it) + beta * KL_it
    KL_it   = exp(ref_it - logp_it) - (ref_it - logp_it) - 1          (k3 estimator, always >= 0)

and the per-token losses are combined by ``loss_type`` (:func:`aggregation_weights`):

    grpo     sum_i (1 / N) * (1 / |o_i|) * sum_t loss_it         mean per sequence, then over sequences
    bnpo     sum_it loss_it / (tokens in this batch)              token mean over the (micro)batch
    dapo     sum_it loss_it / num_items_in_batch                  token mean over the whole (accumulated) batch
    dr_grpo  sum_it loss_it / (N * max_completion_length)         a constant: no length bias

``grpo`` weighs each token of a short answer more than each token of a long one, so a long wrong answer is
punished less per token than a short wrong one: the length bias Dr. GRPO removes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .validation import check_choice, check_float, check_int, check_type

__all__ = [
    "LOSS_TYPES", "ACCUMULATION_MODES", "masked_sum", "masked_mean", "masked_normalize", "token_logprobs",
    "completion_mask", "entropy_from_logits", "clipped_surrogate", "k3_kl", "aggregation_weights",
    "aggregate_loss", "grpo_loss", "policy_gradient_loss", "reinforce_loss", "accumulate_gradients", "train_step",
]

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
ACCUMULATION_MODES = ("mean", "sum")

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


# ------------------------------------------------------------------------------------------------ checks

def _check_tensor(name: str, value: torch.Tensor, shape: tuple[int, ...] | None = None, *,
                  dtype: str = "float") -> None:
    check_type(name, value, torch.Tensor)
    if dtype == "bool" and value.dtype != torch.bool:
        raise TypeError(f"{name}.dtype={value.dtype}; allowed: torch.bool")
    if dtype == "float" and not value.is_floating_point():
        raise TypeError(f"{name}.dtype={value.dtype}; allowed: a floating dtype")
    if dtype == "int" and (value.is_floating_point() or value.dtype == torch.bool):
        raise TypeError(f"{name}.dtype={value.dtype}; allowed: an integer dtype (token ids)")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name}.shape={tuple(value.shape)}; allowed: {tuple(shape)}")


def _check_mask_2d(mask: torch.Tensor) -> None:
    _check_tensor("mask", mask, dtype="bool")
    if mask.dim() != 2:
        raise ValueError(f"mask.shape={tuple(mask.shape)}; allowed: (N, T)")


# ------------------------------------------------------------------------------------------ masked reductions

def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(values * mask)`` over ``dim`` (all dims when None); masked entries never contribute, even NaN."""
    _check_tensor("values", values)
    _check_tensor("mask", mask, tuple(values.shape), dtype="bool")
    kept = torch.where(mask, values, torch.zeros_like(values))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(values * mask) / sum(mask)`` over ``dim``; 0 where the mask is empty (never NaN)."""
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1).to(values.dtype)


def masked_normalize(values: torch.Tensor, mask: torch.Tensor, constant: float, dim: int | None = None) -> torch.Tensor:
    """``sum(values * mask) / constant``: a sum divided by a number that does not depend on the lengths."""
    check_float("constant", constant, 0.0, None, low_open=True)
    return masked_sum(values, mask, dim) / constant


# ------------------------------------------------------------------------------------- from logits to tokens

def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast before softmax arithmetic; float32 and float64 are kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, completion_start: int, *,
                   temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each completion token under the model, ``(N, L - completion_start)``.

    A causal LM's logits at position ``p`` predict the token at ``p + 1`` -- the one-position shift::

        out[:, j] = log softmax(logits[:, completion_start + j - 1] / temperature)[input_ids[:, completion_start + j]]

    ``input_ids`` ``(N, L)`` is prompt + completion, the completion starting at column ``completion_start`` in every
    row (prompts left-padded to the same width). ``logits`` is ``(N, K, V)``: the logits of the last ``K``
    positions (``K == L`` for a plain forward pass; HF's ``logits_to_keep=L - completion_start + 1`` is enough).
    Pad tokens get a log-prob like any other token: mask them with :func:`completion_mask`. Half-precision logits
    are computed in float32.
    """
    _check_tensor("logits", logits)
    _check_tensor("input_ids", input_ids, dtype="int")
    check_float("temperature", temperature, 0.0, None, low_open=True)
    if logits.dim() != 3 or input_ids.dim() != 2 or logits.shape[0] != input_ids.shape[0]:
        raise ValueError(f"logits.shape={tuple(logits.shape)}, input_ids.shape={tuple(input_ids.shape)}; "
                         f"allowed: (N, K, V) and (N, L)")
    length = input_ids.shape[1]
    check_int("completion_start", completion_start, 1, length - 1)
    offset = length - logits.shape[1]  # logits[:, k] belongs to position offset + k
    if offset < 0 or completion_start - 1 < offset:
        raise ValueError(f"logits.shape[1]={logits.shape[1]} with input_ids.shape[1]={length} and completion_start="
                         f"{completion_start}; allowed: logits of at least the last {length - completion_start + 1} "
                         f"positions")
    predicting = logits[:, completion_start - 1 - offset: length - 1 - offset]  # (N, C, V): position p predicts p+1
    targets = input_ids[:, completion_start:]  # (N, C)
    scaled = _at_least_float32(predicting) / temperature  # (N, C, V)
    chosen = scaled.gather(dim=-1, index=targets.unsqueeze(-1)).squeeze(-1)  # (N, C)
    return chosen - torch.logsumexp(scaled, dim=-1)  # log softmax at the target, without storing (N, C, V) log-probs


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Bool ``(N, C)``: True up to and including the first ``eos_token_id`` of each row, False after it.

    A row without EOS (truncated at the length limit) is all True. The mask never looks at the pad id, so it is
    right whether pad == eos or not, and the first EOS stays in the loss (the model must learn to stop).
    """
    _check_tensor("completion_ids", completion_ids, dtype="int")
    check_int("eos_token_id", eos_token_id, 0, None)
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids.shape={tuple(completion_ids.shape)}; allowed: (N, C)")
    is_eos = (completion_ids == eos_token_id).int()  # (N, C)
    eos_before = is_eos.cumsum(dim=1) - is_eos  # (N, C) number of EOS strictly before t
    return eos_before == 0


def entropy_from_logits(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the next-token distribution, ``H = -sum_v p_v log p_v``, shape ``logits.shape[:-1]``."""
    _check_tensor("logits", logits)
    check_float("temperature", temperature, 0.0, None, low_open=True)
    logp = torch.log_softmax(_at_least_float32(logits) / temperature, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


# --------------------------------------------------------------------------------------------- objectives

def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, *,
                      epsilon: float = 0.2, epsilon_high: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip per-token loss ``-min(rho * A, clip(rho, 1 - eps, 1 + eps_high) * A)`` and where it clipped.

    ``rho = exp(logp - old_logp)`` (``old_logp`` is treated as a constant). ``advantages`` is ``(N,)`` (one per
    sequence, broadcast) or ``(N, T)`` (token credit). ``epsilon_high`` defaults to ``epsilon`` (DAPO's
    "clip-higher" sets it larger). Returns ``(loss (N, T), clipped (N, T) bool)``; ``clipped`` is True where the
    clipped branch wins and so the token's gradient is zero: ``rho < 1 - eps`` with ``A < 0`` or
    ``rho > 1 + eps_high`` with ``A > 0``.
    """
    _check_tensor("logp", logp)
    _check_tensor("old_logp", old_logp, tuple(logp.shape))
    _check_tensor("advantages", advantages)
    check_float("epsilon", epsilon, 0.0, 1.0, low_open=True, high_open=True)
    eps_high = epsilon if epsilon_high is None else epsilon_high
    check_float("epsilon_high", eps_high, 0.0, None, low_open=True)
    if advantages.shape == logp.shape[:1]:
        advantages = advantages[:, None]  # (N, 1) broadcast over tokens
    elif advantages.shape != logp.shape:
        raise ValueError(f"advantages.shape={tuple(advantages.shape)}; allowed: {tuple(logp.shape[:1])} or "
                         f"{tuple(logp.shape)} to match logp")
    ratio = torch.exp(logp - old_logp.detach())  # (N, T)
    unclipped = ratio * advantages
    clipped_obj = torch.clamp(ratio, 1.0 - epsilon, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped_obj)  # (N, T)
    clipped = ((ratio < 1.0 - epsilon) & (advantages < 0)) | ((ratio > 1.0 + eps_high) & (advantages > 0))
    return loss, clipped


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of ``KL(policy || ref)`` per token: ``exp(ref - logp) - (ref - logp) - 1 >= 0``."""
    _check_tensor("logp", logp)
    _check_tensor("ref_logp", ref_logp, tuple(logp.shape))
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def aggregation_weights(mask: torch.Tensor, loss_type: str, *, max_completion_length: int | None = None,
                        num_items_in_batch: int | None = None) -> torch.Tensor:
    """Weight of each token in the aggregated loss, ``(N, T)``: ``loss = sum_it w_it * loss_it``.

    - ``grpo``:    ``w_it = m_it / (N * max(|o_i|, 1))``  (``|o_i| = sum_t m_it``);
    - ``bnpo``:    ``w_it = m_it / max(sum m, 1)``;
    - ``dapo``:    ``w_it = m_it / num_items_in_batch`` (the mask tokens of the whole accumulated batch; default:
      this batch's, which makes it equal to ``bnpo``);
    - ``dr_grpo``: ``w_it = m_it / (N * max_completion_length)`` (required for this type).
    """
    _check_mask_2d(mask)
    check_choice("loss_type", loss_type, LOSS_TYPES)
    m = mask.float()  # (N, T)
    n = mask.shape[0]
    if loss_type == "grpo":
        return m / (n * m.sum(dim=1, keepdim=True).clamp(min=1.0))
    if loss_type == "bnpo":
        return m / m.sum().clamp(min=1.0)
    if loss_type == "dapo":
        if num_items_in_batch is None:
            return m / m.sum().clamp(min=1.0)
        check_int("num_items_in_batch", num_items_in_batch, 1, None)
        return m / num_items_in_batch
    if max_completion_length is None:
        raise ValueError("max_completion_length=None with loss_type='dr_grpo'; allowed: an int >= mask.shape[1]")
    check_int("max_completion_length", max_completion_length, mask.shape[1], None)
    return m / (n * max_completion_length)


def aggregate_loss(per_token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str, *,
                   max_completion_length: int | None = None, num_items_in_batch: int | None = None) -> torch.Tensor:
    """Scalar ``sum_it w_it * loss_it`` with the weights of :func:`aggregation_weights` (padding never counts)."""
    _check_tensor("per_token_loss", per_token_loss, tuple(mask.shape))
    weights = aggregation_weights(mask, loss_type, max_completion_length=max_completion_length,
                                  num_items_in_batch=num_items_in_batch).to(per_token_loss.dtype)
    return masked_sum(per_token_loss * weights, mask)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, advantages: torch.Tensor, mask: torch.Tensor, *,
              ref_logp: torch.Tensor | None = None, beta: float = 0.0, epsilon: float = 0.2,
              epsilon_high: float | None = None, loss_type: str = "grpo", max_completion_length: int | None = None,
              num_items_in_batch: int | None = None,
              entropy: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss (module docstring) and its metrics.

    ``logp``, ``old_logp``, ``ref_logp``, ``entropy``: ``(N, T)``; ``old_logp=None`` means on-policy
    (``logp.detach()``, ratio 1). ``advantages``: ``(N,)`` or ``(N, T)``. ``beta > 0`` needs ``ref_logp``.
    ``entropy`` (e.g. :func:`entropy_from_logits`) is only reported, not added to the loss.

    Metrics (floats, token means over ``mask``): ``loss``, ``clip_fraction`` (= ``clip_fraction_low`` +
    ``clip_fraction_high``), ``ratio_mean``, ``mean_abs_advantage``; ``kl`` when ``ref_logp`` is given,
    ``entropy`` when ``entropy`` is given.
    """
    _check_mask_2d(mask)
    _check_tensor("logp", logp, tuple(mask.shape))
    check_float("beta", beta, 0.0, None)
    if old_logp is None:
        old_logp = logp.detach()
    per_token, clipped = clipped_surrogate(logp, old_logp, advantages, epsilon=epsilon, epsilon_high=epsilon_high)
    metrics: dict[str, float] = {}
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)  # (N, T)
        metrics["kl"] = masked_mean(kl.detach(), mask).item()
        if beta > 0:
            per_token = per_token + beta * kl
    elif beta > 0:
        raise ValueError(f"beta={beta} but ref_logp=None; allowed: pass ref_logp, or beta=0")
    loss = aggregate_loss(per_token, mask, loss_type, max_completion_length=max_completion_length,
                          num_items_in_batch=num_items_in_batch)
    adv = advantages if advantages.shape == mask.shape else advantages[:, None].expand(mask.shape)
    ratio = torch.exp(logp.detach() - old_logp.detach())
    low = clipped & (adv < 0)
    metrics.update(
        loss=loss.item(),
        clip_fraction=masked_mean(clipped.float(), mask).item(),
        clip_fraction_low=masked_mean(low.float(), mask).item(),
        clip_fraction_high=masked_mean((clipped & ~low).float(), mask).item(),
        ratio_mean=masked_mean(ratio, mask).item(),
        mean_abs_advantage=masked_mean(adv.detach().abs().to(logp.dtype), mask).item(),
    )
    if entropy is not None:
        _check_tensor("entropy", entropy, tuple(mask.shape))
        metrics["entropy"] = masked_mean(entropy.detach(), mask).item()
    return loss, metrics


def _sequence_score_loss(logp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``-mean_i weights_i * sum_t m_it * logp_it`` -- the REINFORCE surrogate."""
    return -(weights.detach() * masked_sum(logp, mask, dim=1)).mean()


def policy_gradient_loss(logp: torch.Tensor, mask: torch.Tensor,
                         rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Naive policy gradient (REINFORCE without baseline): ``loss = -mean_i r_i * sum_t m_it * logp_it``.

    Its gradient is an unbiased estimate of ``-grad E[r]``, but with rewards in {0, 1} it only ever pushes up
    (nothing pushes wrong answers down), and its variance is large. Metrics: ``loss``, ``mean_abs_advantage``
    (here ``mean |r|``), ``reward_mean``.
    """
    _check_mask_2d(mask)
    _check_tensor("logp", logp, tuple(mask.shape))
    _check_tensor("rewards", rewards, (mask.shape[0],))
    loss = _sequence_score_loss(logp, mask, rewards)
    return loss, {"loss": loss.item(), "mean_abs_advantage": rewards.abs().mean().item(),
                  "reward_mean": rewards.mean().item()}


def reinforce_loss(logp: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor,
                   baseline: float | torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE with a baseline: ``loss = -mean_i (r_i - b) * sum_t m_it * logp_it``.

    ``baseline``: a number, an ``(N,)`` tensor (e.g. a per-group mean: that is GRPO without std and clipping), or
    None for the batch mean reward. Metrics: ``loss``, ``mean_abs_advantage``, ``reward_mean``.
    """
    _check_mask_2d(mask)
    _check_tensor("logp", logp, tuple(mask.shape))
    _check_tensor("rewards", rewards, (mask.shape[0],))
    if baseline is None:
        baseline = rewards.mean()
    elif isinstance(baseline, torch.Tensor):
        _check_tensor("baseline", baseline, (mask.shape[0],))
    else:
        check_float("baseline", baseline)
    advantages = rewards - baseline  # (N,)
    loss = _sequence_score_loss(logp, mask, advantages)
    return loss, {"loss": loss.item(), "mean_abs_advantage": advantages.abs().mean().item(),
                  "reward_mean": rewards.mean().item()}


# ------------------------------------------------------------------------------------ gradient accumulation

def accumulate_gradients(model: torch.nn.Module, batch: dict[str, torch.Tensor], loss_fn: LossFn, *,
                         microbatch_size: int, accumulation: str = "mean") -> dict[str, float]:
    """Run ``loss_fn(model, microbatch)`` on slices of ``batch`` and backpropagate; returns the averaged metrics.

    ``batch`` maps names to tensors that all share dim 0 (``N``); microbatches are consecutive slices of
    ``microbatch_size`` rows (the last may be smaller). ``loss_fn`` returns ``(scalar loss, metrics dict)``.
    Gradients are *added* to ``.grad`` (call ``zero_grad`` first), with each microbatch loss scaled so the sum is
    the full-batch loss:

    - ``accumulation="mean"``: ``loss_k * n_k / N`` -- for losses that are a mean over their microbatch
      (``grpo``, ``dr_grpo``: then the result equals one pass over the whole batch; ``bnpo``: by definition);
    - ``accumulation="sum"``: ``loss_k`` unscaled -- for losses already divided by a whole-batch constant, e.g.
      ``dapo`` with ``num_items_in_batch`` = the mask tokens of the full batch.

    Metrics are averaged with weights ``n_k / N``; ``num_microbatches`` is added.
    """
    check_type("model", model, torch.nn.Module)
    check_type("batch", batch, dict)
    check_choice("accumulation", accumulation, ACCUMULATION_MODES)
    if not batch:
        raise ValueError("batch={} is empty; allowed: a dict of tensors sharing dim 0")
    sizes = {}
    for name, value in batch.items():
        check_type(f"batch[{name!r}]", value, torch.Tensor)
        sizes[name] = value.shape[0] if value.dim() else -1
    n = next(iter(sizes.values()))
    if n < 1 or any(s != n for s in sizes.values()):
        raise ValueError(f"batch tensors have dim-0 sizes {sizes}; allowed: one common size >= 1")
    check_int("microbatch_size", microbatch_size, 1, None)
    totals: dict[str, float] = {}
    num_microbatches = 0
    for start in range(0, n, microbatch_size):
        micro = {name: value[start:start + microbatch_size] for name, value in batch.items()}
        n_k = next(iter(micro.values())).shape[0]
        loss, metrics = loss_fn(model, micro)
        check_type("loss_fn(...)[0]", loss, torch.Tensor)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn returned a loss of shape {tuple(loss.shape)}; allowed: a scalar")
        (loss * (n_k / n) if accumulation == "mean" else loss).backward()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value) * n_k / n
        num_microbatches += 1
    return {**totals, "num_microbatches": float(num_microbatches)}


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               loss_fn: LossFn, *, microbatch_size: int, accumulation: str = "mean",
               max_grad_norm: float | None = None) -> dict[str, float]:
    """One optimizer step: ``zero_grad``, :func:`accumulate_gradients`, optional gradient clipping, ``step``.

    Returns the averaged metrics plus ``grad_norm`` (the total norm before clipping).
    """
    check_type("optimizer", optimizer, torch.optim.Optimizer)
    if max_grad_norm is not None:
        check_float("max_grad_norm", max_grad_norm, 0.0, None, low_open=True)
    optimizer.zero_grad(set_to_none=True)
    metrics = accumulate_gradients(model, batch, loss_fn, microbatch_size=microbatch_size, accumulation=accumulation)
    params = [p for p in model.parameters() if p.grad is not None]
    limit = math.inf if max_grad_norm is None else max_grad_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(params, limit) if params else torch.tensor(0.0)
    optimizer.step()
    return {**metrics, "grad_norm": float(grad_norm)}
