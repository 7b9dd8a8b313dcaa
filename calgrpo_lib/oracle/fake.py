"""A stand-in judge for demos, tests and benchmarks: :class:`FakeOracle`.

It waits ``latency_s`` per call (like a remote API) and answers with ``reply(item)``; by default the reply of the
exact :class:`StepCheckOracle`, so its verdicts are meaningful. ``backend_calls`` counts the calls that reached it.
Pass a ``reply`` function to script a judge that paraphrases, hallucinates or obeys a prompt injection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from .base import Oracle
from .cache import ReplyCache
from .config import OracleConfig
from .verdict import JudgeItem

__all__ = ["FakeOracle"]


class FakeOracle(Oracle):
    """A scripted judge with a fixed latency (see the module docstring)."""

    backend = "fake"

    def __init__(self, latency_s: float = 0.2, reply: Callable[[JudgeItem], str] | None = None, *,
                 name: str = "fake-judge", config: OracleConfig | None = None,
                 cache: ReplyCache | str | Path | None = None) -> None:
        super().__init__(config=config, cache=cache)
        if isinstance(latency_s, bool) or not isinstance(latency_s, (int, float)) or latency_s < 0:
            raise ValueError(f"latency_s={latency_s!r}; allowed: a number >= 0")
        self.latency_s = float(latency_s)
        self.name = name
        self._reply = reply
        self._lock = threading.Lock()
        self.backend_calls = 0
        self._stepcheck = None

    @property
    def model(self) -> str:
        return self.name

    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        with self._lock:
            self.backend_calls += 1
        time.sleep(self.latency_s)
        if self._reply is not None:
            return self._reply(item)
        if self._stepcheck is None:
            from .stepcheck import StepCheckOracle

            self._stepcheck = StepCheckOracle()
        return self._stepcheck._call(item, timeout_s)
