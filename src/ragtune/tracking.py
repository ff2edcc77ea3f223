"""MLflow tracking for stages: one run per stage execution, tagged so that the runs of one pipeline
(same git commit and params) are found together, metrics logged in batches, secrets never logged."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .credentials import redact
from .params import MlflowParams, Section

log = logging.getLogger(__name__)

# Param names that may hold credentials: never sent to MLflow.
# `token` alone (hf_token, access_token), not `tokens` (llm.max_tokens is a param worth seeing).
_SECRET = re.compile(r"(api[_-]?key|token(?!s)|secret|password|authorization)", re.IGNORECASE)
_MAX_BATCH = 1000  # MLflow's per-request limit on metrics in log_batch
# A model-training experiment, not a GenAI one. MLflow UIs before the GenAI / Model training switch open such
# an experiment on its runs; 3.17's UI ignores the tag and takes the view from the URL (`workflowType`) or the
# browser's last choice, so `ragtune ui` prints the URL of the runs view (ragtune.mlflow_ui).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
_STAGE_START: list[float] = []  # when the stage process began its work (mark_stage_start)


def process_started() -> float:
    """When this process started (epoch seconds, to the clock tick), so that a stage's wall time includes its
    imports as `dvc repro` shows it: /proc/self/stat's start time (ticks after boot) on Linux, else now."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()  # after the command name, from field 3 (state) on
        ticks = int(fields[19])  # field 22: starttime
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc (macOS, Windows)
        return time.time()
    return time.time() - age


def mark_stage_start(at: float | None = None) -> None:
    """Record when the stage began (stage.run_main calls it first: the process start): its MLflow run starts
    then, not when it is opened after the work."""
    _STAGE_START[:] = [process_started() if at is None else at]


def stage_started() -> float:
    return _STAGE_START[0] if _STAGE_START else time.time()


def git_commit(cwd: str | os.PathLike[str] = ".") -> str:
    """HEAD's commit, with `-dirty` when tracked files differ; `unknown` outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def file_hash(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest()[:12] if p.is_file() else "none"


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """Flatten nested params to dotted keys, dropping anything that looks like a secret (by its name) and
    hiding passwords in values (`credentials.redact`)."""
    if isinstance(obj, Section):
        obj = obj.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if _SECRET.search(str(k)):
                continue
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
    else:
        out[prefix] = redact(obj) if isinstance(obj, str) else obj
    return out


class StageRun:
    """A handle on the active MLflow run (or a no-op when tracking is disabled)."""

    def __init__(self, run_id: str | None, client: Any = None):
        self.run_id = run_id
        self.client = client

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int | None = None,
        model_id: str | None = None,
        dataset: str | os.PathLike[str] | None = None,
    ) -> None:
        """All metrics of one step in a single batch call; with `model_id` they are also the metrics of that
        logged model (its page lists them), computed on `dataset` (a JSONL file: its name and digest)."""
        points = [(k, float(v), step or 0) for k, v in metrics.items() if v is not None]
        if self.run_id is not None and points:  # self.active
            log_points(self.client, self.run_id, points, model_id=model_id, dataset=dataset_ref(dataset))

    def log_series(self, name: str, values: Sequence[float], start_step: int = 0) -> None:
        """A whole curve in batches of 1,000 points, not one call per point."""
        self.log_points([(name, float(v), start_step + i) for i, v in enumerate(values)])

    def log_points(self, points: Sequence[tuple[str, float, int]]) -> None:
        if self.run_id is not None and points:  # self.active
            log_points(self.client, self.run_id, points)

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        flat = flatten("", dict(params))
        items = [Param(clean_key(k), str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.active:
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        if self.active:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        if self.active:
            self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def log_datasets(self, datasets: Sequence[tuple[str | os.PathLike[str], str]]) -> None:
        """Each (JSONL file, context) the stage read as an MLflow dataset input of this run (the run page's
        "Datasets"): name, content digest, rows; empty or absent files are left out."""
        if not self.active:
            return
        inputs = [d for d in (dataset_input(path, context) for path, context in datasets) if d is not None]
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)


def dataset_input(path: str | os.PathLike[str], context: str) -> Any:
    """An MLflow DatasetInput for a JSONL file: name `<stage dir>/<stem>` (fetch/corpus, synthesize/questions),
    digest = the first 12 hex of the content's sha256 (changes exactly when the rows do), rows in the
    profile, the path as a local source, `context` (corpus, training, test) as the usual context tag. None for an
    absent or empty file."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    p = Path(path)
    if not p.is_file():
        return None
    data = p.read_bytes()
    rows = sum(1 for line in data.splitlines() if line.strip())
    if not rows:
        return None
    dataset = Dataset(
        name=f"{p.parent.name}/{p.stem}",
        digest=hashlib.sha256(data).hexdigest()[:12],
        source_type="local",
        source=json.dumps({"uri": str(p)}),
        profile=json.dumps({"num_rows": rows}),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])


