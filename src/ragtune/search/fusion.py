"""Hybrid retrieval: fusing a dense and a lexical (BM25) ranking into one ranking, vectorised.

Two fusions, both over the candidates each arm retrieved (corpus rows, best first, -1 for an empty slot,
as `dense.exact_top_k` and `lexical.Bm25Index.top_k` return them):

- `reciprocal_rank_fusion` (RRF, Cormack et al. 2009): a row scores sum over arms of w_a / (k + rank_a),
  rank 1-based; an arm that did not retrieve the row adds nothing. No scores needed, nothing to tune; k=60
  is the usual constant.
- `weighted_score_fusion`: each arm's scores min-max normalised per query over the rows it retrieved (its
  best row 1, its worst 0; a row it did not retrieve gets 0 from it), then w * dense + (1 - w) * lexical.
  The default (eval, `ragtune search`): a fixed w = 0.6. RRF rewards any row both rankings hold, whatever its
  place in the dense one, so a BM25 that matches the wrong chunks (users who name things in other words than
  the documents) pulls the fused ranking below the dense one; a dense share above one half keeps the dense
  ranking's order unless BM25 is sure. `choose_weight` picks w from a grid by MRR on the validation questions
  (never on test) when `eval.hybrid.weights` holds several.

A row only one arm returns still gets that arm's share. BM25's "no term in common" slots (-1) are not
candidates. Ties in the fused score go to the lower corpus row, so results are deterministic. Fuse at a
deeper candidate depth than is reported (`HybridParams.candidates`), so fusion has material, then cut.

Why numpy and not `ranx`'s fusion functions (the maintained implementation the issue suggests): measured on
this project's Python 3.11 venv (2 cores), ranx 0.3.21 adds 11 packages the project does not have (numba,
llvmlite, fastparquet, cramjam, ir_datasets, lxml, lz4, cbor2, seaborn, ...): 76 MB of wheels, 254 MB
installed (llvmlite alone 173 MB); `import ranx` takes 4-5 s and its first `fuse` call 24 s of numba JIT
compilation, paid again in every process (each eval stage, each `ragtune search`), against ~0.2 s for
numpy; and it takes runs as dicts of string ids per query. The two fusions are a few dozen lines of numpy
here, follow ranx's definitions (its `rrf` and `wsum` with `min-max` norm give the same numbers on the
tests' hand-computed examples) and are tested against hand-computed rankings (tests/search/test_fusion.py).

The fusion functions live in `ragtune.deploy.hybrid` (numpy only), which the eval stage also copies into its
hybrid artefact: the standalone loader and eval fuse with the same code. They are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ..deploy.hybrid import (  # noqa: F401 (re-exported: the one implementation of the fusion math)
    FUSIONS,
    Scored,
    fuse,
    min_max_normalise,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)
from ..evaluation.ranking import hit_matrix, per_query_reciprocal_rank
from ..params import Section

Weight = Annotated[float, Field(ge=0.0, le=1.0)]


class HybridParams(Section):
    """Eval's hybrid arms (`hybrid`: BM25 + the adapter, `hybrid_cosine`: BM25 + raw cosine); also used by
    `ragtune search`. They need the BM25 arm (`eval.bm25.enabled`)."""

    enabled: bool = True
    method: Literal["rrf", "weighted"] = "weighted"
    rrf_k: float = Field(60.0, ge=0.0, le=100_000.0)
    # the dense share of the weighted fusion: one value is fixed, several are chosen from on validation
    weights: list[Weight] = [0.6]
    candidates: int = Field(100, ge=1, le=100_000)

    @model_validator(mode="after")
    def _check_weights(self) -> HybridParams:
        if not self.weights or len(set(self.weights)) != len(self.weights):
            raise ValueError(f"weights must be a non-empty list of distinct dense shares in [0, 1], got {self.weights}")
        return self


def fuse_hybrid(
    dense: Scored,
    lexical: Scored,
    depth: int,
    method: Literal["rrf", "weighted"] = "rrf",
    rrf_k: float = 60.0,
    weight: float | None = None,
) -> Scored:
    """The hybrid of eval and `ragtune search`: RRF of the two rankings, or the weighted fusion with dense
    share `weight` (lexical 1 - weight)."""
    return fuse(method, fusion_params(method, rrf_k, weight), dense, lexical, depth)


def fusion_params(method: str, rrf_k: float = 60.0, weight: float | None = None) -> dict[str, float | None]:
    """The params `ragtune.deploy.hybrid.fuse` takes for `method`, from eval's settings."""
    return {"rrf_k": rrf_k} if method == "rrf" else {"weight": weight}


def mean_reciprocal_rank(rows: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """MRR@k of a ranking (n_queries, depth) against each query's relevant rows."""
    rows = rows[:, :k]
    if len(relevant) == 0:
        return float("nan")
    return float(per_query_reciprocal_rank(hit_matrix(rows, relevant), k).mean())


def choose_weight(
    dense: Scored, lexical: Scored, relevant: Sequence[np.ndarray], weights: Sequence[float], mrr_k: int
) -> tuple[float, dict[float, float]]:
    """The dense share of `weights` whose weighted fusion has the best MRR@mrr_k on these (validation)
    questions; ties go to the first weight of the grid. Returns (weight, {weight: MRR})."""
    if not weights:
        raise ValueError("no weights to choose from")
    mrr = {
        float(w): mean_reciprocal_rank(
            fuse_hybrid(dense, lexical, mrr_k, "weighted", weight=float(w))[1], relevant, mrr_k
        )
        for w in weights
    }
    best = max(mrr, key=lambda w: (mrr[w], -list(mrr).index(w)))
    return best, mrr
