"""The question-frame probe behind `llm.ict.template_share`'s default (not a pipeline stage).

For a workspace after `dvc repro eval` (the main checkout, or a `ragtune bench` workspace, made with
`llm.ict.templates` empty or `template_share` 0, which `auto` is with real training questions), it writes a
sibling workspace OUT whose synthetic questions are the same ones with a share of them put into question
frames, then runs embed and tune there (tune.seed as given) and trains the tuned configuration as the train
stage does (bagged, interpolation auto), and prints the shipped adapter's test Hit@5 / MRR@20 against raw
cosine (McNemar and paired-bootstrap p). Which queries are framed, and with which frame, comes from a hash h
of the question id, so every tune seed sees the same draws: --share 1 frames every query with FRAMES[h % 6];
--share 0.5 frames those with an even h, with FRAMES[(h // 2) % 6] (the README's rows); --share 0 frames none
(the workspace's own questions under another tune seed). The pipeline's own `llm.ict.templates` draws per
chunk instead: other draws, same idea.

    python scripts/probe_frames.py data/transfer/work/or_sharc /tmp/frames_1_s43 --share 1 --tune-seed 43
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

FRAMES = [
    "What are the rules on {q}?",
    "What does it say about {q}?",
    "Can you tell me about {q}?",
    "How does {q} work?",
    "I have a question about {q}.",
    "Does {q} apply to me?",
]


def rewrite(workspace: Path, share: float) -> list[str]:
    """The workspace's questions.jsonl lines, a share of them framed (sentences with their first letter lowered)."""
    sys.path.insert(0, str((workspace / "src").resolve()))
    from ragtune.llm.config import LlmParams
    from ragtune.llm.ict import make_extractor, styled_queries
    from ragtune.params import load_section
    from ragtune.records import load_test

    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        llm = load_section("llm", LlmParams)
        real = Path("data/fetch/train_questions.jsonl")
        n_real = len(load_test(real)) if real.is_file() else 0
        llm = llm.model_copy(update={"ict": llm.ict.for_real_questions(n_real)})
        corpus = {
            r["id"]: r["text"]
            for r in map(json.loads, Path("data/fetch/corpus.jsonl").read_text(encoding="utf-8").splitlines())
        }
        lines = Path("data/synthesize/questions.jsonl").read_text(encoding="utf-8").splitlines()
    finally:
        os.chdir(cwd)
    if llm.ict.templates and llm.ict.template_share > 0:
        sys.exit(
            f"{workspace}: its questions were made with llm.ict.templates (share {llm.ict.template_share}); "
            "make it with -S llm.ict.template_share=0"
        )
    extractor = make_extractor(llm.ict) if llm.ict.style != "sentence" else None
    styles: dict[str, dict[str, str]] = {}
    out = []
    for line in lines:
        r = json.loads(line)
        cid, q = r["chunk_id"], r["question"]
        if cid not in styles:  # the style each query was made in (ICT is deterministic)
            qs, st = styled_queries(corpus[cid], 3, llm.seed, llm.ict, extractor)
            styles[cid] = dict(zip(qs, st))
        h = int(hashlib.sha256(r["id"].encode()).hexdigest()[:8], 16)
        frame = (
            None
            if share == 0.0
            else FRAMES[h % len(FRAMES)]
            if share == 1.0
            else FRAMES[(h // 2) % len(FRAMES)]
            if h % 2 == 0
            else None
        )
        if frame is not None:
            text = q[0].lower() + q[1:] if styles[cid].get(q) == "sentence" else q
            r["question"] = frame.format(q=text)
        out.append(json.dumps(r))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--share", type=float, choices=(0.0, 0.5, 1.0), default=1.0)
    ap.add_argument("--tune-seed", type=int, default=42)
    args = ap.parse_args()
    base, out = args.workspace.resolve(), args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "data/synthesize").mkdir(parents=True)
    (out / "data/cache").mkdir()
    (out / "data/fetch").symlink_to(base / "data/fetch")
    for name in ("src", "stages"):
        (out / name).symlink_to((base / name).resolve())
    shutil.copy(base / "data/cache/embeddings.sqlite", out / "data/cache/")
    for name in ("test.jsonl", "report.json"):
        shutil.copy(base / "data/synthesize" / name, out / "data/synthesize" / name)
    params = (base / "params.yaml").read_text(encoding="utf-8")
    tune_at = params.index("\ntune:")
    seed_at = tune_at + re.search(r"\n  seed: \d+", params[tune_at:]).start()
    params = params[:seed_at] + re.sub(r"seed: \d+", f"seed: {args.tune_seed}", params[seed_at:], count=1)
    (out / "params.yaml").write_text(params, encoding="utf-8")
    (out / "data/synthesize/questions.jsonl").write_text("\n".join(rewrite(base, args.share)) + "\n", encoding="utf-8")

    env = {**os.environ, "PYTHONPATH": str(out / "src")}
    py = sys.executable
    subprocess.run(
        [
            py,
            "-m",
            "ragtune.stages.embed",
        ],
        cwd=out,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([py, "-m", "ragtune.stages.tune"], cwd=out, env=env, check=True, stdout=subprocess.DEVNULL)
    os.chdir(out)
    from probe_eval import AgainstCosine, load_test_inputs, train_tuned

    from ragtune.adapter.model import adapt_queries

    params, best, bagged = train_tuned()
    versus = AgainstCosine(*load_test_inputs())
    ada = versus.compare(lambda q: adapt_queries(bagged.adapter, q))
    print(
        json.dumps(
            {
                "workspace": str(out),
                "trial": best.get("trial"),
                "kind": params.kind,
                "interpolation": bagged.interpolation,
                "test": len(versus.test.ids),
                "cosine": [
                    round(100 * versus.cosine["hit@5"].mean(), 1),
                    round(float(versus.cosine["mrr@20"].mean()), 4),
                ],
                "adapter": [round(100 * ada["hit@5"], 1), round(ada["mrr@20"], 4)],
                "p_hit@5": round(ada["p_hit@5"], 4),
                "p_mrr@20": round(ada["p_mrr@20"], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
