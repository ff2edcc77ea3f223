"""The hybrid artefact the eval stage writes (models/hybrid/), what `ragtune.deploy.hybrid.HybridRetriever`
loads without ragtune:

    hybrid.json              format, fusion (method, params, candidate depth), BM25 settings (tokenizer
                             included), the dense model folder it fuses with, fingerprints (embedder, corpus)
    bm25/                    the bm25s index of the corpus texts eval's BM25 arm indexed
    chunks.jsonl             {"id", "title", "text"} per corpus row, in the rows' order
    document_vectors.npy     (n_chunks, dim) float32: the document vectors eval searched
    ragtune_hybrid.py        a copy of ragtune/deploy/hybrid.py, the loader

The dense model is the train stage's export (models/adapter/sentence_transformer), named relative to the
artefact, not copied. The folder is built beside its final place and swapped in whole.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.arms import HybridArm, OutOfFoldArm
from ..evaluation.inputs import Corpus
from ..io import write_json
from ..paths import PipelinePaths
from ..records import include_title
from ..search.lexical import Bm25Params
from . import hybrid

HYBRID_DIR = PipelinePaths().hybrid


def corpus_fingerprint(corpus: Corpus) -> str:
    """The fingerprint the artefact and the stores record for a corpus (ids, titles, texts in row order)."""
    return hybrid.corpus_fingerprint(corpus.ids, corpus.titles, corpus.texts)


def hybrid_manifest(
    arm: HybridArm,
    bm25: Bm25Params,
    with_title: bool,
    corpus: Corpus,
    embed_info: Mapping[str, Any],
    dense_dir: str,
    depth: int,
) -> dict[str, Any]:
    """hybrid.json for `arm` (after eval fitted its fusion), which eval ran to `depth`: everything the loader
    needs to rank as eval (each part retrieves max(candidates, depth) rows before fusion, as eval's arm)."""
    method, params = arm.fusion()
    fusion: dict[str, Any] = {"method": method, "params": params, "candidates": max(arm.params.candidates, depth)}
    if arm.weight is not None:
        fusion["chosen_on"] = "validation questions (eval.hybrid.weights)"
    dense: dict[str, Any] = {
        "model_dir": dense_dir,
        "embedder": embed_info.get("model"),
        "embedder_fingerprint": embed_info.get("fingerprint"),
        "dim": int(corpus.emb.shape[1]),
    }
    if isinstance(arm.dense, OutOfFoldArm):  # k-fold: eval scored test questions with each fold's adapter
        dense["note"] = "eval's test numbers are out-of-fold; this artefact fuses with the shipped adapter"
    return {
        "format": hybrid.FORMAT,
        "enabled": True,
        "arm": arm.name,
        "usage": "from ragtune_hybrid import HybridRetriever; HybridRetriever.load(folder).search(questions, k)",
        "fusion": fusion,
        "bm25": {
            "k1": bm25.k1,
            "b": bm25.b,
            "method": bm25.method,
            "stopwords": bm25.stopwords,
            "stemmer": bm25.stemmer,
            "include_title": with_title,
        },
        "dense": dense,
        "corpus": {"chunks": len(corpus.ids), "fingerprint": corpus_fingerprint(corpus)},
    }


def write_hybrid_artefact(
    out: Path,
    corpus: Corpus,
    arm: HybridArm | None,
    bm25: Bm25Params,
    source: str | None,
    embed_info: Mapping[str, Any],
    dense_model: Path,
    depth: int,
    reason_off: str = "",
) -> Path:
    """Write the artefact of `arm` (eval's `hybrid`) to `out`, replacing it only once complete. Without an
    arm (hybrid or BM25 turned off) the folder holds a hybrid.json saying so (the loader refuses it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~_umask())
        if arm is None:
            write_json(tmp / hybrid.MANIFEST, {"format": hybrid.FORMAT, "enabled": False, "reason": reason_off})
        else:
            dense_dir = Path(_relative(dense_model, out))
            with_title = include_title(bm25.include_title, source)
            manifest = hybrid_manifest(arm, bm25, with_title, corpus, embed_info, str(dense_dir), depth)
            arm.lexical.index.save(tmp / hybrid.BM25_DIR)
            with open(tmp / hybrid.CHUNKS, "w", encoding="utf-8") as fh:
                for cid, title, text in zip(corpus.ids, corpus.titles, corpus.texts):
                    fh.write(json.dumps({"id": cid, "title": title, "text": text}, ensure_ascii=False) + "\n")
            np.save(tmp / hybrid.VECTORS, np.ascontiguousarray(corpus.emb, dtype=np.float32), allow_pickle=False)
            shutil.copyfile(hybrid.__file__, tmp / hybrid.MODULE_FILE)
            write_json(tmp / hybrid.MANIFEST, manifest)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _relative(target: Path, start: Path) -> str:
    """`target` as a path relative to the folder `start` (both relative to the same root, or absolute)."""
    import os

    return os.path.relpath(target.resolve(), start.resolve())


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
