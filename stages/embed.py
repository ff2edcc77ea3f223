"""embed: float32 matrices for corpus, test (and synthetic) questions, through the embeddings cache."""

import argparse
from pathlib import Path

from ragtune.cache import ContentCache
from ragtune.embed_sets import EmbedInputs, embed_all
from ragtune.embedding import CachedEmbedder
from ragtune.io import write_json
from ragtune.params import EmbeddingParams, MlflowParams, load_section
from ragtune.stage import run_main
from ragtune.tracking import stage_run

OUT = Path("data/embed")
CACHE = Path("data/cache/embeddings.sqlite")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, default=Path("data/fetch/corpus.jsonl"))
    ap.add_argument("--test", type=Path, action="append",
                    help="a test.jsonl; repeat to join several (default: data/fetch/test.jsonl)")
    ap.add_argument("--questions", type=Path, default=None)
    ap.add_argument("--real", type=Path, default=None, help="labelled real training questions (test contract)")
    args = ap.parse_args()
    tests = tuple(args.test or [Path("data/fetch/test.jsonl")])

    params = load_section("embedding", EmbeddingParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    with ContentCache(CACHE) as cache:
        embedder = CachedEmbedder(params, cache)
        info = embed_all(embedder, EmbedInputs(args.corpus, tests, args.questions, args.real), OUT)
    write_json(OUT / "info.json", info)
    with stage_run("embed", mlflow_params, params={"embedding": params}) as run:
        run.log_metrics({k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    print(f"embed: {info['encoded']} texts encoded, {info['cache_hits']} from cache, {info['seconds']} s")


if __name__ == "__main__":
    run_main(main)
