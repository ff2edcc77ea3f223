"""The README's generated sections (never typed by hand).

`python -m ragtune.readme` rewrites the text between `<!-- results:start -->` and `<!-- results:end -->`
in README.md from data/eval/report.json, and, when data/transfer/results.json exists (`make transfer`,
`ragtune bench`), the text between `<!-- transfer:start -->` and `<!-- transfer:end -->` ("Results on other
legal corpora"), and likewise `<!-- querylogs:start/end -->` from data/transfer/real/results.json (`make
querylogs`: the benchmark with real training questions) and `<!-- querylogs-kfold:start/end -->` from
data/transfer/kfold_real/results.json (`make querylogs-kfold`: every labelled query scored out of fold), and
`<!-- labels:start/end -->` from data/transfer/labels/labels.json (`make labels`: the label benchmark); without
such a file its section is left as it is. `--check` only reports whether they are up to date (exit 1 when not).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import RagtuneError
from .labels import metric_label

START = "<!-- results:start -->"
END = "<!-- results:end -->"
README = Path("README.md")
METRICS = Path("data/eval/report.json")
TRANSFER_START = "<!-- transfer:start -->"
TRANSFER_END = "<!-- transfer:end -->"
TRANSFER = Path("data/transfer/results.json")
LOGS_START = "<!-- querylogs:start -->"
LOGS_END = "<!-- querylogs:end -->"
LOGS = Path("data/transfer/real/results.json")
KFOLD_START = "<!-- querylogs-kfold:start -->"
KFOLD_END = "<!-- querylogs-kfold:end -->"
KFOLD = Path("data/transfer/kfold_real/results.json")
LABELS_START = "<!-- labels:start -->"
LABELS_END = "<!-- labels:end -->"
LABELS = Path("data/transfer/labels/labels.json")

# Where the benchmark corpora come from, by workspace name (the folder name under ../shared/devsets/).
CORPUS_ATTRIBUTIONS = {
    "acord": "ACORD, the Atticus Clause Retrieval Dataset (The Atticus Project; CC BY 4.0): 3,931 contract clauses "
    "and 114 clause-retrieval queries written by attorneys, relevant = rated 4-5 stars by lawyers; "
    "https://github.com/TheAtticusProject/acord",
    "or_sharc": "OR-ShARC (Gao et al. 2021, open-retrieval ShARC; ShARC: Saeidi et al. 2018; CC BY-SA 3.0): 651 "
    "government rule texts and 686 crowdworker questions with scenarios, one gold rule each; "
    "https://github.com/Yifan-Gao/open_retrieval_conversational_machine_reading",
    "default": "the project's default corpus (EU regulations, source `eu-law`, test questions = article "
    "headings; see Corpora), run in a scratch workspace like the others",
}

_SET_TITLES = {
    "test_documents": "Test questions, documents ranked by their best passage",
    "val_documents": "Validation questions, documents ranked by their best passage",
    "test": "Test questions",
    "test_human": "Test questions written by people",
    "test_synthetic": "Synthetic test questions",
    "val": "Synthetic validation questions",
}
_SET_NOTES = {
    "val": "held out from adapter training; a gain here but not on the test questions means the "
    "adapter learnt the synthetic questions only"
}


def _metric_order(name: str) -> tuple[int, int]:
    kind, _, k = name.partition("@")
    return (
        ["hit", "recall", "mrr", "ndcg"].index(kind) if kind in ("hit", "recall", "mrr", "ndcg") else 9,
        int(k) if k.isdigit() else 0,
    )


def _cell(name: str, value: float, ci: list[float] | None) -> str:
    if name.startswith(("hit", "recall")):
        text = f"{value * 100:.1f}"
        return text + (f" ({ci[0] * 100:.1f}–{ci[1] * 100:.1f})" if ci else "")
    text = f"{value:.3f}"
    return text + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _set_section(name: str, block: Mapping[str, Any], confidence: float) -> list[str]:
    arms = block["arms"]
    metrics = sorted({m for a in arms.values() for m in a if m != "ci"}, key=_metric_order)
    real_val = name == "val" and not block.get("synthetic")  # the user's labelled questions validated
    title = "Real validation questions" if real_val else _SET_TITLES.get(name, name)
    if real_val:
        note = (
            "every real training question some bagged member held out; the adapter (and the hybrid) scored on each "
            "by the members that never trained on it, before any refit; the recommendation is chosen on these, "
            "and tuning on a slice of them (mildly optimistic for the adapter)"
        )
    else:
        note = _SET_NOTES.get(name)
    lines = [
        f"**{title}** — {block['questions']} questions, origin: {block['origin']}" + (f"; {note}." if note else ".")
    ]
    lines += ["", "| arm | " + " | ".join(metric_label(m) for m in metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for arm, values in arms.items():
        cells = [_cell(m, values[m], values.get("ci", {}).get(m)) if m in values else "–" for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    notes = [f"Hit and Recall in %, {confidence:.0%} bootstrap intervals in parentheses."]
    if any(m.startswith("recall") for m in metrics):
        notes.append(f"Recall@k over the {block['multi_relevant']} questions with several relevant chunks.")
    lines += ["", " ".join(notes)]
    for key, cmp in block.items():
        if (key.endswith("_vs_cosine") or key.startswith("hybrid_vs_")) and isinstance(cmp, Mapping):
            lines += ["", f"- {cmp['verdict']}"]
    if isinstance(block.get("adapter_seeds"), Mapping):
        lines += ["", _seed_line(block["adapter_seeds"], arms.get("adapter", {}))]
    return lines


def _seed_line(seeds: Mapping[str, Any], ensemble: Mapping[str, Any]) -> str:
    """The single-seed adapters' range beside the shipped ensemble: one draw is what a single run ships."""
    parts = []
    for key, values in seeds.items():
        if key in ("seeds", "range") or not values:
            continue
        scale, fmt = (100, "{:.1f}") if key.startswith("hit@") else (1, "{:.3f}")
        lo, hi = fmt.format(min(values) * scale), fmt.format(max(values) * scale)
        shipped = fmt.format(ensemble[key] * scale) if key in ensemble else "?"
        parts.append(f"{metric_label(key)} {lo}–{hi} (ensemble {shipped})")
    ids = seeds.get("seeds", [])
    return f"- Single-seed adapters ({len(ids)} seeds, {', '.join(map(str, ids))}): " + "; ".join(parts) + "."


