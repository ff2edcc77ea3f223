"""`ragtune cache check`, `repair` and `prune`: find damaged cache files (the tracked data/cache/*.sqlite and the
journals, ragtune.cache) and rebuild one from every row it can still read; empty a journal of what a tracked
cache already holds. The damaged file is kept beside the repaired one (`<name>.damaged-<time>`), so nothing is
thrown away by the repair itself."""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .cache import cache_home, journal_path, open_items
from .errors import RagtuneError

DEFAULT_TRACKED = Path("data/cache")
_BATCH = 256


@dataclass(frozen=True)
class CacheHealth:
    path: Path
    rows: int | None  # None: not even counted
    problem: str | None  # None: healthy

    def line(self) -> str:
        if self.problem is None:
            return f"ok       {self.path} ({self.rows} rows)"
        return f"DAMAGED  {self.path}: {self.problem}; repair: ragtune cache repair {self.path}"


def default_paths() -> list[Path]:
    """The tracked caches of the project in the working directory, then this user's journals."""
    found = sorted(DEFAULT_TRACKED.glob("*.sqlite")) + sorted((cache_home() / "journal").glob("*.sqlite"))
    return [p for p in found if p.is_file()]


def _read(path: Path) -> sqlite3.Connection:
    """A read-only connection that still honours locks and a journal left by a crash."""
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=60)


def check(path: Path) -> CacheHealth:
    """SQLite's integrity check and a row count of one cache file."""
    try:
        conn = _read(path)
        try:
            verdict = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
            rows = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return CacheHealth(path, None, str(exc))
    if verdict != ["ok"]:
        return CacheHealth(path, rows, "; ".join(verdict[:3]))
    return CacheHealth(path, rows, None)


