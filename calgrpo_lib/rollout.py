"""Rollouts: ``G`` sampled completions for each of ``B`` prompts, laid out for the loss.

Rows are prompt-major (the ``G`` completions of prompt ``b`` are rows ``b*G .. b*G+G-1``), matching the layout of
``advantages.group_advantages``. Shapes, with ``N = B * G``, ``P`` prompt width (left-padded), ``T`` completion
width (right-padded)::

    input_ids       (N, P + T)  prompt then completion        attention_mask  (N, P + T)  1 = real token
    completion_ids  (N, T)                                     completion_mask (N, T) bool incl. the final EOS
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .config import GRPOConfig
from .rewards import build_prompt
from .sampling import generate, prefill_shared
from .tasks import Problem

__all__ = ["Rollout", "sample_rollouts", "sequence_forward"]


@dataclass
class Rollout:
    """A batch of sampled completions; ``problems[i]`` is the problem completion ``i`` answers."""

    problems: list[Problem]  # (N,)
    texts: list[str]  # (N,) decoded completions, special tokens skipped
    input_ids: torch.Tensor  # (N, P + T)
    attention_mask: torch.Tensor  # (N, P + T)
    completion_ids: torch.Tensor  # (N, T)
    completion_mask: torch.Tensor  # (N, T) bool

    @property
    def completion_start(self) -> int:
        """Column of ``input_ids`` where the completions begin (``P``)."""
        return self.input_ids.shape[1] - self.completion_ids.shape[1]


def sample_rollouts(model: Any, tokenizer: Any, problems: list[Problem], config: GRPOConfig, *,
                    seed: int) -> Rollout:
    """Sample ``config.num_generations`` completions per problem (KV-cached, batched, seeded by ``seed``)."""
    prompts = [build_prompt(p.question, config.prompt_style, tokenizer) for p in problems]
    g = generate(model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                 top_p=config.top_p, num_return_sequences=config.num_generations, seed=seed,
                 min_new_tokens=config.min_new_tokens)
    device = next(model.parameters()).device
    input_ids = torch.cat([g.prompt_ids, g.completion_ids], dim=1).to(device)  # (N, P + T)
    attention_mask = torch.cat([g.prompt_mask, g.completion_mask], dim=1).to(device)  # (N, P + T)
    per_row = [p for p in problems for _ in range(config.num_generations)]
    return Rollout(per_row, g.texts, input_ids, attention_mask, g.completion_ids, g.completion_mask.bool())


def sequence_forward(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     completion_start: int, *, share_prompts: bool = True) -> torch.Tensor:
    """Logits of the last ``T + 1`` positions ``(n, T + 1, V)``: the ones that predict the completion tokens.

    Position ids count real tokens only (``cumsum(mask) - 1``), as during generation, so left padding does not shift
    positions and the scored log-probs equal the sampling ones. With ``share_prompts`` (default), rows that repeat
    the previous row's prompt (the ``G`` samples of a group) run their prompt once: the prompt's KV cache (the
    model's default ``DynamicCache``) is computed for the ``U`` distinct prompts, copied to the ``n`` rows, and the
    completions run on top of it in one forward (``cache=``), the gradient of every copy adding up on its prompt's
    single forward (:func:`calgrpo_lib.sampling.prefill_shared`), so ``U * P + n * T`` tokens pass the model instead
    of ``n * (P + T)``. Same logits up to float rounding, same gradients. While gradient checkpointing acts (the
    model in training mode, gradients on, :func:`calgrpo_lib.lora.enable_gradient_checkpointing`), the rows run
    whole instead: a checkpointed layer drops any cache, so a shared prompt cache cannot pass it.
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (n, P + T)
    P = completion_start
    if not share_prompts or _checkpointing(model):
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                     logits_to_keep=input_ids.shape[1] - P + 1).logits
    prompt = prefill_shared(model, input_ids[:, :P], attention_mask[:, :P], position_ids[:, :P])  # logits (n, 1, V)
    rest = model(input_ids=input_ids[:, P:], attention_mask=attention_mask, position_ids=position_ids[:, P:],
                 cache=prompt.cache, use_cache=True)  # logits (n, T, V)
    return torch.cat([prompt.logits, rest.logits], dim=1)  # (n, T + 1, V)


def _checkpointing(model: Any) -> bool:
    """Whether a forward of ``model`` now runs its layers under gradient checkpointing (training mode, gradients on,
    a module's ``gradient_checkpointing`` flag set), as transformers' ``GradientCheckpointingLayer`` decides."""
    return model.training and torch.is_grad_enabled() and any(getattr(m, "gradient_checkpointing", False)
                                                               for m in model.modules())
