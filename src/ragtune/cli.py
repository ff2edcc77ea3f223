"""The `ragtune` console command.

    ragtune search "question" -k 5     raw cosine and the adapter side by side on the pipeline's corpus
    ragtune bench DIR [DIR ...]        the pipeline (fetch → eval) on other corpora, one results table

`search` reads what the pipeline produced (data/fetch/corpus.jsonl, data/embed/, models/adapter/) and the
`embedding` section of params.yaml; writes nothing. `bench` runs each corpus in its own scratch DVC
workspace under --out (see ragtune.cross_corpus).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import RagtuneError

CORPUS = Path("data/fetch/corpus.jsonl")
EMBED_DIR = Path("data/embed")
ADAPTER = Path("models/adapter")


@dataclass(frozen=True)
class Hit:
    rank: int
    id: str
    title: str | None
    score: float
    first_line: str
    only_here: bool  # found by this side only, within the top k


@dataclass(frozen=True)
class Comparison:
    question: str
    k: int
    cosine: list[Hit]
    adapter: list[Hit]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def compare_retrieval(question: str, query_emb: np.ndarray, adapted_emb: np.ndarray, corpus_emb: np.ndarray,
                      ids: Sequence[str], titles: Sequence[str | None], texts: Sequence[str], k: int) -> Comparison:
    """Top-k of raw `query_emb` (1, dim) and `adapted_emb` (1, dim) against `corpus_emb`, by the same exact
    search as eval; each hit says whether the other side missed it."""
    from .retrieval import exact_top_k

    both = np.concatenate([np.asarray(query_emb, np.float32).reshape(1, -1),
                           np.asarray(adapted_emb, np.float32).reshape(1, -1)])
    scores, idx = exact_top_k(both, corpus_emb, k)
    found = [set(idx[0].tolist()), set(idx[1].tolist())]

    def side(row: int) -> list[Hit]:
        other = found[1 - row]
        return [Hit(r + 1, ids[i], titles[i], float(s), _first_line(texts[i]), i not in other)
                for r, (i, s) in enumerate(zip(idx[row].tolist(), scores[row].tolist()))]

    return Comparison(question, k, side(0), side(1))


def format_comparison(cmp: Comparison, width: int = 120) -> str:
    """Two columns, raw cosine on the left and the adapter on the right; `*` marks a chunk that only
    that side retrieved in its top k."""
    col = max(28, (width - 3) // 2)

    def cell_lines(hit: Hit | None) -> list[str]:
        if hit is None:
            return ["", ""]
        mark = "*" if hit.only_here else " "
        head = f"{hit.rank:>2}.{mark}{hit.id}  {hit.score:.3f}"
        detail = f"    {hit.title + ' — ' if hit.title else ''}{hit.first_line}"
        return [textwrap.shorten(head, col, placeholder="…") if len(head) > col else head,
                detail if len(detail) <= col else detail[:col - 1] + "…"]

    lines = [f"question: {cmp.question}", "",
             f"{'raw cosine':<{col}} │ adapter", f"{'─' * col}─┼─{'─' * col}"]
    for r in range(max(len(cmp.cosine), len(cmp.adapter))):
        left = cell_lines(cmp.cosine[r] if r < len(cmp.cosine) else None)
        right = cell_lines(cmp.adapter[r] if r < len(cmp.adapter) else None)
        lines += [f"{a:<{col}} │ {b}".rstrip() for a, b in zip(left, right)]
    only_c = sum(h.only_here for h in cmp.cosine)
    only_a = sum(h.only_here for h in cmp.adapter)
    lines += ["", f"* found by one side only: {only_c} by raw cosine, {only_a} by the adapter "
                  f"({len(cmp.cosine) - only_c} of the top {len(cmp.cosine)} shared)"]
    return "\n".join(lines)


def _check_pipeline_outputs(corpus: Path, embed_dir: Path, adapter: Path) -> None:
    needed = [(corpus, "fetch"), (embed_dir / "corpus.npz", "embed"), (adapter, "train")]
    for path, stage in needed:
        if not path.exists():
            raise RagtuneError(f"{path} not found: the {stage} stage has not run yet. Run the pipeline first "
                               f"with `make run` (or `dvc repro {stage}`), from the repository root.")


def search(question: str, k: int, params_file: Path = Path("params.yaml"), corpus_path: Path = CORPUS,
           embed_dir: Path = EMBED_DIR, adapter_path: Path = ADAPTER) -> Comparison:
    """Embed `question` like the pipeline did, adapt it, and search the pipeline's corpus both ways."""
    from .cache import ContentCache
    from .embedding import CachedEmbedder
    from .evaluation import load_adapter_transform, load_corpus_with_embeddings
    from .params import EmbeddingParams, load_section

    if not question.strip():
        raise RagtuneError("the question is empty")
    _check_pipeline_outputs(corpus_path, embed_dir, adapter_path)
    params = load_section("embedding", EmbeddingParams, params_file)
    corpus = load_corpus_with_embeddings(corpus_path, embed_dir / "corpus.npz")
    adapt = load_adapter_transform(adapter_path)
    _quiet_model_loading()
    # An in-memory cache: searching must not write to the pipeline's tracked embeddings cache.
    with ContentCache(":memory:") as cache:
        embedder = CachedEmbedder(params, cache)
        _check_same_embedder(embedder.fingerprint, embed_dir / "info.json", params_file)
        query_emb = embedder.encode_queries([question])
    if query_emb.shape[1] != corpus.emb.shape[1]:
        raise RagtuneError(f"the query embedding has {query_emb.shape[1]} dimensions, the corpus "
                           f"{corpus.emb.shape[1]}: rerun the pipeline (make run)")
    return compare_retrieval(question, query_emb, adapt(query_emb), corpus.emb, corpus.ids, corpus.titles,
                             corpus.texts, k)


