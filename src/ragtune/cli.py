"""The `ragtune` console command.

    ragtune search "question" -k 5     raw cosine, the adapter and the hybrid (BM25 + adapter) side by side
    ragtune search -f questions.txt --json   the same for many questions, loaded once, one JSON line each
    ragtune index --store URL          the pipeline's vectors and texts into pgvector or LanceDB (then search --store)
    ragtune bench DIR [DIR ...]        the pipeline (fetch → eval) on other corpora, one results table
    ragtune init DIR --corpus FILE     your own project (git + DVC) running the installed ragtune on a corpus
    ragtune label [--out PATH]         a local web page to label real questions (ragtune.label)
    ragtune estimate [--json]          tokens and USD of synthesize and judge before any call
    ragtune exps [--json]              the experiments' headline table (from `dvc exp show --json`)
    ragtune ui [--port 5000]           MLflow's UI, opened on the runs of the pipeline's experiment
    ragtune bench-labels --corpus NAME  choosing the arm on n labelled questions, from bench's workspaces
    ragtune cache check | repair PATH  find damaged cache files; rebuild one from the rows it can still read

Quiet by default (warnings only); `ragtune -v COMMAND` says more (-vv: debug), in the stages it runs too.
Stages run by `dvc repro` log progress (INFO); `RAGTUNE_LOG=DEBUG dvc repro` for detail, WARNING for less.

`search` and `index` read what the pipeline produced (see ragtune.deploy.commands); `search` writes nothing.
`bench` runs each corpus in its own scratch DVC workspace under --out (see ragtune.benchmark.cross_corpus).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .benchmark.labels import add_arguments as add_label_bench_arguments
from .commands import COMMANDS, add_parsers
from .commands import run as run_command

# `search` and `index` live in ragtune.deploy (cli_parts: arguments and runs; commands: the search itself); the
# names below stay importable from here (tests; ragtune.label uses the two underscored ones).
from .deploy.commands import check_same_embedder as _check_same_embedder  # noqa: F401
from .deploy.commands import hybrid_setup, search  # noqa: F401
from .deploy.commands import quiet_model_loading as _quiet_model_loading  # noqa: F401
from .errors import RagtuneError
from .search.side_by_side import (  # noqa: F401
    Comparison,
    Hit,
    HybridSetup,
    compare_retrieval,
    format_comparison,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragtune", description="Query-adapter pipeline for domain retrieval.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail: -v progress (INFO), -vv debug; also for the stages a command runs (RAGTUNE_LOG)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .deploy.cli_parts import add_index_parser, add_search_parser

    add_search_parser(sub)
    add_index_parser(sub)

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
    from .label.command import add_parser as add_label_parser
    from .project.init import add_parser as add_init_parser

    add_label_parser(sub)
    add_init_parser(sub)
    add_parsers(sub)
    from .cache_repair import add_cache_parser

    add_cache_parser(sub)
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
    verbosity(args.verbose)
    status = 0
    try:
        if args.command == "search":
            from .deploy.cli_parts import run_search

            run_search(args)
        elif args.command == "index":
            from .deploy.cli_parts import run_index

            run_index(args)
        elif args.command == "tune-worker":
            from .adapter.tune_worker import join_study

            logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))  # its progress
            done = join_study(args.storage, args.study, args.worker, args.threads, args.wait)
            print(f"study {args.study}: {done} trials finished")
        elif args.command == "label":
            from .label.command import LabelOptions, run

            return run(LabelOptions.from_args(args))
        elif args.command == "init":
            from .project.init import run_from_args as init_from_args

            return init_from_args(args)
        elif args.command in COMMANDS:
            status = run_command(args)
        elif args.command == "bench":
            written = bench(args, shlex.join(["ragtune", *argv]))
            print("\n".join(str(p) for p in written))
        elif args.command == "bench-labels":
            from .benchmark.labels import run_from_args as bench_labels_from_args

            print("\n".join(str(p) for p in bench_labels_from_args(args, shlex.join(["ragtune", *argv]))))
        elif args.command == "cache":
            from .cache_repair import cache_command

            return cache_command(args.action, args.paths, args.older_than)
    except RagtuneError as exc:
        from .credentials import redact

        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    return status


def verbosity(count: int) -> None:
    """Quiet by default (warnings); -v INFO, -vv DEBUG, here and in the stages a command starts (`ragtune bench`
    runs them under dvc), which read RAGTUNE_LOG."""
    level = ("WARNING", "INFO", "DEBUG")[min(count, 2)]
    if count:
        os.environ["RAGTUNE_LOG"] = level
    logging.basicConfig()
    logging.getLogger().setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
