"""Typed params: an unknown key, a wrong type or an out-of-range value stops before any work."""

from pathlib import Path

import pytest

from ragtune.errors import ParamsError
from ragtune.params import EmbeddingParams, FetchParams, load_section, params_hash, validate_params_file

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_repository_params_file_is_valid():
    sections = validate_params_file(REPO / "params.yaml")
    assert sections["fetch"].source == "eu-law"
    assert sections["embedding"].model == "packaged:all-MiniLM-L6-v2"


def test_missing_section_means_defaults(tmp_path):
    assert load_section("embedding", EmbeddingParams, write(tmp_path, "fetch: {}\n")) == EmbeddingParams()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("embedding:\n  batch_sise: 8\n", "embedding.batch_sise: unknown key"),
        ("embedding:\n  batch_size: many\n", "embedding.batch_size: Input should be a valid integer"),
        ("embedding:\n  batch_size: 0\n", "embedding.batch_size: Input should be greater than or equal to 1"),
        ("embedding:\n  device: tpu\n", "embedding.device:"),
        ("embedding: [1, 2]\n", "'embedding' must be a mapping"),
    ],
)
def test_bad_embedding_params_name_the_key(tmp_path, text, expected):
    with pytest.raises(ParamsError) as err:
        load_section("embedding", EmbeddingParams, write(tmp_path, text))
    assert expected in str(err.value)


def test_nested_keys_are_named_with_their_path(tmp_path):
    text = "fetch:\n  eu_law:\n    test_fraction: 1.5\n    chunk_charz: 3\n"
    with pytest.raises(ParamsError) as err:
        load_section("fetch", FetchParams, write(tmp_path, text))
    msg = str(err.value)
    assert "fetch.eu_law.test_fraction: Input should be less than 1" in msg
    assert "fetch.eu_law.chunk_charz: unknown key" in msg and "chunk_chars" in msg


def test_unknown_section_is_an_error_with_a_suggestion(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown section 'trian' \(did you mean 'train'\?\)"):
        validate_params_file(write(tmp_path, "trian: {}\n"))
    # A stage reading only its own section refuses a misspelt one too: it would be silently ignored.
    with pytest.raises(ParamsError, match=r"unknown section 'embeding' \(did you mean 'embedding'\?\)"):
        load_section("fetch", FetchParams, write(tmp_path, "fetch: {}\nembeding:\n  batch_size: 0\n"))


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_section("fetch", FetchParams, write(tmp_path, "fetch: [\n"))
    with pytest.raises(ParamsError, match="params file not found"):
        load_section("fetch", FetchParams, tmp_path / "nope.yaml")


def test_params_hash_is_stable_and_sensitive():
    assert params_hash(EmbeddingParams()) == params_hash(EmbeddingParams())
    assert params_hash(EmbeddingParams()) != params_hash(EmbeddingParams(batch_size=8))
