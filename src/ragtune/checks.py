"""The check stage's work: every section of params.yaml validated, unknown sections refused, and the files
and environment variables the params name present, before the first stage does any work. Each stage still
validates the sections it reads when run on its own.

The section models are imported here by name (not through `params.SECTIONS`' strings) so that dvc.yaml's
code deps, traced from imports, rerun the check when a validator changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from .adapter.config import TrainParams, TuneParams
from .errors import ParamsError, RagtuneError
from .evaluation.learning_curve import CurveParams
from .evaluation.run import EvalParams
from .judge.config import JudgeParams
from .llm import LlmParams
from .llm.prompts import load_prompt
from .params import SECTIONS, EmbeddingParams, FetchParams, MlflowParams, Section, validate_params_file
from .synthesis.run import SynthesizeParams, question_prompt

SECTION_MODELS: dict[str, type[Section]] = {
    "fetch": FetchParams,
    "embedding": EmbeddingParams,
    "mlflow": MlflowParams,
    "llm": LlmParams,
    "synthesize": SynthesizeParams,
    "tune": TuneParams,
    "train": TrainParams,
    "eval": EvalParams,
    "curve": CurveParams,
    "judge": JudgeParams,
}
assert set(SECTION_MODELS) == set(SECTIONS), "checks.SECTION_MODELS must list every params.SECTIONS entry"


def check_params_file(path: str | os.PathLike[str] = "params.yaml") -> dict[str, Section]:
    """Validate the whole file, then what it names; one ParamsError listing every problem found."""
    sections = validate_params_file(path)
    problems = named_input_problems(sections)
    if problems:
        raise ParamsError(f"{path}: " + ("\n  " if len(problems) > 1 else "") + "\n  ".join(problems))
    return sections


def named_input_problems(sections: dict[str, Section]) -> list[str]:
    """What the params name but this machine lacks: input files, prompt files, environment variables."""
    # validate_params_file gives each section as its SECTION_MODELS model.
    fetch = cast(FetchParams, sections["fetch"])
    llm = cast(LlmParams, sections["llm"])
    tune = cast(TuneParams, sections["tune"])
    mlflow = cast(MlflowParams, sections["mlflow"])
    synthesize = cast(SynthesizeParams, sections["synthesize"])
    judge = cast(JudgeParams, sections["judge"])
    problems: list[str] = []
    if fetch.source == "jsonl":
        if not fetch.jsonl.corpus:
            problems.append("fetch.jsonl.corpus: not set; give the path of your corpus.jsonl")
        for key in ("corpus", "test", "train_questions"):
            value = getattr(fetch.jsonl, key)
            if value and not Path(value).is_file():
                problems.append(f"fetch.jsonl.{key}: {value} not found (paths are relative to the project root)")
    for key, load in (
        ("synthesize.prompt", lambda: question_prompt(synthesize.prompt)),
        ("judge.answer_prompt", lambda: load_prompt(judge.answer_prompt, setting="judge.answer_prompt")),
        ("judge.judge_prompt", lambda: load_prompt(judge.judge_prompt, setting="judge.judge_prompt")),
    ):
        try:
            load()
        except RagtuneError as exc:
            problems.append(str(exc) if key in str(exc) else f"{key}: {exc}")
    backends = {llm.backend, judge.fallback_backend if llm.backend == "ict" else llm.backend}
    if "llamacpp" in backends and not llm.llamacpp.model.startswith("packaged:"):
        if not Path(llm.llamacpp.model).is_file():
            problems.append(f"llm.llamacpp.model: {llm.llamacpp.model} not found")
    env = [("tune.storage_env", tune.storage_env), ("mlflow.tracking_uri_env", mlflow.tracking_uri_env)]
    if "anthropic" in backends:
        env.append(("llm.anthropic.api_key_env", llm.anthropic.api_key_env))
    for key, var in env:
        if var and not os.environ.get(var, "").strip():
            problems.append(f"{key}: the environment variable {var} is not set; export it before running")
    return problems
