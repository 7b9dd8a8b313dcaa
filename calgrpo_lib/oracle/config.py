"""Run settings shared by every oracle backend: :class:`OracleConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from ..validation import check_choice, check_float, check_int

__all__ = ["OracleConfig", "FALLBACKS"]

FALLBACKS = ("sequence", "stepcheck")


@dataclass(frozen=True)
class OracleConfig:
    """How an oracle runs a batch.

    - ``concurrency``: backend calls in flight at once (a thread pool), 1-256;
    - ``timeout_s``: wall-clock limit of one call, retries included; the call then fails with cause ``timeout``;
    - ``retries``: extra attempts after a retryable fault (408, 429 that is not a daily quota, 5xx, network);
      waits grow as ``backoff_s * 2**k`` (capped at ``backoff_max_s``) times a random factor in ``[1, 1+jitter]``;
    - ``fallback``: what a failed call returns: ``"sequence"`` a ``failed`` verdict (training uses sequence-level
      credit for that response), ``"stepcheck"`` the verdict of the offline :class:`StepCheckOracle`;
    - ``fuzzy_threshold``: minimum similarity (0-100) for a quote matched approximately.
    """

    concurrency: int = 8
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    jitter: float = 0.5
    fallback: str = "sequence"
    fuzzy_threshold: float = 85.0

    def __post_init__(self) -> None:
        check_int("concurrency", self.concurrency, 1, 256)
        check_float("timeout_s", self.timeout_s, 0.0, None, low_open=True)
        check_int("retries", self.retries, 0, 20)
        check_float("backoff_s", self.backoff_s, 0.0)
        check_float("backoff_max_s", self.backoff_max_s, self.backoff_s)
        check_float("jitter", self.jitter, 0.0, 1.0)
        check_choice("fallback", self.fallback, FALLBACKS)
        check_float("fuzzy_threshold", self.fuzzy_threshold, 0.0, 100.0)
