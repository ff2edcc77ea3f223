"""`ragtune exps`: the experiments' headline table from `dvc exp show --json`: per experiment (and the
baselines they start from) the params it changed against its baseline, each arm's test Hit@k / MRR@k from
data/eval/metrics.json, and eval's recommended arm. `dvc exp show` itself has a column per param leaf, metric
leaf and dependency; this is the few a person compares."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from .errors import RagtuneError
from .paths import PipelinePaths

EVAL_METRICS = str(PipelinePaths().eval_dir / "metrics.json")


def read_exp_show(all_commits: bool = False) -> list[dict[str, Any]]:
    """`dvc exp show --json` of the repository in the current directory."""
    # dvc is a dependency of ragtune: the interpreter running this has it, whatever PATH holds
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RagtuneError(f"`dvc exp show --json` failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout or "[]")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _file_data(data: Mapping[str, Any] | None, kind: str, name: str | None = None) -> dict[str, Any]:
    files = (data or {}).get(kind) or {}
    if name is not None:
        return dict((files.get(name) or {}).get("data") or {})
    merged: dict[str, Any] = {}
    for f in files.values():
        merged.update(flatten((f or {}).get("data") or {}))
    return merged


def headline(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """{arm: {hit@k, mrr@k}} of the test set and the recommended arm, from eval's metrics.json in `data`."""
    metrics = _file_data(data, "metrics", EVAL_METRICS)
    test = metrics.get("test") or {}
    arms = {
        arm: {k: v for k, v in m.items() if k.startswith(("hit@", "mrr@"))}
        for arm, m in test.items()
        if isinstance(m, Mapping) and "_vs_" not in arm and any(k.startswith("hit@") for k in m)
    }
    return {"questions": test.get("questions"), "arms": arms, "recommended_arm": metrics.get("recommended_arm")}


def changed_params(params: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if baseline.get(k, object()) != v}


def experiment_rows(exp_show: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per baseline commit and per experiment run from it, experiments after their baseline."""
    rows = []
    for entry in exp_show:
        base = entry.get("data") or {}
        base_params = _file_data(base, "params")
        rows.append({"experiment": entry.get("name") or entry["rev"][:7], "baseline": None, **headline(base)})
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                params = _file_data(data, "params")
                rows.append(
                    {
                        "experiment": rev.get("name") or exp.get("name") or rev["rev"][:7],
                        "baseline": rows[-1]["experiment"] if rows[-1]["baseline"] is None else rows[-1]["baseline"],
                        "changed": changed_params(params, base_params),
                        **headline(data),
                    }
                )
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A table: experiment, changed params, `hit / mrr` of each arm on the test set, recommended arm."""
    arms = list(dict.fromkeys(arm for r in rows for arm in r["arms"]))
    keys = [k for r in rows for m in r["arms"].values() for k in m]
    hit = next((k for k in keys if k.startswith("hit@")), "hit@k")
    mrr = next((k for k in keys if k.startswith("mrr@")), "mrr@k")
    head = ["experiment", "changed params", *arms, "recommended"]
    table = [head]
    for r in rows:
        changed = r.get("changed")
        if changed is None:
            what = "(baseline)"
        else:
            what = " ".join(f"{k}={v}" for k, v in changed.items()) or "(none)"
        cells = [
            f"{r['arms'][a][hit]:.3f} / {r['arms'][a][mrr]:.3f}"
            if a in r["arms"] and hit in r["arms"][a] and mrr in r["arms"][a]
            else "-"
            for a in arms
        ]
        table.append([r["experiment"], what, *cells, r.get("recommended_arm") or "-"])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"test set: {hit} / {mrr} per arm (data/eval/metrics.json); all numbers: `dvc exp show`")
    return "\n".join(lines)
