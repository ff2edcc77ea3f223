"""embedding.backend and embedding.precision: PyTorch fp32/bf16 and ONNX Runtime fp32/int8 through
sentence-transformers, the ONNX files exported once from the packaged model and fingerprinted, and every backend and
precision its own embedding cache rows (torch fp32 keys as they were before the two existed)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from ragtune.cache import ContentCache, content_key
from ragtune.embedding import embedder as embedder_module
from ragtune.embedding.backends import quantization_target
from ragtune.embedding.embedder import CachedEmbedder, load_model
from ragtune.errors import ParamsError, RagtuneError
from ragtune.params import EmbeddingParams, parse_section

TEXTS = [
    "Personal data shall be processed lawfully, fairly and in a transparent manner.",
    "The Board shall advise the Commission on the application of this Regulation.",
    "Financial entities shall report major ICT-related incidents to the competent authority.",
]
VARIANTS = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8")]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    saved = os.environ.get("RAGTUNE_EXPORT_DIR")
    path = tmp_path_factory.mktemp("exported")
    os.environ["RAGTUNE_EXPORT_DIR"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("RAGTUNE_EXPORT_DIR", None)
    else:
        os.environ["RAGTUNE_EXPORT_DIR"] = saved


def test_torch_fp32_keys_are_the_keys_from_before_backends_existed(tmp_path):
    params = EmbeddingParams(device="cpu")
    with ContentCache(tmp_path / "e.sqlite") as cache:
        emb = CachedEmbedder(params, cache)
        text_hash = hashlib.sha256(TEXTS[0].encode()).hexdigest()
        before = content_key("embedding/v1", emb.fingerprint, "", True, emb.model.max_seq_length, text_hash)
        assert emb._key(TEXTS[0], "") == before
        assert emb.fingerprint.startswith("dir:") and "|" not in emb.fingerprint


@pytest.mark.slow
def test_each_backend_and_precision_has_its_own_rows_and_close_vectors(tmp_path, export_dir):
    vectors, keys, fingerprints = {}, {}, {}
    with ContentCache(tmp_path / "e.sqlite") as cache:  # one cache file: rows must not be shared
        for backend, precision in VARIANTS:
            emb = CachedEmbedder(EmbeddingParams(device="cpu", backend=backend, precision=precision), cache)
            vectors[backend, precision] = emb.encode_documents(TEXTS)
            assert emb.encoded == len(TEXTS), f"{backend} {precision} read another variant's rows"
            keys[backend, precision] = emb._key(TEXTS[0], "")
            fingerprints[backend, precision] = emb.fingerprint
            assert emb.describe()["backend"] == backend and emb.describe()["precision"] == precision
    assert len(set(keys.values())) == len(VARIANTS) and len(set(fingerprints.values())) == len(VARIANTS)
    ref = vectors["torch", "fp32"]
    for variant, floor in ((("onnx", "fp32"), 0.9999), (("torch", "bf16"), 0.995), (("onnx", "int8"), 0.95)):
        v = vectors[variant]
        assert v.dtype == np.float32 and v.shape == ref.shape
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        assert (v * ref).sum(axis=1).min() > floor, variant
    assert not np.array_equal(vectors["onnx", "int8"], vectors["onnx", "fp32"])


@pytest.mark.slow
def test_the_onnx_export_is_made_once_and_fingerprinted_by_its_bytes(export_dir):
    params = EmbeddingParams(device="cpu", backend="onnx", precision="int8")
    fingerprint = embedder_module.model_fingerprint(params)  # exports (or reuses the module's export)
    files = sorted(export_dir.rglob("*.onnx"))
    assert [f.name for f in files] == ["model.onnx", f"model_qint8_{quantization_target()}.onnx"]
    int8 = files[1]
    assert fingerprint.endswith(f"{int8.relative_to(int8.parents[1])}@{hashlib.sha256(int8.read_bytes()).hexdigest()}")
    stamps = {f: f.stat().st_mtime_ns for f in files}
    load_model(params)  # a second load reads the files, exports nothing
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert embedder_module.model_fingerprint(params) == fingerprint
    assert not list(export_dir.rglob("*.tmp"))  # no half-written file left behind


def test_precision_must_fit_the_backend():
    with pytest.raises(ParamsError, match=r"embedding\.precision: .*backend torch runs in fp32 or bf16, not int8"):
        parse_section({"backend": "torch", "precision": "int8"}, "embedding", EmbeddingParams)
    with pytest.raises(ParamsError, match=r"embedding\.precision: .*onnx runs in fp32 or int8, not bf16"):
        parse_section({"backend": "onnx", "precision": "bf16"}, "embedding", EmbeddingParams)
    with pytest.raises(ParamsError, match=r"embedding\.backend"):
        parse_section({"backend": "openvino"}, "embedding", EmbeddingParams)


def test_onnx_on_a_gpu_device_is_a_clear_error():
    with pytest.raises(RagtuneError, match="onnx runs on the CPU"):
        load_model(EmbeddingParams(backend="onnx", device="cuda"))