def _at_a_glance(metrics: Mapping[str, Any], main_k: Any) -> str:
    key = f"hit@{main_k}"
    parts = []
    for name, block in metrics.items():
        if name in ("test", "val") and isinstance(block, Mapping) and "arms" in block:
            arms = ", ".join(f"{a} {v[key] * 100:.1f}" for a, v in block["arms"].items() if key in v)
            parts.append(f"{_SET_TITLES.get(name, name).lower()} ({block['questions']}): {arms}")
    return f"At a glance, Hit@{main_k} in % — " + "; ".join(parts) + "." if parts else ""


def _fusion_phrase(fusion: Mapping[str, Any]) -> str:
    """How the hybrid arms fused, e.g. "reciprocal rank (k=60)" or "weighted scores (dense share 0.7 for
    hybrid, 0.6 for hybrid_cosine, chosen on validation)"."""
    arms = {name: e for name, e in fusion.items() if isinstance(e, Mapping) and "dense" in e}
    weighted = {name: e["weight"] for name, e in arms.items() if e.get("method") == "weighted" and "weight" in e}
    if weighted and all(arms[name].get("chosen_on") is None for name in weighted):
        shares = sorted(set(weighted.values()))
        return f"min-max normalised scores with a fixed dense share of {', '.join(f'{w:g}' for w in shares)}"
    if weighted:
        shares = ", ".join(f"{w:g} for {name}" for name, w in sorted(weighted.items()))
        return f"min-max normalised scores weighted by a dense share chosen on validation ({shares})"
    return f"reciprocal rank (k={float(fusion.get('rrf_k', 60)):g})"


_BASES = {
    "labels": "chosen on labelled real questions",
    "prior": "no labelled questions: a prior, see Which retriever to deploy",
    "synthetic validation": "the best on synthetic validation, which favours BM25",
}


