"""The sentence-transformers export reproduces the library: encode_query is the adapted vector,
encode_document the plain one (within 1e-5), with the embed stage's prompts and normalisation; query/ alone
gives the adapted vector from a plain encode(); file modes follow the umask; an old export still loads."""

import json
import logging
import os
import stat

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from ragtune.adapter.export import (
    EXPORT_INFO,
    MODULE_FILE,
    QUERY_DIR,
    adapter_modules,
    export_sentence_transformer,
    load_exported,
    load_query_encoder,
    needs_remote_code,
)
from ragtune.adapter.model import AdapterConfig, QueryAdapter, adapt_queries, load_query_adapter, save_query_adapter
from ragtune.cache import ContentCache
from ragtune.embedding.embedder import CachedEmbedder, resolve_model
from ragtune.errors import RagtuneError
from ragtune.params import EmbeddingParams

QUERIES = [
    "What must a provider of a high-risk AI system document?",
    "incident reporting deadline",
    "Which authority supervises crypto-asset service providers?",
]
DOCUMENTS = [
    "This Regulation lays down harmonised rules for the placing on the market of AI systems.",
    "Member States shall ensure that essential entities notify significant incidents without undue delay.",
]


@pytest.fixture(scope="module")
def base_model():
    return SentenceTransformer(resolve_model("packaged:all-MiniLM-L6-v2"), device="cpu")


