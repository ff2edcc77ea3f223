"""End to end at scale (issue 34): a seeded synthetic corpus of N chunks (ragtune.benchmark.synthetic_corpus) run
through `dvc repro eval` (fetch, synthesize, embed, tune, train, eval) in a scratch workspace of `ragtune bench`'s
kind, one stage at a time, with each stage's wall time, share of the total and peak memory (the largest RSS of the
stage's process tree, from wait4). Writes data/bench/scale_e2e.json (one entry per N, merged with earlier runs).

    python scripts/scale_e2e.py --chunks 1000 10000 100000 [-S embedding.backend=onnx ...]

The default params apply (no-model ict synthesis), with any -S overrides. Workspaces are kept under
data/bench/scale_e2e/work/<N>, so a rerun only runs what changed (delete a folder to time it from scratch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ragtune.benchmark.synthetic_corpus import write_corpus
from ragtune.benchmark.workspaces import dvc_env, plan_bench, prepare_workspace

STAGES = ("fetch", "synthesize", "embed", "tune", "train", "eval")
OUT = Path("data/bench")


def run_stage(stage: str, cwd: Path, dvc: Path, env: dict[str, str], log: Path) -> dict:
    """`dvc repro --single-item STAGE`: wall seconds and the peak RSS (MB) of its process tree."""
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.Popen([str(dvc), "repro", "--single-item", stage], cwd=cwd, env=env, stdout=fh, stderr=fh)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{stage} failed in {cwd}; see {log}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def run_size(n: int, overrides: list[str], root: Path) -> dict:
    corpus_dir = OUT / "corpora" / str(n)
    if not (corpus_dir / "corpus.jsonl").is_file():
        write_corpus(corpus_dir, n, seed=0)
    plan = plan_bench(root, [corpus_dir], False, OUT / "scale_e2e", overrides)
    ws = plan.workspaces[0]
    env = dvc_env()
    dvc = Path(sys.executable).parent / "dvc"
    prepare_workspace(ws, plan.root, dvc, env)
    stages = {}
    for stage in STAGES:
        stages[stage] = run_stage(stage, ws.path, dvc, env, ws.path / "scale_e2e.log")
        print(f"[{n}] {stage}: {stages[stage]}", flush=True)
    total = sum(s["seconds"] for s in stages.values())
    for s in stages.values():
        s["share"] = round(s["seconds"] / total, 3) if total else 0.0
    return {"chunks": n, "overrides": overrides, "total_seconds": round(total, 1), "stages": stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, nargs="+", required=True)
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="section.key=value, as ragtune bench")
    args = ap.parse_args()
    path = OUT / "scale_e2e.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for n in args.chunks:
        key = str(n) + "".join(f" {o}" for o in args.overrides)
        results[key] = run_size(n, args.overrides, Path.cwd())
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