def _quiet_model_loading() -> None:
    """No weight-loading progress bars in a command whose output is meant to be read."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def _check_same_embedder(fingerprint: str, info_path: Path, params_file: Path) -> None:
    if not info_path.is_file():
        return
    embedded_with = json.loads(info_path.read_text(encoding="utf-8")).get("fingerprint")
    if embedded_with and embedded_with != fingerprint:
        raise RagtuneError(f"{params_file}: the embedding model ({fingerprint[:24]}…) is not the one the corpus "
                           f"was embedded with ({embedded_with[:24]}…, {info_path}); rerun the pipeline "
                           "(make run) so queries and chunks share one embedder")


def _as_json(cmp: Comparison) -> str:
    def side(hits: list[Hit]) -> list[dict]:
        return [{"rank": h.rank, "id": h.id, "title": h.title, "score": round(h.score, 6),
                 "first_line": h.first_line, "only_here": h.only_here} for h in hits]

    return json.dumps({"question": cmp.question, "k": cmp.k, "cosine": side(cmp.cosine),
                       "adapter": side(cmp.adapter)}, ensure_ascii=False, indent=2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragtune", description="Query-adapter pipeline for domain retrieval.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("search", help="compare raw cosine and the adapter on a question",
                       description="Retrieve from the current pipeline's corpus with raw cosine and with the "
                                   "trained adapter, side by side. Run from the repository root after `make run`.")
    p.add_argument("question", help="the question to search for")
    p.add_argument("-k", "--top-k", type=int, default=5, help="results per side (default 5)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the side-by-side table")
    p.add_argument("--width", type=int, default=None, help="output width (default: the terminal's)")

    b = sub.add_parser("bench", help="run the pipeline on other corpora and tabulate the test results",
                       description="Run fetch → eval (`dvc repro eval`) on each DIR (a folder with corpus.jsonl "
                                   "and test.jsonl) in its own scratch workspace <out>/work/<name>/, with the "
                                   "project's params.yaml (fetch.source=jsonl on the copied files, MLflow off, "
                                   "plus -S overrides), and write <out>/results.json, results.md and results.png. "
                                   "Run from the project root. Workspaces are kept: a rerun only reruns what "
                                   "changed.")
    b.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="a folder holding corpus.jsonl and test.jsonl")
    b.add_argument("--default", action="store_true",
                   help="also run the project's own params unchanged (its default source) as corpus `default`")
    b.add_argument("--out", type=Path, default=Path("data/transfer"), help="output folder (default data/transfer)")
    b.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param in every workspace, as `dvc exp run -S` (e.g. -S tune.n_trials=10); "
                        "repeatable")
    b.add_argument("--mlflow", action="store_true",
                   help="log to MLflow (off by default; a relative sqlite store means the project's)")
    return parser


def bench(args: argparse.Namespace, command: str) -> list[Path]:
    """Plan (every input checked before any work), run every workspace, write the results."""
    from .cross_corpus import plan_bench, run_bench

    plan = plan_bench(Path.cwd(), args.dirs, args.default, args.out, args.overrides, args.mlflow)
    return run_bench(plan, command)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        if args.command == "search":
            if args.top_k < 1:
                raise RagtuneError(f"-k must be at least 1, got {args.top_k}")
            cmp = search(args.question, args.top_k, args.params)
            width = args.width or shutil.get_terminal_size((120, 24)).columns
            print(_as_json(cmp) if args.json else format_comparison(cmp, width))
        elif args.command == "bench":
            written = bench(args, shlex.join(["ragtune", *argv]))
            print("\n".join(str(p) for p in written))
    except RagtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
