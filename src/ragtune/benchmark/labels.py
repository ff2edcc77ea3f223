"""The label benchmark: how much of the best arm's test score a choice made on n labelled questions reaches.

    ragtune bench-labels [--work data/transfer/work] [--corpus NAME[=PREFIX,...]] ... [--sizes 10 20 30 50 100]
                         [--draws 300] [--seed 42] [--out data/transfer/labels]

For each corpus (a `ragtune bench` workspace, whose data/eval/per_question.csv holds every arm's first relevant
rank per test question), each n in `sizes` and each of `draws` seeded draws: n questions are drawn from the
labelled pool without replacement, the arm is chosen on them exactly as eval chooses on labelled questions
(`ragtune.evaluation.selection.choose_with_labels`, MRR@k), and the choice's MRR@k on the test questions is
divided by the best arm's there: the share of the best. Mean and worst 5% of the draws are reported, and how
often the choice called itself settled.

Pool and test: `NAME=PREFIX,...` makes the questions whose id starts with a prefix the pool and the others the
test set, the same for every draw (ACORD: `acord=train-,valid-`); a bare `NAME` draws each draw's n from all of
its questions and tests on the rest (no question is both). The arms must not have trained on any pool question:
true of `make transfer`'s workspaces, whose arms saw synthetic questions only. The linear comparison adapter
is never a candidate (eval does not choose it either).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RagtuneError
from ..labels import arm_order

PER_QUESTION = Path("data/eval/per_question.csv")
DEFAULT_SIZES = (10, 20, 30, 50, 100)
NOT_CANDIDATES = ("linear",)
WORST_QUANTILE = 0.05


@dataclass(frozen=True)
class RankTable:
    """Row i: question `ids[i]`; column a: arm `arms[a]`; `ranks` (n, A) int, 1-based first relevant rank,
    0 when none was retrieved."""

    ids: list[str]
    arms: list[str]
    ranks: np.ndarray

    def reciprocal(self, k: int) -> np.ndarray:
        """(n, A) reciprocal rank within k (MRR@k's per-question values)."""
        r = self.ranks.astype(np.float64)
        return np.where((r >= 1) & (r <= k), 1.0 / np.maximum(r, 1.0), 0.0)


def read_ranks(path: Path, set_name: str = "test") -> RankTable:
    """The `set_name` rows of eval's per_question.csv (errors name the file and what is wrong)."""
    if not path.is_file():
        raise RagtuneError(f"{path}: not found; run `ragtune bench` (make transfer) for this corpus first")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c for c in reader.fieldnames or [] if c.startswith("rank_")]
        arms = [c.removeprefix("rank_") for c in columns if c.removeprefix("rank_") not in NOT_CANDIDATES]
        if not arms:
            raise RagtuneError(f"{path}: no rank_<arm> columns; rerun the eval stage")
        ids, rows = [], []
        for line, row in enumerate(reader, start=2):
            if row.get("set") != set_name:
                continue
            try:
                rows.append([int(row[f"rank_{a}"]) for a in arms])
            except (TypeError, ValueError):
                raise RagtuneError(f"{path}:{line}: a rank is not an integer; rerun the eval stage") from None
            ids.append(row["id"])
    if not ids:
        raise RagtuneError(f"{path}: no '{set_name}' rows")
    return RankTable(ids, arms, np.asarray(rows, dtype=np.int64))


def pool_mask(ids: Sequence[str], prefixes: Sequence[str]) -> np.ndarray:
    """(n,) bool: the questions whose id starts with one of `prefixes`."""
    return np.array([any(q.startswith(p) for p in prefixes) for q in ids], dtype=bool)


@dataclass(frozen=True)
class SizeResult:
    n: int
    shares: np.ndarray  # (draws,) the choice's test MRR@k / the best arm's
    settled: np.ndarray  # (draws,) bool: the choice called itself settled
    chosen: Counter
    argmax_shares: np.ndarray  # (draws,) the labels' best arm, no prior: for comparison
    overturned: np.ndarray  # (draws,) bool: the labels replaced the prior

    def summary(self) -> dict[str, Any]:
        s = self.shares
        settled = s[self.settled]
        return {
            "n": self.n,
            "draws": len(s),
            "mean_share": round(float(s.mean()), 4),
            "worst5_share": round(float(np.quantile(s, WORST_QUANTILE)), 4),
            "min_share": round(float(s.min()), 4),
            "settled": round(float(self.settled.mean()), 4),
            "mean_share_when_settled": round(float(settled.mean()), 4) if len(settled) else None,
            "overturned": round(float(self.overturned.mean()), 4),
            "argmax_mean_share": round(float(self.argmax_shares.mean()), 4),
            "argmax_worst5_share": round(float(np.quantile(self.argmax_shares, WORST_QUANTILE)), 4),
            "chosen": dict(self.chosen.most_common()),
        }


