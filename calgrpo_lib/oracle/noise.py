"""A worse oracle on purpose: :class:`NoisyOracle` wraps any oracle and, at given rates, spoils its located verdicts.

How much localisation quality does token-level credit need? To answer it, start from an exact oracle (the step
checker) and degrade it in measured amounts. Per ``ok`` verdict of the wrapped oracle (one that names a step and
quotes it), with probabilities ``miss_rate``, ``wrong_step_rate`` and ``correct_step_rate`` (each in ``[0, 1]``,
their sum at most 1), exactly one of these happens, otherwise the verdict passes through (:data:`NOISE_KINDS`):

- ``missed``: the error is not seen. The verdict becomes what a judge replying "no error" (step ``-1``) gets from
  the same validation as every backend (:func:`calgrpo_lib.oracle.verdict.localize`): ``unlocalized`` with cause
  ``contradicts_reference`` when the response's final answer differs from the reference's (the usual case for a
  wrong answer in training), else ``no_error``. Either way it has no span, so training gives that answer sequence
  credit, as it does for a real judge that misses;
- ``wrong_step``: a *later* step is named (a judge blaming where the error shows, not where it starts): one of the
  steps after the flagged one, uniformly, quoted whole; when the flagged step is the last, an earlier one;
- ``correct_step``: an *earlier* step is named, one the wrapped oracle found correct (a false accusation): one of
  the steps before the flagged one, uniformly, quoted whole; when the flagged step is step 0, a later one.

A response with a single step has no other step to name: the verdict then passes through, counted as ``skipped``.
Verdicts that are not ``ok`` (``no_error``, ``unlocalized``, ``failed``) always pass through. The draws depend only
on ``seed`` and the item's text (question, reference, response), never on the batch, its order or the cache: the
same item always gets the same noise. :attr:`NoisyOracle.noise_counts` counts what was done to the ``ok`` verdicts
(``kept``, each kind, ``skipped``); ``stats.answered_by`` counts the verdicts by who gave them (``oracle`` for the
wrapped oracle's, ``noise_<kind>`` for the spoiled ones), so a training step logs ``oracle_answered_by_noise_missed``
and the like. ``stats`` also holds the wrapped oracle's backend work, as :class:`~.cascade.CascadeOracle` does.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from ..steps import split_steps
from ..validation import check_float, check_int
from .runner import BackendError, Oracle
from .verdict import JudgeItem, Reply, Verdict, as_item, localize

__all__ = ["NoisyOracle", "NOISE_KINDS", "NOISE_RATES", "check_noise_rates"]

NOISE_KINDS = ("missed", "wrong_step", "correct_step")
NOISE_RATES = dict(zip(NOISE_KINDS, ("miss_rate", "wrong_step_rate", "correct_step_rate")))  #: kind -> parameter


def check_noise_rates(rates: dict[str, float]) -> None:
    """Check noise rates given as ``{parameter name: value}``: each in ``[0, 1]``, their sum at most 1; the errors
    name the parameters (those of :class:`NoisyOracle`, or a config's fields that feed it)."""
    for name, value in rates.items():
        check_float(name, value, 0.0, 1.0)
    if sum(rates.values()) > 1.0 + 1e-12:
        shown = " + ".join(f"{k}={v}" for k, v in rates.items())
        raise ValueError(f"{shown} = {sum(rates.values()):g}; allowed: rates whose sum is <= 1")


class NoisyOracle(Oracle):
    """``oracle`` with its ``ok`` verdicts spoiled at the given rates (see the module docstring)."""

    backend = "noisy"

    def __init__(self, oracle: Oracle, *, miss_rate: float = 0.0, wrong_step_rate: float = 0.0,
                 correct_step_rate: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(oracle, Oracle):
            raise TypeError(f"oracle has type {type(oracle).__name__}; allowed: an Oracle (e.g. StepCheckOracle())")
        rates = {"miss_rate": miss_rate, "wrong_step_rate": wrong_step_rate, "correct_step_rate": correct_step_rate}
        check_noise_rates(rates)
        check_int("seed", seed, 0, None)
        self.oracle, self.seed = oracle, seed
        self.rates = dict(zip(NOISE_KINDS, map(float, rates.values())))  # kind -> probability per ok verdict
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()

    @property
    def model(self) -> str:
        return f"noisy({self.oracle.model})"

    @property
    def prompt_version(self) -> str:
        rates = ",".join(f"{k}={v:g}" for k, v in self.rates.items())
        return f"noise[{rates},seed={self.seed}]:{self.oracle.prompt_version}"

    @property
    def noise_counts(self) -> dict[str, int]:
        """What was done to the wrapped oracle's ``ok`` verdicts so far: ``kept``, each of :data:`NOISE_KINDS`, and
        ``skipped`` (a noise drawn for a response with no other step), all present."""
        with self._counts_lock:
            return {k: self._counts.get(k, 0) for k in ("kept", *NOISE_KINDS, "skipped")}

    @property
    def stopped(self) -> str:
        return self.oracle.stopped

    def resume(self) -> None:
        self.oracle.resume()

    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        raise BackendError("not_a_backend", "a noisy oracle has no backend call of its own; use judge_batch")

    def draw(self, item: JudgeItem) -> tuple[str, random.Random]:
        """The noise kind for ``item`` (one of :data:`NOISE_KINDS`, or ``"kept"``) and the generator that then
        picks the step: both from ``seed`` and the item's text only."""
        digest = hashlib.sha256("\x1f".join((item.question, item.reference, item.response)).encode()).hexdigest()
        rng = random.Random(f"{self.seed}/{digest}")
        u, edge = rng.random(), 0.0
        for kind, rate in self.rates.items():
            edge += rate
            if u < edge:
                return kind, rng
        return "kept", rng

    def spoil(self, item: JudgeItem, verdict: Verdict) -> tuple[Verdict, str]:
        """``(verdict after noise, what happened)``: ``"kept"``, a kind of :data:`NOISE_KINDS`, ``"skipped"``, or
        ``"not_ok"`` for a verdict that is not ``ok`` (passed through untouched)."""
        if verdict.status != "ok" or verdict.step is None:
            return verdict, "not_ok"
        kind, rng = self.draw(item)
        if kind == "kept":
            return verdict, kind
        meta = {"backend": verdict.backend, "model": verdict.model, "cached": verdict.cached}
        if kind == "missed":
            return localize(item, Reply(-1, "", "noise: the error was missed"), **meta), kind
        steps = split_steps(item.response)
        later, earlier = steps[verdict.step + 1:], steps[:verdict.step]
        first, second = (later, earlier) if kind == "wrong_step" else (earlier, later)
        pool = first or second
        if not pool:
            return verdict, "skipped"
        step = rng.choice(pool)
        return replace(verdict, step=step.index, quote=step.text, span=(step.start, step.end), match="exact",
                       cause="", reason=f"noise: {kind.replace('_', ' ')}"), kind

    def judge_batch(self, items: Sequence[JudgeItem | tuple | dict]) -> list[Verdict]:
        """The wrapped oracle's verdicts on ``items``, in order, each spoiled or not (see the module docstring)."""
        items = [as_item(x) for x in items]
        self.stats.add("requests", len(items))
        before = self.oracle.stats.to_dict()
        first = self.oracle.judge_batch(items) if items else []
        self.stats.include_calls(self.oracle.stats, before)
        out = []
        for item, v in zip(items, first):
            verdict, what = self.spoil(item, v)
            if what != "not_ok":
                with self._counts_lock:
                    self._counts[what] += 1
            self.stats.answered(f"noise_{what}" if what in NOISE_KINDS else "oracle")
            self.stats.verdict(verdict.status, verdict.cause)
            out.append(verdict)
        return out

    def close(self) -> None:
        self.oracle.close()
        super().close()

    def __repr__(self) -> str:
        rates = ", ".join(f"{NOISE_RATES[k]}={v:g}" for k, v in self.rates.items())
        return f"NoisyOracle({self.oracle!r}, {rates}, seed={self.seed})"
