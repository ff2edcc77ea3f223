"""The `ragtune estimate`, `ragtune exps` and `ragtune ui` subcommands: their parsers and what they run (cli.py
wires them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COMMANDS = ("estimate", "exps", "ui")


def add_parsers(sub: Any) -> None:
    e = sub.add_parser(
        "estimate",
        help="tokens and USD of synthesize and judge under the current params, before any call",
        description="Build the requests synthesize and judge would send (less those the LLM caches answer), "
        "count their input tokens with the API's count_tokens when the key in llm.anthropic.api_key_env is "
        "set (else locally, +-35%), and price them with llm.prices, llm.batch_discount and prompt caching. "
        "Run from the project root after `dvc repro fetch`.",
    )
    e.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    e.add_argument("--json", action="store_true", help="print JSON instead of the table")
    e.add_argument("--local", action="store_true", help="count locally even when an API key is set")
    e.add_argument(
        "--sample",
        type=int,
        default=200,
        help="count at most this many requests per stage with the API; the rest scaled from them (default 200)",
    )
    x = sub.add_parser(
        "exps",
        help="the experiments' headline table (changed params, test Hit@5 / MRR@20 per arm, recommendation)",
        description="Read `dvc exp show --json` and print one row per experiment: the params it changed, "
        "test Hit@k and MRR@k of each arm and eval's recommended arm.",
    )
    x.add_argument("--json", action="store_true", help="print JSON instead of the table")
    x.add_argument("-A", "--all", action="store_true", help="all branches and commits (dvc exp show -A)")
    u = sub.add_parser(
        "ui",
        help="MLflow's web UI, opened on the runs of the pipeline's experiment",
        description="Print the URL of the runs table of the experiment in params.yaml's mlflow section and, "
        "for a local store (the default sqlite:///mlflow.db), serve it with `mlflow ui` until Ctrl-C. For a "
        "tracking server, only its URL is printed. Open that URL: MLflow's UI otherwise opens an experiment "
        "on its GenAI overview.",
    )
    u.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    u.add_argument("--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    u.add_argument("--workers", type=int, default=1, help="mlflow ui worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; its exit status."""
    if args.command == "estimate":
        from .errors import RagtuneError
        from .estimate import format_estimate, run_estimate

        if args.sample < 1:
            raise RagtuneError(f"--sample must be at least 1, got {args.sample}")
        est = run_estimate(args.params, local=args.local, sample=args.sample)
        print(json.dumps(est.as_dict(), indent=2) if args.json else format_estimate(est))
    elif args.command == "exps":
        from .experiments import experiment_rows, format_rows, read_exp_show

        rows = experiment_rows(read_exp_show(all_commits=args.all))
        print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    elif args.command == "ui":
        from .mlflow_ui import serve_ui
        from .params import MlflowParams, load_section

        return serve_ui(load_section("mlflow", MlflowParams, args.params), args.host, args.port, args.workers)
    return 0
