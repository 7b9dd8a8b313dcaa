"""Stopping a run between steps: Ctrl-C and SIGTERM as step-boundary stops, :class:`StepBoundaryStop`.

A checkpoint is only right at a step boundary. Once a step's optimizer has changed the weights, the state in memory
is half of step ``k + 1``: saved under step ``k``, a resume would apply step ``k + 1``'s update twice. So inside
:meth:`StepBoundaryStop.active`, SIGINT (Ctrl-C, a Jupyter kernel interrupt) and SIGTERM (``kill``, a job
scheduler's stop) do not raise where they land while a step is open (:meth:`StepBoundaryStop.step_open`): they are
held, the step finishes, and :meth:`StepBoundaryStop.check` raises ``KeyboardInterrupt`` at its end. Outside an open
step they raise at once, as usual. A ``KeyboardInterrupt`` that is raised inside an open step anyway (by code, not
by a signal) leaves :attr:`StepBoundaryStop.inconsistent` set, so the caller knows the state is not a step's.

Outside the main thread, where Python cannot set signal handlers, nothing is changed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StepBoundaryStop", "STOP_SIGNALS"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StepBoundaryStop:
    """Holds Ctrl-C / SIGTERM until the open step ends (see the module docstring)."""

    def __init__(self) -> None:
        self.pending: int | None = None  #: the signal held until the step's end, or None
        self.inconsistent = False  #: a KeyboardInterrupt left a step half done
        self._open = False

    def _handler(self, signum: int, frame: object) -> None:
        if self._open:
            self.pending = signum  # the step finishes first; check() raises at its end
            return
        raise KeyboardInterrupt(f"signal {signum}")

    @contextmanager
    def active(self) -> Iterator[StepBoundaryStop]:
        """Inside the block, SIGINT and SIGTERM stop at a step boundary; the previous handlers come back on exit."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextmanager
    def step_open(self) -> Iterator[None]:
        """Mark the state as mid-step (from the first change of the weights to the step's record), or any work a stop
        must not cut short (writing a checkpoint): stop signals are held until :meth:`check`."""
        self._open = True
        try:
            yield
        except KeyboardInterrupt:
            self.inconsistent = True
            raise
        finally:
            self._open = False

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop signal was held during the step that just ended."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise KeyboardInterrupt(f"signal {signum}, held to the end of the step")
