"""The cross-corpus benchmark: the pipeline (fetch → eval) on several corpora, one table.

    ragtune bench DIR [DIR ...] [--default] [--out data/transfer] [-S key=value ...] [--mlflow]

Each DIR holds `corpus.jsonl` and `test.jsonl` (the documented contracts), and optionally
`train_questions.jsonl` (labelled real training questions, `fetch.jsonl.train_questions`). Every corpus gets its
own scratch workspace `<out>/work/<name>/`: a copy of dvc.yaml, a params.yaml made from the project's (with
`fetch.source=jsonl` on the copied files and the -S overrides), `corpus/` with the copied files, and symlinks
to the project's `src/` and `.ragtune/` (the stage launcher) so that dvc.yaml's dependencies resolve. `dvc repro
eval` runs there, so the corpus is measured exactly as a user running the pipeline would measure it; workspaces
are kept, so a rerun reuses DVC's results and the persistent LLM/embedding caches. `--default` adds a workspace
`default` with the project's params as they are (its default source).

Then one table of the test-set results per corpus and arm (Hit@main_k, MRR, nDCG with their intervals, the
paired tests against raw cosine, the wall time) goes to `<out>/results.json`, `results.md` and
`results.png` (+ `results_mrr.png`). Rendering is pure (`corpus_row`, `render_markdown`); I/O is at the edges.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import RagtuneError
from .tables import build_results, corpus_row, write_results
from .workspaces import BenchPlan, Echo, RunRecord, Workspace, dvc_env, prepare_workspace, run_workspace

METRICS = Path("data/eval/report.json")
CURVE = Path("data/curve/metrics.json")
FETCH_REPORT = Path("data/fetch/report.json")


def collect_row(ws: Workspace, run: RunRecord | None) -> dict[str, Any]:
    from ..io import read_json

    metrics_path = ws.path / METRICS
    if not metrics_path.is_file():
        raise RagtuneError(f"corpus '{ws.name}': {metrics_path} not found after dvc repro; rerun the benchmark")
    report_path = ws.path / FETCH_REPORT
    report = read_json(report_path) if report_path.is_file() else {}
    curve_path = ws.path / CURVE
    return corpus_row(
        ws.name,
        read_json(metrics_path),
        report,
        run,
        str(ws.source_dir) if ws.source_dir is not None else None,
        read_json(curve_path) if curve_path.is_file() else None,
    )


def run_bench(plan: BenchPlan, command: str, echo: Echo = lambda line: print(line, file=sys.stderr)) -> list[Path]:
    """Prepare and run every workspace in turn, then write the results; returns the files written."""
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        raise RagtuneError(f"{dvc}: not found; the benchmark runs the venv's dvc (make venv)")
    env = dvc_env()
    rows = []
    for ws in plan.workspaces:
        echo(f"[{ws.name}] workspace {ws.path}")
        prepare_workspace(ws, plan.root, dvc, env)
        run = run_workspace(ws, dvc, env, echo)
        echo(
            f"[{ws.name}] {'ran ' + ', '.join(run.stages_run) if run.stages_run else 'up to date'} "
            f"in {run.wall_s:.1f} s"
        )
        rows.append(collect_row(ws, run))
    first = _read_setup(plan.workspaces[0])
    results = build_results(
        rows,
        command=command,
        overrides=plan.overrides,
        params_hash=plan.params_hash,
        main_k=first.get("main_k"),
        confidence=first.get("confidence"),
    )
    return write_results(plan.out, results)


def _read_setup(ws: Workspace) -> dict[str, Any]:
    from ..io import read_json

    setup = read_json(ws.path / METRICS).get("setup", {})
    return setup if isinstance(setup, dict) else {}
