"""Backend faults, classified once so that every backend retries, stops and counts the same way.

A backend raises :class:`BackendError` with a short ``cause`` (the key under which :class:`OracleStats` counts it)
and ``retryable`` (whether the runner may try again). HTTP answers are classified by :func:`classify_http`:

- 408, 429 and 5xx are retryable; a 429 whose body names a *per-day* quota raises :class:`QuotaExhausted`
  instead, which stops all further calls to that backend (waiting a few seconds will not help);
- other 4xx (bad request, bad key, unknown model) are not retryable.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["BackendError", "QuotaExhausted", "classify_http", "is_daily_quota", "retry_delay_s", "RETRYABLE_HTTP"]

RETRYABLE_HTTP = (408, 429, 500, 502, 503, 504)
_DAILY = re.compile(r"per[\s_-]?day|perday|daily", re.IGNORECASE)
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


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


def _as_json(body: Any) -> Any:
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


def is_daily_quota(body: Any) -> bool:
    """Whether an HTTP 429 body says a per-day quota is exhausted (Google's ``QuotaFailure`` details name quota ids
    such as ``GenerateRequestsPerDayPerProjectPerModel``; other servers say "daily" or "per day")."""
    body = _as_json(body)
    if isinstance(body, dict):
        err = body.get("error", body)
        details = err.get("details", []) if isinstance(err, dict) else []
        for d in details if isinstance(details, list) else []:
            for v in (d.get("violations", []) if isinstance(d, dict) else []):
                if isinstance(v, dict) and any(_DAILY.search(str(v.get(k, ""))) for k in ("quotaId", "quotaMetric")):
                    return True
        return bool(_DAILY.search(str(err.get("message", "")))) if isinstance(err, dict) else False
    return bool(_DAILY.search(str(body)))


def retry_delay_s(body: Any) -> float | None:
    """The server's suggested wait (Google ``RetryInfo.retryDelay`` such as ``"17s"``), if any."""
    body = _as_json(body)
    err = body.get("error", body) if isinstance(body, dict) else None
    details = err.get("details", []) if isinstance(err, dict) else []
    for d in details if isinstance(details, list) else []:
        m = _DELAY.match(str(d.get("retryDelay", ""))) if isinstance(d, dict) else None
        if m:
            return float(m.group(1))
    return None


def classify_http(status: int, body: Any = None, message: str = "") -> BackendError:
    """The :class:`BackendError` for an HTTP error ``status`` with response ``body``."""
    if status == 429 and is_daily_quota(body):
        return QuotaExhausted(message or "daily quota exhausted", status=status)
    retryable = status in RETRYABLE_HTTP or 500 <= status < 600
    return BackendError(f"http_{status}", message, retryable=retryable, status=status,
                        retry_after_s=retry_delay_s(body) if status == 429 else None)
