"""The oracle runner: :class:`Oracle`, the base class of every backend, its settings (:class:`OracleConfig`) and
the faults a backend raises (:class:`BackendError`, :class:`QuotaExhausted`).

A backend implements one method, ``_call(item, timeout_s) -> str``, returning the judge's raw reply (JSON text)
or raising :class:`BackendError`; ``timeout_s`` is the time left for that one attempt, and the backend must not
retry by itself (the runner does, within the deadlines). Everything else happens here, the same way for every
backend:

1. **cache**: replies are looked up by ``(backend, model, prompt version, inputs)`` in an optional
   :class:`ReplyCache`; identical items of one batch are judged once;
2. **concurrency**: misses run on a thread pool of ``config.concurrency`` workers;
3. **deadlines**: a call may run ``config.timeout_s`` from when a worker starts it (retries included), then fails
   with cause ``timeout``; the whole batch may run ``config.batch_timeout_s`` (default ``2 * timeout_s``) from the
   start of :meth:`Oracle.judge_batch`: every call not finished by then, running or still queued, fails with
   cause ``deadline``. Each attempt is given only the time left to the nearer of the two, so a hung server cannot
   hold a worker past them; a call the batch stopped waiting for is *abandoned* (``stats.abandoned``): it starts
   no further attempt and its sleeps end at once. :meth:`Oracle.judge_batch` returns by the batch deadline plus
   a poll interval (50 ms) whatever the backend does;
4. **retries**: retryable faults are tried again with exponential backoff and jitter, or after the server's
   suggested wait (``Retry-After`` header or ``retryDelay`` in the body, see :func:`classify_http`) when that is
   longer; a wait that would end past the deadline is not started: the call fails at once with that fault;
5. **quota**: a daily-quota error stops every later call to this oracle (until :meth:`Oracle.resume`);
6. **reply checks**: a reply longer than ``config.max_reply_chars`` fails with cause ``reply_too_large`` before
   it is cached or parsed; the API key is removed from a reply (:meth:`Oracle._redact`) before it is cached or
   parsed; a cached reply over the limit counts as a miss;
7. **fallback**: a failed call gives the verdict of the oracle's ``fallback`` oracle (typically the offline
   ``StepCheckOracle()``, handed in by whoever builds the oracle; one batch for all the failed items, after the
   deadline, so a slow fallback adds its own batch deadline), else a ``failed`` verdict;
8. **validation**: the reply is parsed and its quote located in the response (:func:`localize`);
9. **counting**: every outcome goes into :class:`OracleStats` (failures and retries by cause, fallbacks,
   abandoned calls, the quota stop).

:meth:`Oracle.judge_batch` (the call training uses) never raises for a backend fault. A backend raises
:class:`BackendError` with a short ``cause`` (the key under which :class:`OracleStats` counts it), ``retryable``
(whether the runner may try again) and ``retry_after_s`` (the server's suggested wait, if any);
:class:`QuotaExhausted` stops all further calls to that backend.
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
    - ``timeout_s``: wall-clock limit of one call from when a worker starts it, retries included; the call then
      fails with cause ``timeout``;
    - ``batch_timeout_s``: wall-clock limit of one :meth:`Oracle.judge_batch`, from its start; every call not
      finished by then (running or queued) fails with cause ``deadline``. ``None`` (the default) means
      ``2 * timeout_s``: room for the slowest call plus the queue behind it; raise it for batches much larger
      than ``concurrency`` of a slow judge, lower it to bound a training step's oracle time;
    - ``retries``: extra attempts after a retryable fault (408, 429 that is not a daily quota, 5xx, timeouts,
      network); waits grow as ``backoff_s * 2**k`` (capped at ``backoff_max_s``) times a random factor in
      ``[1, 1+jitter]``, or the server's suggested wait when longer (not capped, but never past a deadline);
    - ``max_reply_chars``: a reply longer than this fails with cause ``reply_too_large`` (not cached, not parsed);
      a verdict reply is a few hundred characters;
    - ``fallback``: what a failed call returns: ``"sequence"`` a ``failed`` verdict (training uses sequence-level
      credit for that response) unless the oracle was built with a ``fallback`` oracle, whose verdict it then
      returns; ``"stepcheck"`` insists on one: the oracle must be built with ``fallback=StepCheckOracle()`` (or
      another oracle), else it raises ``ValueError``;
    - ``fuzzy_threshold``: minimum similarity (0-100) for a quote matched approximately.
    """

    concurrency: int = 8
    timeout_s: float = 60.0
    batch_timeout_s: float | None = None
    retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    jitter: float = 0.5
    max_reply_chars: int = 20_000
    fallback: str = "sequence"
    fuzzy_threshold: float = 85.0

    def __post_init__(self) -> None:
        check_int("concurrency", self.concurrency, 1, 256)
        check_float("timeout_s", self.timeout_s, 0.0, None, low_open=True)
        if self.batch_timeout_s is not None:
            check_float("batch_timeout_s", self.batch_timeout_s, 0.0, None, low_open=True)
        check_int("retries", self.retries, 0, 20)
        check_float("backoff_s", self.backoff_s, 0.0)
        check_float("backoff_max_s", self.backoff_max_s, self.backoff_s)
        check_float("jitter", self.jitter, 0.0, 1.0)
        check_int("max_reply_chars", self.max_reply_chars, 1, None)
        check_choice("fallback", self.fallback, FALLBACKS)
        check_float("fuzzy_threshold", self.fuzzy_threshold, 0.0, 100.0)

    @property
    def batch_deadline_s(self) -> float:
        """The batch limit in force: ``batch_timeout_s``, or ``2 * timeout_s`` when that is ``None``."""
        return self.batch_timeout_s if self.batch_timeout_s is not None else 2.0 * self.timeout_s


