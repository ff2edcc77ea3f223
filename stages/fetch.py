"""fetch: corpus.jsonl, test.jsonl, train_questions.jsonl and report.json from the source named in params.fetch."""

from pathlib import Path

from ragtune.fetching import fetch_source, report
from ragtune.io import write_json
from ragtune.params import FetchParams, load_section
from ragtune.records import write_jsonl
from ragtune.stage import run_main

OUT = Path("data/fetch")


def main() -> None:
    params = load_section("fetch", FetchParams)
    result = fetch_source(params)
    write_jsonl(OUT / "corpus.jsonl", result.chunks)
    write_jsonl(OUT / "test.jsonl", result.test)
    # Always written (empty without fetch.jsonl.train_questions), so the stages after fetch have one input.
    write_jsonl(OUT / "train_questions.jsonl", result.train_questions)
    summary = report(params, result)
    write_json(OUT / "report.json", summary)
    print(f"fetch: {summary['chunks']} chunks ({summary['test_chunks']} held out for test), "
          f"{summary['test_questions']} test questions and {summary['train_questions']} real training "
          f"questions from {params.source}")


if __name__ == "__main__":
    run_main(main)