def draw_prior(scores: Mapping[str, np.ndarray], prior: str) -> str | None:
    """The prior of one draw: `policy` is eval's (`ragtune.evaluation.recommend.labelled_prior`, hybrid rule),
    `none` no prior, any other value that arm."""
    from ..evaluation.recommend import labelled_prior

    if prior == "policy":
        return labelled_prior(scores, "hybrid")
    return None if prior == "none" else prior


def simulate_size(
    rr: np.ndarray,
    arms: Sequence[str],
    n: int,
    draws: int,
    seed: int,
    pool: np.ndarray | None,
    prior: str = "policy",
    resamples: int = 2000,
) -> SizeResult | None:
    """`draws` choices on n labelled questions (`rr` (q, A) reciprocal ranks) as eval makes them with `prior`
    (`draw_prior`), and the labels' plain best beside. With `pool` (q,) bool: drawn from the pool, scored on
    the rest (fixed); without: drawn from all, scored on each draw's remainder. None when there are not enough
    questions (the pool, or all but one)."""
    from ..evaluation.selection import choose_with_labels

    candidates = np.flatnonzero(pool) if pool is not None else np.arange(len(rr))
    if n > len(candidates) - (0 if pool is not None else 1):
        return None
    rng = np.random.default_rng([seed, n])
    fixed_test = None if pool is None else rr[~pool].mean(axis=0)
    shares, settled = np.empty(draws), np.zeros(draws, dtype=bool)
    chosen: Counter[str] = Counter()
    argmax, overturned = np.empty(draws), np.zeros(draws, dtype=bool)
    for d in range(draws):
        picked = rng.choice(candidates, size=n, replace=False)
        if fixed_test is None:
            rest = np.ones(len(rr), dtype=bool)
            rest[picked] = False
            test = rr[rest].mean(axis=0)
        else:
            test = fixed_test
        scores = {a: rr[picked, i] for i, a in enumerate(arms)}
        choice = choose_with_labels(scores, resamples=resamples, seed=seed + d, prior=draw_prior(scores, prior))
        best = float(test.max())
        means = rr[picked].mean(axis=0)
        plain = max(range(len(arms)), key=lambda i: (means[i], -_simplicity(arms[i])))
        shares[d] = test[arms.index(choice.arm)] / best if best > 0 else 1.0
        argmax[d] = test[plain] / best if best > 0 else 1.0
        settled[d] = choice.settled
        overturned[d] = bool(choice.extra.get("overturned"))
        chosen[choice.arm] += 1
    return SizeResult(n, shares, settled, chosen, argmax, overturned)


def _simplicity(arm: str) -> int:
    return arm_order(arm)[0]


def bench_corpus(
    name: str,
    table: RankTable,
    prefixes: Sequence[str] | None,
    sizes: Sequence[int],
    draws: int,
    seed: int,
    k: int,
    no_label_arm: str | None = None,
    prior: str = "policy",
) -> dict[str, Any]:
    """One corpus's results: the test MRR@k of every arm, and each size's shares (sizes the pool cannot
    fill are left out)."""
    rr = table.reciprocal(k)
    pool = None
    if prefixes:
        pool = pool_mask(table.ids, prefixes)
        if not pool.any() or pool.all():
            raise RagtuneError(
                f"corpus '{name}': the pool prefixes {list(prefixes)} select {int(pool.sum())} of "
                f"{len(pool)} questions; they must leave both a pool and a test set"
            )
    test_rr = rr if pool is None else rr[~pool]
    exact = {a: float(test_rr[:, i].mean()) for i, a in enumerate(table.arms)}
    test_mrr = {a: round(v, 4) for a, v in exact.items()}
    best = max(table.arms, key=lambda a: exact[a])
    out: dict[str, Any] = {
        "name": name,
        "design": "pool" if pool is not None else "remainder",
        "pool_prefixes": list(prefixes or []),
        "pool_questions": int(pool.sum()) if pool is not None else None,
        "test_questions": int(len(test_rr)),
        "questions": len(table.ids),
        f"test_mrr@{k}": test_mrr,
        "best_arm": best,
        "sizes": [],
    }
    if no_label_arm in test_mrr:
        out["no_label_arm"] = no_label_arm
        out["no_label_share"] = round(exact[no_label_arm] / exact[best], 4) if exact[best] else 1.0
    for n in sizes:
        result = simulate_size(rr, table.arms, n, draws, seed, pool, prior)
        if result is not None:
            out["sizes"].append(result.summary())
    return out


