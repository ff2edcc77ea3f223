"""Probe behind docs/findings/selection.md (not a pipeline stage): which arm is safe to deploy without labels.

For each `ragtune bench` workspace given, it loads the pipeline's own files (corpus embeddings, the shipped
adapter, BM25 as eval.bm25 says) and scores every arm and a set of fusion variants on

- `test`: the human test questions as they are;
- `drop` (SIMULATION): each test question without the words it shares with its relevant chunks (by BM25's
  tokens: stopwords out, stemmed), so BM25 cannot match a relevant chunk at all;
- `synonym` (SIMULATION): each shared word replaced by a WordNet synonym the relevant chunks do not contain
  (most frequent sense first; dropped when there is none), a crude model of users who name things in other
  words than the documents. Needs WordNet's database files (`--wordnet`, e.g. the Debian package
  wordnet-base's /usr/share/wordnet).

The simulated questions are re-embedded with the workspace's embedder (cache in --cache, never the
workspace's). The no-label choice depends only on the corpus and the synthetic questions, which the
simulation leaves as they are: an arm is safe without labels only if it is safe on every variant.

    python scripts/probe_selection.py data/transfer/work/{default,acord,or_sharc} \
        --wordnet /usr/share/wordnet --out data/transfer/selection_probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

FusionFn = Callable[[tuple, tuple, int], np.ndarray]  # (dense scored, lexical scored, depth) -> rows (n, depth)
CANDIDATES = 100


def wordnet_synonyms(root: Path) -> dict[str, list[str]]:
    """word -> synonyms in WordNet's sense order (index.* lists a lemma's synsets most frequent first)."""
    offsets: dict[str, list[tuple[str, int]]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"index.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            parts = line.split()
            n_synsets, n_pointers = int(parts[2]), int(parts[3])
            synsets = parts[6 + n_pointers : 6 + n_pointers + n_synsets]
            offsets.setdefault(parts[0], []).extend((pos, int(o)) for o in synsets)
    data: dict[str, dict[int, list[str]]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        table: dict[int, list[str]] = {}
        for line in (root / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            parts = line.split()
            n_words = int(parts[3], 16)
            table[int(parts[0])] = [re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in parts[4 : 4 + 2 * n_words : 2]]
        data[pos] = table
    out: dict[str, list[str]] = {}
    for lemma, senses in offsets.items():
        words = [w for pos, o in senses for w in data[pos].get(o, []) if w.lower() != lemma.replace("_", " ")]
        out[lemma] = list(dict.fromkeys(w.lower() for w in words))
    return out


class Mismatch:
    """Rewrites questions so that they share no BM25 term with their relevant chunks (the simulations)."""

    def __init__(self, bm25_params, synonyms: dict[str, list[str]] | None):
        import bm25s

        from ragtune.search.lexical import _stemmer

        self.stem = _stemmer(bm25_params.stemmer) or (lambda words: words)
        self.stopwords = set(bm25s.stopwords.STOPWORDS_EN) if bm25_params.stopwords == "en" else set()
        self.synonyms = synonyms or {}

    def terms(self, text: str) -> set[str]:
        words = [w for w in re.findall(r"(?u)\b\w\w+\b", text.lower()) if w not in self.stopwords]
        return set(self.stem(words))

    def rewrite(self, question: str, relevant_texts: list[str], mode: str, share: float, rng) -> str:
        """`question` with each word it shares with `relevant_texts` rewritten with probability `share` (the
        rest of the text, punctuation and spacing included, as it was)."""
        shared = set().union(*(self.terms(t) for t in relevant_texts)) if relevant_texts else set()

        def replace(match: re.Match) -> str:
            word = match.group(0)
            low = word.lower()
            if len(low) < 2 or low in self.stopwords or self.stem([low])[0] not in shared or rng.random() >= share:
                return word
            if mode == "synonym":
                return next(
                    (s for s in self.synonyms.get(low, []) if not (self.terms(s) & shared) and self.terms(s)), ""
                )
            return ""

        return re.sub(r"\s+", " ", re.sub(r"\w+", replace, question)).strip()


def fused_rows(contrib_rows: list[np.ndarray], contributions: list[np.ndarray], depth: int) -> np.ndarray:
    from ragtune.search.fusion import _accumulate

    return _accumulate(contrib_rows, contributions, depth)[1]


def rrf_contrib(rows: np.ndarray, k: float) -> np.ndarray:
    return np.broadcast_to(1.0 / (k + np.arange(1, rows.shape[1] + 1, dtype=np.float64)), rows.shape)


def overlap_at(dense_rows: np.ndarray, lexical_rows: np.ndarray, k: int) -> np.ndarray:
    """(n,) share of the dense top-k that BM25's top-k also holds."""
    d, b = dense_rows[:, :k], lexical_rows[:, :k]
    return ((d[:, :, None] == b[:, None, :]) & (d[:, :, None] >= 0)).any(axis=2).mean(axis=1)