def readable_rows(path: Path) -> Iterator[tuple[str, bytes, str | None, float]]:
    """Every `items` row whose page is still in the file, newest per key. Reads the table's leaf pages
    directly (SQLite's file format), so rows stay reachable when the pages above them are lost, as in a
    truncated file; a row whose overflow pages are lost is dropped."""
    data = path.read_bytes()
    if len(data) < 100 or not data.startswith(b"SQLite format 3\x00"):
        return
    page_size = int.from_bytes(data[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return
    usable = page_size - data[20]
    best: dict[str, tuple[bytes, str | None, float]] = {}
    for start in range(0, len(data) - page_size + 1, page_size):
        for key, value, meta, created in _leaf_rows(data, start, page_size, usable):
            if key not in best or created >= best[key][2]:
                best[key] = (value, meta, created)
    for key, (value, meta, created) in best.items():
        yield key, value, meta, created


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """SQLite's big-endian varint at `buf[i]`: (value, index after it)."""
    value = 0
    for n in range(9):
        byte = buf[i + n]
        if n == 8:
            return (value << 8) | byte, i + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i + n + 1
    raise IndexError


def _leaf_rows(data: bytes, start: int, page_size: int, usable: int):
    """The (key, value, meta, created) rows of a table leaf page that look like `items` rows."""
    head = start + (100 if start == 0 else 0)
    if data[head] != 0x0D:  # not a table b-tree leaf
        return
    cells = int.from_bytes(data[head + 3 : head + 5], "big")
    max_local, min_local = usable - 35, (usable - 12) * 32 // 255 - 23
    for c in range(cells):
        try:
            ptr = start + int.from_bytes(data[head + 8 + 2 * c : head + 10 + 2 * c], "big")
            size, i = _varint(data, ptr)
            _rowid, i = _varint(data, i)
            local = size if size <= max_local else min_local + (size - min_local) % (usable - 4)
            local = local if local <= max_local else min_local
            payload = data[i : i + local]
            next_page = int.from_bytes(data[i + local : i + local + 4], "big") if local < size else 0
            while len(payload) < size:  # follow the overflow chain
                at = (next_page - 1) * page_size
                if next_page < 1 or at + page_size > len(data):
                    raise IndexError("overflow page lost")
                next_page = int.from_bytes(data[at : at + 4], "big")
                payload += data[at + 4 : at + 4 + min(usable - 4, size - len(payload))]
            row = _items_row(payload)
        except (IndexError, ValueError, UnicodeDecodeError):
            continue
        if row is not None:
            yield row


def _items_row(payload: bytes) -> tuple[str, bytes, str | None, float] | None:
    """Decode a record; an `items` row is (TEXT key, BLOB value, TEXT or NULL meta, number created)."""
    header_size, i = _varint(payload, 0)
    types = []
    while i < header_size:
        t, i = _varint(payload, i)
        types.append(t)
    if len(types) != 4:
        return None
    values: list[int | float | str | bytes | None] = []
    at = header_size
    for t in types:
        if t == 0:
            values.append(None)
        elif 1 <= t <= 6:
            n = (1, 2, 3, 4, 6, 8)[t - 1]
            values.append(int.from_bytes(payload[at : at + n], "big", signed=True))
            at += n
        elif t == 7:
            values.append(struct.unpack(">d", payload[at : at + 8])[0])
            at += 8
        elif t in (8, 9):
            values.append(t - 8)
        elif t >= 12:
            n = (t - 12) // 2 if t % 2 == 0 else (t - 13) // 2
            raw = payload[at : at + n]
            if len(raw) < n:
                raise IndexError("record cut short")
            values.append(bytes(raw) if t % 2 == 0 else raw.decode("utf-8"))
            at += n
        else:
            return None
    key, value, meta, created = values
    if not (isinstance(key, str) and isinstance(value, bytes) and (meta is None or isinstance(meta, str))):
        return None
    if not isinstance(created, (int, float)):
        return None
    return key, value, meta, float(created)


def repair(path: Path) -> tuple[int, Path]:
    """Rebuild `path` from its readable rows; the damaged file moves to `<path>.damaged-<time>`.
    Returns (rows kept, where the damaged file went)."""
    from .io import atomic_path

    if not path.is_file():
        raise RagtuneError(f"{path}: no such cache file")
    kept = 0
    with atomic_path(path) as tmp:
        fresh = open_items(tmp)
        try:
            batch: list[tuple[str, bytes, str | None, float]] = []
            for row in readable_rows(path):
                batch.append(row)
                if len(batch) >= _BATCH:
                    kept += _insert(fresh, batch)
                    batch = []
            kept += _insert(fresh, batch)
        finally:
            fresh.close()
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copyfile(path, aside)
    return kept, aside


def _insert(conn: sqlite3.Connection, rows: list[tuple[str, bytes, str | None, float]]) -> int:
    with conn:
        conn.executemany(
            "INSERT OR REPLACE INTO items (key, value, meta, created) VALUES (?, ?, ?, ?)",
            [(k, sqlite3.Binary(v), m, c) for k, v, m, c in rows],
        )
    return len(rows)


def run_check(paths: list[Path]) -> tuple[list[str], bool]:
    """Report lines for `paths` (default: `default_paths`) and whether all are healthy."""
    paths = paths or default_paths()
    if not paths:
        return [f"no cache files in {DEFAULT_TRACKED}/ or {cache_home() / 'journal'}/"], True
    results = [check(p) for p in paths]
    return [r.line() for r in results], all(r.problem is None for r in results)


def run_repair(paths: list[Path]) -> list[str]:
    lines = []
    for path in paths:
        before = check(path)
        kept, aside = repair(path)
        counted = f" of {before.rows}" if before.rows is not None else ""
        lines.append(
            f"{path}: rebuilt with {kept}{counted} rows that could be read (the rest are made again on the next "
            f"run); the damaged file is kept as {aside}"
        )
    return lines


def prune(tracked: Path, older_than_days: float) -> tuple[int, int, Path]:
    """Remove from `tracked`'s journal the rows made more than `older_than_days` ago that `tracked` holds with
    the same value; (rows removed, rows kept, journal). Rows no tracked file here holds (another project's, or
    an unfinished run's) and recent ones stay: a run killed last week still resumes from the journal."""
    if not tracked.is_file():
        raise RagtuneError(f"{tracked}: no such cache file; prune takes the tracked caches (data/cache/*.sqlite)")
    journal = journal_path(tracked)
    if not journal.is_file():
        return 0, 0, journal
    cutoff = time.time() - older_than_days * 86400
    conn = open_items(journal)
    try:
        conn.execute("ATTACH DATABASE ? AS tracked", (str(tracked),))
        with conn:
            removed = conn.execute(
                "DELETE FROM main.items WHERE created < ? AND EXISTS (SELECT 1 FROM tracked.items AS t "
                "WHERE t.key = main.items.key AND t.value = main.items.value)",
                (cutoff,),
            ).rowcount
        conn.execute("DETACH DATABASE tracked")
        kept = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        conn.execute("VACUUM")  # give the space back to the disk
    except sqlite3.Error as exc:
        raise RagtuneError(f"{journal}: could not prune it against {tracked} ({exc})") from None
    finally:
        conn.close()
    return removed, kept, journal


def run_prune(paths: list[Path], older_than_days: float) -> list[str]:
    """Report lines of `prune` for each tracked cache in `paths` (default: data/cache/*.sqlite)."""
    journals = (cache_home() / "journal").resolve()
    if any(p.resolve().parent == journals for p in paths):
        raise RagtuneError(
            f"ragtune cache prune takes tracked caches (data/cache/*.sqlite), not the journals in {journals}"
        )
    lines = []
    for tracked in paths or sorted(DEFAULT_TRACKED.glob("*.sqlite")):
        removed, kept, journal = prune(tracked, older_than_days)
        lines.append(
            f"{journal}: removed {removed} rows older than {older_than_days:g} days that {tracked} holds; "
            f"{kept} rows kept"
        )
    return lines or [f"no tracked cache files in {DEFAULT_TRACKED}/"]


def add_cache_parser(sub: argparse._SubParsersAction) -> None:
    """`ragtune cache check [PATH ...]` and `ragtune cache repair PATH [PATH ...]`."""
    c = sub.add_parser(
        "cache",
        help="check the caches of paid work, or repair a damaged one",
        description="check: SQLite's integrity check of each cache file (default: data/cache/*.sqlite and this "
        "user's journals in $RAGTUNE_CACHE_DIR/journal, or ~/.cache/ragtune/journal). repair: rebuild a cache "
        "file from every row it can still read, keeping the damaged file beside it; the next run makes the "
        "rest again. prune: remove from this user's journals the rows older than --older-than days that the "
        "project's tracked caches (default: data/cache/*.sqlite) hold with the same value; rows only a journal "
        "holds are kept.",
    )
    c.add_argument("action", choices=["check", "repair", "prune"])
    c.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="cache files (repair needs at least one)")
    c.add_argument(
        "--older-than",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="prune: only rows made more than DAYS ago (default 30: a recent unfinished run still resumes)",
    )


def cache_command(action: str, paths: list[Path], older_than_days: float = 30.0) -> int:
    """Print the report of `ragtune cache ACTION`; exit status 1 when check finds a damaged file."""
    if action == "prune":
        print("\n".join(run_prune(paths, older_than_days)))
        return 0
    if action == "check":
        lines, healthy = run_check(paths)
        print("\n".join(lines))
        return 0 if healthy else 1
    if not paths:
        raise RagtuneError("ragtune cache repair needs the path of a cache file (ragtune cache check lists them)")
    print("\n".join(run_repair(paths)))
    return 0
