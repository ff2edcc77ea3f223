"""The MLflow pyfunc of a trained query adapter (logged by `ragtune.adapter.mlflow_model`; models from code).

Self-contained (mlflow, pandas and sentence-transformers only): MLflow copies this file into the logged
model, so `mlflow.pyfunc.load_model(uri)` and `mlflow models serve` need no ragtune. The model's artifact
`sentence_transformer` is the train stage's export; `predict(["a question", ...])` returns the adapted query
vectors (n, d) float32, what `encode_query` of the export returns.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class QueryEncoder(PythonModel):
    def load_context(self, context):
        from sentence_transformers import SentenceTransformer

        path = Path(context.artifacts["sentence_transformer"])
        info = path / "ragtune_export.json"
        remote = (
            json.loads(info.read_text(encoding="utf-8")).get("trust_remote_code", False) if info.is_file() else False
        )
        self.model = SentenceTransformer(str(path), device="cpu", trust_remote_code=remote, local_files_only=True)

    def predict(self, context, model_input, params=None):
        if hasattr(model_input, "iloc"):  # a DataFrame (one string column) or a Series
            texts = model_input.iloc[:, 0].tolist() if model_input.ndim == 2 else model_input.tolist()
        else:
            texts = [model_input] if isinstance(model_input, str) else list(model_input)
        return np.asarray(self.model.encode_query([str(t) for t in texts], convert_to_numpy=True), dtype=np.float32)


mlflow.models.set_model(QueryEncoder())
