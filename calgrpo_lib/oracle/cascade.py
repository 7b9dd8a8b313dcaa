"""Two oracles in a row: :class:`CascadeOracle`, the exact step checker first, a judge (an LLM or a process reward
model) for what the checker cannot settle.

The step checker is cheap and certain about arithmetic: when it flags a step, a calculation there is wrong. It is
blind to everything else (a wrong plan, a misread quantity, an operation chosen wrongly with right arithmetic), so
a step it passes may still be the first wrong one. A judge sees those, but costs money or GPU time and is sometimes
wrong. The cascade asks the checker about every item, then the judge about the items the rule sends on, and
combines the two verdicts per item.

**Rules** (``rule=``, :data:`CASCADE_RULES`):

- ``"earlier"`` (the default): the judge is asked about every item except those the checker flags at step 0 (no
  step can come before). The first erroneous step is the *earlier* of the two flagged steps: a judge's ``ok``
  verdict at step ``t`` wins over the checker's at step ``s`` when ``t < s`` (an earlier mistake the checker cannot
  see); on a tie or later, the checker's verdict stands (its quote is the exact calculation). When only one of the
  two flags a step, that one answers;
- ``"checker_first"``: the judge is asked only about the items the checker does not flag (``no_error`` or
  ``unlocalized``); a flagged step is final. Fewer judge calls; misses an earlier error of another kind.

In both rules, where the checker flagged a step and the judge's verdict is not ``ok`` (it saw no error, its quote
could not be placed, or its call failed), the checker answers. Where the checker flagged nothing, the judge answers,
whatever its status; if its call failed, the checker's verdict stands (counted in ``stats.fallbacks`` and marked
``fallback_from``, the judge's failure cause).

**Metrics.** Each verdict carries the ``backend`` of the stage that gave it (``stepcheck`` or the judge's);
``stats.answered_by`` counts verdicts by stage (``checker`` / ``judge``, logged per training step as
``oracle_answered_by_checker`` / ``oracle_answered_by_judge``). ``stats`` also holds the judge's backend work
(calls, cache hits, retries, failures by cause, latencies; the checker's own calls are not counted: they cost
nothing); the statuses are those of the cascade's verdicts. The judge keeps its own cache, deadlines and retries,
so its faults behave exactly as they do without the cascade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .runner import BackendError, Oracle
from .stepcheck import StepCheckOracle
from .verdict import JudgeItem, Verdict, as_item

__all__ = ["CascadeOracle", "CASCADE_RULES", "combine_verdicts"]

CASCADE_RULES = ("earlier", "checker_first")


def combine_verdicts(checker: Verdict, judge: Verdict | None, rule: str = "earlier") -> tuple[Verdict, str]:
    """The cascade's verdict on one item from the checker's and the judge's (``None``: the judge was not asked),
    and the stage that gave it (``"checker"`` or ``"judge"``); see the module docstring for the rules."""
    if rule not in CASCADE_RULES:
        raise ValueError(f"rule={rule!r} is not allowed; allowed: {', '.join(map(repr, CASCADE_RULES))}")
    flagged = checker.status == "ok"
    if judge is None:
        return checker, "checker"
    if judge.status == "failed":
        return replace(checker, fallback_from=checker.fallback_from or judge.cause or "judge_failed"), "checker"
    if not flagged:
        return judge, "judge"
    if judge.status == "ok" and rule == "earlier" and judge.step is not None and checker.step is not None \
            and judge.step < checker.step:
        return judge, "judge"
    return checker, "checker"


class CascadeOracle(Oracle):
    """The step checker, then ``judge`` (any :class:`Oracle`), combined by ``rule`` (see the module docstring).

    ``checker`` defaults to ``StepCheckOracle()``. The cascade has no backend call, cache or fallback of its own:
    :meth:`judge_batch` runs its two stages, each with its own settings: ``checker`` and ``judge_oracle``."""

    backend = "cascade"

    def __init__(self, judge: Oracle, checker: Oracle | None = None, *, rule: str = "earlier") -> None:
        super().__init__()
        if not isinstance(judge, Oracle):
            raise TypeError(f"judge has type {type(judge).__name__}; allowed: an Oracle (e.g. GeminiOracle(...), "
                            "PRMOracle(...))")
        checker = StepCheckOracle() if checker is None else checker
        if not isinstance(checker, Oracle):
            raise TypeError(f"checker has type {type(checker).__name__}; allowed: an Oracle (default "
                            "StepCheckOracle())")
        if judge is checker:
            raise ValueError("judge and checker are the same oracle; allowed: two different oracles")
        if rule not in CASCADE_RULES:
            raise ValueError(f"rule={rule!r} is not allowed; allowed: {', '.join(map(repr, CASCADE_RULES))}")
        self.judge_oracle, self.checker, self.rule = judge, checker, rule

    @property
    def model(self) -> str:
        return f"{self.checker.model}+{self.judge_oracle.model}"

    @property
    def prompt_version(self) -> str:
        return f"cascade-{self.rule}:{self.checker.prompt_version}+{self.judge_oracle.prompt_version}"

    @property
    def stopped(self) -> str:
        """The judge's stop cause (e.g. a daily quota): the checker then answers alone."""
        return self.judge_oracle.stopped

    def resume(self) -> None:
        self.judge_oracle.resume()

    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        raise BackendError("not_a_backend", "a cascade has no backend call of its own; use judge_batch")

    def _asks_judge(self, checker: Verdict) -> bool:
        if checker.status != "ok":
            return True
        return self.rule == "earlier" and checker.step not in (None, 0)

    def judge_batch(self, items: Sequence[JudgeItem | tuple | dict]) -> list[Verdict]:
        """Verdicts for ``items``, in order: the checker's on all, the judge's on those the rule sends on, combined
        (never raises for a judge fault: the checker's verdict then stands)."""
        items = [as_item(x) for x in items]
        self.stats.add("requests", len(items))
        first = self.checker.judge_batch(items)
        asked = [i for i, v in enumerate(first) if self._asks_judge(v)]
        before = self.judge_oracle.stats.to_dict()
        second = dict(zip(asked, self.judge_oracle.judge_batch([items[i] for i in asked]) if asked else []))
        self.stats.include_calls(self.judge_oracle.stats, before)
        out = []
        for i, v in enumerate(first):
            verdict, stage = combine_verdicts(v, second.get(i), self.rule)
            if i in second and second[i].status == "failed":
                self.stats.add("fallbacks")
            self.stats.answered(stage)
            self.stats.verdict(verdict.status, verdict.cause)
            out.append(verdict)
        return out

    def close(self) -> None:
        self.judge_oracle.close()
        self.checker.close()
        super().close()

    def __repr__(self) -> str:
        return f"CascadeOracle(judge={self.judge_oracle!r}, checker={self.checker!r}, rule={self.rule!r})"
