"""The oracle runner: :class:`Oracle`, the base class of every backend, its settings (:class:`OracleConfig`) and
the faults a backend raises (:class:`BackendError`, :class:`QuotaExhausted`).

A backend implements one method, ``_call(item, timeout_s) -> str``, returning the judge's raw reply (JSON text)
or raising :class:`BackendError`. Everything else happens here, the same way for every backend:

1. **cache**: replies are looked up by ``(backend, model, prompt version, inputs)`` in an optional
   :class:`ReplyCache`; identical items of one batch are judged once;
2. **concurrency**: misses run on a thread pool of ``config.concurrency`` workers;
3. **timeout**: a call that runs past ``config.timeout_s`` (retries included) fails with cause ``timeout``; the
   batch does not wait for it (a late reply still goes into the cache);
4. **retries**: retryable faults are tried again with exponential backoff and jitter;
5. **quota**: a daily-quota error stops every later call to this oracle (until :meth:`Oracle.resume`);
6. **fallback**: a failed call gives the verdict of the oracle's ``fallback`` oracle (typically the offline
   ``StepCheckOracle()``, handed in by whoever builds the oracle), else a ``failed`` verdict;
7. **validation**: the reply is parsed and its quote located in the response (:func:`localize`);
8. **counting**: every outcome goes into :class:`OracleStats`.

:meth:`Oracle.judge_batch` (the call training uses) never raises for a backend fault. A backend raises
:class:`BackendError` with a short ``cause`` (the key under which :class:`OracleStats` counts it) and ``retryable``
(whether the runner may try again); :class:`QuotaExhausted` stops all further calls to that backend.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from ..validation import check_choice, check_float, check_int
from .cache import ReplyCache, cache_key
from .stats import OracleStats
from .verdict import JudgeItem, ReplyError, Verdict, as_item, localize, parse_reply

__all__ = ["Oracle", "OracleConfig", "FALLBACKS", "BackendError", "QuotaExhausted"]

log = logging.getLogger("calgrpo.oracle")
log.addHandler(logging.NullHandler())  # a library: failures are counted in OracleStats; logging is the app's choice
_POLL_S = 0.05
FALLBACKS = ("sequence", "stepcheck")


@dataclass(frozen=True)
class OracleConfig:
    """How an oracle runs a batch.

    - ``concurrency``: backend calls in flight at once (a thread pool), 1-256;
    - ``timeout_s``: wall-clock limit of one call, retries included; the call then fails with cause ``timeout``;
    - ``retries``: extra attempts after a retryable fault (408, 429 that is not a daily quota, 5xx, network);
      waits grow as ``backoff_s * 2**k`` (capped at ``backoff_max_s``) times a random factor in ``[1, 1+jitter]``;
    - ``fallback``: what a failed call returns: ``"sequence"`` a ``failed`` verdict (training uses sequence-level
      credit for that response) unless the oracle was built with a ``fallback`` oracle, whose verdict it then
      returns; ``"stepcheck"`` insists on one: the oracle must be built with ``fallback=StepCheckOracle()`` (or
      another oracle), else it raises ``ValueError``;
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


