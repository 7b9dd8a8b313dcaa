"""Counters for everything an oracle does: :class:`OracleStats` (thread-safe).

- ``requests``: verdicts asked for; ``cache_hits``: answered from the cache; ``calls``: backend calls made (one
  per cache miss, however many HTTP attempts it took); ``retries``: extra attempts, all made by the runner (the
  SDKs' own retries are off), also by the cause of the fault retried (``retry_causes``); ``fallbacks``: verdicts
  produced by the fallback after a failure; ``abandoned``: calls the batch stopped waiting for (per-call
  ``timeout`` or batch ``deadline``, running or still queued);
- ``failures``: failed calls by cause (``timeout``, ``deadline``, ``http_503``, ``bad_response``,
  ``reply_too_large``, ``quota_exhausted``, ...);
- ``statuses``: verdicts by status; ``unlocalized``: unlocalized verdicts by cause;
- ``stopped``: the cause that stops all calls of the oracle (``"quota_exhausted"``), or ``""``;
- ``answered_by``: verdicts by the stage that gave them, for oracles made of stages (a
  :class:`~calgrpo_lib.oracle.cascade.CascadeOracle`: ``checker`` or ``judge``); empty for a single backend;
- latency percentiles over the backend calls (cache hits excluded).

Two views: :meth:`OracleStats.snapshot` (flat numbers; a training step logs the difference of two) and
:meth:`OracleStats.summary` (the faults of a whole run, for its end-of-training report).
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["OracleStats", "COUNTERS"]

COUNTERS = ("requests", "cache_hits", "calls", "retries", "fallbacks", "abandoned")


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
        """Set every counter back to zero (and clear ``stopped``)."""
        with self._lock:
            self.requests = self.cache_hits = self.calls = self.retries = self.fallbacks = self.abandoned = 0
            self.failures: Counter[str] = Counter()
            self.retry_causes: Counter[str] = Counter()
            self.statuses: Counter[str] = Counter()
            self.unlocalized: Counter[str] = Counter()
            self.latencies_s: list[float] = []
            self.answered_by: Counter[str] = Counter()
            self.stopped = ""

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (one of :data:`COUNTERS`)."""
        if name not in COUNTERS:
            raise ValueError(f"name={name!r}; allowed: {', '.join(map(repr, COUNTERS))}")
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def retry(self, cause: str) -> None:
        """Count one retry after a fault with this ``cause``."""
        with self._lock:
            self.retries += 1
            self.retry_causes[cause] += 1

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

    def answered(self, stage: str, n: int = 1) -> None:
        """Count ``n`` verdicts given by ``stage`` (a cascade's ``checker`` or ``judge``)."""
        with self._lock:
            self.answered_by[stage] += n

    def include_calls(self, other: OracleStats, before: dict) -> None:
        """Add the backend work ``other`` did since ``before`` (its :meth:`to_dict` then, with ``latency_count``
        the length of its latency list then): calls, cache hits, retries (and their causes), fallbacks, abandoned
        calls, failures by cause and the new latencies. Its verdict counts are not added: an oracle made of stages
        counts the verdicts it hands out itself."""
        now = other.to_dict()
        new_latencies = other.latencies_s[before.get("latency_count", 0):]
        with self._lock:
            for k in COUNTERS[1:]:  # requests are counted by the outer oracle
                setattr(self, k, getattr(self, k) + now[k] - before.get(k, 0))
            for mine, key in ((self.failures, "failures"), (self.retry_causes, "retry_causes")):
                for cause, n in now[key].items():
                    if n - before.get(key, {}).get(cause, 0):
                        mine[cause] += n - before.get(key, {}).get(cause, 0)
            self.latencies_s.extend(new_latencies)

    def latency(self, seconds: float) -> None:
        """Record the wall time of one backend call."""
        with self._lock:
            self.latencies_s.append(seconds)

    def stop(self, cause: str) -> None:
        """Set (``"quota_exhausted"``) or clear (``""``) the cause that stops all calls."""
        with self._lock:
            self.stopped = cause

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
            out = {k: getattr(self, k) for k in COUNTERS}
            out.update(failures=dict(self.failures), retry_causes=dict(self.retry_causes),
                       statuses=dict(self.statuses), unlocalized=dict(self.unlocalized),
                       answered_by=dict(self.answered_by), stopped=self.stopped, latency_count=len(lat))
        out.update(unlocalized_rate=self.unlocalized_rate, latency_p50_s=_percentile(lat, 0.5),
                   latency_p95_s=_percentile(lat, 0.95))
        return out

    def snapshot(self) -> dict[str, float]:
        """Flat counters (numbers only), for logging per-step differences (``after[k] - before.get(k, 0)``).

        Always: :data:`COUNTERS` (``requests``, ``cache_hits``, ``calls``, ``retries``, ``fallbacks``,
        ``abandoned``), ``failures`` (all causes), one count per status (``ok``, ``no_error``, ``unlocalized``,
        ``failed``), ``stopped`` (1.0 while a quota stop is in force, else 0.0: a state, not a count),
        ``unlocalized_rate`` and the latency percentiles. Plus, for every cause seen so far,
        ``failures_<cause>``, ``retries_<cause>`` and ``unlocalized_<cause>`` (e.g. ``failures_http_503``), and
        ``answered_by_<stage>`` for every stage that answered (a cascade's ``checker`` / ``judge``)."""
        with self._lock:
            out = {k: getattr(self, k) for k in COUNTERS}
            out["failures"] = sum(self.failures.values())
            out.update({s: self.statuses.get(s, 0) for s in ("ok", "no_error", "unlocalized", "failed")})
            for name, counts in (("failures", self.failures), ("retries", self.retry_causes),
                                 ("unlocalized", self.unlocalized), ("answered_by", self.answered_by)):
                out.update({f"{name}_{cause or 'unknown'}": n for cause, n in counts.items()})
            out["stopped"] = 1 if self.stopped else 0
            lat = list(self.latencies_s)
        out.update(unlocalized_rate=self.unlocalized_rate, latency_p50_s=_percentile(lat, 0.5),
                   latency_p95_s=_percentile(lat, 0.95))
        return {k: float(v) for k, v in out.items()}

    def step_counts(self, before: dict[str, float]) -> dict[str, float]:
        """What happened since ``before`` (an earlier :meth:`snapshot`), for a training step's metrics: ``calls``,
        ``cache_hits``, ``failures``, ``unlocalized``, ``retries``, ``fallbacks``, ``abandoned`` (differences,
        always present), every ``failures_<cause>`` / ``retries_<cause>`` / ``unlocalized_<cause>`` /
        ``answered_by_<stage>`` whose difference is not zero, and ``stopped`` (the state now, 0.0 or 1.0)."""
        after = self.snapshot()
        fixed = ("calls", "cache_hits", "failures", "unlocalized", "retries", "fallbacks", "abandoned")
        out = {k: after[k] - before.get(k, 0.0) for k in fixed}
        out.update({k: v - before.get(k, 0.0) for k, v in after.items()
                    if k.startswith(("failures_", "retries_", "unlocalized_", "answered_by_"))
                    and k != "unlocalized_rate" and v != before.get(k, 0.0)})
        out["stopped"] = after["stopped"]
        return out

    def summary(self) -> dict:
        """The faults of the run so far, for an end-of-training report: ``calls``, ``cache_hits``, ``retries``,
        ``fallbacks``, ``abandoned``, ``failures`` (total) and ``failures_by_cause``, ``retries_by_cause``,
        ``unlocalized`` (total) and ``unlocalized_by_cause`` (dicts, largest first), ``answered_by`` (verdicts by
        stage, for a cascade; else empty), ``stopped`` (the cause of a quota stop in force, or ``""``) and the
        latency percentiles."""
        d = self.to_dict()

        def ranked(counts: dict) -> dict:
            return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

        return {"calls": d["calls"], "cache_hits": d["cache_hits"], "retries": d["retries"],
                "fallbacks": d["fallbacks"], "abandoned": d["abandoned"], "failures": sum(d["failures"].values()),
                "failures_by_cause": ranked(d["failures"]), "retries_by_cause": ranked(d["retry_causes"]),
                "unlocalized": sum(d["unlocalized"].values()), "unlocalized_by_cause": ranked(d["unlocalized"]),
                "answered_by": ranked(d["answered_by"]), "stopped": d["stopped"],
                "latency_p50_s": d["latency_p50_s"], "latency_p95_s": d["latency_p95_s"]}

    def __repr__(self) -> str:
        d = self.to_dict()
        return (f"OracleStats(requests={d['requests']}, cache_hits={d['cache_hits']}, calls={d['calls']}, "
                f"retries={d['retries']}, failures={d['failures']}, fallbacks={d['fallbacks']}, "
                f"abandoned={d['abandoned']}, statuses={d['statuses']}, stopped={d['stopped']!r}, "
                f"unlocalized_rate={d['unlocalized_rate']:.3f}, "
                f"p50={d['latency_p50_s']:.3f}s, p95={d['latency_p95_s']:.3f}s)")