def _recommendation_line(metrics: Mapping[str, Any]) -> str:
    """One line: the arm to deploy, what the choice rests on, and how it fared on test."""
    rec = metrics.get("recommendation")
    if not isinstance(rec, Mapping) or not rec.get("arm"):
        return ""
    how = _BASES.get(str(rec.get("basis")), str(rec.get("by", "")).replace("mrr@", "MRR@"))
    fusion = metrics.get("fusion")
    if isinstance(fusion, Mapping):
        how += f"; the hybrid arms fuse BM25 with a dense ranking by {_fusion_phrase(fusion)}"
    return f"**Recommendation: `{rec['arm']}`** ({how}). {rec.get('note', '')}".rstrip()


def _thousands(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


PROTOCOLS = {
    "include": "synthetic training questions for every chunk, the test questions' chunks too (the deployment "
    "protocol; the test questions themselves never reach training, tuning or selection)",
    "exclude": "no synthetic training questions for the chunks test questions are about (the strict protocol)",
}


def _protocol_sentence(setup: Mapping[str, Any]) -> str:
    parts = []
    if setup.get("protocol"):
        parts.append(f" Protocol `{setup['protocol']}`: {PROTOCOLS.get(setup['protocol'], setup['protocol'])}.")
    if setup.get("bagging"):
        parts.append(
            f" The adapter is an ensemble of {setup['bagging']} trained on as many seeded validation "
            "splits; the single-seed range is given beside it."
        )
    return "".join(parts)


def render_results(metrics: Mapping[str, Any]) -> str:
    """Markdown for the results block (without the markers): one table per evaluation set, the paired
    verdicts, the charts and the command that reproduces the numbers."""
    setup = metrics.get("setup", {})
    confidence = float(setup.get("confidence", 0.95))
    lines = [
        "<!-- generated by `python -m ragtune.readme` from data/eval/report.json: do not edit -->",
        f"Default pipeline: source `{setup.get('source', 'unknown')}`, embedder "
        f"`{setup.get('embedding_model', 'unknown')}`, {setup.get('corpus_chunks', '?')} chunks, "
        f"exact search to depth {setup.get('depth', '?')}; {_thousands(setup.get('bootstrap_resamples', '?'))} "
        f"bootstrap resamples (seed {setup.get('seed', '?')}), significance at alpha="
        f"{setup.get('alpha', '?')}." + _protocol_sentence(setup),
        "",
    ]
    glance = _at_a_glance(metrics, setup.get("main_k"))
    if glance:
        lines += [glance, ""]
    recommendation = _recommendation_line(metrics)
    if recommendation:
        lines += [recommendation, ""]
    for name, block in metrics.items():
        if name == "setup" or not isinstance(block, Mapping) or "arms" not in block:
            continue
        lines += _set_section(name, block, confidence) + [""]
    lines += [
        "![Hit rate by arm](data/eval/hit_rate_by_arm.png)",
        "![Hit rate against k](data/eval/hit_rate_at_k.png)",
        "",
        "Reproduce: `make run` (or `dvc repro eval`), then `dvc metrics show` (the headline numbers; all of "
        "them are in data/eval/report.json); `python -m ragtune.readme` refreshes this section.",
    ]
    return "\n".join(lines)


def _bench_block(
    source: str, intro: str, results: Mapping[str, Any], images: list[str], reproduce: str, attributions: bool = True
) -> str:
    """The shared shape of a benchmark block: the generated-from line, the intro, the benchmark's tables, its
    charts (`![alt](path)` lines), where each corpus comes from (when `attributions`), and how to reproduce it."""
    from .benchmark.tables import render_markdown

    lines = [
        f"<!-- generated by `python -m ragtune.readme` from {source}: do not edit -->",
        intro,
        "",
        render_markdown(results),
        "",
        *images,
    ]
    sources = [
        f"- `{r['name']}`: {CORPUS_ATTRIBUTIONS[r['name']]}"
        for r in results.get("corpora", [])
        if attributions and r["name"] in CORPUS_ATTRIBUTIONS
    ]
    if sources:
        lines += ["", "Corpora:", *sources]
    return "\n".join(lines + ["", reproduce])


def render_transfer(results: Mapping[str, Any], image_dir: str = "data/transfer") -> str:
    """Markdown for the "Results on other legal corpora" block (without the markers): the benchmark's
    tables (ragtune.benchmark.cross_corpus.render_markdown), its charts, where each corpus comes from, and how to
    reproduce it."""
    rows = results.get("corpora", [])
    images = [f"![Hit rate by corpus]({image_dir}/results.png)"]
    if any(m.startswith("mrr@") for r in rows for m in r.get("metrics", [])):
        images.append(f"![MRR by corpus]({image_dir}/results_mrr.png)")
    return _bench_block(
        "data/transfer/results.json",
        "The whole pipeline as a user runs it on a corpus of their own (`fetch.source=jsonl`, the same "
        "params, `dvc repro eval` in a scratch workspace per corpus), on legal corpora whose test questions "
        "were written by people outside this project.",
        results,
        images,
        "Reproduce: `make transfer` (needs the corpora in `../shared/devsets/`), or `ragtune bench DIR "
        "[DIR ...] [--default]` on any folders holding `corpus.jsonl` and `test.jsonl`; `python -m "
        "ragtune.readme` refreshes this section.",
    )


def render_query_logs(results: Mapping[str, Any], image_dir: str = "data/transfer/real") -> str:
    """Markdown for the "With labelled real questions" block: the benchmark run on corpora whose folders
    hold train_questions.jsonl (the dataset's own train split) beside test.jsonl (its test split): the
    test-set table, the learning curves, where the corpora come from, and how to reproduce it."""
    rows = results.get("corpora", [])
    images = [f"![Hit rate by corpus]({image_dir}/results.png)", f"![MRR by corpus]({image_dir}/results_mrr.png)"]
    if any(r.get("curve") for r in rows):
        images.append(f"![Learning curves]({image_dir}/results_curve.png)")
    return _bench_block(
        "data/transfer/real/results.json",
        "The same benchmark with each dataset's own training queries as `fetch.jsonl.train_questions` and its "
        "test queries as the test set ("
        + ", ".join(
            f"`{r['name']}`: {r.get('train_questions', 0)} training, {r.get('test_questions')} test" for r in rows
        )
        + "); validation, model selection and tuning use a seeded 30% of the training queries.",
        results,
        images,
        "Reproduce: `make querylogs` (needs the corpora in `../shared/devsets/`; "
        "`scripts/split_devset.py` writes the train/test split folders), then `python -m ragtune.readme`.",
    )


def render_query_logs_kfold(results: Mapping[str, Any], image_dir: str = "data/transfer/kfold_real") -> str:
    """Markdown for the k-fold block: the benchmark with `train.folds` on corpora whose labelled queries are
    all in test.jsonl, so that each query is scored by an adapter that trained on the other folds' queries."""
    rows = results.get("corpora", [])
    folds = next((o.split("=", 1)[1] for o in results.get("overrides", []) if o.startswith("train.folds=")), "k")
    others = f"{int(folds) - 1} other" if folds.isdigit() else "other"
    return _bench_block(
        "data/transfer/kfold_real/results.json",
        f"Every labelled query of each dataset in test.jsonl and `train.folds={folds}`: each query is scored "
        f"by the adapter trained on the {others} folds' queries (plus the synthetic ones) and selected on a "
        "seeded slice of those, and the out-of-fold rankings are pooled into one test report over all the "
        "queries ("
        + ", ".join(f"`{r['name']}`: {r.get('test_questions')} queries" for r in rows)
        + "). Tuning reads no labelled query here: it selects on synthetic validation questions.",
        results,
        [f"![Hit rate by corpus]({image_dir}/results.png)", f"![MRR by corpus]({image_dir}/results_mrr.png)"],
        "Reproduce: `make querylogs-kfold` (needs the corpora in `../shared/devsets/`), then "
        "`python -m ragtune.readme`.",
        attributions=False,
    )


def render_labels(results: Mapping[str, Any], image_dir: str = "data/transfer/labels") -> str:
    from .benchmark.labels import render_label_block

    return render_label_block(results, image_dir)


# The generated sections other than the pipeline's own results: (name, markers, results file, renderer).
BENCH_SECTIONS = (
    ("transfer", TRANSFER_START, TRANSFER_END, TRANSFER, render_transfer),
    ("query logs", LOGS_START, LOGS_END, LOGS, render_query_logs),
    ("query logs k-fold", KFOLD_START, KFOLD_END, KFOLD, render_query_logs_kfold),
    ("label benchmark", LABELS_START, LABELS_END, LABELS, render_labels),
)


def replace_block(
    text: str, block: str, source: str = "README.md", start_marker: str = START, end_marker: str = END
) -> str:
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < 0 or end < start:
        raise RagtuneError(
            f"{source}: markers {start_marker} and {end_marker} not found (in that order); add "
            "them where the generated section should go"
        )
    return text[: start + len(start_marker)] + "\n" + block + "\n" + text[end:]


def current_block(text: str, start_marker: str = START, end_marker: str = END) -> str | None:
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        return None
    return text[start + len(start_marker) : end].strip("\n")


def load_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RagtuneError(f"{path}: not found; run the pipeline first (make run, or dvc repro eval)")
    return json.loads(path.read_text(encoding="utf-8"))


def _rewrite(readme: Path, new: str, old: str) -> bool:
    if new == old:
        return False
    from .io import atomic_open

    with atomic_open(readme) as fh:
        fh.write(new)
    return True


def update_readme(readme: Path = README, metrics_path: Path = METRICS) -> bool:
    """Rewrite the results block in place; True if the file changed."""
    text = readme.read_text(encoding="utf-8")
    return _rewrite(readme, replace_block(text, render_results(load_metrics(metrics_path)), str(readme)), text)


def _image_dir(readme: Path, results_path: Path) -> str:
    """The results folder as a link from the README's folder (relative, forward slashes)."""
    import os

    return Path(os.path.relpath(results_path.resolve().parent, readme.resolve().parent)).as_posix()


def expected_transfer(readme: Path, results_path: Path, render=render_transfer) -> str:
    return render(json.loads(results_path.read_text(encoding="utf-8")), _image_dir(readme, results_path))


def update_transfer(
    readme: Path = README,
    results_path: Path = TRANSFER,
    start: str = TRANSFER_START,
    end: str = TRANSFER_END,
    render=render_transfer,
) -> bool | None:
    """Rewrite a benchmark block (transfer by default) from the benchmark's results.json; None (nothing
    done) when that file does not exist, else True if the README changed."""
    if not results_path.is_file():
        return None
    text = readme.read_text(encoding="utf-8")
    new = replace_block(text, expected_transfer(readme, results_path, render), str(readme), start, end)
    return _rewrite(readme, new, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ragtune.readme", description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--metrics", type=Path, default=METRICS)
    ap.add_argument(
        "--transfer",
        type=Path,
        default=TRANSFER,
        help="the cross-corpus benchmark's results.json (section skipped when it does not exist)",
    )
    ap.add_argument(
        "--query-logs",
        type=Path,
        default=LOGS,
        help="the benchmark's results.json with real training questions (skipped when absent)",
    )
    ap.add_argument(
        "--query-logs-kfold", type=Path, default=KFOLD, help="the k-fold benchmark's results.json (skipped when absent)"
    )
    ap.add_argument("--labels", type=Path, default=LABELS, help="the label benchmark's labels.json (if present)")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README's results are out of date")
    args = ap.parse_args(argv)
    paths = (args.transfer, args.query_logs, args.query_logs_kfold, args.labels)
    try:
        if args.check:
            text = args.readme.read_text(encoding="utf-8")
            stale = []
            if current_block(text) != render_results(load_metrics(args.metrics)):
                stale.append("results")
            for (name, start, end, _, render), path in zip(BENCH_SECTIONS, paths):
                if path.is_file() and current_block(text, start, end) != expected_transfer(args.readme, path, render):
                    stale.append(name)
            if stale:
                print(
                    f"{args.readme}: {' and '.join(stale)} section(s) out of date; run python -m ragtune.readme",
                    file=sys.stderr,
                )
                return 1
            return 0
        changed = update_readme(args.readme, args.metrics)
        benches = {
            name: update_transfer(args.readme, path, start, end, render)
            for (name, start, end, _, render), path in zip(BENCH_SECTIONS, paths)
        }
    except (RagtuneError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.readme}: results section {'updated' if changed else 'already up to date'}")
    for name, bench in benches.items():
        if bench is not None:
            print(f"{args.readme}: {name} section {'updated' if bench else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
