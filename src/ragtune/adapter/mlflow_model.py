"""The trained adapter as an MLflow model: logged on the train run, optionally registered.

`log_query_encoder` logs the sentence-transformers export as a pyfunc (`mlflow_pyfunc.QueryEncoder`, models
from code: no ragtune needed to load it) with a signature (a string column in, float32 (-1, d) out) and an
input example, so the run shows a logged model and `mlflow.pyfunc.load_model(uri).predict(["a question"])`
returns the adapted query vectors. Given a registry name it registers a new version tagged with the git
commit and params hash; eval later adds the test metrics to that version (`tag_model_versions`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MODEL_NAME = "query_encoder"  # the logged model's name within its run


def requirements() -> list[str]:
    """Pinned to what trained it: loading elsewhere needs the same sentence-transformers and torch."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "sentence-transformers", "torch", "pandas")]


def log_query_encoder(
    run_id: str,
    export_dir: Path,
    dim: int,
    example: Sequence[str],
    register_as: str | None = None,
    version_tags: Mapping[str, str] | None = None,
) -> Any:
    """Log `export_dir` as the run's model (MLflow 3 LoggedModel); returns its ModelInfo. With `register_as`,
    register it as a new version of that model and tag the version."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([ColSpec("string")]), outputs=Schema([TensorSpec(np.dtype("float32"), (-1, dim))])
    )
    active = mlflow.active_run()
    # The train stage logs inside its own (active) run; elsewhere the run is resumed for the logging.
    with (
        contextlib.nullcontext()
        if active is not None and active.info.run_id == run_id
        else mlflow.start_run(run_id=run_id)
    ):
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(Path(__file__).with_name("mlflow_pyfunc.py")),
            artifacts={"sentence_transformer": str(export_dir)},
            signature=signature,
            input_example=list(example),
            pip_requirements=requirements(),
        )
    if register_as:
        version = mlflow.register_model(info.model_uri, register_as, tags=dict(version_tags or {}))
        info.registered_model_version = version.version
    return info


def tag_model_versions(client: Any, run_id: str, tags: Mapping[str, Any]) -> int:
    """Tag every registered version made from `run_id` (eval: the test metrics); returns how many."""
    versions = client.search_model_versions(f"run_id='{run_id}'")
    for mv in versions:
        for key, value in tags.items():
            client.set_model_version_tag(mv.name, mv.version, key, str(value))
    return len(versions)
