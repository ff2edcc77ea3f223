"""The embeddings file (.npz) that embed writes and every later stage reads: the contract beside records'.

One uncompressed .npz per set: `ids` (n,) str, `emb` (n, dim) float32 with row i the vector of ids[i], and
optional row-aligned string columns (questions.npz: `chunk_ids`, `backends`). Written atomically; a reader
that meets a missing or damaged file stops with the file and what to rerun.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataError, RagtuneError, UnreadableFileError
from .io import write_npz


def save_embeddings(path: str | os.PathLike[str], ids: Sequence[str], emb: np.ndarray, **extra: Sequence[str]) -> None:
    """Row-aligned float32 matrix `emb` (len(ids), dim) and its ids in one .npz, written atomically.
    `extra` adds row-aligned string columns (e.g. `chunk_ids` for synthetic questions)."""
    if emb.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids for {emb.shape[0]} rows")
    cols = {name: np.asarray(list(vals), dtype=str) for name, vals in extra.items()}
    for name, col in cols.items():
        if len(col) != len(ids):
            raise ValueError(f"column {name}: {len(col)} values for {len(ids)} rows")
    write_npz(path, emb=emb.astype(np.float32, copy=False), ids=np.asarray(list(ids), dtype=str), **cols)


def load_embeddings(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Inverse of save_embeddings: (ids, float32 matrix of shape (len(ids), dim))."""
    ids, emb, _ = load_embeddings_with_columns(path)
    return ids, emb


def embeddings_for(ids: Sequence[str], path: str | os.PathLike[str], what: str = "question ids") -> np.ndarray:
    """The rows of the .npz at `path` for `ids`, in that order: (len(ids), dim) float32. Ids the file lacks
    mean the embeddings are older than the file they came from: an error naming `what`."""
    file_ids, emb = load_embeddings(path)
    row = {q: i for i, q in enumerate(file_ids)}
    missing = [q for q in ids if q not in row]
    if missing:
        raise DataError(f"{path} lacks {what} {missing[:5]}: the embeddings are stale, run dvc repro embed")
    return emb[np.array([row[q] for q in ids], dtype=np.int64)]


def load_embeddings_with_columns(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, dict[str, list[str]]]:
    """(ids, float32 matrix (len(ids), dim), {column: row-aligned strings}) of the .npz at `path`."""
    p = Path(path)
    if not p.is_file():
        raise RagtuneError(f"{p}: embeddings not found; run the embed stage first (dvc repro embed)")
    try:
        with np.load(p, allow_pickle=False) as z:
            cols = {k: [str(x) for x in z[k]] for k in z.files if k not in ("emb", "ids")}
            return [str(x) for x in z["ids"]], np.asarray(z["emb"], dtype=np.float32), cols
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise UnreadableFileError(
            f"{p}: not a readable embeddings file ({type(exc).__name__}: {exc}); rerun the embed stage "
            "(dvc repro -f embed): every vector comes from its cache"
        ) from None
