"""ContentCache: content-addressed rows (results that cost money or time) in a tracked SQLite file, landing
first in a per-user journal that nothing DVC does can reset.

Keys are sha256 of everything that determines a result (backend, model, prompt, sampling params, input text),
so a changed input is a new key and an unchanged one is a hit. Every `put` is committed at once to the
journal, `<cache home>/journal/<name of the tracked file>` (`cache_home`: $RAGTUNE_CACHE_DIR, else
$XDG_CACHE_HOME/ragtune or ~/.cache/ragtune), outside the repository: `dvc exp run` checks the tracked caches
out to their dvc.lock versions before it runs, `--temp` and `--queue` run in a copy of the repository, and a
killed stage never reaches its end, yet each finds there every row paid for. Because keys say everything,
one journal serves every project of the user.

Lookups read the tracked file and the journal; where both hold a key, a row stored as failed (meta `status:
failed`, as the LLM runner stores failures) never hides one that is not, and otherwise the newer row wins.
At close, the rows this run made or took from the journal are merged into the tracked file, which DVC
versions and `dvc push` / `dvc pull` share with the team. The tracked file is never written in place: it is
copied, merged and renamed over (a read-only or DVC-linked file, a full disk or a kill leave the last version
whole). `ContentCache(":memory:")` keeps rows in memory only; `read_only=True` looks up both files and
writes neither (a command that only reports, such as `ragtune estimate`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import RagtuneError

log = logging.getLogger(__name__)

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
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)

Row = tuple[bytes, str | None, float]  # value, meta, created


def content_key(*parts: Any) -> str:
    """sha256 over a canonical JSON encoding of `parts` (dict key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_home() -> Path:
    """Where the journals live: $RAGTUNE_CACHE_DIR, else $XDG_CACHE_HOME/ragtune, else ~/.cache/ragtune."""
    if os.environ.get("RAGTUNE_CACHE_DIR"):
        return Path(os.environ["RAGTUNE_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ragtune"


def journal_path(tracked: str | os.PathLike[str]) -> Path:
    """The journal of a tracked cache file: one per file name (llm.sqlite, embeddings.sqlite, ...)."""
    return cache_home() / "journal" / Path(tracked).name


def _failed(meta: str | None) -> bool:
    return meta is not None and '"failed"' in meta and json.loads(meta).get("status") == "failed"


def _better(a: Row, b: Row) -> bool:
    """Whether row `a` should answer instead of row `b` for the same key: not failed first, then newer."""
    return (not _failed(a[1]), a[2]) > (not _failed(b[1]), b[2])


def describe_sqlite_error(path: Path, exc: BaseException, tracked: bool) -> str:
    """A sentence naming `path`, what went wrong and what to do, for an sqlite3 or OS error on a cache file."""
    text = str(exc)
    code = getattr(exc, "errno", None)
    if isinstance(exc, sqlite3.DatabaseError) and any(s in text for s in ("not a database", "malformed", "corrupt")):
        restore = f"; `dvc checkout {path}` restores the committed version instead" if tracked else ""
        return (
            f"{path}: the cache file is damaged ({text}). `ragtune cache repair {path}` keeps every row it can "
            f"still read (the rest are made again on the next run){restore}"
        )
    if code in _FULL or "full" in text or "disk I/O" in text or "too large" in text.lower():
        return f"{path}: could not write it ({text}); the disk is full: free space on its device, then rerun"
    if code in _DENIED or "readonly" in text or "read-only" in text.lower() or "unable to open" in text:
        where = "" if tracked else " (or point RAGTUNE_CACHE_DIR at a writable directory)"
        return f"{path}: cannot open or write it ({text}); make it and its folder writable{where}"
    if "locked" in text:
        return f"{path}: locked by another process for 60 s ({text}); wait for it to finish, then rerun"
    return f"{path}: {text}"


@contextlib.contextmanager
def _errors(path: Path, tracked: bool) -> Iterator[None]:
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise RagtuneError(describe_sqlite_error(path, exc, tracked)) from None


def open_items(path: Path | str, read_only: bool | str = False) -> sqlite3.Connection:
    """A connection to a cache file's `items` table. `read_only=True` (a tracked file) never locks or writes
    it: it is only ever replaced whole, so an open file does not change under the reader. "shared" (a journal
    another process may be writing) reads under SQLite's usual locks."""
    if read_only == "shared":
        return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False, timeout=60)
    if read_only:
        return sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=60)
    # A rollback journal, not WAL: the journal may sit on a network home directory, where WAL does not work.
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_SCHEMA)
    conn.commit()
    return conn


def select_rows(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Row]:
    found: dict[str, Row] = {}
    for i in range(0, len(keys), _IN_CHUNK):
        batch = list(keys[i : i + _IN_CHUNK])
        marks = ",".join("?" * len(batch))
        sql = f"SELECT key, value, meta, created FROM items WHERE key IN ({marks})"
        found.update((k, (bytes(v), m, c)) for k, v, m, c in conn.execute(sql, batch))
    return found


