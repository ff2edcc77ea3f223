"""Trial throughput of the tune study against a real PostgreSQL server with 1, 2 and 3 worker processes, on
the current pipeline's data (run from the project root after `make run`; needs the dev extra's pgserver).

    python scripts/bench_pg_workers.py [--trials 12] [--workers 1 2 3]

Each run is a fresh study (its own database) with the project's params.yaml, `tune.n_trials` = --trials,
no timeout and no MLflow; prints trials per minute and the wall time per worker count.
"""

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    sys.path.insert(0, str(Path("tests").resolve()))
    from server_support import postgres_server

    from ragtune.adapter.config import TrainParams, TuneParams
    from ragtune.adapter.data import TRAINING_INPUTS
    from ragtune.adapter.tuning import run_study
    from ragtune.params import load_section

    base = load_section("train", TrainParams)
    rows = []
    with postgres_server() as url:
        for n in args.workers:
            tune = load_section("tune", TuneParams).model_copy(
                update={
                    "n_trials": args.trials,
                    "n_workers": n,
                    "timeout_s": None,
                    "storage": url,
                    "study_name": f"bench-{n}-workers",
                    "resume": False,
                }
            )
            t0 = time.perf_counter()
            result = run_study(tune, base, TRAINING_INPUTS, "data/tune/storage")
            wall = time.perf_counter() - t0
            finished = result.counts["complete"] + result.counts["pruned"]
            rows.append(
                {
                    "workers": n,
                    "trials": finished,
                    "wall_s": round(wall, 1),
                    "trials_per_min": round(60 * finished / wall, 2),
                    "best": round(result.best["value"], 4),
                }
            )
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
