"""API keys: found in the environment or a ``.env`` file, held so that they never reach a repr, a log line, an
exception message or the cache.

:func:`resolve_api_key` looks at the given names in ``os.environ``, then in ``.env`` files (the current folder and
its parents). A :class:`Secret` prints as ``Secret('****')``; :func:`redact` removes a key from any text (used on
every backend error message before it is stored, counted or logged).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Secret", "resolve_api_key", "read_dotenv", "redact"]


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
