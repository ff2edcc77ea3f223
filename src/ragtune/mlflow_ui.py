"""`ragtune ui`: MLflow's web UI on the pipeline's tracking store, opened on the runs table of its experiment.

MLflow 3.17's UI shows an experiment either as a GenAI app (trace dashboards) or as model training (runs); it
takes the view from the URL's `workflowType`, else from the browser's last choice of its sidebar switch, else
GenAI, and reads no experiment tag or server setting for it. So the way to land on the runs is the URL: this
command prints it (and serves a local store with `mlflow ui`; a tracking server is only linked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from .errors import RagtuneError
from .params import MlflowParams

RUNS_VIEW = "workflowType=machine_learning"  # the UI's "Model training" view


def experiment_url(base: str, experiment_id: str) -> str:
    """The runs table of experiment `experiment_id` in the UI served at `base` (http://host:port)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{RUNS_VIEW}"


def is_server(tracking_uri: str) -> bool:
    return urlsplit(tracking_uri).scheme in ("http", "https")


def experiment_id(mlflow_params: MlflowParams) -> str:
    """The id of the pipeline's experiment in its tracking store; a RagtuneError when there is none yet."""
    import mlflow

    from .tracking import check_tracking_server, redact_url

    uri = mlflow_params.uri()  # from the environment when mlflow.tracking_uri_env names a variable
    where = redact_url(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MlflowClient would create an empty database there
        raise RagtuneError(f"mlflow.tracking_uri: {where} does not exist yet; run the pipeline first (make run)")
    check_tracking_server(uri)
    experiment = mlflow.MlflowClient(uri).get_experiment_by_name(mlflow_params.experiment)
    if experiment is None:
        raise RagtuneError(
            f"mlflow.experiment: no experiment {mlflow_params.experiment!r} in {where} yet; run the pipeline first"
        )
    return experiment.experiment_id


def serve_ui(mlflow_params: MlflowParams, host: str, port: int, workers: int) -> int:
    """Print the URL of the experiment's runs; for a local store, then run `mlflow ui` on it until stopped
    (its exit status is returned). A tracking server's UI is already served: only its URL is printed."""
    from .tracking import redact_url

    exp_id = experiment_id(mlflow_params)
    uri = mlflow_params.uri()
    if is_server(uri):
        print(redact_url(experiment_url(uri, exp_id)), flush=True)  # the browser asks for the password
        return 0
    print(f"MLflow UI of {uri}, experiment {mlflow_params.experiment!r}: open", flush=True)
    print(experiment_url(f"http://{host}:{port}", exp_id), flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(command)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached mlflow too: let it stop
        return proc.wait()
