"""embed: float32 matrices for corpus, test (and synthetic) questions, through the embeddings cache;
info.json (embedder, dimensions, window) and run.json (texts encoded, cache hits, seconds; not committed)."""

import argparse
from pathlib import Path

from ragtune.cache import ContentCache
from ragtune.corpus.fetching import report_source
from ragtune.embedding.embedder import CachedEmbedder
from ragtune.embedding.sets import EmbedInputs, embed_sets
from ragtune.io import write_json
from ragtune.params import EmbeddingParams, MlflowParams, load_section
from ragtune.stage import run_main, split_run_facts, write_run_record
from ragtune.tracking import stage_run

OUT = Path("data/embed")
CACHE = Path("data/cache/embeddings.sqlite")
RUN_FACTS = ("cache_hits", "journal_hits", "cache_misses", "encoded", "seconds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, default=Path("data/fetch/corpus.jsonl"))
    ap.add_argument(
        "--test",
        type=Path,
        action="append",
        help="a test.jsonl; repeat to join several (default: data/fetch/test.jsonl)",
    )
    ap.add_argument("--questions", type=Path, default=None)
    ap.add_argument("--real", type=Path, default=None, help="labelled real training questions (test contract)")
    args = ap.parse_args()
    tests = tuple(args.test or [Path("data/fetch/test.jsonl")])

    params = load_section("embedding", EmbeddingParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    # The cache closes (merging this run's rows into the tracked file) before any output is replaced: a merge
    # that fails leaves the last run's outputs as they were.
    with ContentCache(CACHE) as cache, CachedEmbedder(params, cache) as embedder:
        source = report_source(args.corpus.parent / "report.json")
        sets = embed_sets(embedder, EmbedInputs(args.corpus, tests, args.questions, args.real, source))
    sets.write(OUT)
    info = {**sets.counts, "journal_hits": cache.journal_hits}  # vectors an earlier, unfinished run computed
    kept, facts = split_run_facts(info, RUN_FACTS)
    write_json(OUT / "info.json", kept)
    write_run_record(OUT, facts)
    datasets = [(args.corpus, "corpus"), *((t, "test") for t in tests)] + [
        (p, "training") for p in (args.questions, args.real) if p is not None
    ]
    with stage_run("embed", mlflow_params, params={"embedding": params}, datasets=datasets) as run:
        run.log_metrics({k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        run.log_metrics({f"window_{k}": v for k, v in info["window"].items() if isinstance(v, (int, float))})
    print(
        f"embed: {info['encoded']} texts encoded, {info['cache_hits']} from cache ({info['journal_hits']} from the "
        f"journal), {info['seconds']} s"
    )
    warn_window(info["window"])


def warn_window(window: dict) -> None:
    """Say when chunks are longer than the embedder reads: their ends are never retrieved by meaning."""
    if window["over_window"]:
        print(
            f"embed: warning: {window['over_window']} of {window['texts']} chunks "
            f"({window['over_window_share']:.1%}) are longer than the embedder's window of "
            f"{window['max_seq_length']} word pieces (median {window['over_window_median_tokens']}, longest "
            f"{window['longest_tokens']}); only their first {window['max_seq_length']} are embedded "
            f"({window['unread_token_share']:.1%} of all corpus word pieces are never read). Cut long texts "
            "into passages (fetch.passages.enabled: true), or use an embedder with a longer window."
        )


if __name__ == "__main__":
    run_main(main)
