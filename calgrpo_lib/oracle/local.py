"""A Hugging Face causal LM as the judge: :class:`LocalJudgeOracle`.

Same prompt, same JSON parsing as the API judges; the prompt goes through the tokenizer's chat template when it
has one, else as plain text. Decoding is greedy, so the reply is deterministic. A small model's prompt that does
not fit its context is cut from the left (the few-shot examples go first, the item to judge stays), and a reply
that is not JSON becomes an ``unlocalized`` verdict (cause ``malformed_reply``): a tiny judge degrades, never
crashes. Runs one generation at a time (a lock); ``config.concurrency`` defaults to 1. A generation is bounded
by the attempt's time (``generate(max_time=...)``, what is left of it once the lock is held; none left: cause
``timeout``), so a call the batch abandoned at its deadline soon lets the next one have the model; a reply cut
short by the limit is unreadable and becomes ``unlocalized``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from ..validation import check_int
from .cache import ReplyCache
from .prompt import FewShot, OraclePrompt, PromptedOracle
from .runner import BackendError, Oracle, OracleConfig

__all__ = ["LocalJudgeOracle"]


class LocalJudgeOracle(PromptedOracle):
    """Judge with ``model`` (a ``transformers`` causal LM) and its ``tokenizer``."""

    backend = "local"

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str | None = None, max_new_tokens: int = 160,
                 fewshot: FewShot | str | os.PathLike | None = None, config: OracleConfig | None = None,
                 cache: ReplyCache | str | Path | None = None, fallback: Oracle | None = None) -> None:
        super().__init__(fewshot=fewshot, config=config if config is not None else OracleConfig(concurrency=1),
                         cache=cache, fallback=fallback)
        check_int("max_new_tokens", max_new_tokens, 1, 4096)
        if not callable(getattr(model, "generate", None)):
            raise TypeError(f"model has type {type(model).__name__}; allowed: a transformers model with .generate")
        if not callable(tokenizer):
            raise TypeError(f"tokenizer has type {type(tokenizer).__name__}; allowed: a transformers tokenizer")
        self.hf_model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        cfg = getattr(model, "config", None)
        self._name = model_name or getattr(cfg, "name_or_path", "") or type(model).__name__
        self._max_positions = getattr(cfg, "max_position_embeddings", None)
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self._name

    def prompt_text(self, prompt: OraclePrompt) -> str:
        """The text fed to the model: the chat template when the tokenizer has one, else plain text."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt.as_text() + "\n"

    def _generate(self, prompt: OraclePrompt, timeout_s: float) -> str:
        import torch

        t0 = time.monotonic()
        enc = self.tokenizer(self.prompt_text(prompt), return_tensors="pt")
        ids, n_new = enc["input_ids"], self.max_new_tokens
        if self._max_positions:  # a tiny model: keep the end of the prompt and leave room for the reply
            n_new = min(n_new, max(1, self._max_positions // 2))
            ids = ids[:, -(self._max_positions - n_new):]
        pad = getattr(self.tokenizer, "pad_token_id", None)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        with self._lock, torch.no_grad():
            left = timeout_s - (time.monotonic() - t0)  # waiting for the model counts against the attempt
            if left <= 0:
                raise BackendError("timeout", "no time left once the model was free")
            device = next(self.hf_model.parameters()).device
            out = self.hf_model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                                         max_new_tokens=n_new, do_sample=False, max_time=left,
                                         pad_token_id=pad if pad is not None else eos)
        return self.tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
