"""How often the judge's local model loops in its answers, at each repeat penalty (not a pipeline stage).

Run from a workspace whose train stage has run (the default: `make run`). It builds the judge's answer
requests for a seeded `--questions` of the test questions, both arms, exactly as the judge stage does, and
sends each to the llamacpp model once per penalty, without any cache. Printed per penalty: answers that ended
normally, answers cut at `judge.answer_max_tokens` (a loop such as "-1000-1000-..." that never closes its
JSON), tokens written and seconds.

    python scripts/probe_answer_loops.py --questions 24 --penalties 1.0 1.1
"""

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--penalties", type=float, nargs="+", default=[1.0, 1.1])
    args = ap.parse_args()
    sys.path.insert(0, str(Path("src").resolve()))
    from ragtune.judge.config import JudgeParams
    from ragtune.judge.items import build_items
    from ragtune.judge.run import answer_calls
    from ragtune.llm import LlmParams, make_backend
    from ragtune.llm.base import GenRequest, ToolSpec
    from ragtune.llm.prompts import load_prompt
    from ragtune.params import load_section
    from ragtune.stage import parse_paths

    paths = parse_paths(None, ["corpus", "test", "embed_dir", "adapter"], ["--test", "data/synthesize/test.jsonl"])
    params = load_section("judge", JudgeParams).model_copy(update={"max_questions": args.questions})
    items, _ = build_items(paths, params)
    calls = answer_calls(items, load_prompt(params.answer_prompt), params)
    llm = load_section("llm", LlmParams).model_copy(update={"backend": "llamacpp"})
    backend = make_backend(llm)
    requests = [
        GenRequest(
            key=f"{i:064x}",
            system=c.system,
            user=c.user,
            max_tokens=c.max_tokens,
            temperature=c.temperature,
            tool=ToolSpec(c.tool, "Submit the answer.", c.schema),
        )
        for i, c in enumerate(calls)
    ]
    backend.server()  # load outside the timing
    for penalty in args.penalties:
        t0 = time.perf_counter()
        results = [backend.call(replace(r, repeat_penalty=None if penalty == 1.0 else penalty)) for r in requests]
        reasons = Counter("ok" if r.ok else r.reason for r in results)
        print(
            json.dumps(
                {
                    "repeat_penalty": penalty,
                    "questions": len(items),
                    "answers": len(results),
                    "outcomes": reasons,
                    "tokens_out": sum(r.usage.tokens_out for r in results),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            ),
            flush=True,
        )
    backend.close()


if __name__ == "__main__":
    main()
