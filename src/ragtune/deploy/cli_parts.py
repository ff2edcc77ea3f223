"""The `search` and `index` subcommands of `ragtune`: their arguments and what each runs (ragtune.cli wires them)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import RagtuneError

STORE_HELP = "postgresql://user:password@host:port/db (pgvector) or lancedb://PATH (embedded LanceDB folder)"


def add_search_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "search",
        help="compare raw cosine, the adapter and the hybrid on questions",
        description="Retrieve from the current pipeline's corpus with raw cosine, with the "
        "trained adapter and with the hybrid (BM25 fused with the adapter, as eval's "
        "`hybrid` arm; off with eval.hybrid.enabled: false), side by side. Loads once, then answers the "
        "question given, or every line of --file (- for stdin). With --store, queries a store filled by "
        "`ragtune index`. Run from the repository root after `make run`.",
    )
    p.add_argument("question", nargs="?", help="the question to search for (or --file)")
    p.add_argument("-f", "--file", help="questions, one a line; - reads stdin")
    p.add_argument("-k", "--top-k", type=int, default=5, help="results per side (default 5)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    p.add_argument("--json", action="store_true", help="one line of JSON per question instead of the table")
    p.add_argument("--width", type=int, default=None, help="output width (default: the terminal's)")
    p.add_argument("--store", help=f"search this store instead of in memory: {STORE_HELP}")
    p.add_argument("--table", default="ragtune_chunks", help="the store's table (default ragtune_chunks)")
    p.add_argument("--approx", action="store_true", help="with --store: search through the HNSW index")
    p.add_argument("--ef-search", type=int, default=100, help="with --approx: HNSW candidates (default 100)")
    return p


def add_index_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "index",
        help="load the pipeline's document vectors and texts into a vector store",
        description="Fill a store with the pipeline's chunks (ids, titles, texts) and their document vectors "
        "(data/embed/corpus.npz), for `ragtune search --store` and your own application. Idempotent and "
        "resumable: rows go in by committed batches and a rerun adds only what is missing. A table built "
        "from other vectors (another embedder, dimension or corpus) is refused.",
    )
    p.add_argument("--store", required=True, help=STORE_HELP)
    p.add_argument("--table", default="ragtune_chunks", help="the table to fill (default ragtune_chunks)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    p.add_argument("--batch", type=int, default=1000, help="rows per committed batch (default 1000)")
    p.add_argument("--hnsw", action="store_true", help="also build an HNSW index (approximate search)")
    p.add_argument("--m", type=int, default=16, help="HNSW links per node (default 16)")
    p.add_argument("--ef-construction", type=int, default=64, help="HNSW build candidates (default 64)")
    return p


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise RagtuneError(f"{name} must be at least 1, got {value}")


def run_search(args: argparse.Namespace) -> None:
    from ..search.side_by_side import as_json, format_comparison
    from .commands import ADAPTER, CORPUS, EMBED_DIR, EVAL_METRICS, Searcher, read_questions
    from .stores import open_store

    _positive("-k", args.top_k)
    _positive("--ef-search", args.ef_search)
    if (args.question is None) == (args.file is None):
        raise RagtuneError("give one question, or --file with one question a line (- for stdin), not both")
    if args.question is not None and not args.question.strip():
        raise RagtuneError("the question is empty")
    if args.approx and not args.store:
        raise RagtuneError("--approx searches a store's HNSW index: give --store too")
    questions = [args.question] if args.question is not None else read_questions(args.file)
    store = open_store(args.store, args.table) if args.store else None
    try:
        searcher = Searcher(args.params, CORPUS, EMBED_DIR, ADAPTER, EVAL_METRICS)
        if store is None:
            found = searcher.compare(questions, args.top_k)
        else:
            found = searcher.compare_in_store(store, questions, args.top_k, not args.approx, args.ef_search)
    finally:
        if store is not None:
            store.close()
    width = args.width or shutil.get_terminal_size((120, 24)).columns
    if args.json:
        print("\n".join(as_json(c) for c in found))
    else:
        print("\n\n".join(format_comparison(c, width) for c in found))


def run_index(args: argparse.Namespace) -> None:
    from .commands import CORPUS, EMBED_DIR, Pipeline
    from .stores import index_into, open_store
    from .stores.base import HnswParams

    _positive("--batch", args.batch)
    _positive("--m", args.m)
    _positive("--ef-construction", args.ef_construction)
    for path, stage in ((CORPUS, "fetch"), (EMBED_DIR / "corpus.npz", "embed")):
        if not path.exists():
            raise RagtuneError(f"{path} not found: run the {stage} stage first (make run, or dvc repro {stage})")
    pipeline = Pipeline.load(args.params, CORPUS, EMBED_DIR)
    store = open_store(args.store, args.table)
    try:
        hnsw = HnswParams(m=args.m, ef_construction=args.ef_construction) if args.hnsw else None
        report = index_into(store, pipeline.identity(), pipeline.rows(), args.batch, hnsw)
    finally:
        store.close()
    index = "; HNSW index built" if report.hnsw_built else ("; HNSW index already there" if args.hnsw else "")
    print(f"{store.where}: {report.added} rows added, {report.already} already there{index} ({report.seconds:.1f} s)")
