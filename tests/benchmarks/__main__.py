"""`make bench`: run every tests/benchmarks/bench_*.py (or those whose name contains the argument)."""

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = argv[0] if argv else ""
    modules = sorted(p.stem for p in HERE.glob("bench_*.py") if wanted in p.stem)
    if not modules:
        print(f"no benchmark matches {wanted!r}", file=sys.stderr)
        return 2
    for name in modules:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(f"tests.benchmarks.{name}").main()
        print(f"({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
