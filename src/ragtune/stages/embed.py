"""embed: float32 matrices for corpus, test (and synthetic) questions, through the embeddings cache;
info.json (embedder, dimensions, window) and run.json (texts encoded, cache hits, seconds; not committed)."""

from ragtune.cache import ContentCache
from ragtune.corpus.fetching import report_source
from ragtune.embedding.embedder import CachedEmbedder
from ragtune.embedding.sets import EmbedInputs, embed_sets
from ragtune.io import write_json
from ragtune.params import EmbeddingParams, MlflowParams, load_section
from ragtune.stage import run_main, split_run_facts, stage_paths, write_run_record
from ragtune.tracking import stage_run

RUN_FACTS = ("cache_hits", "journal_hits", "cache_misses", "encoded", "seconds")


def main() -> None:
    paths = stage_paths("embed", __doc__)
    params = load_section("embedding", EmbeddingParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    # The cache closes (merging this run's rows into the tracked file) before any output is replaced: a merge
    # that fails leaves the last run's outputs as they were.
    with ContentCache(paths.embedding_cache) as cache, CachedEmbedder(params, cache) as embedder:
        source = report_source(paths.fetch_report)
        sets = embed_sets(
            embedder, EmbedInputs(paths.corpus, paths.test, paths.questions, paths.real_questions, source)
        )
    sets.write(paths.embed_dir)
    info = {**sets.counts, "journal_hits": cache.journal_hits}  # vectors an earlier, unfinished run computed
    kept, facts = split_run_facts(info, RUN_FACTS)
    write_json(paths.embed_dir / "info.json", kept)
    write_run_record(paths.embed_dir, facts)
    datasets = paths.datasets()
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