def fusion_variants() -> dict[str, FusionFn]:
    from ragtune.search.fusion import reciprocal_rank_fusion, weighted_score_fusion

    out: dict[str, FusionFn] = {}
    out["rrf60"] = lambda d, b, depth: reciprocal_rank_fusion([d[1], b[1]], k=60, depth=depth)[1]
    for w in (0.6, 0.7, 0.8):
        out[f"wrrf{w}"] = lambda d, b, depth, w=w: reciprocal_rank_fusion(
            [d[1], b[1]], k=60, depth=depth, weights=[w, 1 - w]
        )[1]
    for k in (10, 20):
        out[f"rrf{k}"] = lambda d, b, depth, k=k: reciprocal_rank_fusion([d[1], b[1]], k=k, depth=depth)[1]
    for w in (0.5, 0.6, 0.7, 0.8, 0.9):
        out[f"cc{w}"] = lambda d, b, depth, w=w: weighted_score_fusion([d, b], [w, 1 - w], depth)[1]
    for n in (20, 50):

        def gated(d, b, depth, n=n):
            lex = np.where((b[1][:, :, None] == d[1][:, None, :n]).any(axis=2), b[1], -1)
            return fused_rows([d[1], lex], [rrf_contrib(d[1], 60), rrf_contrib(lex, 60)], depth)

        out[f"gate{n}"] = gated
    for k, tau in ((10, 0.3), (10, 0.5), (20, 0.3)):

        def agree(d, b, depth, k=k, tau=tau):
            weight = np.minimum(1.0, overlap_at(d[1], b[1], k) / tau)[:, None]
            return fused_rows([d[1], b[1]], [rrf_contrib(d[1], 60), weight * rrf_contrib(b[1], 60)], depth)

        out[f"agree{k}_{tau}"] = agree
    return out


def score(rows: np.ndarray, qs, params) -> dict[str, np.ndarray]:
    from ragtune.evaluation.metrics import per_question_metrics
    from ragtune.evaluation.ranking import hit_matrix

    return per_question_metrics(hit_matrix(rows[:, : params.depth], qs.relevant), qs.n_relevant, params)


def query_variants(test, corpus, bm25_params, modes, synonyms, embed_params, cache_path):
    """{"test": test, mode: simulated QuerySet} (questions a rewrite emptied are left out)."""
    from ragtune.cache import ContentCache
    from ragtune.embedding.embedder import CachedEmbedder
    from ragtune.evaluation.inputs import QuerySet

    out = {"test": test}
    if not modes:
        return out, {}
    mismatch = Mismatch(bm25_params, synonyms)
    info = {}
    with CachedEmbedder(embed_params, ContentCache(cache_path)) as embedder:
        for spec in modes:
            mode, _, share = spec.partition(":")
            rng = np.random.default_rng(0)
            texts = [
                mismatch.rewrite(q, [corpus.texts[r] for r in rel], mode, float(share or 1), rng)
                for q, rel in zip(test.texts, test.relevant)
            ]
            keep = [i for i, t in enumerate(texts) if t]
            emb = embedder.encode_queries([texts[i] for i in keep], desc=spec)
            out[spec] = QuerySet(
                spec,
                [test.ids[i] for i in keep],
                emb,
                [test.relevant[i] for i in keep],
                [test.origins[i] for i in keep],
                [texts[i] for i in keep],
            )
            info[spec] = {"kept": len(keep), "emptied": len(texts) - len(keep), "examples": texts[:3]}
    return out, info


