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


class OncePerRun(logging.Filter):
    """Lets each distinct warning (logger, level, message) through once: a warning a loop logs per item is
    said once per stage run. Info and debug records pass (RAGTUNE_LOG=DEBUG is for detail)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def quiet_logging(level: str | int = "INFO") -> None:
    """Stage logging: `level` for ragtune (RAGTUNE_LOG overrides), each warning once, Python warnings once
    each, and third-party chatter (HTTP clients, migrations) at WARNING."""
    import warnings

    logging.basicConfig(
        level=os.environ.get("RAGTUNE_LOG", level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    once = OncePerRun()
    for handler in logging.getLogger().handlers:
        handler.addFilter(once)
    logging.captureWarnings(True)  # warnings.warn goes through logging, so through the filter above
    warnings.simplefilter("once")
    for noisy in ("httpx", "httpx2", "httpcore", "anthropic", "alembic", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's main() and log its wall time (from the process start, imports included: the span of its
    MLflow run). A RagtuneError, or an OSError that is the place's fault (full disk, no permission), prints its
    message (no traceback) and exits 2. Everything the stage prints (logs, errors, the traceback of anything
    unexpected) passes through `credentials.redact`."""
    import time

    from .credentials import redact
    from .io import write_error
    from .tracking import mark_stage_start, stage_started

    mark_stage_start()  # the stage's MLflow run starts with the process, however late it is opened
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    quiet_logging()
    try:
        from .project.init import check_project_version

        check_project_version()
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
    log.info("%s: finished in %.2f s", Path(sys.argv[0]).stem, time.time() - stage_started())


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


def stage_paths(name: str, description: str | None = None, argv: Sequence[str] | None = None) -> PipelinePaths:
    """A stage's layout: the defaults, overridden by the path options of its command in dvc.yaml (every path
    the stage reads or writes, `ragtune.project.pipeline`)."""
    from .project.pipeline import stage

    return parse_paths(description, stage(name).path_args, argv)


def train_run_id(paths: PipelinePaths) -> str | None:
    """The MLflow run of the train stage that made the adapter, from its run record (data/train/run.json);
    None where there is none (outputs pulled from a DVC remote: the evaluating run is then not nested)."""
    return read_run_record(paths.train_run).get("mlflow_run_id")


# The eval arms that run the logged model (the adapter, alone and fused with BM25): their test numbers are the
# model's; cosine's, bm25's, hybrid_cosine's and the linear comparison adapter's are not.
MODEL_ARMS = ("adapter", "hybrid")


def of_logged_model(key: str) -> bool:
    """Whether a flat metric is one of the logged model's: the test set's size (`test.questions`) or a test
    number of an arm that runs it, or of its comparison (`test.adapter.hit_at_5`, `test.hybrid_vs_cosine...`)."""
    parts = key.split(".")
    if parts[0] != "test" or len(parts) < 2:
        return False
    return parts[1] == "questions" or parts[1].split("_vs_")[0] in MODEL_ARMS


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
    """An evaluating stage's MLflow run (eval, judge): its params, flat metrics and files, nested under the
    train run that made the adapter and linked both ways (tags `ragtune.train_run_id` here and
    `ragtune.<stage>_run_id` there); the metrics live on this run only. Those of the arms that run the adapter
    on the test set (`of_logged_model`) are also the metrics of the train run's logged model, computed on the
    test set. `version_tags` go on the
    registered model versions made from that run; `datasets` names the `paths` inputs logged as the run's
    dataset inputs. A train run from another tracking store only costs a warning."""
    from .tracking import logged_model_id, stage_run

    parent = train_run_id(paths)
    tags = {**tags, **({"ragtune.train_run_id": parent, "mlflow.parentRunId": parent} if parent else {})}
    with stage_run(
        stage, mlflow_params, params=params, tags=tags, datasets=paths.datasets(*datasets) if datasets else ()
    ) as run:
        model_id = logged_model_id(run.client, parent) if run.active and parent else None
        of_model = {k: v for k, v in flat.items() if of_logged_model(k)}
        run.log_metrics({k: v for k, v in flat.items() if k not in of_model})
        run.log_metrics(of_model, model_id=model_id, dataset=paths.test)
        for path in written:
            run.log_artifact(path)
        if run.active and parent:
            try:
                run.client.set_tag(parent, f"ragtune.{stage}_run_id", run.run_id)
                if version_tags:
                    from .adapter.mlflow_model import tag_model_versions

                    tag_model_versions(run.client, parent, version_tags)
            except Exception as exc:
                log.warning("%s: could not log to train run %s: %s", stage, parent, exc)
