"""Counters for everything an oracle does: :class:`OracleStats` (thread-safe).

- ``requests``: verdicts asked for; ``cache_hits``: answered from the cache; ``calls``: backend calls made (one
  per cache miss, however many HTTP attempts it took); ``retries``: extra attempts (the runner's own and, for
  Gemini, the SDK's); ``fallbacks``: verdicts produced by the fallback after a failure;
- ``failures``: failed calls by cause (``timeout``, ``http_503``, ``quota_exhausted``, ``skipped_quota``, ...);
- ``statuses``: verdicts by status; ``unlocalized``: unlocalized verdicts by cause;
- latency percentiles over the backend calls (cache hits excluded).
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["OracleStats"]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class OracleStats:
    """Counts of requests, cache hits, backend calls, retries, failures by cause, statuses and latencies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self.requests = self.cache_hits = self.calls = self.retries = self.fallbacks = 0
            self.failures: Counter[str] = Counter()
            self.statuses: Counter[str] = Counter()
            self.unlocalized: Counter[str] = Counter()
            self.latencies_s: list[float] = []

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (``requests``, ``cache_hits``, ``calls``, ``retries``, ``fallbacks``)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def failure(self, cause: str) -> None:
        """Count one failed backend call."""
        with self._lock:
            self.failures[cause] += 1

    def verdict(self, status: str, cause: str = "") -> None:
        """Count one verdict handed out."""
        with self._lock:
            self.statuses[status] += 1
            if status == "unlocalized":
                self.unlocalized[cause] += 1

    def latency(self, seconds: float) -> None:
        """Record the wall time of one backend call."""
        with self._lock:
            self.latencies_s.append(seconds)

    @property
    def unlocalized_rate(self) -> float:
        """Unlocalized verdicts / all verdicts (0 when none)."""
        total = sum(self.statuses.values())
        return self.statuses["unlocalized"] / total if total else 0.0

    @property
    def latency_p50_s(self) -> float:
        """Median wall time of a backend call, in seconds (NaN before the first call)."""
        return _percentile(self.latencies_s, 0.50)

    @property
    def latency_p95_s(self) -> float:
        """95th percentile of the backend call wall time, in seconds (NaN before the first call)."""
        return _percentile(self.latencies_s, 0.95)

    def to_dict(self) -> dict:
        """All counters as plain numbers and dicts (for logging)."""
        with self._lock:
            lat = list(self.latencies_s)
            out = {"requests": self.requests, "cache_hits": self.cache_hits, "calls": self.calls,
                   "retries": self.retries, "fallbacks": self.fallbacks, "failures": dict(self.failures),
                   "statuses": dict(self.statuses), "unlocalized": dict(self.unlocalized)}
        out.update(unlocalized_rate=self.unlocalized_rate, latency_p50_s=_percentile(lat, 0.5),
                   latency_p95_s=_percentile(lat, 0.95))
        return out

    def snapshot(self) -> dict[str, float]:
        """Flat counters (numbers only), for logging per-step differences: ``requests``, ``cache_hits``, ``calls``,
        ``retries``, ``fallbacks``, ``failures`` (all causes), one count per status (``ok``, ``no_error``,
        ``unlocalized``, ``failed``), ``unlocalized_rate`` and the latency percentiles."""
        with self._lock:
            out = {"requests": self.requests, "cache_hits": self.cache_hits, "calls": self.calls,
                   "retries": self.retries, "fallbacks": self.fallbacks, "failures": sum(self.failures.values())}
            out.update({s: self.statuses.get(s, 0) for s in ("ok", "no_error", "unlocalized", "failed")})
            lat = list(self.latencies_s)
        out.update(unlocalized_rate=self.unlocalized_rate, latency_p50_s=_percentile(lat, 0.5),
                   latency_p95_s=_percentile(lat, 0.95))
        return {k: float(v) for k, v in out.items()}

    def __repr__(self) -> str:
        d = self.to_dict()
        return (f"OracleStats(requests={d['requests']}, cache_hits={d['cache_hits']}, calls={d['calls']}, "
                f"retries={d['retries']}, failures={d['failures']}, fallbacks={d['fallbacks']}, "
                f"statuses={d['statuses']}, unlocalized_rate={d['unlocalized_rate']:.3f}, "
                f"p50={d['latency_p50_s']:.3f}s, p95={d['latency_p95_s']:.3f}s)")