class BackendError(Exception):
    """A call to a judge backend failed. ``cause`` is a short label such as ``http_503`` or ``timeout``."""

    def __init__(self, cause: str, message: str = "", *, retryable: bool = False, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{cause}: {message}" if message else cause)
        self.cause = cause
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class QuotaExhausted(BackendError):
    """The backend's daily quota is used up: no call to it can succeed before the quota resets."""

    def __init__(self, message: str = "", status: int | None = 429) -> None:
        super().__init__("quota_exhausted", message, retryable=False, status=status)


class Oracle(ABC):
    """Base class of the credit-assignment oracles (see the module docstring for what it does around a call).

    ``fallback``, when given, is the oracle that judges an item whenever a call of this one fails (its verdict
    carries ``fallback_from``, the cause of the failure, and counts in ``stats.fallbacks``)."""

    backend: str = "base"
    inline: bool = False  # True for cheap local backends: run in the caller's thread, no pool, no timeout

    def __init__(self, *, config: OracleConfig | None = None, cache: ReplyCache | str | Path | None = None,
                 fallback: Oracle | None = None) -> None:
        self.config = config if config is not None else OracleConfig()
        if not isinstance(self.config, OracleConfig):
            raise TypeError(f"config has type {type(self.config).__name__}; allowed: OracleConfig or None")
        self.cache = ReplyCache(cache) if isinstance(cache, (str, Path)) else cache
        if self.cache is not None and not isinstance(self.cache, ReplyCache):
            raise TypeError(f"cache has type {type(self.cache).__name__}; allowed: ReplyCache, a path, or None")
        if fallback is not None and not isinstance(fallback, Oracle):
            raise TypeError(f"fallback has type {type(fallback).__name__}; allowed: an Oracle (e.g. StepCheckOracle()) "
                            "or None")
        if fallback is None and self.config.fallback == "stepcheck":
            raise ValueError("config.fallback='stepcheck' but no fallback oracle was given; allowed: pass "
                             "fallback=StepCheckOracle(), or config.fallback='sequence'")
        self.fallback = fallback  # the oracle that judges an item when a call of this one fails, or None
        self.stats = OracleStats()
        self.stopped: str = ""  # the cause that stopped all calls (e.g. "quota_exhausted"), or ""
        self._rng = random.Random()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # ---------------------------------------------------------------------------- to implement / override
    @property
    def model(self) -> str:
        """The judge model's id (part of the cache key)."""
        return ""

    @property
    def prompt_version(self) -> str:
        """The prompt's version label (part of the cache key)."""
        return ""

    @abstractmethod
    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        """One attempt: the judge's raw reply text for ``item``, or raise :class:`BackendError`."""

    def _redact(self, text: str) -> str:
        """Remove secrets from a message before it is logged (backends with an API key override this)."""
        return text

    # ------------------------------------------------------------------------------------------ public API
    def judge(self, question: str, reference: str, response: str) -> Verdict:
        """The :class:`Verdict` on one response (never raises for a backend fault)."""
        return self.judge_batch([JudgeItem(question, reference, response)])[0]

    def judge_batch(self, items: Sequence[JudgeItem | tuple | dict]) -> list[Verdict]:
        """Verdicts for many items, in order: cached ones at once, the others concurrently. Never raises for a
        backend fault (timeouts, HTTP errors, quota, unreadable replies become ``failed``/``unlocalized``)."""
        items = [as_item(x) for x in items]
        out: list[Verdict | None] = [None] * len(items)
        misses: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            self.stats.add("requests")
            key = self.cache_key(item)
            raw = self._cache_get(key) if key not in misses else None
            if raw is not None or key in misses:
                self.stats.add("cache_hits")
            if raw is not None:
                out[i] = self._verdict(item, raw, cached=True)
            else:
                misses.setdefault(key, []).append(i)
        for key, result in self._run([(key, items[idx[0]]) for key, idx in misses.items()]).items():
            for n, i in enumerate(misses[key]):
                out[i] = self._outcome(items[i], result, cached=n > 0)
        for v in out:
            self.stats.verdict(v.status, v.cause)
        return out  # type: ignore[return-value]

    def cache_key(self, item: JudgeItem) -> str:
        """The cache key of ``item`` for this backend, model and prompt version."""
        return cache_key(self.backend, self.model, self.prompt_version, item.question, item.reference, item.response)

    def resume(self) -> None:
        """Allow calls again after a daily-quota stop (e.g. the next day)."""
        self.stopped = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, config={self.config!r}, cache={self.cache!r})"

    # ------------------------------------------------------------------------------------------ internals
    def _cache_get(self, key: str) -> str | None:
        if self.cache is None:
            return None
        try:
            return self.cache.get(key)
        except sqlite3.Error as e:
            log.warning("oracle cache read failed (%s); treating as a miss", type(e).__name__)
            return None

    def _cache_put(self, key: str, raw: str) -> None:
        if self.cache is None:
            return
        try:
            parse_reply(raw)
        except ReplyError:
            return  # an unreadable reply is not worth keeping: a later call may do better
        try:
            self.cache.put(key, raw, backend=self.backend, model=self.model, prompt_version=self.prompt_version)
        except sqlite3.Error as e:
            log.warning("oracle cache write failed (%s)", type(e).__name__)

    def _verdict(self, item: JudgeItem, raw: str, cached: bool) -> Verdict:
        meta = {"backend": self.backend, "model": self.model, "cached": cached}
        try:
            reply = parse_reply(raw)
        except ReplyError:
            return Verdict("unlocalized", cause="malformed_reply", **meta)
        return localize(item, reply, fuzzy_threshold=self.config.fuzzy_threshold, **meta)

    def _outcome(self, item: JudgeItem, result: str | BackendError, cached: bool) -> Verdict:
        if isinstance(result, str):
            return self._verdict(item, result, cached)
        if self.fallback is not None:
            self.stats.add("fallbacks")
            return replace(self.fallback.judge_batch([item])[0], fallback_from=result.cause)
        return Verdict("failed", cause=result.cause, backend=self.backend, model=self.model)

    def _backoff_s(self, attempt: int, hint: float | None) -> float:
        c = self.config
        delay = min(c.backoff_max_s, c.backoff_s * 2 ** attempt) * (1.0 + c.jitter * self._rng.random())
        return min(c.backoff_max_s, max(delay, hint or 0.0))

    def _attempts(self, item: JudgeItem, deadline: float) -> str:
        """Call the backend, retrying retryable faults until the deadline."""
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError("timeout", "no time left for another attempt")
            try:
                return self._call(item, remaining)
            except QuotaExhausted:
                self.stopped = "quota_exhausted"
                raise
            except BackendError as e:
                delay = self._backoff_s(attempt, e.retry_after_s)
                if not e.retryable or attempt >= self.config.retries or time.monotonic() + delay >= deadline:
                    raise
                log.info("oracle %s: %s, retry %d in %.2fs", self.backend, self._redact(str(e)), attempt + 1, delay)
                self.stats.add("retries")
                time.sleep(delay)
                attempt += 1

    def _work(self, key: str, item: JudgeItem, started: dict[str, float],
              abandoned: set[str] | None = None) -> str | BackendError:
        """One backend call with its retries, in a worker thread; returns the raw reply or the error."""
        started[key] = t0 = time.monotonic()
        if self.stopped:
            return BackendError(self.stopped, "backend stopped earlier")
        self.stats.add("calls")
        try:
            raw = self._attempts(item, t0 + self.config.timeout_s)
        except BackendError as e:
            return e
        except Exception as e:  # a bug or an unexpected library error must not take training down
            return BackendError(f"error_{type(e).__name__}", str(e))
        finally:
            if abandoned is None or key not in abandoned:  # a timed-out call was recorded at its deadline
                self.stats.latency(time.monotonic() - t0)
        if not isinstance(raw, str):
            return BackendError("malformed_reply", f"backend returned {type(raw).__name__}, not str")
        self._cache_put(key, raw)
        return raw

    def _record(self, result: str | BackendError) -> str | BackendError:
        if isinstance(result, BackendError):
            self.stats.failure(result.cause)
            log.warning("oracle %s call failed: %s", self.backend, self._redact(str(result)))
        return result

    def _run(self, jobs: list[tuple[str, JudgeItem]]) -> dict[str, str | BackendError]:
        """Run the backend calls of ``jobs`` (key, item): inline or on a pool, with the per-call timeout."""
        started: dict[str, float] = {}
        if not jobs:
            return {}
        if self.inline:
            return {key: self._record(self._work(key, item, started)) for key, item in jobs}
        results: dict[str, str | BackendError] = {}
        pool = self._executor()
        abandoned: set[str] = set()
        futures = {pool.submit(self._work, key, item, started, abandoned): key for key, item in jobs}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                for f in done:
                    results[futures[f]] = self._record(f.result())
                now = time.monotonic()
                for f in [f for f in pending if now - started.get(futures[f], now) > self.config.timeout_s + _POLL_S]:
                    pending.discard(f)
                    abandoned.add(futures[f])
                    self.stats.latency(now - started[futures[f]])
                    results[futures[f]] = self._record(BackendError("timeout", f"no reply in {self.config.timeout_s}s"))
        finally:
            for f in pending:
                f.cancel()
            if abandoned:  # threads stuck in timed-out calls: give the next batch a fresh pool
                self.close()
        return results

    def _executor(self) -> ThreadPoolExecutor:
        """The worker pool, kept between batches (starting 32 threads per batch costs milliseconds)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.config.concurrency,
                                                thread_name_prefix=f"oracle-{self.backend}")
            return self._pool

    def close(self) -> None:
        """Let the worker threads go (they also end with the interpreter); a later batch starts new ones."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
