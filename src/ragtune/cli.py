"""The `ragtune` console command.

    ragtune search "question" -k 5     raw cosine, the adapter and the hybrid (BM25 + adapter) side by side
    ragtune bench DIR [DIR ...]        the pipeline (fetch → eval) on other corpora, one results table
    ragtune bench-labels --corpus NAME  choosing the arm on n labelled questions, from bench's workspaces

`search` reads what the pipeline produced (data/fetch/corpus.jsonl, data/embed/, models/adapter/, and
data/eval/report.json for the fusion weight eval chose, if any) and the `embedding` and `eval` sections of
params.yaml (BM25 and fusion settings, as eval uses them); writes nothing. `bench` runs each corpus in its own
scratch DVC workspace under --out (see ragtune.benchmark.cross_corpus).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .benchmark.labels import add_arguments as add_label_bench_arguments
from .errors import RagtuneError

CORPUS = Path("data/fetch/corpus.jsonl")
EMBED_DIR = Path("data/embed")
ADAPTER = Path("models/adapter")
EVAL_METRICS = Path("data/eval/report.json")


@dataclass(frozen=True)
class Hit:
    rank: int
    id: str
    title: str | None
    score: float
    first_line: str
    only_here: bool  # found by this side only, within the top k


@dataclass(frozen=True)
class HybridSetup:
    """The hybrid column of `ragtune search`: BM25 (`index`, anything with `top_k(queries, k)`) fused with
    the adapter's ranking by `ragtune.search.fusion.fuse_hybrid`, as eval's `hybrid` arm does."""

    index: Any
    method: str = "rrf"
    rrf_k: float = 60.0
    weight: float | None = None
    candidates: int = 100

    @property
    def label(self) -> str:
        how = f"weighted, dense {self.weight:g}" if self.method == "weighted" else f"RRF k={self.rrf_k:g}"
        return f"hybrid (BM25+adapter, {how})"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "candidates": self.candidates}
        out.update({"weight": self.weight} if self.method == "weighted" else {"rrf_k": self.rrf_k})
        return out


@dataclass(frozen=True)
class Comparison:
    question: str
    k: int
    cosine: list[Hit]
    adapter: list[Hit]
    hybrid: list[Hit] | None = None
    hybrid_setup: HybridSetup | None = None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def compare_retrieval(
    question: str,
    query_emb: np.ndarray,
    adapted_emb: np.ndarray,
    corpus_emb: np.ndarray,
    ids: Sequence[str],
    titles: Sequence[str | None],
    texts: Sequence[str],
    k: int,
    hybrid: HybridSetup | None = None,
) -> Comparison:
    """Top-k of raw `query_emb` (1, dim) and `adapted_emb` (1, dim) against `corpus_emb`, by the same exact
    search as eval; each hit says whether the other side missed it. With `hybrid`, also the adapter's
    ranking fused with BM25's (each to `hybrid.candidates` deep, then cut to k), whose hits say whether
    neither dense side found them."""
    from .search.dense import exact_top_k
    from .search.fusion import fuse_hybrid

    both = np.concatenate(
        [np.asarray(query_emb, np.float32).reshape(1, -1), np.asarray(adapted_emb, np.float32).reshape(1, -1)]
    )
    depth = max(k, hybrid.candidates) if hybrid is not None else k
    deep_scores, deep_idx = exact_top_k(both, corpus_emb, depth)
    scores, idx = deep_scores[:, :k], deep_idx[:, :k]
    found = [set(idx[0].tolist()), set(idx[1].tolist())]

    def hits(rows: Sequence[int], row_scores: Sequence[float], others: set[int]) -> list[Hit]:
        return [
            Hit(r + 1, ids[i], titles[i], float(s), _first_line(texts[i]), i not in others)
            for r, (i, s) in enumerate(zip(rows, row_scores))
            if i >= 0
        ]

    fused = None
    if hybrid is not None:
        lex_scores, lex_idx = hybrid.index.top_k([question], depth)
        f_scores, f_idx = fuse_hybrid(
            (deep_scores[1:], deep_idx[1:]),
            (lex_scores, lex_idx),
            depth=k,
            method=hybrid.method,
            rrf_k=hybrid.rrf_k,
            weight=hybrid.weight,
        )
        fused = hits(f_idx[0].tolist(), f_scores[0].tolist(), found[0] | found[1])
    return Comparison(
        question,
        k,
        hits(idx[0].tolist(), scores[0].tolist(), found[1]),
        hits(idx[1].tolist(), scores[1].tolist(), found[0]),
        fused,
        hybrid,
    )


def format_comparison(cmp: Comparison, width: int = 120) -> str:
    """Two columns, raw cosine on the left and the adapter on the right (and the hybrid in a third, when
    there is one); `*` marks a chunk that only that side retrieved in its top k (in the hybrid column: that
    neither dense side retrieved)."""
    columns = [cmp.cosine, cmp.adapter] + ([cmp.hybrid] if cmp.hybrid is not None else [])
    n_cols = len(columns)
    col = max(28 if n_cols == 2 else 20, (width - 3 * (n_cols - 1)) // n_cols)

    def cell_lines(hit: Hit | None, fused: bool = False) -> list[str]:
        if hit is None:
            return ["", ""]
        mark = "*" if hit.only_here else " "
        score = f"{hit.score:.4f}" if fused else f"{hit.score:.3f}"  # RRF scores are small: one more digit
        head = f"{hit.rank:>2}.{mark}{hit.id}  {score}"
        detail = f"    {hit.title + ' — ' if hit.title else ''}{hit.first_line}"
        return [
            textwrap.shorten(head, col, placeholder="…") if len(head) > col else head,
            detail if len(detail) <= col else detail[: col - 1] + "…",
        ]

    headers = ["raw cosine", "adapter"]
    if cmp.hybrid is not None:
        label = cmp.hybrid_setup.label if cmp.hybrid_setup is not None else "hybrid"
        headers.append(label if len(label) <= col else label[: col - 1] + "…")
    lines = [
        f"question: {cmp.question}",
        "",
        " │ ".join(f"{h:<{col}}" for h in headers).rstrip(),
        "─┼─".join("─" * col for _ in headers),
    ]
    for r in range(max(len(c) for c in columns)):
        cells = [cell_lines(c[r] if r < len(c) else None, fused=i == 2) for i, c in enumerate(columns)]
        lines += [" │ ".join(f"{part:<{col}}" for part in parts).rstrip() for parts in zip(*cells)]
    only_c = sum(h.only_here for h in cmp.cosine)
    only_a = sum(h.only_here for h in cmp.adapter)
    lines += [
        "",
        f"* found by one side only: {only_c} by raw cosine, {only_a} by the adapter "
        f"({len(cmp.cosine) - only_c} of the top {len(cmp.cosine)} shared)",
    ]
    if cmp.hybrid is not None:
        only_h = sum(h.only_here for h in cmp.hybrid)
        lines += textwrap.wrap(
            f"* hybrid: {only_h} of its top {len(cmp.hybrid)} found by neither dense side "
            "(brought in by BM25); its scores are fused scores",
            width,
            subsequent_indent="  ",
        )
    return "\n".join(lines)


def _check_pipeline_outputs(corpus: Path, embed_dir: Path, adapter: Path) -> None:
    needed = [(corpus, "fetch"), (embed_dir / "corpus.npz", "embed"), (adapter, "train")]
    for path, stage in needed:
        if not path.exists():
            raise RagtuneError(
                f"{path} not found: the {stage} stage has not run yet. Run the pipeline first "
                f"with `make run` (or `dvc repro {stage}`), from the repository root."
            )


def hybrid_setup(
    texts: Sequence[str] | Callable[[Any], Sequence[str]], params_file: Path, metrics_path: Path = EVAL_METRICS
) -> HybridSetup | None:
    """The hybrid column as eval's `hybrid` arm fuses: BM25 with eval's settings over `texts` (or over
    `texts(bm25_params)`, the corpus texts as eval's BM25 indexes them), fused by the
    weight eval chose on validation when params ask for the weighted fusion and report.json has that weight,
    else by RRF (`eval.hybrid.rrf_k`). None when `eval.hybrid.enabled` or `eval.bm25.enabled` is false."""
    from .evaluation.metrics import EvalParams
    from .params import load_section
    from .search.lexical import Bm25Index

    params = load_section("eval", EvalParams, params_file)
    if not (params.hybrid.enabled and params.bm25.enabled):
        return None
    weight = None
    if params.hybrid.method == "weighted" and metrics_path.is_file():
        try:
            entry = json.loads(metrics_path.read_text(encoding="utf-8")).get("fusion", {}).get("hybrid", {})
        except (OSError, ValueError, AttributeError):
            entry = {}
        chosen = entry.get("weight") if isinstance(entry, dict) and entry.get("method") == "weighted" else None
        if isinstance(chosen, (int, float)):
            weight = float(chosen)
    method = "weighted" if weight is not None else "rrf"
    indexed = texts(params.bm25) if callable(texts) else texts
    return HybridSetup(
        Bm25Index(indexed, params.bm25),
        method,
        params.hybrid.rrf_k,
        weight,
        max(params.hybrid.candidates, params.depth),
    )


def search(
    question: str,
    k: int,
    params_file: Path = Path("params.yaml"),
    corpus_path: Path = CORPUS,
    embed_dir: Path = EMBED_DIR,
    adapter_path: Path = ADAPTER,
    metrics_path: Path = EVAL_METRICS,
) -> Comparison:
    """Embed `question` like the pipeline did, adapt it, and search the pipeline's corpus both ways (and the
    hybrid of BM25 and the adapter, unless eval's params turn it off)."""
    from .cache import ContentCache
    from .corpus.fetching import report_source
    from .embedding.embedder import CachedEmbedder
    from .evaluation.arms import load_adapter_transform
    from .evaluation.inputs import load_corpus_with_embeddings
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
        raise RagtuneError(
            f"the query embedding has {query_emb.shape[1]} dimensions, the corpus "
            f"{corpus.emb.shape[1]}: rerun the pipeline (make run)"
        )
    source = report_source(corpus_path.parent / "report.json")
    return compare_retrieval(
        question,
        query_emb,
        adapt(query_emb),
        corpus.emb,
        corpus.ids,
        corpus.titles,
        corpus.texts,
        k,
        hybrid_setup(lambda bm25: corpus.lexical_texts(bm25, source), params_file, metrics_path),
    )


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
        raise RagtuneError(
            f"{params_file}: the embedding model ({fingerprint[:24]}…) is not the one the corpus "
            f"was embedded with ({embedded_with[:24]}…, {info_path}); rerun the pipeline "
            "(make run) so queries and chunks share one embedder"
        )


def _as_json(cmp: Comparison) -> str:
    def side(hits: list[Hit]) -> list[dict]:
        return [
            {
                "rank": h.rank,
                "id": h.id,
                "title": h.title,
                "score": round(h.score, 6),
                "first_line": h.first_line,
                "only_here": h.only_here,
            }
            for h in hits
        ]

    out = {"question": cmp.question, "k": cmp.k, "cosine": side(cmp.cosine), "adapter": side(cmp.adapter)}
    if cmp.hybrid is not None:
        out["hybrid"] = side(cmp.hybrid)
        if cmp.hybrid_setup is not None:
            out["hybrid_fusion"] = cmp.hybrid_setup.describe()
    return json.dumps(out, ensure_ascii=False, indent=2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragtune", description="Query-adapter pipeline for domain retrieval.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "search",
        help="compare raw cosine, the adapter and the hybrid on a question",
        description="Retrieve from the current pipeline's corpus with raw cosine, with the "
        "trained adapter and with the hybrid (BM25 fused with the adapter, as eval's "
        "`hybrid` arm; off with eval.hybrid.enabled: false), side by side. Run from "
        "the repository root after `make run`.",
    )
    p.add_argument("question", help="the question to search for")
    p.add_argument("-k", "--top-k", type=int, default=5, help="results per side (default 5)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the side-by-side table")
    p.add_argument("--width", type=int, default=None, help="output width (default: the terminal's)")

    b = sub.add_parser(
        "bench",
        help="run the pipeline on other corpora and tabulate the test results",
        description="Run fetch → eval (`dvc repro eval`) on each DIR (a folder with corpus.jsonl "
        "and test.jsonl) in its own scratch workspace <out>/work/<name>/, with the "
        "project's params.yaml (fetch.source=jsonl on the copied files, MLflow off, "
        "plus -S overrides), and write <out>/results.json, results.md and results.png. "
        "Run from the project root. Workspaces are kept: a rerun only reruns what "
        "changed.",
    )
    b.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="a folder holding corpus.jsonl and test.jsonl")
    b.add_argument(
        "--default",
        action="store_true",
        help="also run the project's own params unchanged (its default source) as corpus `default`",
    )
    b.add_argument("--out", type=Path, default=Path("data/transfer"), help="output folder (default data/transfer)")
    b.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param in every workspace, as `dvc exp run -S` (e.g. -S tune.n_trials=10); repeatable",
    )
    b.add_argument(
        "--mlflow",
        action="store_true",
        help="log to MLflow (off by default; a relative sqlite store means the project's)",
    )
    add_label_bench_arguments(sub)
    w = sub.add_parser(
        "tune-worker",
        help="run trials of a tune study that a tune stage started, from any machine",
        description="Join an Optuna study in a shared storage (tune.storage, e.g. a PostgreSQL URL) "
        "and run its trials until it has tune.n_trials finished. Run it from the root "
        "of a checkout whose fetch/synthesize/embed outputs match the stage's (dvc "
        "pull): the worker checks the study's data and code fingerprints and refuses "
        "to join on a mismatch. Trials it runs are not logged to MLflow.",
    )
    w.add_argument("--storage", required=True, help="the study's storage URL (the tune stage's tune.storage)")
    w.add_argument("--study", required=True, help="the study name (data/tune/run.json `study`, or the stage log)")
    w.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    w.add_argument(
        "--worker",
        type=int,
        default=None,
        help="worker number, offsets the sampler seed (default: from the process id)",
    )
    w.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the study to appear (start workers before the stage)",
    )
    return parser


def bench(args: argparse.Namespace, command: str) -> list[Path]:
    """Plan (every input checked before any work), run every workspace, write the results."""
    from .benchmark.cross_corpus import run_bench
    from .benchmark.workspaces import plan_bench

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
        elif args.command == "tune-worker":
            from .adapter.tune_worker import join_study

            logging.getLogger().setLevel(logging.INFO)
            done = join_study(args.storage, args.study, args.worker, args.threads, args.wait)
            print(f"study {args.study}: {done} trials finished")
        elif args.command == "bench":
            written = bench(args, shlex.join(["ragtune", *argv]))
            print("\n".join(str(p) for p in written))
        elif args.command == "bench-labels":
            from .benchmark.labels import run_from_args

            print("\n".join(str(p) for p in run_from_args(args, shlex.join(["ragtune", *argv]))))
    except RagtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
