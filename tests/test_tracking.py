"""MLflow tracking: params flattened without secrets, metric series in batches, pipeline tags."""

import mlflow
import pytest

from ragtune.params import EmbeddingParams, MlflowParams
from ragtune.stage import of_logged_model
from ragtune.tracking import flatten, stage_run


def test_flatten_drops_secret_like_keys():
    flat = flatten("", {"llm": {"model": "m", "api_key": "sk-123", "nested": {"auth_token": "t", "x": 1}}})
    assert flat == {"llm.model": "m", "llm.nested.x": 1}


def test_stage_run_logs_params_series_and_tags(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with stage_run(
        "embed",
        MlflowParams(tracking_uri=uri, experiment="t"),
        params={"embedding": EmbeddingParams(), "llm": {"api_key": "sk-secret"}},
    ) as run:
        run.log_series("val/hit_at_5", [0.1 * i for i in range(2500)])
        run.log_metrics({"encoded": 3})
        run_id = run.run_id
    client = mlflow.MlflowClient(tracking_uri=uri)
    data = client.get_run(run_id).data
    assert data.params["embedding.batch_size"] == "32"
    assert "sk-secret" not in str(data.params) and not any("api_key" in k for k in data.params)
    assert data.tags["ragtune.stage"] == "embed" and "ragtune.params_hash" in data.tags
    history = client.get_metric_history(run_id, "val/hit_at_5")
    assert len(history) == 2500 and history[-1].step == 2499
    assert client.get_run(run_id).info.status == "FINISHED"


def test_failed_block_marks_run_failed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(RuntimeError):
        with stage_run("train", MlflowParams(tracking_uri=uri, experiment="t")) as run:
            run_id = run.run_id
            raise RuntimeError("boom")
    assert mlflow.MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "FAILED"


def test_disabled_tracking_is_a_noop():
    with stage_run("eval", MlflowParams(enabled=False)) as run:
        assert not run.active
        run.log_metrics({"x": 1.0})


def test_an_unreachable_tracking_server_is_refused_naming_the_param_without_the_password():
    from server_support import free_port

    from ragtune.errors import RagtuneError
    from ragtune.params import MlflowParams
    from ragtune.tracking import stage_run

    uri = f"http://tracker:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RagtuneError) as err:
        with stage_run("eval", MlflowParams(tracking_uri=uri)):
            pass
    message = str(err.value)
    assert message.startswith("mlflow.tracking_uri: cannot reach the tracking server http://tracker:***@127.0.0.1")
    assert "s3cret" not in message and "mlflow.enabled: false" in message


def test_the_logged_models_metrics_are_those_of_the_arms_that_run_it():
    mine = [
        "test.questions",
        "test.adapter.hit_at_5",
        "test.hybrid.mrr_at_20_ci_low",
        "test.adapter_vs_cosine.significant",
    ]
    mine += ["test.hybrid_vs_hybrid_cosine.hit_at_5.p"]
    others = ["test.cosine.hit_at_5", "test.bm25.mrr_at_20", "test.hybrid_cosine.hit_at_1", "test.linear.hit_at_5"]
    others += ["test.bm25_vs_cosine.hit_at_5.p", "val.adapter.hit_at_5", "judge.adapter.overall", "stage_seconds"]
    assert [k for k in mine + others if of_logged_model(k)] == mine


def test_a_stage_process_started_before_it_imports_anything_heavy():
    """The process start, which a stage's MLflow run starts at, is when the process began (to a clock tick),
    not when this module was imported."""
    import subprocess
    import sys
    import time

    before = time.time()
    code = "import time; time.sleep(0.5); from ragtune.tracking import process_started; print(process_started())"
    started = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert before - 0.02 <= started <= before + 0.4
