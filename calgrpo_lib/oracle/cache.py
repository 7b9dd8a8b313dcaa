"""A persistent cache of judge replies: one SQLite file in WAL mode, safe to share between processes.

The key is a SHA-256 over (backend, model, prompt version, question, reference, response), so a new model, a new
prompt or few-shot file, or any change of the inputs misses. The value is the backend's *raw reply text*; it is
parsed and checked again on every hit, so a change of the validation rules applies to cached replies too. No API
key is part of a key or a value: the runner removes the key from a reply before storing it, and stores no reply
over ``OracleConfig.max_reply_chars`` (nor returns one stored earlier). Writers in several processes are
serialised by SQLite (``busy_timeout``); a ``path`` of ``":memory:"`` gives a private in-memory cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["ReplyCache", "cache_key"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY, backend TEXT, model TEXT, prompt_version TEXT, reply TEXT NOT NULL, created REAL)"""


def cache_key(backend: str, model: str, prompt_version: str, question: str, reference: str, response: str) -> str:
    """SHA-256 hex digest of the six fields (JSON-encoded, so no two field tuples collide)."""
    blob = json.dumps([backend, model, prompt_version, question, reference, response], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
    """``get(key)`` / ``put(key, reply, ...)`` on a SQLite file (created with its folder if missing)."""

    def __init__(self, path: str | os.PathLike = ":memory:", *, timeout_s: float = 30.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get(self, key: str) -> str | None:
        """The cached reply for ``key``, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, reply: str, *, backend: str = "", model: str = "", prompt_version: str = "") -> None:
        """Store ``reply`` under ``key`` (a second writer of the same key simply overwrites it)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                             (key, backend, model, prompt_version, reply, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def clear(self) -> None:
        """Delete every entry."""
        with self._lock:
            self._db.execute("DELETE FROM replies")

    def close(self) -> None:
        """Close the connection (the file stays)."""
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"ReplyCache(path={self.path!r})"
