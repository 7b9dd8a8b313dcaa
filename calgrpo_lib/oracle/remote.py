"""What the remote judges share: the classification of HTTP faults and the API key.

**HTTP faults** are classified once, by :func:`classify_http`, so that every remote backend retries, stops and
counts the same way:

- 408, 429 and 5xx are retryable; a 429 whose body names a *per-day* quota raises :class:`QuotaExhausted`
  instead, which stops all further calls to that backend (waiting a few seconds will not help);
- other 4xx (bad request, bad key, unknown model) are not retryable;
- on a 429 or 503 the server's suggested wait becomes ``retry_after_s``: the larger of the ``Retry-After``
  header (seconds, or an HTTP date; :func:`retry_after_s`) and Google's ``RetryInfo.retryDelay`` in the body
  (:func:`retry_delay_s`). The runner waits at least that long before the next attempt, and fails the call at
  once when the wait would end past its deadline.

**API keys** are found in the environment or a ``.env`` file and held so that they never reach a repr, a log line,
an exception message or the cache: :func:`resolve_api_key` looks at the given names in ``os.environ``, then in
``.env`` files (the current folder and its parents). A :class:`Secret` prints as ``Secret('****')``; :func:`redact`
removes a key from any text (used on every backend error message before it is stored, counted or logged).
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .runner import BackendError, QuotaExhausted

__all__ = ["classify_http", "is_daily_quota", "retry_delay_s", "retry_after_s", "RETRYABLE_HTTP", "Secret",
           "resolve_api_key", "read_dotenv", "redact"]

RETRYABLE_HTTP = (408, 429, 500, 502, 503, 504)
_DAILY = re.compile(r"per[\s_-]?day|perday|daily", re.IGNORECASE)
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


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


def retry_after_s(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The wait an HTTP ``Retry-After`` header asks for, in seconds (>= 0): its delay-seconds form (``"7"``) or
    its HTTP-date form (``"Wed, 21 Oct 2026 07:28:00 GMT"``, measured from ``now``, default the clock); ``None``
    when the header is absent or unreadable. ``headers`` may be any mapping (names are matched ignoring case)."""
    if not headers:
        return None
    value = next((str(v) for k, v in headers.items() if str(k).lower() == "retry-after"), "").strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_http(status: int, body: Any = None, message: str = "",
                  headers: Mapping[str, str] | None = None) -> BackendError:
    """The :class:`BackendError` for an HTTP error ``status`` with response ``body`` and ``headers`` (see the
    module docstring: retryable or not, daily quota, the server's suggested wait on a 429 / 503)."""
    if status == 429 and is_daily_quota(body):
        return QuotaExhausted(message or "daily quota exhausted", status=status)
    retryable = status in RETRYABLE_HTTP or 500 <= status < 600
    hints = [h for h in (retry_delay_s(body), retry_after_s(headers)) if h is not None] if status in (429, 503) else []
    return BackendError(f"http_{status}", message, retryable=retryable, status=status,
                        retry_after_s=max(hints) if hints else None)


# --------------------------------------------------------------------------------------------- API keys


class Secret:
    """A string that never shows itself: ``repr``/``str`` give ``Secret('****')``; ``reveal()`` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("api key is empty or not a str; allowed: a non-empty str")
        self._value = value.strip()

    def reveal(self) -> str:
        """The key itself, for handing to a client library (and nowhere else)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __reduce__(self):  # never pickled (e.g. into a cache or a subprocess)
        raise TypeError("Secret cannot be pickled")


def read_dotenv(path: str | os.PathLike) -> dict[str, str]:
    """``KEY=value`` pairs of a ``.env`` file (``export`` prefixes, quotes and ``#`` comments allowed)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        out[name.strip()] = value
    return out


def _dotenv_files(start: Path) -> list[Path]:
    return [d / ".env" for d in (start, *start.parents) if (d / ".env").is_file()]


def resolve_api_key(names: Sequence[str], dotenv: str | os.PathLike | None = None) -> Secret | None:
    """The first non-empty key among ``names``: environment first, then ``dotenv`` (a file) or the nearest ``.env``
    files from the current folder upwards. ``None`` when there is none."""
    for name in names:
        if os.environ.get(name, "").strip():
            return Secret(os.environ[name])
    files = [Path(dotenv)] if dotenv is not None else _dotenv_files(Path.cwd())
    for f in files:
        if not f.is_file():
            continue
        values = read_dotenv(f)
        for name in names:
            if values.get(name, "").strip():
                return Secret(values[name])
    return None


def redact(text: str, secret: Secret | None) -> str:
    """``text`` with every occurrence of the key replaced by ``****``."""
    if secret is None:
        return text
    return text.replace(secret.reveal(), "****")
