"""How well an oracle localises errors, in the ProcessBench convention.

On solutions with a known first error, the oracle is right when it names that step; on correct solutions, when it
says "no error" (step -1). ProcessBench's F1 is the harmonic mean of the two accuracies, so an oracle that always
cries "error" (or never does) scores 0. The *quote hit rate* is the share of erroneous solutions whose verdict
carries a span overlapping the true erroneous text: what token-level credit needs on top of the step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .verdict import Verdict

__all__ = ["LocalizationReport", "localization_report"]


@dataclass(frozen=True)
class LocalizationReport:
    """Accuracies, F1, quote hit rate and verdict statuses of one benchmark run."""

    n_erroneous: int
    n_correct: int
    error_accuracy: float
    correct_accuracy: float
    f1: float
    quote_hit_rate: float
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def false_alarm_rate(self) -> float:
        """Share of correct solutions flagged as erroneous (or not judged): ``1 - correct_accuracy``."""
        return 1.0 - self.correct_accuracy

    def __str__(self) -> str:
        return (f"first-error-step accuracy {self.error_accuracy:.2%} on {self.n_erroneous} erroneous | "
                f"'no error' accuracy {self.correct_accuracy:.2%} on {self.n_correct} correct "
                f"(false alarms {self.false_alarm_rate:.2%}) | ProcessBench F1 {self.f1:.3f} | "
                f"quote hit rate {self.quote_hit_rate:.2%}")


def _overlaps(a: tuple[int, int] | None, b: tuple[int, int]) -> bool:
    return a is not None and a[0] < b[1] and a[1] > b[0]


def localization_report(err_verdicts: Sequence[Verdict], err_truth: Sequence[tuple[int, tuple[int, int]]],
                        ok_verdicts: Sequence[Verdict] = ()) -> LocalizationReport:
    """Score verdicts on erroneous solutions (``err_truth[i] = (first error step, true span)``) and on correct
    ones (``ok_verdicts``)."""
    if len(err_verdicts) != len(err_truth):
        raise ValueError(f"len(err_verdicts)={len(err_verdicts)} but len(err_truth)={len(err_truth)}; "
                         "allowed: equal lengths")
    hits = sum(v.predicted_step == step for v, (step, _) in zip(err_verdicts, err_truth))
    quote_hits = sum(v.localized and _overlaps(v.span, span) for v, (_, span) in zip(err_verdicts, err_truth))
    fine = sum(v.predicted_step == -1 for v in ok_verdicts)
    acc_e = hits / len(err_verdicts) if err_verdicts else 0.0
    acc_c = fine / len(ok_verdicts) if ok_verdicts else 0.0
    f1 = 2 * acc_e * acc_c / (acc_e + acc_c) if acc_e + acc_c > 0 else 0.0
    statuses = Counter(v.status for v in [*err_verdicts, *ok_verdicts])
    return LocalizationReport(len(err_verdicts), len(ok_verdicts), acc_e, acc_c, f1,
                              quote_hits / len(err_verdicts) if err_verdicts else 0.0, dict(statuses))