class BackendError(Exception):
    """A call to a judge backend failed. ``cause`` is a short label such as ``http_503`` or ``timeout``;
    ``retry_after_s`` is the server's suggested wait before another attempt, if it sent one."""

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
    inline: bool = False  # True for cheap local backends: in the caller's thread, no pool (deadline checked per call)

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
        """One attempt within ``timeout_s`` seconds: the judge's raw reply text for ``item``, or raise
        :class:`BackendError`."""

    def _redact(self, text: str) -> str:
        """Remove secrets from a text (error messages, replies) before it is logged or stored (backends with an
        API key override this)."""
        return text

    # ------------------------------------------------------------------------------------------ public API
    @property
    def stopped(self) -> str:
        """The cause that stopped all calls (e.g. ``"quota_exhausted"``), or ``""``."""
        return self.stats.stopped

    def judge(self, question: str, reference: str, response: str) -> Verdict:
        """The :class:`Verdict` on one response (never raises for a backend fault)."""
        return self.judge_batch([JudgeItem(question, reference, response)])[0]

    def judge_batch(self, items: Sequence[JudgeItem | tuple | dict]) -> list[Verdict]:
        """Verdicts for many items, in order: cached ones at once, the others concurrently, all within the batch
        deadline (``config.batch_deadline_s`` from now). Never raises for a backend fault (timeouts, HTTP errors,
        quota, unreadable replies become ``failed``/``unlocalized``, or the fallback's verdicts)."""
        deadline = time.monotonic() + self.config.batch_deadline_s
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
        failed: list[tuple[int, str]] = []  # (index, cause) of the items whose call failed
        for key, result in self._run([(key, items[idx[0]]) for key, idx in misses.items()], deadline).items():
            for n, i in enumerate(misses[key]):
                if isinstance(result, str):
                    out[i] = self._verdict(items[i], result, cached=n > 0)
                else:
                    failed.append((i, result.cause))
        self._fail(items, failed, out)
        for v in out:
            self.stats.verdict(v.status, v.cause)
        return out  # type: ignore[return-value]

    def cache_key(self, item: JudgeItem) -> str:
        """The cache key of ``item`` for this backend, model and prompt version."""
        return cache_key(self.backend, self.model, self.prompt_version, item.question, item.reference, item.response)

    def resume(self) -> None:
        """Allow calls again after a daily-quota stop (e.g. the next day)."""
        self.stats.stop("")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, config={self.config!r}, cache={self.cache!r})"

    # ------------------------------------------------------------------------------------------ internals
    def _cache_get(self, key: str) -> str | None:
        if self.cache is None:
            return None
        try:
            raw = self.cache.get(key)
        except sqlite3.Error as e:
            log.warning("oracle cache read failed (%s); treating as a miss", type(e).__name__)
            return None
        return raw if raw is None or len(raw) <= self.config.max_reply_chars else None  # an old oversized entry

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

    def _fail(self, items: list[JudgeItem], failed: list[tuple[int, str]], out: list[Verdict | None]) -> None:
        """The verdicts of the items whose call failed: the fallback's (one batch for all), else ``failed``."""
        if failed and self.fallback is not None:
            self.stats.add("fallbacks", len(failed))
            verdicts = self.fallback.judge_batch([items[i] for i, _ in failed])
            for (i, cause), v in zip(failed, verdicts):
                out[i] = replace(v, fallback_from=cause)
            return
        for i, cause in failed:
            out[i] = Verdict("failed", cause=cause, backend=self.backend, model=self.model)

    def _backoff_s(self, attempt: int, hint: float | None) -> float:
        c = self.config
        delay = min(c.backoff_max_s, c.backoff_s * 2 ** attempt) * (1.0 + c.jitter * self._rng.random())
        return max(min(c.backoff_max_s, delay), hint or 0.0)  # the server's wait is honoured, up to the deadline

    def _attempts(self, item: JudgeItem, call_deadline: float, batch_deadline: float, gone: threading.Event) -> str:
        """Call the backend, retrying retryable faults until the nearer deadline or until the batch gives up on
        this call (``gone`` set)."""
        deadline = min(call_deadline, batch_deadline)
        cause, attempt = "deadline" if batch_deadline <= call_deadline else "timeout", 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(cause, "no time left for another attempt")
            try:
                return self._call(item, remaining)
            except QuotaExhausted:
                self.stats.stop("quota_exhausted")
                raise
            except BackendError as e:
                if e.cause == "timeout" and cause == "deadline":
                    raise BackendError("deadline", str(e)) from None  # the attempt had only the batch's time
                delay = self._backoff_s(attempt, e.retry_after_s)
                if (not e.retryable or attempt >= self.config.retries or gone.is_set()
                        or time.monotonic() + delay >= deadline):  # no waiting past a deadline: fail now
                    raise
                log.info("oracle %s: %s, retry %d in %.2fs", self.backend, self._redact(str(e)), attempt + 1, delay)
                self.stats.retry(e.cause)
                if gone.wait(delay):
                    raise
                attempt += 1

    def _work(self, key: str, item: JudgeItem, started: dict[str, float], gone: threading.Event,
              batch_deadline: float) -> str | BackendError:
        """One backend call with its retries, in a worker thread; returns the raw reply or the error."""
        started[key] = t0 = time.monotonic()
        if gone.is_set() or t0 >= batch_deadline:
            return BackendError("deadline", "the batch deadline passed before the call started")
        if self.stopped:
            return BackendError(self.stopped, "backend stopped earlier")
        self.stats.add("calls")
        try:
            raw = self._attempts(item, t0 + self.config.timeout_s, batch_deadline, gone)
        except BackendError as e:
            return e
        except Exception as e:  # a bug or an unexpected library error must not take training down
            return BackendError(f"error_{type(e).__name__}", self._redact(str(e)))
        finally:
            if not gone.is_set():  # an abandoned call was recorded when the batch gave up on it
                self.stats.latency(time.monotonic() - t0)
        if not isinstance(raw, str):
            return BackendError("malformed_reply", f"backend returned {type(raw).__name__}, not str")
        if len(raw) > self.config.max_reply_chars:
            return BackendError("reply_too_large", f"{len(raw)} chars; max_reply_chars={self.config.max_reply_chars}")
        raw = self._redact(raw)
        self._cache_put(key, raw)
        return raw

    def _record(self, result: str | BackendError) -> str | BackendError:
        if isinstance(result, BackendError):
            self.stats.failure(result.cause)
            log.warning("oracle %s call failed: %s", self.backend, self._redact(str(result)))
        return result

    def _run(self, jobs: list[tuple[str, JudgeItem]], deadline: float) -> dict[str, str | BackendError]:
        """Run the backend calls of ``jobs`` (key, item): inline or on a pool, within the per-call timeout and the
        batch ``deadline`` (a ``time.monotonic()`` value)."""
        started: dict[str, float] = {}
        gone = {key: threading.Event() for key, _ in jobs}
        if self.inline or not jobs:
            return {key: self._record(self._work(key, item, started, gone[key], deadline)) for key, item in jobs}
        results: dict[str, str | BackendError] = {}
        pool = self._executor()
        futures = {pool.submit(self._work, key, item, started, gone[key], deadline): key for key, item in jobs}
        pending, gave_up = set(futures), False
        try:
            while pending:
                done, pending = wait(pending, timeout=min(_POLL_S, max(0.0, deadline - time.monotonic())),
                                     return_when=FIRST_COMPLETED)
                for f in done:
                    results[futures[f]] = self._record(f.result())
                now = time.monotonic()
                for f in list(pending):
                    key, t = futures[f], started.get(futures[f])
                    if f.done() or (now < deadline and (t is None or now - t <= self.config.timeout_s + _POLL_S)):
                        continue  # a finished call is collected by the next wait
                    pending.discard(f)
                    gone[key].set()  # abandoned: the call starts no further attempt, and its waits end
                    f.cancel()  # a queued call never starts
                    gave_up = True
                    self.stats.add("abandoned")
                    if t is not None:
                        self.stats.latency(now - t)
                    results[key] = self._record(BackendError("deadline" if now >= deadline else "timeout",
                                                             "the batch stopped waiting for this call"))
        finally:
            for f in pending:
                f.cancel()
            if gave_up:  # threads may still sit in abandoned calls: give the next batch a fresh pool
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
