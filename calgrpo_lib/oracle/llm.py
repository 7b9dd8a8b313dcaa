"""The base of the LLM judges: :class:`PromptedOracle` builds the prompt, a subclass sends it.

Subclasses implement ``_generate(prompt, timeout_s) -> str`` (the model's raw reply text). The prompt version
(template + few-shot hash) is part of every cache key.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path

from .base import Oracle
from .cache import ReplyCache
from .config import OracleConfig
from .prompt import FewShot, OraclePrompt, build_prompt, load_fewshot, prompt_version
from .verdict import JudgeItem

__all__ = ["PromptedOracle"]


class PromptedOracle(Oracle):
    """An oracle that asks a language model through :func:`build_prompt` and parses its JSON reply."""

    def __init__(self, *, fewshot: FewShot | str | os.PathLike | None = None, config: OracleConfig | None = None,
                 cache: ReplyCache | str | Path | None = None) -> None:
        super().__init__(config=config, cache=cache)
        self.fewshot = fewshot if isinstance(fewshot, FewShot) else load_fewshot(fewshot)

    @property
    def prompt_version(self) -> str:
        return prompt_version(self.fewshot)

    def prompt(self, item: JudgeItem) -> OraclePrompt:
        """The prompt this oracle sends for ``item``."""
        return build_prompt(item, self.fewshot)

    @abstractmethod
    def _generate(self, prompt: OraclePrompt, timeout_s: float) -> str:
        """Send ``prompt``; return the raw reply text or raise :class:`BackendError`."""

    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        return self._generate(self.prompt(item), timeout_s)
