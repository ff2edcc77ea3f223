"""What the stage entry points share: logging set-up, a RagtuneError turned into a clear exit, the path
arguments of the stages that read a whole pipeline (eval, judge), their MLflow run under the train run, and
the run record (run.json) that keeps one run's own facts out of the committed outputs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .errors import RagtuneError
from .paths import PipelinePaths

log = logging.getLogger(__name__)

# Facts of one run, not of its inputs (wall seconds, MLflow run ids, study names, cache hits, calls made):
# two runs of the same inputs differ in them, so they stay out of the DVC-tracked, committed outputs (a second
# `dvc repro` would otherwise show changes where nothing changed). Git-ignored; MLflow has them too.
RUN_RECORD = "run.json"


def split_run_facts(report: Mapping[str, Any], keys: Iterable[str]) -> tuple[dict, dict]:
    """(`report` without `keys`, the `keys` it has): the reproducible part and the run's own facts."""
    keys = set(keys)
    return ({k: v for k, v in report.items() if k not in keys}, {k: v for k, v in report.items() if k in keys})


def write_run_record(out_dir: str | Path, facts: Mapping[str, Any]) -> Path:
    """Write a stage's run facts to <out_dir>/run.json (git-ignored, not a DVC output)."""
    from .io import write_json

    path = Path(out_dir) / RUN_RECORD
    write_json(path, dict(facts))
    return path


def read_run_record(out_dir: str | Path) -> dict:
    """A stage's last run facts, or {} when it has none here (a fresh clone, outputs from `dvc pull`)."""
    from .io import read_json

    path = Path(out_dir) / RUN_RECORD
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


class RedactingStream:
    """A stage's sys.stdout or sys.stderr: everything printed, by ragtune, by logging or by a library (MLflow
    prints its run links, which hold the tracking URI and so its credentials), passes through
    `credentials.redact` first."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        from .credentials import redact

        return self._stream.write(redact(text))

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding: the stream's own
        return getattr(self._stream, name)


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's main(); a RagtuneError, or an OSError that is the place's fault (full disk, no
    permission), prints its message (no traceback) and exits 2. Everything the stage prints (logs, errors, the
    traceback of anything unexpected) passes through `credentials.redact`."""
    from .credentials import redact
    from .io import write_error

    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    logging.basicConfig(
        level=os.environ.get("RAGTUNE_LOG", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Keep third-party chatter (HTTP clients, alembic migrations) out of stage logs.
    for noisy in ("httpx", "httpx2", "httpcore", "anthropic", "alembic", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        main()
    except RagtuneError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        error = write_error(exc.filename or "a file", exc)
        if error is None:
            _print_traceback(redact)
            sys.exit(1)
        print(f"error: {redact(str(error))}", file=sys.stderr)
        sys.exit(2)
    except Exception:  # noqa: BLE001 - a bug: its traceback, with any secret hidden
        _print_traceback(redact)
        sys.exit(1)


def _print_traceback(redact: Callable[[str], str]) -> None:
    import traceback

    print(redact(traceback.format_exc()), file=sys.stderr, end="")


def parse_paths(description: str | None, names: Sequence[str], argv: Sequence[str] | None = None) -> PipelinePaths:
    """`--corpus PATH --embed-dir PATH ...`: one option per named PipelinePaths field, defaulting to it."""
    known = {f.name for f in fields(PipelinePaths)}
    ap = argparse.ArgumentParser(description=description)
    defaults = PipelinePaths()
    for name in names:
        if name not in known:
            raise ValueError(f"PipelinePaths has no field {name!r}")
        ap.add_argument("--" + name.replace("_", "-"), type=Path, default=getattr(defaults, name))
    args = ap.parse_args(argv)
    return replace(defaults, **{name: getattr(args, name) for name in names})


def train_run_id(paths: PipelinePaths) -> str | None:
    """The MLflow run of the train stage that made the adapter, from its run record (data/train/run.json);
    None where there is none (outputs pulled from a DVC remote: the evaluating run is then not nested)."""
    return read_run_record(paths.train_run).get("mlflow_run_id")


def log_under_train_run(
    stage: str,
    mlflow_params: Any,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    flat: Mapping[str, float],
    written: Sequence[Path],
    paths: PipelinePaths,
    version_tags: Mapping[str, float] | None = None,
    datasets: Sequence[str] = (),
) -> None:
    """An evaluating stage's MLflow run (eval, judge): its params, flat metrics and files, shown nested under
    the train run that made the adapter, with the same numbers on that run too, so runs compare by their
    test scores; `version_tags` go on the registered model versions made from that run; `datasets` names
    the `paths` inputs logged as the run's dataset inputs. A train run from another tracking store only costs
    a warning."""
    from .tracking import StageRun, stage_run

    parent = train_run_id(paths)
    tags = {**tags, **({"ragtune.train_run_id": parent, "mlflow.parentRunId": parent} if parent else {})}
    with stage_run(
        stage, mlflow_params, params=params, tags=tags, datasets=paths.datasets(*datasets) if datasets else ()
    ) as run:
        run.log_metrics(flat)
        for path in written:
            run.log_artifact(path)
        if run.active and parent:
            try:
                StageRun(parent, run.client).log_metrics(flat)
                if version_tags:
                    from .adapter.mlflow_model import tag_model_versions

                    tag_model_versions(run.client, parent, version_tags)
            except Exception as exc:
                log.warning("%s: could not log to train run %s: %s", stage, parent, exc)