def _has_items(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='items'").fetchone() is not None


class ContentCache:
    """A persistent key → bytes map with hit/miss counters (see the module docstring). Safe to share
    between threads. `journal_hits` counts keys answered from the journal (made by an earlier run that did not
    reach the tracked file: interrupted, failed, or run in another copy of the repository)."""

    def __init__(self, path: str | os.PathLike[str], read_only: bool = False):
        self._lock = threading.Lock()
        self.hits = self.misses = self.journal_hits = 0
        self._pending: set[str] = set()  # keys to merge into the tracked file at close
        self._tracked: sqlite3.Connection | None = None
        self._closed = False
        self.read_only = read_only
        if str(path) == ":memory:":
            self.path = self.journal = None
            self._journal = open_items(":memory:")
            return
        self.path = Path(path)
        self.journal = journal_path(self.path)
        with _errors(self.journal, tracked=False):
            if read_only:  # the journal as it is, or none; never created or written
                exists = self.journal.is_file()
                self._journal = open_items(self.journal, read_only="shared") if exists else open_items(":memory:")
            else:
                self.journal.parent.mkdir(parents=True, exist_ok=True)
                self._journal = open_items(self.journal)
        if self.path.exists():
            with _errors(self.path, tracked=True):
                self._fold_legacy_wal()
                self._tracked = open_items(self.path, read_only=True)
                if not _has_items(self._tracked):  # an empty file (touched, truncated to 0): no rows yet
                    self._tracked.close()
                    self._tracked = None

    def _fold_legacy_wal(self) -> None:
        """A tracked file left in WAL mode with rows in its -wal (older ragtune, a crash): fold them in."""
        assert self.path is not None  # called only with a tracked file
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size and os.access(self.path, os.W_OK):
            conn = sqlite3.connect(self.path, timeout=60)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.close()

    # --- reading -----------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Look up many keys in a few queries; counts a hit or a miss for each distinct key."""
        unique = list(dict.fromkeys(keys))
        with self._lock:
            rows = self._lookup(unique)
            self.hits += len(rows)
            self.misses += len(unique) - len(rows)
        return {k: row[0] for k, row in rows.items()}

    def _lookup(self, keys: Sequence[str]) -> dict[str, Row]:
        tracked: dict[str, Row] = {}
        if self._tracked is not None:
            assert self.path is not None  # a tracked connection has a path
            with _errors(self.path, tracked=True):
                tracked = select_rows(self._tracked, keys)
        with _errors(self.journal or Path(":memory:"), tracked=False):
            journal = select_rows(self._journal, keys)
        rows = dict(tracked)
        for key, row in journal.items():
            if key not in tracked or _better(row, tracked[key]):
                rows[key] = row
                if self.path is not None and key not in self._pending:
                    self._pending.add(key)
                    self.journal_hits += 1
        return rows

    def get_json(self, key: str) -> Any | None:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)

    def __len__(self) -> int:
        """Rows the tracked file holds plus those this run will merge into it."""
        with self._lock:
            n = 0
            if self._tracked is not None:
                assert self.path is not None  # a tracked connection has a path
                with _errors(self.path, tracked=True):
                    n = self._tracked.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            if self.path is None:
                return self._journal.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            pending = list(self._pending)
            if self._tracked is not None and pending:
                n -= len(select_rows(self._tracked, pending))
            return n + len(pending)

    # --- writing -----------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, meta: Mapping[str, Any] | None = None) -> None:
        self.put_many([(key, value, meta)])

    def put_many(self, items: Iterable[tuple[str, bytes, Mapping[str, Any] | None]]) -> None:
        """Store items in the journal in one transaction, committed before returning."""
        now = time.time()
        rows = [(k, sqlite3.Binary(v), json.dumps(m) if m is not None else None, now) for k, v, m in items]
        if not rows:
            return
        if self.read_only:
            raise RuntimeError(f"{self.path}: opened read-only, nothing may be stored")
        with self._lock, _errors(self.journal or Path(":memory:"), tracked=False):
            with self._journal:
                self._journal.executemany(
                    "INSERT OR REPLACE INTO items (key, value, meta, created) VALUES (?, ?, ?, ?)", rows
                )
            if self.path is not None:
                self._pending.update(k for k, *_ in rows)

    def put_json(self, key: str, obj: Any, meta: Mapping[str, Any] | None = None) -> None:
        self.put(key, json.dumps(obj, ensure_ascii=False).encode("utf-8"), meta)

    # --- closing: the merge into the tracked file --------------------------------------------------

    def close(self) -> None:
        """Merge this run's rows into the tracked file (created empty if absent: it is a stage output)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.path is not None and not self.read_only and (self._pending or not self.path.exists()):
                    self._merge()
            finally:
                for conn in (self._tracked, self._journal):
                    if conn is not None:
                        conn.close()

    def _merge(self) -> None:
        from .io import atomic_path

        assert self.path is not None and self.journal is not None
        keys = sorted(self._pending)
        try:
            rows = select_rows(self._journal, keys)
            with atomic_path(self.path) as tmp:
                if self.path.exists():
                    shutil.copyfile(self.path, tmp)
                merged = open_items(tmp)
                with merged:
                    merged.executemany(
                        "INSERT OR REPLACE INTO items (key, value, meta, created) VALUES (?, ?, ?, ?)",
                        [(k, sqlite3.Binary(v), m, c) for k, (v, m, c) in rows.items()],
                    )
                merged.close()
        except (sqlite3.Error, OSError, RagtuneError) as exc:
            what = str(exc) if isinstance(exc, RagtuneError) else describe_sqlite_error(self.path, exc, tracked=True)
            raise RagtuneError(
                f"{what}. The merge of this run's {len(keys)} rows into it failed and left it as it was; the rows "
                f"are kept in {self.journal}, and the rerun takes them from there (nothing is computed or paid for "
                "again)"
            ) from None
        if rows:
            log.info("%s: %d rows of this run merged in from %s", self.path, len(rows), self.journal)

    def __enter__(self) -> ContentCache:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the block failed: still merge what it made, but never hide its error behind a merge error
            self.close()
        except RagtuneError as merge_error:
            log.error("%s", merge_error)