def dataset_ref(path: str | os.PathLike[str] | None) -> tuple[str, str] | None:
    """(name, digest) of a JSONL file as `dataset_input` logs it, for metrics computed on it; None without."""
    entry = dataset_input(path, "") if path is not None else None
    return (entry.dataset.name, entry.dataset.digest) if entry is not None else None


def logged_model_id(client: Any, run_id: str) -> str | None:
    """The MLflow 3 LoggedModel a run logged (train: the adapter), or None."""
    try:
        run = client.get_run(run_id)
        models = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=1
        )
    except Exception as exc:  # another store, an older server: the link is a nicety, the metrics are logged
        log.warning("could not find the logged model of run %s: %s", run_id, exc)
        return None
    return models[0].model_id if models else None


# The one redaction helper (ragtune.credentials.redact), under the name its callers know.
redact_url = redact


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """An http(s) tracking URI must answer /health within seconds: MLflow's client would otherwise retry for
    minutes before a stage learns that the server is down. Credentials in the URI (http://user:pw@host) are
    sent as basic auth, as MLflow sends them, never as part of the host name."""
    if not uri.startswith(("http://", "https://")):
        return
    import base64
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health")
    user = urllib.parse.unquote(parts.username or "") or os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = urllib.parse.unquote(parts.password or "") or os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if user or password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            pass
    except Exception as exc:  # URLError, HTTPError, timeouts: say which server, without its password
        from .errors import RagtuneError

        raise RagtuneError(
            f"mlflow.tracking_uri: cannot reach the tracking server {redact(uri)} "
            f"({redact(str(exc))}); start it, fix the URI, or set mlflow.enabled: false"
        ) from None


def clean_key(key: str) -> str:
    """A metric or param name MLflow accepts (alphanumerics, _ - . space / only): val_hit@5 -> val_hit_5."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", key)


def log_points(
    client: Any,
    run_id: str,
    points: Sequence[tuple[str, float, int]],
    tags: Mapping[str, str] | None = None,
    model_id: str | None = None,
    dataset: tuple[str, str] | None = None,
) -> None:
    """Metric points (name, value, step) in batches of 1,000, the one batching path of every run (stage runs
    and tuning trials); `tags` ride with the first batch, so a short run costs one round trip. `model_id` and
    `dataset` (name, digest) link the points to a logged model and the data they were computed on."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    name, digest = dataset or (None, None)
    metrics = [
        Metric(clean_key(k), float(v), now, int(s), model_id=model_id, dataset_name=name, dataset_digest=digest)
        for k, v, s in points
    ]
    first_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metrics), 1 if first_tags else 0), _MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _MAX_BATCH], tags=first_tags if i == 0 else [])


def pipeline_tags(stage: str, params_file: str | os.PathLike[str] = "params.yaml") -> dict[str, str]:
    """Tags shared by every stage of one pipeline run: same commit and params file -> same tags."""
    return {"ragtune.stage": stage, "ragtune.git_commit": git_commit(), "ragtune.params_hash": file_hash(params_file)}


@contextlib.contextmanager
def stage_run(
    stage: str,
    mlflow_params: MlflowParams,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    run_name: str | None = None,
    datasets: Sequence[tuple[str | os.PathLike[str], str]] = (),
) -> Iterator[StageRun]:
    """Open an MLflow run for a stage, with its params and the (JSONL file, context) `datasets` it reads as
    dataset inputs; the run ends FINISHED, or FAILED if the block raises. It spans the stage's work: it starts
    when the stage did (mark_stage_start; else now) and ends when the block does, and its `stage_seconds`
    metric is that span."""
    if not mlflow_params.enabled:
        yield StageRun(None)
        return
    import mlflow

    uri = mlflow_params.uri()  # from the environment when mlflow.tracking_uri_env names a variable
    check_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(mlflow_params.experiment)
    client = mlflow.MlflowClient()
    for key, value in EXPERIMENT_KIND.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    all_tags = {**pipeline_tags(stage), **(tags or {}), "mlflow.runName": run_name or stage}
    start = stage_started()
    created = client.create_run(experiment.experiment_id, start_time=int(start * 1000), tags=all_tags)
    with mlflow.start_run(run_id=created.info.run_id, nested=nested) as run:
        handle = StageRun(run.info.run_id, client)
        if params:
            handle.log_params(params)
        handle.log_datasets(datasets)
        yield handle
        handle.log_metrics({"stage_seconds": round(time.time() - start, 3)})
