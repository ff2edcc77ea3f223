"""`ragtune label`: check the pipeline's outputs, bind the port, load the arms once, then serve the page.

Where the labels go: `--out PATH`, else `fetch.jsonl.train_questions` of params.yaml (one of them is needed).
On start it prints what to set in params.yaml so that `dvc repro` trains, and eval recommends, on the labels.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RagtuneError
from ..paths import PipelinePaths

if TYPE_CHECKING:
    from .app import LabelApp

EVAL_REPORT = Path("data/eval/report.json")
FETCH_REPORT = Path("data/fetch/report.json")
FETCH_TEST = Path("data/fetch/test.jsonl")


@dataclass(frozen=True)
class LabelOptions:
    out: Path | None = None
    questions: Path | None = None
    k: int = 5
    port: int = 8765
    params: Path = Path("params.yaml")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LabelOptions:
        return cls(args.out, args.questions, args.top_k, args.port, args.params)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label",
        help="label real questions in a local web page (the pooled candidates of every arm)",
        description="Serve a page on 127.0.0.1 where you type a real question (or step through --questions), "
        "see the pooled top k of every arm of the pipeline (deduplicated, shuffled), mark the relevant chunks "
        "or none, and each judgement is saved at once to the train-questions file (fetch.jsonl.train_questions, "
        "or --out). A test question is refused. Run from the repository root after `make run`.",
    )
    p.add_argument("--out", type=Path, default=None, help="labels file (default: fetch.jsonl.train_questions)")
    p.add_argument(
        "--questions",
        type=Path,
        default=None,
        help='questions to step through: a .jsonl of {"question"[, "id"]} or a text file, one a line',
    )
    p.add_argument("-k", "--top-k", type=int, default=5, help="candidates per arm before pooling (default 5)")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free port)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")


def check_pipeline_outputs(paths: PipelinePaths) -> None:
    """What the tool reads, each with the stage that writes it."""
    needed = [
        (paths.corpus, "fetch"),
        (paths.embed_dir / "corpus.npz", "embed"),
        (paths.adapter, "train"),
        (paths.test, "synthesize"),
    ]
    for path, stage in needed:
        if not path.exists():
            raise RagtuneError(
                f"{path} not found: the {stage} stage has not run yet. Run the pipeline first with `make run` "
                f"(or `dvc repro {stage}`), from the repository root."
            )


def output_path(options: LabelOptions, fetch) -> Path:
    if options.out is not None:
        return options.out
    if fetch.jsonl.train_questions:
        return Path(fetch.jsonl.train_questions)
    raise RagtuneError(
        f"where should the labels go? fetch.jsonl.train_questions is not set in {options.params}: pass --out PATH "
        "(e.g. --out corpus/train_questions.jsonl)"
    )


def params_advice(fetch, out: Path, params_file: Path) -> list[str]:
    """What to set so that `dvc repro` trains on `out` (FetchParams `fetch`)."""
    lines = []
    if fetch.source != "jsonl":
        lines.append(
            f"fetch.source is {fetch.source} in {params_file}: fetch reads labels only from a jsonl source. To train "
            "on them, export your corpus as corpus/corpus.jsonl and set fetch.source: jsonl, fetch.jsonl.corpus, "
            f"fetch.jsonl.test and fetch.jsonl.train_questions: {out}"
        )
    elif not fetch.jsonl.train_questions or Path(fetch.jsonl.train_questions).resolve() != out.resolve():
        lines.append(
            f"To train on these labels set in {params_file}:  fetch: {{jsonl: {{train_questions: {out}}}}}  "
            f"(or: dvc exp run -S fetch.jsonl.train_questions={out})"
        )
    else:
        lines.append(f"{params_file} reads these labels (fetch.jsonl.train_questions: {out}).")
    if not out.resolve().is_relative_to(Path("corpus").resolve()):
        lines.append(
            f"{out} is outside corpus/: DVC will not see new labels there (keep it under corpus/, or run "
            "dvc repro -f fetch)."
        )
    lines.append("Then `dvc repro`: fetch copies the labels, train learns from them, eval recommends on them.")
    return lines


def load_app(options: LabelOptions, paths: PipelinePaths = PipelinePaths()) -> tuple[LabelApp, list[str]]:  # noqa: B008
    """Everything the session needs, loaded once: the arms and embedder, the store, the queue. Returns the app
    and the lines to print."""
    from ..cache import ContentCache
    from ..corpus.fetching import report_source
    from ..deploy.commands import check_same_embedder, quiet_model_loading
    from ..embedding.embedder import CachedEmbedder
    from ..evaluation.arms import build_arms
    from ..evaluation.inputs import load_corpus_with_embeddings
    from ..evaluation.metrics import EvalParams
    from ..params import EmbeddingParams, FetchParams, load_section
    from .app import LabelApp
    from .pooling import ArmSearch, with_eval_weights
    from .preview import TrainedOn
    from .storage import LabelStore, LeakageGuard, load_questions_file, load_tests

    if options.k < 1:
        raise RagtuneError(f"-k must be at least 1, got {options.k}")
    fetch = load_section("fetch", FetchParams, options.params)
    out = output_path(options, fetch)
    eval_params = load_section("eval", EvalParams, options.params)
    embedding = load_section("embedding", EmbeddingParams, options.params)
    check_pipeline_outputs(paths)
    corpus = load_corpus_with_embeddings(paths.corpus, paths.embed_dir / "corpus.npz")
    test_files = [paths.test, FETCH_TEST] + (
        [Path(fetch.jsonl.test)] if fetch.source == "jsonl" and fetch.jsonl.test else []
    )
    guard = LeakageGuard(load_tests(test_files, corpus.ids))
    queue = load_questions_file(options.questions) if options.questions is not None else []
    store = LabelStore(out, corpus.ids, guard)
    try:
        arms, fusion_note = with_eval_weights(
            build_arms(corpus, paths, eval_params, source=report_source(FETCH_REPORT)), EVAL_REPORT
        )
        quiet_model_loading()
        embedder = CachedEmbedder(embedding, ContentCache(":memory:"))  # never the pipeline's tracked cache
        check_same_embedder(embedder.fingerprint, paths.embed_dir / "info.json", options.params)
        search = ArmSearch(corpus, arms, embedder, max(options.k, eval_params.mrr_k))
        app = LabelApp(
            search,
            store,
            eval_params,
            TrainedOn.read(paths.real_questions),
            options.k,
            queue,
            None if options.questions is None else str(options.questions),
        )
    except BaseException:
        store.close()
        raise
    counts = store.counts
    lines = [
        f"ragtune label: {len(corpus.ids)} chunks; arms {', '.join(search.arm_names)}"
        + (f" ({fusion_note})" if fusion_note else ""),
        f"labels: {out} ({counts['labelled']} labelled); none: {store.none_path} ({counts['none']}; not training rows)",
        f"test questions refused: {guard.name} ({guard.count} questions)",
        *params_advice(fetch, out, options.params),
    ]
    return app, lines


def run(options: LabelOptions) -> int:
    """Serve until Ctrl-C. The port is bound before anything loads, so a port in use fails at once."""
    from .server import bind

    server = bind(options.port)
    import torch  # after the bind: a port in use is said before seconds of imports

    # One short question at a time: one intra-op thread answers it. Measured on this 2-core machine under load:
    # 17 ms of CPU (82 ms wall) a question with one thread, 290 ms of CPU (1.3 s wall) spinning with two.
    torch.set_num_threads(1)
    app = None
    try:
        app, lines = load_app(options)
        print("\n".join(lines), flush=True)
        server.app = app
        print(f"Open {server.url}  (Ctrl-C to stop)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every judgement shown as saved is on disk", flush=True)
    finally:
        server.server_close()
        if app is not None:
            app.store.close()
    return 0