def probe_workspace(ws: Path, modes: list[str], synonyms, cache: Path) -> dict:
    from ragtune.corpus.fetching import report_source
    from ragtune.evaluation.arms import LexicalArm, build_arms
    from ragtune.evaluation.inputs import load_corpus_with_embeddings, load_test_set, load_validation_set
    from ragtune.evaluation.metrics import EvalParams
    from ragtune.params import EmbeddingParams, load_section
    from ragtune.paths import PipelinePaths
    from ragtune.search.lexical import Bm25Index

    here = Path.cwd()
    os.chdir(ws)
    try:
        params = load_section("eval", EvalParams)
        paths = PipelinePaths()
        corpus = load_corpus_with_embeddings(paths.corpus, paths.embed_dir / "corpus.npz")
        test = load_test_set(paths.test, paths.embed_dir / "test.npz", corpus.ids)
        val = load_validation_set(
            paths.split, paths.embed_dir / "questions.npz", corpus.ids, paths.questions, real_path=paths.real_questions
        )
        source = report_source(Path("data/fetch/report.json"))
        arms = {a.name: a for a in build_arms(corpus, paths, params, source=source)}
        sets, info = query_variants(
            test, corpus, params.bm25, modes, synonyms, load_section("embedding", EmbeddingParams), cache
        )
        sets["val"] = val
        bm25 = LexicalArm("bm25", Bm25Index(corpus.lexical_texts(params.bm25, source), params.bm25))
        variants = fusion_variants()
        result: dict = {"simulation": info, "sets": {}}
        for name, qs in sets.items():
            cos = arms["cosine"].search(qs, CANDIDATES)
            ada = arms["adapter"].search(qs, CANDIDATES)
            lex = bm25.search(qs, CANDIDATES)
            per_q = {"cosine": score(cos[1], qs, params), "adapter": score(ada[1], qs, params)}
            per_q["bm25"] = score(lex[1], qs, params)
            for fname, fn in variants.items():
                per_q[f"{fname}(cosine)"] = score(fn(cos, lex, params.depth), qs, params)
                per_q[f"{fname}(adapter)"] = score(fn(ada, lex, params.depth), qs, params)
            ov = overlap_at(ada[1], lex[1], 10)
            result["sets"][name] = {
                "questions": len(qs.ids),
                "overlap@10": float(ov.mean()),
                "mrr@20": {a: round(float(v["mrr@20"].mean()), 4) for a, v in per_q.items()},
                "hit@5": {a: round(float(v["hit@5"].mean()), 4) for a, v in per_q.items()},
            }
            print(f"{ws.name} {name}: " + json.dumps(result["sets"][name]["mrr@20"]), file=sys.stderr)
        return result
    finally:
        os.chdir(here)


SHOWN = (
    "cosine",
    "adapter",
    "bm25",
    "rrf60(adapter)",
    "cc0.5(adapter)",
    "cc0.6(adapter)",
    "cc0.7(adapter)",
    "cc0.8(adapter)",
    "cc0.6(cosine)",
    "agree10_0.3(adapter)",
)


def render_markdown(results: dict) -> str:
    """One table per corpus: MRR@20 of the arms and fusions (rows) on the test questions and each simulation
    (columns), with BM25's share of raw cosine's MRR as the last row."""
    lines = []
    for name, r in results.items():
        sets = sorted(
            (s for s in r["sets"] if s != "val"),
            key=lambda s: (s != "test", s.partition(":")[0], float(s.partition(":")[2] or 0)),
        )
        lines += [f"**{name}** (MRR@20)", "", "| arm | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
        for arm in SHOWN:
            lines.append(f"| {arm} | " + " | ".join(f"{r['sets'][s]['mrr@20'][arm]:.3f}" for s in sets) + " |")
        ratio = [r["sets"][s]["mrr@20"]["bm25"] / r["sets"][s]["mrr@20"]["cosine"] for s in sets]
        lines += ["| bm25 / cosine | " + " | ".join(f"{x:.2f}" for x in ratio) + " |", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspaces", nargs="*", type=Path)
    ap.add_argument(
        "--modes",
        default="synonym:0.5,synonym:1,drop:1",
        help="simulations MODE:SHARE (share of the shared words rewritten), comma-separated; '' for none",
    )
    ap.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/ragtune_probe_embeddings.sqlite"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, nargs="*", help="only print the tables of these result files")
    args = ap.parse_args()
    if args.markdown:
        merged: dict = {}
        for path in args.markdown:
            for name, r in json.loads(path.read_text(encoding="utf-8")).items():
                merged.setdefault(name, {"sets": {}})["sets"].update(r["sets"])
        print(render_markdown(merged))
        return
    modes = [m for m in args.modes.split(",") if m]
    synonyms = wordnet_synonyms(args.wordnet) if any(m.startswith("synonym") for m in modes) else None
    results = {ws.name: probe_workspace(ws.resolve(), modes, synonyms, args.cache.resolve()) for ws in args.workspaces}
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