def trained_like(config: AdapterConfig, seed: int = 0) -> QueryAdapter:
    """An adapter with random non-zero weights everywhere (far from the identity)."""
    adapter = QueryAdapter(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return adapter.eval()


def library_vectors(base_model, adapter, tmp_path, params: EmbeddingParams):
    """What the pipeline computes: CachedEmbedder (embed stage), then adapt_queries (eval stage)."""
    with ContentCache(tmp_path / "cache.sqlite") as cache:
        embedder = CachedEmbedder(params, cache, model=base_model)
        queries = adapt_queries(adapter, embedder.encode_queries(QUERIES))
        documents = embedder.encode_documents(DOCUMENTS)
    return queries, documents


CONFIGS = {
    "mlp-2-layers": AdapterConfig(dim=384, kind="mlp", hidden_dim=32, n_hidden_layers=2, dropout=0.3),
    "mlp-affine": AdapterConfig(dim=384, kind="mlp", n_hidden_layers=0, residual_scale=0.5),
    "linear": AdapterConfig(dim=384, kind="linear"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_gives_the_library_vectors(name, base_model, tmp_path):
    adapter = trained_like(CONFIGS[name])
    params = EmbeddingParams()
    out = export_sentence_transformer(adapter, tmp_path / "export", base_model)
    remote = needs_remote_code(adapter)
    assert (out / MODULE_FILE).is_file() == remote
    assert json.loads((out / EXPORT_INFO).read_text())["trust_remote_code"] == remote

    model = SentenceTransformer(str(out), device="cpu", trust_remote_code=remote)
    want_q, want_d = library_vectors(base_model, adapter, tmp_path, params)
    got_q = model.encode_query(QUERIES, convert_to_numpy=True)
    got_d = model.encode_document(DOCUMENTS, convert_to_numpy=True)
    np.testing.assert_allclose(got_q, want_q, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got_d, want_d, rtol=0, atol=1e-5)
    plain = base_model.encode(QUERIES, normalize_embeddings=True)
    assert np.abs(got_q - plain).max() > 1e-2  # the query route really applies the adapter
    alone = SentenceTransformer(str(out / QUERY_DIR), device="cpu", trust_remote_code=remote)
    np.testing.assert_allclose(alone.encode(QUERIES), want_q, rtol=0, atol=1e-5)  # no task needed
    with pytest.raises(ValueError, match="task='query' and task='document'"):
        model.encode(QUERIES)  # the root has no default route


def test_affine_adapters_load_without_remote_code_and_mlps_need_it(base_model, tmp_path):
    export_sentence_transformer(trained_like(CONFIGS["linear"]), tmp_path / "linear", base_model)
    SentenceTransformer(str(tmp_path / "linear"), device="cpu").encode_query(QUERIES[:1])
    export_sentence_transformer(trained_like(CONFIGS["mlp-2-layers"]), tmp_path / "mlp", base_model)
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tmp_path / "mlp"), device="cpu")
    assert load_exported(tmp_path / "mlp").encode_query(QUERIES[:1]).shape == (1, 384)


def test_prompts_follow_the_embed_stage(base_model, tmp_path):
    params = EmbeddingParams(query_prompt="query: ", document_prompt="passage: ")
    adapter = trained_like(CONFIGS["mlp-2-layers"], seed=1)
    out = export_sentence_transformer(
        adapter, tmp_path / "export", base_model, params.query_prompt, params.document_prompt, params.normalize
    )
    model = load_exported(out)
    want_q, want_d = library_vectors(base_model, adapter, tmp_path, params)
    np.testing.assert_allclose(model.encode_query(QUERIES), want_q, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.encode_document(DOCUMENTS), want_d, rtol=0, atol=1e-5)
    # query/ alone applies the query prompt by default, and takes a caller's prompt name as encode_query does.
    alone = load_query_encoder(out)
    np.testing.assert_allclose(alone.encode(QUERIES), want_q, rtol=0, atol=1e-5)
    np.testing.assert_allclose(alone.encode(QUERIES, prompt_name="query"), want_q, rtol=0, atol=1e-5)


def test_export_of_a_saved_adapter_and_replacement_in_place(base_model, tmp_path):
    save_query_adapter(trained_like(CONFIGS["mlp-2-layers"], seed=2), tmp_path / "adapter")
    adapter = load_query_adapter(tmp_path / "adapter")
    out = tmp_path / "adapter" / "sentence_transformer"
    export_sentence_transformer(trained_like(CONFIGS["linear"], seed=3), out, base_model)
    export_sentence_transformer(adapter, out, base_model)  # replaces the previous export whole
    assert (out / MODULE_FILE).is_file()
    assert not list(tmp_path.joinpath("adapter").glob(".sentence_transformer*"))  # no temp dirs left
    np.testing.assert_allclose(
        load_exported(out).encode_query(QUERIES),
        adapt_queries(adapter, base_model.encode(QUERIES, normalize_embeddings=True)),
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_file_modes_follow_the_umask(umask, base_model, tmp_path):
    """mkdtemp makes the export folder 0700 and safetensors writes 0600; after the export, every folder is
    0777 and every file 0666 less the umask (0755 / 0644 under 022), so a copy is readable by others."""
    previous = os.umask(umask)
    try:
        out = export_sentence_transformer(trained_like(CONFIGS["mlp-2-layers"]), tmp_path / "export", base_model)
    finally:
        os.umask(previous)
    paths = [out, *out.rglob("*")]
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o777 & ~umask}
    assert {m for p, m in modes.items() if (out / p).is_file()} == {0o666 & ~umask}
    assert f"{QUERY_DIR}/model.safetensors" in modes and len(modes) > 15


def format_1_export(adapter, base_model, out):
    """An export as ragtune wrote it before format 2: a Router defaulting to the document route, flat."""
    from sentence_transformers.sentence_transformer.modules import Router

    base = list(base_model.children())
    router = Router.for_query_document(base + adapter_modules(adapter), base, default_route="document")
    SentenceTransformer(modules=[router], device="cpu").save(str(out), create_model_card=False)
    (out / EXPORT_INFO).write_text(json.dumps({"adapter": adapter.config.to_dict(), "trust_remote_code": False}))
    return out


def test_an_export_of_format_1_still_loads_with_a_warning(base_model, tmp_path, caplog):
    adapter = trained_like(CONFIGS["linear"])
    out = format_1_export(adapter, base_model, tmp_path / "old")
    with caplog.at_level(logging.WARNING, logger="ragtune.adapter.export"):
        model = load_exported(out)
    assert "format 1: its plain encode() returns the unadapted document vector" in caplog.text
    want_q, _ = library_vectors(base_model, adapter, tmp_path, EmbeddingParams())
    np.testing.assert_allclose(model.encode_query(QUERIES), want_q, rtol=0, atol=1e-5)
    with pytest.raises(RagtuneError, match="no query encoder of its own"):
        load_query_encoder(out)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragtune.adapter.export"):
        load_exported(export_sentence_transformer(adapter, tmp_path / "new", base_model))
    assert "format 1" not in caplog.text


def test_dimension_mismatch_is_refused(base_model, tmp_path):
    with pytest.raises(ValueError, match="384-d"):
        export_sentence_transformer(trained_like(AdapterConfig(dim=16)), tmp_path / "x", base_model)


def test_the_logged_mlflow_model_gives_the_adapted_vectors_and_registers(base_model, tmp_path):
    """The train stage's MLflow model: a pyfunc over the export whose predict() is the library's adapted
    query vector (within 1e-5), with a signature, registered as a tagged version when a name is given."""
    import mlflow

    from ragtune.adapter.mlflow_model import MODEL_NAME, log_query_encoder, tag_model_versions

    adapter = trained_like(CONFIGS["mlp-2-layers"])
    out = export_sentence_transformer(adapter, tmp_path / "export", base_model)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("t")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    info = log_query_encoder(
        run_id, out, 384, QUERIES[:1], register_as="rq", version_tags={"ragtune.git_commit": "abc"}
    )

    model = mlflow.pyfunc.load_model(info.model_uri)
    predicted = model.predict(QUERIES)
    library, _ = library_vectors(base_model, adapter, tmp_path, EmbeddingParams())
    assert predicted.shape == (len(QUERIES), 384) and predicted.dtype == np.float32
    assert np.abs(predicted - library).max() <= 1e-5
    assert np.abs(model.predict(QUERIES[0]) - library[:1]).max() <= 1e-5  # one string works too
    inputs = info.signature.inputs.to_dict()
    assert inputs[0]["type"] == "string" and info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 384)
    client = mlflow.MlflowClient(uri)
    assert [m.name for m in client.search_logged_models([client.get_experiment_by_name("t").experiment_id])] == [
        MODEL_NAME
    ]
    version = client.get_model_version("rq", info.registered_model_version)
    assert version.run_id == run_id and version.tags["ragtune.git_commit"] == "abc"
    assert tag_model_versions(client, run_id, {"test.adapter.hit_at_5": 0.5}) == 1
    assert client.get_model_version("rq", version.version).tags["test.adapter.hit_at_5"] == "0.5"
