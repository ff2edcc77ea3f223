"""The tune stage as `dvc repro` runs it, on the default data, from a fresh study: wall seconds against the
2-minute goal, at `train.threads` 1 (the default) and at all cores, and whether the two thread counts give
the same trials.

Each row runs `python -m ragtune.stages.tune` in its own scratch workspace: this checkout's params.yaml (with
`train.threads` set and the MLflow store a fresh SQLite file there, as a newcomer's first run has it) and
copies of data/fetch, data/synthesize and data/embed, which `make run` writes. The stage's own
Optuna-measured seconds (data/tune/run.json) and the process's wall time, imports included, are both
reported.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .common import save

ROOT = Path(__file__).resolve().parents[2]
INPUT_DIRS = ("data/fetch", "data/synthesize", "data/embed")
GOAL_S = 120.0


def run_tune_stage(threads: int, scratch: Path) -> dict:
    """One fresh tune stage at `threads` torch threads in `scratch`; returns its times and trials.csv."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["threads"] = threads
    params["mlflow"]["tracking_uri"] = f"sqlite:///{scratch / 'mlflow.db'}"
    params["tune"]["storage"] = None
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for d in INPUT_DIRS:
        shutil.copytree(ROOT / d, scratch / d)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAGTUNE_LOG": "WARNING"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ragtune.stages.tune"],
        check=False,
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"tune stage failed at {threads} thread(s):\n{proc.stderr[-3000:]}")
    record = json.loads((scratch / "data/tune/run.json").read_text(encoding="utf-8"))
    best = json.loads((scratch / "data/tune/best.json").read_text(encoding="utf-8"))
    return {
        "threads": threads,
        "stage_wall_s": round(wall, 1),
        "study_s": record["seconds"],
        "trials": best["trials"],
        "best_trial": best["trial"],
        "best_val_hit@5": round(best["value"], 4),
        "under_goal": wall < GOAL_S,
        "_trials_csv": (scratch / "data/tune/trials.csv").read_bytes(),
    }


def main() -> None:
    missing = [d for d in INPUT_DIRS if not (ROOT / d).is_dir()]
    if missing:
        print(f"bench_tune_stage: {', '.join(missing)} missing; run `make run` first", flush=True)
        return
    cores = os.cpu_count() or 1
    rows = []
    for threads in sorted({1, cores}):
        with tempfile.TemporaryDirectory() as tmp:
            row = run_tune_stage(threads, Path(tmp))
        rows.append(row)
        print(
            f"tune stage, {threads} thread(s): {row['stage_wall_s']} s wall ({row['study_s']} s in the study; "
            f"goal {GOAL_S:.0f} s), {row['trials']['complete']} complete + {row['trials']['pruned']} pruned, "
            f"best trial {row['best_trial']} val Hit@5 {row['best_val_hit@5']}",
            flush=True,
        )
    same = len({r["_trials_csv"] for r in rows}) == 1
    for r in rows:
        del r["_trials_csv"]
    print(f"trials.csv identical across thread counts: {same}", flush=True)
    save(
        "tune_stage",
        {
            "data": "the default's data/embed (make run)",
            "goal_s": GOAL_S,
            "rows": rows,
            "trials_identical_across_threads": same,
        },
    )


if __name__ == "__main__":
    main()
