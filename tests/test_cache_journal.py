"""The journal behind every ContentCache (ragtune.cache): rows land there first, a reset or missing tracked file
loses none, close merges them into the tracked file without ever writing it in place, and `ragtune cache
check` / `repair` find a damaged file and keep what can still be read."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from ragtune.cache import ContentCache, cache_home, journal_path
from ragtune.cache_repair import check, readable_rows
from ragtune.cli import main
from ragtune.errors import RagtuneError


def keys_in(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {k for (k,) in conn.execute("SELECT key FROM items")}
    finally:
        conn.close()


def test_the_journal_lives_under_ragtune_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "home"))
    assert journal_path("data/cache/llm.sqlite") == tmp_path / "home" / "journal" / "llm.sqlite"
    monkeypatch.delenv("RAGTUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "xdg" / "ragtune"


def test_rows_land_in_the_journal_at_once_and_reach_the_tracked_file_at_close(tmp_path):
    tracked = tmp_path / "ws" / "data/cache/llm.sqlite"
    cache = ContentCache(tracked)
    cache.put_json("k1", {"q": 1}, meta={"status": "ok"})
    # Committed before close: another process (a rerun after a kill) reads it from the journal.
    assert keys_in(cache.journal) == {"k1"}
    cache.close()
    assert keys_in(tracked) == {"k1"}
    assert not any(p.name.endswith(("-wal", "-journal", ".tmp")) for p in tracked.parent.iterdir())


def test_a_tracked_file_reset_to_an_older_version_loses_nothing(tmp_path):
    """What `dvc exp run` does to data/cache/*.sqlite before it runs, and what a `--temp` copy starts from."""
    tracked = tmp_path / "ws/llm.sqlite"
    with ContentCache(tracked):
        pass  # the committed version: empty
    committed = tracked.read_bytes()
    with ContentCache(tracked) as cache:
        cache.put_many((f"k{i}", b"paid", None) for i in range(5))
    tracked.write_bytes(committed)  # checked out again
    other_copy = tmp_path / "temp-copy/llm.sqlite"  # another copy of the repository, same user
    for path in (tracked, other_copy):
        with ContentCache(path) as cache:
            assert len(cache.get_many([f"k{i}" for i in range(6)])) == 5
            assert (cache.hits, cache.misses, cache.journal_hits) == (5, 1, 5)
        assert keys_in(path) == {f"k{i}" for i in range(5)}  # merged in, for dvc push


def test_a_failed_row_never_hides_a_success_and_the_newer_row_wins(tmp_path):
    tracked = tmp_path / "llm.sqlite"
    with ContentCache(tracked) as cache:
        cache.put_json("a", {"v": "failed first"}, meta={"status": "failed"})
        cache.put_json("b", {"v": "ok first"}, meta={"status": "ok"})
    stale = tracked.read_bytes()
    with ContentCache(tracked) as cache:
        cache.put_json("a", {"v": "ok later"}, meta={"status": "ok"})  # the retry succeeded
    # The journal now holds a failure for b, made after the tracked file's success (a retry that failed).
    with ContentCache(tmp_path / "elsewhere/llm.sqlite") as cache:
        cache.put_json("b", {"v": "failed later"}, meta={"status": "failed"})
    tracked.write_bytes(stale)
    with ContentCache(tracked) as cache:
        assert cache.get_json("a") == {"v": "ok later"}
        assert cache.get_json("b") == {"v": "ok first"}
        assert cache.journal_hits == 1


def test_rows_read_from_the_tracked_file_need_no_merge(tmp_path):
    tracked = tmp_path / "e.sqlite"
    with ContentCache(tracked) as cache:
        cache.put("k", b"v")
    mtime = tracked.stat().st_mtime_ns
    os.utime(tracked, ns=(mtime - 10**9, mtime - 10**9))
    with ContentCache(tracked) as cache:
        assert cache.get("k") == b"v" and cache.journal_hits == 0
    assert tracked.stat().st_mtime_ns == mtime - 10**9  # not rewritten


def test_an_absent_tracked_file_is_created_empty_because_it_is_a_stage_output(tmp_path):
    with ContentCache(tmp_path / "data/cache/llm.sqlite") as cache:
        assert cache.get("x") is None
    assert keys_in(tmp_path / "data/cache/llm.sqlite") == set()


def test_a_read_only_tracked_file_is_replaced_not_written(tmp_path):
    """DVC's link cache types and `chmod a-w` leave it read-only; the merge renames a new file over it."""
    tracked = tmp_path / "e.sqlite"
    with ContentCache(tracked) as cache:
        cache.put("old", b"1")
    os.chmod(tracked, 0o444)
    linked = tmp_path / "dvc-cache-object"
    os.link(tracked, linked)  # a hardlinked DVC cache object must never change
    before = linked.read_bytes()
    with ContentCache(tracked) as cache:
        cache.put("new", b"2")
    assert keys_in(tracked) == {"old", "new"} and linked.read_bytes() == before


MERGE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, sys
from ragtune.cache import ContentCache
from ragtune.errors import RagtuneError
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # no file may grow past this: a full disk, in effect
cache = ContentCache(sys.argv[1])
cache.put("new", b"n" * 200_000)
try:
    cache.close()
except RagtuneError as exc:
    print(exc)
"""


def test_a_merge_that_fails_leaves_the_tracked_file_whole_and_the_rows_in_the_journal(tmp_path):
    tracked = tmp_path / "cache/e.sqlite"
    with ContentCache(tracked) as cache:
        cache.put_many((f"old{i}", os.urandom(4000), None) for i in range(100))
    before = tracked.read_bytes()
    env = {**os.environ, "RAGTUNE_CACHE_DIR": str(tmp_path / "fresh-home")}  # a small journal: only the new row
    limit = str(len(before) + 50_000)
    out = subprocess.run(
        [sys.executable, "-c", MERGE_UNDER_A_FILE_SIZE_LIMIT, str(tracked), limit],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    journal = tmp_path / "fresh-home/journal/e.sqlite"
    assert f"{tracked}: could not write it" in out and str(journal) in out
    assert "nothing is computed or paid for again" in out
    assert tracked.read_bytes() == before  # the last version, whole
    assert [p.name for p in tracked.parent.iterdir()] == ["e.sqlite"]  # no half-written file left beside it
    os.environ["RAGTUNE_CACHE_DIR"] = env["RAGTUNE_CACHE_DIR"]
    with ContentCache(tracked) as again:  # space again: the rerun takes the row from the journal
        assert again.get("new") == b"n" * 200_000 and again.journal_hits == 1
    assert "new" in keys_in(tracked)


def test_a_damaged_tracked_file_is_a_clear_error_naming_it_and_the_remedies(tmp_path):
    tracked = tmp_path / "llm.sqlite"
    tracked.write_bytes(b"not a database at all " * 100)
    with pytest.raises(RagtuneError) as err:
        ContentCache(tracked)
    msg = str(err.value)
    assert f"{tracked}: the cache file is damaged" in msg
    assert f"ragtune cache repair {tracked}" in msg and f"dvc checkout {tracked}" in msg


def test_memory_cache_writes_no_file(tmp_path):
    with ContentCache(":memory:") as cache:
        cache.put("k", b"v")
        assert cache.get("k") == b"v" and len(cache) == 1
    assert not (cache_home() / "journal").exists()


def filled(path, n: int = 3000) -> dict[str, bytes]:
    rows = {f"k{i:05d}": os.urandom(600) for i in range(n)}
    with ContentCache(path) as cache:
        cache.put_many((k, v, {"status": "ok"}) for k, v in rows.items())
    return rows


def test_repair_keeps_every_readable_row_of_a_truncated_file(tmp_path, capsys):
    tracked = tmp_path / "data/cache/embeddings.sqlite"
    rows = filled(tracked)
    with open(tracked, "r+b") as fh:
        fh.truncate(int(tracked.stat().st_size * 0.6))
    health = check(tracked)
    assert health.problem is not None and "DAMAGED" in health.line()
    with pytest.raises(RagtuneError, match="ragtune cache repair"):
        with ContentCache(tracked) as cache:
            cache.get_many(list(rows))

    assert main(["cache", "check", str(tracked)]) == 1
    assert f"ragtune cache repair {tracked}" in capsys.readouterr().out
    assert main(["cache", "repair", str(tracked)]) == 0
    out = capsys.readouterr().out
    assert "rows that could be read" in out and "damaged file is kept" in out
    kept = {key: value for key, value, _meta, _created in readable_rows(tracked)}
    assert 0.5 * len(rows) < len(kept) < len(rows)  # about the 60% of pages left, rows intact
    assert all(rows[k] == v for k, v in kept.items())
    assert check(tracked).problem is None
    assert list(tracked.parent.glob("embeddings.sqlite.damaged-*"))
    with ContentCache(tracked) as cache:  # usable again; the rows this machine made come back from its journal
        assert len(cache.get_many(list(rows))) == len(rows) and cache.journal_hits == len(rows) - len(kept)


def test_repair_of_a_file_that_is_not_a_database_starts_it_empty(tmp_path, capsys):
    tracked = tmp_path / "llm.sqlite"
    tracked.write_bytes(b"junk" * 1000)
    assert main(["cache", "repair", str(tracked)]) == 0
    assert "rebuilt with 0 rows" in capsys.readouterr().out
    assert check(tracked).problem is None and check(tracked).rows == 0


def test_check_lists_tracked_caches_and_journals(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with ContentCache("data/cache/llm.sqlite") as cache:
        cache.put_json("k", {"x": 1})
    assert main(["cache", "check"]) == 0
    out = capsys.readouterr().out
    assert "ok       data/cache/llm.sqlite (1 rows)" in out and f"ok       {journal_path('llm.sqlite')}" in out
    assert json.loads(sqlite3.connect("data/cache/llm.sqlite").execute("SELECT value FROM items").fetchone()[0])


def test_a_read_only_cache_reads_both_files_and_writes_neither(tmp_path):
    tracked = tmp_path / "data/cache/llm.sqlite"
    with ContentCache(tmp_path / "elsewhere/llm.sqlite") as cache:  # a row only the journal has
        cache.put("j", b"from the journal")
    with ContentCache(tracked, read_only=True) as cache:
        assert cache.get("j") == b"from the journal"
        with pytest.raises(RuntimeError, match="read-only"):
            cache.put("x", b"y")
    assert not tracked.exists()  # no tracked file made, nothing merged
    journal_before = journal_path(tracked).read_bytes()
    with ContentCache(tracked, read_only=True) as cache:
        cache.get("j")
    assert journal_path(tracked).read_bytes() == journal_before


def test_prune_removes_only_old_journal_rows_the_tracked_cache_holds_with_the_same_value(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    tracked = tmp_path / "data/cache/llm.sqlite"
    with ContentCache(tracked) as cache:
        cache.put_many((k, b"paid", None) for k in ("old", "recent", "changed"))
    with ContentCache(tmp_path / "other-project/llm.sqlite") as cache:
        cache.put_many([("elsewhere", b"paid", None)])  # in the journal, not in this project's tracked file
    journal = journal_path(tracked)
    conn = sqlite3.connect(journal)
    with conn:
        conn.execute("UPDATE items SET created = created - 40 * 86400 WHERE key != 'recent'")
        conn.execute("UPDATE items SET value = ? WHERE key = 'changed'", (b"a newer answer",))
    conn.close()

    assert main(["cache", "prune"]) == 0
    assert "removed 1 rows older than 30 days" in capsys.readouterr().out
    assert keys_in(journal) == {"recent", "changed", "elsewhere"}
    assert keys_in(tracked) == {"old", "recent", "changed"}  # the tracked file is never written
    with ContentCache(tracked) as cache:
        assert len(cache.get_many(["old", "recent", "changed"])) == 3  # nothing to pay again

    assert main(["cache", "prune", str(tracked), "--older-than", "0"]) == 0
    assert keys_in(journal) == {"changed", "elsewhere"}  # a different value is kept: it may be the better one
    capsys.readouterr()
    assert main(["cache", "prune", str(journal)]) != 0
    assert "takes tracked caches" in capsys.readouterr().err and keys_in(journal) == {"changed", "elsewhere"}
