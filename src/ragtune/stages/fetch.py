"""fetch: corpus.jsonl, test.jsonl, train_questions.jsonl and report.json from the source named in params.fetch."""

from ragtune.corpus.fetching import fetch_source, report
from ragtune.io import write_json
from ragtune.params import EmbeddingParams, FetchParams, load_section
from ragtune.records import write_jsonl
from ragtune.stage import run_main, stage_paths


def main() -> None:
    paths = stage_paths("fetch", __doc__)
    params = load_section("fetch", FetchParams)
    result = fetch_source(params)
    if params.passages.enabled:
        from ragtune.corpus.fetching import apply_passages
        from ragtune.embedding.embedder import token_counter

        count, window = token_counter(load_section("embedding", EmbeddingParams))
        corpus_file = params.jsonl.corpus if params.source == "jsonl" else None
        result = apply_passages(result, count, params.passages.size or window, params.passages.overlap, corpus_file)
    write_jsonl(paths.corpus, result.chunks)
    write_jsonl(paths.fetch_test, result.test)
    # Always written (empty without fetch.jsonl.train_questions), so the stages after fetch have one input.
    write_jsonl(paths.real_questions, result.train_questions)
    summary = report(params, result)
    write_json(paths.fetch_report, summary)
    if params.passages.enabled:
        print(
            f"fetch: {summary['documents_split']} long text(s) cut into {summary['passages']} passages of at most "
            f"{summary['passage_size']} word pieces"
        )
    print(
        f"fetch: {summary['chunks']} chunks ({summary['test_chunks']} held out for test), "
        f"{summary['test_questions']} test questions and {summary['train_questions']} real training "
        f"questions from {params.source}"
    )


if __name__ == "__main__":
    run_main(main)
