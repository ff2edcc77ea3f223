"""Atomic file output: a stage never leaves a half-written file behind, and a full disk or a folder it may
not write to is an error naming the file, with the previous version of that file untouched."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import RagtuneError, UnreadableFileError

# Errors of the place written to, not of the data: a full disk or quota, a file too large, no permission.
_PLACE_ERRORS = {
    errno.ENOSPC: "the disk is full: free space on its device",
    errno.EDQUOT: "the disk quota is used up: free space",
    errno.EFBIG: "the file grew past the size this system allows",
    errno.EACCES: "no permission: make the folder writable",
    errno.EPERM: "no permission: make the folder writable",
    errno.EROFS: "the file system is read-only",
}


def write_error(path: str | os.PathLike[str], exc: OSError) -> RagtuneError | None:
    """A RagtuneError naming `path` for an OSError that is the place's fault (full disk, no permission),
    saying the previous version is untouched; None for any other error."""
    advice = _PLACE_ERRORS.get(exc.errno or 0)
    if advice is None:
        return None
    return RagtuneError(
        f"{path}: could not write it ({exc.strerror}); {advice}, then rerun. Its previous version is untouched"
    )


def current_umask() -> int:
    """The process umask (reading it means setting it; it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def apply_umask_modes(root: str | os.PathLike[str]) -> None:
    """Give `root` and everything under it the modes a plain mkdir/open would (0755 / 0644 under umask 022;
    executables 0755): tempfile.mkdtemp, and some writers (safetensors), make them private, and a copy of a
    private folder is unreadable to everyone else."""
    umask = current_umask()
    for path in [Path(root), *Path(root).rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & stat.S_IXUSR
        os.chmod(path, (0o777 if executable else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise (write_error(final, exc) or exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        raise (write_error(final, exc) or exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `path` only when the block exits cleanly."""
    with atomic_path(path) as tmp:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, sort_keys=False)
        fh.write("\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file; UnreadableFileError naming it (and how to remake it) when it cannot be parsed."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(
            f"{path}: not valid JSON ({exc}); if a stage wrote it, rerun that stage (dvc repro -f STAGE), "
            "otherwise fix the file"
        ) from None


def write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed .npz atomically (np.savez appends .npz to bare names)."""
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)