def parse_corpus(spec: str) -> tuple[str, list[str]]:
    """`name` or `name=prefix,prefix` -> (name, prefixes)."""
    name, _, rest = spec.partition("=")
    prefixes = [p for p in rest.split(",") if p]
    if not name or ("=" in spec and not prefixes):
        raise RagtuneError(f"--corpus {spec!r}: expected NAME or NAME=PREFIX[,PREFIX...] (e.g. acord=train-,valid-)")
    return name, prefixes


def run_label_bench(
    work: Path,
    corpora: Sequence[str],
    sizes: Sequence[int] = DEFAULT_SIZES,
    draws: int = 300,
    seed: int = 42,
    k: int = 20,
    prior: str = "policy",
) -> dict[str, Any]:
    """Every corpus of `corpora` (specs as `parse_corpus`) from its workspace `work/NAME`; `prior` as
    `draw_prior` (policy: eval's rule)."""
    from ..io import read_json

    if draws < 1 or not sizes or any(n < 1 for n in sizes):
        raise RagtuneError(f"--draws must be >= 1 and --sizes positive, got draws={draws}, sizes={list(sizes)}")
    inputs = []  # every corpus read (and checked) before any draw
    for spec in corpora:
        name, prefixes = parse_corpus(spec)
        report = work / name / "data/eval/report.json"
        rec = read_json(report).get("recommendation", {}) if report.is_file() else {}
        inputs.append((name, read_ranks(work / name / PER_QUESTION), prefixes, rec.get("arm")))
    rows = [bench_corpus(name, table, pre, sizes, draws, seed, k, arm, prior) for name, table, pre, arm in inputs]
    return {"metric": f"mrr@{k}", "draws": draws, "seed": seed, "sizes": list(sizes), "prior": prior, "corpora": rows}


def render_markdown(results: Mapping[str, Any]) -> str:
    """Per corpus and n: the mean share of the best arm's test score reached by eval's choice (worst 5% of draws
    in parentheses), then the same for the labels' plain best arm (no prior), for comparison."""
    sizes = results["sizes"]
    head = "| " + " | ".join(f"n={n}" for n in sizes) + " |"
    lines = [
        "| corpus | labelled pool → test | best arm (test) | no labels | rule " + head,
        "|---|---|---|---|---|" + "---|" * len(sizes),
    ]
    for c in results["corpora"]:
        by_n = {s["n"]: s for s in c["sizes"]}
        design = (
            f"{c['pool_questions']} ({', '.join(c['pool_prefixes'])}) → {c['test_questions']}"
            if c["design"] == "pool"
            else f"n of {c['questions']} → the rest"
        )
        metric = results["metric"]
        best = f"{c['best_arm']} {c[f'test_{metric}'][c['best_arm']]:.3f}"
        no_label = f"{c['no_label_arm']} {c['no_label_share']:.3f}" if "no_label_arm" in c else "–"
        for rule, key in (("eval's", ""), ("labels' best alone", "argmax_")):
            cells = [
                f"{by_n[n][f'{key}mean_share']:.3f} ({by_n[n][f'{key}worst5_share']:.2f})" if n in by_n else "–"
                for n in sizes
            ]
            first = f"| {c['name']} | {design} | {best} | {no_label} |" if not key else "| | | | |"
            lines.append(f"{first} {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_label_results(out: Path, results: Mapping[str, Any]) -> list[Path]:
    """labels.json, labels.md and labels.png (mean share against n per corpus, worst 5% as a band)."""
    from ..io import atomic_open, write_json
    from ..plots import xy_panels

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "labels.json", out / "labels.md", out / "labels.png"]
    write_json(paths[0], results)
    with atomic_open(paths[1]) as fh:
        fh.write("# Label benchmark\n\n" + render_markdown(results) + "\n")
    panels, bands = {}, {}
    for c in results["corpora"]:
        xs = [s["n"] for s in c["sizes"]]
        title = f"{c['name']} ({c['test_questions']} test questions)"
        panels[title] = {
            "eval's choice on n labels": (xs, [s["mean_share"] for s in c["sizes"]]),
            "the labels' best alone": (xs, [s["argmax_mean_share"] for s in c["sizes"]]),
        }
        bands[title] = {
            "eval's choice on n labels": (xs, [s["worst5_share"] for s in c["sizes"]], [1.0] * len(xs)),
            "the labels' best alone": (xs, [s["argmax_worst5_share"] for s in c["sizes"]], [1.0] * len(xs)),
        }
        if "no_label_arm" in c and xs:
            panels[title][f"no labels ({c['no_label_arm']})"] = ([xs[0], xs[-1]], [c["no_label_share"]] * 2)
    xy_panels(
        paths[2],
        panels,
        bands,
        xlabel="labelled questions n",
        ylabel=f"share of the best arm's test {results['metric'].upper()}",
        title="Choosing the arm on n labelled questions (mean; band: from the worst 5% of draws up)",
        ylim=(0.5, 1.0),
    )
    return paths


