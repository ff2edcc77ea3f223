"""ContentCache: a content-addressed store in one SQLite file, for results that cost money or time.

Keys are sha256 of everything that determines a result (backend, model, prompt, sampling params,
input text), so a changed input is a new key and an unchanged one is a hit. Every `put` commits at
once: a killed process loses at most the item in flight, and the next run resumes from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    meta TEXT,
    created REAL NOT NULL
)
"""

# SQLite caps host parameters per statement; stay well below the oldest default (999).
_IN_CHUNK = 500


def content_key(*parts: Any) -> str:
    """sha256 over a canonical JSON encoding of `parts` (dict key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ContentCache:
    """A persistent key → bytes map with hit/miss counters. Safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)
        self._conn.commit()
        self.hits = 0
        self.misses = 0

    def close(self) -> None:
        with self._lock:
            # Fold the WAL back into the main file so DVC hashes one self-contained file.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    def __enter__(self) -> ContentCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def get(self, key: str) -> bytes | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Look up many keys in a few queries; counts a hit or a miss for each distinct key."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, bytes] = {}
        with self._lock:
            for i in range(0, len(unique), _IN_CHUNK):
                batch = unique[i : i + _IN_CHUNK]
                marks = ",".join("?" * len(batch))
                found.update(
                    self._conn.execute(f"SELECT key, value FROM items WHERE key IN ({marks})", batch).fetchall()
                )
            self.hits += len(found)
            self.misses += len(unique) - len(found)
        return found

    def put(self, key: str, value: bytes, meta: Mapping[str, Any] | None = None) -> None:
        self.put_many([(key, value, meta)])

    def put_many(self, items: Iterable[tuple[str, bytes, Mapping[str, Any] | None]]) -> None:
        """Store items in one transaction, committed before returning."""
        rows = [(k, sqlite3.Binary(v), json.dumps(m) if m is not None else None, time.time()) for k, v, m in items]
        if not rows:
            return
        with self._lock:
            with self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO items (key, value, meta, created) VALUES (?, ?, ?, ?)", rows
                )

    def get_json(self, key: str) -> Any | None:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)

    def put_json(self, key: str, obj: Any, meta: Mapping[str, Any] | None = None) -> None:
        self.put(key, json.dumps(obj, ensure_ascii=False).encode("utf-8"), meta)

    def delete(self, key: str) -> None:
        with self._lock:
            with self._conn:
                self._conn.execute("DELETE FROM items WHERE key = ?", (key,))