def render_label_block(results: Mapping[str, Any], image_dir: str = "data/transfer/labels") -> str:
    """The README block (without its markers): what was measured, the table, the chart, how to reproduce it."""
    from ..labels import metric_label

    metric = metric_label(results["metric"])
    return "\n".join(
        [
            "<!-- generated by `python -m ragtune.readme` from data/transfer/labels/labels.json: do not edit -->",
            f"Share of the best arm's test {metric} reached by the arm chosen on n labelled questions, as eval "
            "chooses with `fetch.jsonl.train_questions` (mean over "
            f"{results['draws']} seeded draws; worst 5% of draws in parentheses). `no labels`: the arm eval "
            "recommends without labels, and its share. The arms trained on none of these questions (the "
            "workspaces of `make transfer`).",
            "",
            render_markdown(results),
            "",
            f"![Label benchmark]({image_dir}/labels.png)",
            "",
            f"Reproduce: `make transfer`, then `make labels` (`{results.get('command', 'ragtune bench-labels')}`); "
            "`python -m ragtune.readme` refreshes this section.",
        ]
    )


def add_arguments(subparsers) -> None:
    """The `ragtune bench-labels` subcommand and its options (`ragtune.cli`)."""
    lb = subparsers.add_parser(
        "bench-labels",
        help="how well choosing the arm on n labelled questions does, from `ragtune bench` workspaces",
        description="For each corpus workspace <work>/<NAME> of `ragtune bench`, draw n labelled questions "
        "(seeded draws) and choose the arm on them as eval does with labelled questions; report the share "
        "of the best arm's test MRR the choice reaches (mean, worst 5%) in <out>/labels.json, labels.md "
        "and labels.png. Reads data/eval/per_question.csv; runs no pipeline.",
    )
    lb.add_argument(
        "--corpus",
        dest="corpora",
        action="append",
        required=True,
        metavar="NAME[=PREFIX,...]",
        help="a workspace; with prefixes, questions whose id starts with one are the labelled pool and the "
        "rest the test set, else each draw's n come from all and the rest are its test set; repeatable",
    )
    lb.add_argument(
        "--work", type=Path, default=Path("data/transfer/work"), help="workspaces (default: make transfer's)"
    )
    lb.add_argument("--out", type=Path, default=Path("data/transfer/labels"), help="output folder")
    lb.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 30, 50, 100], help="labelled questions n")
    lb.add_argument("--draws", type=int, default=300, help="seeded draws per n (default 300)")
    lb.add_argument("--seed", type=int, default=42)
    lb.add_argument(
        "--prior",
        default="policy",
        help="the arm the labels must beat: policy (eval's no-label choice, default), none (the labels' best "
        "alone), or an arm name (e.g. to see how fast labels correct a wrong prior)",
    )


def run_from_args(args, command: str) -> list[Path]:
    """Run the benchmark as `ragtune bench-labels` asks and write its files; returns the paths written."""
    results = run_label_bench(args.work, args.corpora, args.sizes, args.draws, args.seed, prior=args.prior)
    results["command"] = command
    return write_label_results(args.out, results)
