"""Training the query adapter: data loading, the seeded chunk-level validation split, and the loop.

The loop is AdamW with weight decay and gradient clipping; after each epoch Hit@5 is computed for
all validation questions at once (one batched product through `ragtune.retrieval`), and training
stops after `patience` epochs without improvement. The untrained adapter (the identity, i.e. raw
cosine) is epoch 0 of model selection, so the returned adapter is never worse than raw cosine on
validation. Same params, data and thread count -> bit-identical metrics.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from .adapter import (Activation, AdapterConfig, AdapterKind, LossName, QueryAdapter, build_adapter,
                      identity_distance, make_loss, text_groups)
from .errors import DataError, RagtuneError
from .hard_negatives import Candidates, MiningRule, mine_hard_negatives, rank_candidates
from .params import Section
from .retrieval import exact_top_k, hit_rate_at_k, mrr_at_k

if TYPE_CHECKING:
    from .real_questions import RealQuestions

log = logging.getLogger(__name__)

VAL_K = 10  # depth of the validation ranking (Hit@1/5/10 and MRR@10 come from one top-10)


class TrainParams(Section):
    """params.yaml `train`: the adapter, its loss and the optimiser. The tune stage searches over a
    subset of these keys (`tune.search_space`); the train stage overlays the best values found."""

    seed: int = 42
    val_fraction: float = Field(0.15, gt=0.0, le=0.5)
    use_tuned: bool = True
    # model
    kind: AdapterKind = "mlp"
    hidden_dim: int = Field(64, ge=4, le=16384)
    n_hidden_layers: int = Field(1, ge=0, le=3)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Activation = "gelu"
    residual_scale: float = Field(1.0, gt=0.0, le=100.0)
    # loss
    loss: LossName = "in_batch"
    temperature: float = Field(0.03, ge=0.001, le=10.0)
    identity_weight: float = Field(0.5, ge=0.0, le=1000.0)
    # optimiser
    lr: float = Field(5e-4, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0, le=100.0)
    batch_size: int = Field(512, ge=2, le=1_000_000)
    max_epochs: int = Field(30, ge=1, le=10_000)
    patience: int = Field(4, ge=1, le=10_000)
    grad_clip: float = Field(1.0, ge=0.0, le=1e6)  # max gradient norm; 0 turns clipping off
    # hard negatives (in_batch loss only: full_corpus already scores every chunk)
    hard_negatives: int = Field(0, ge=0, le=64)       # mined per question from raw-cosine ranks; 0: in-batch only
    hard_negative_min_rank: int = Field(10, ge=1, le=10_000)   # rank window (1-based, inclusive) they come from
    hard_negative_max_rank: int = Field(50, ge=1, le=10_000)
    hard_negative_margin: float = Field(0.05, ge=0.0, lt=1.0)  # score <= (1 - margin) * the gold chunk's
    hard_negative_skip_same_parent: bool = True       # never a chunk of the gold chunk's document
    # ensemble over validation splits: seeds seed..seed+bagging-1, one adapter each, shipped as their mean
    bagging: int = Field(1, ge=1, le=32)
    # LLM questions whose chunk is not in raw cosine's top k are dropped (round-trip consistency);
    # no-model pseudo-queries are exempt; null: off
    round_trip_top_k: int | None = Field(20, ge=1, le=10_000)
    # labelled real training questions (fetch.jsonl.train_questions), when there are any
    # loss weight of a real question's row against a synthetic one's; auto: the real rows together weigh
    # as much as the synthetic ones (n_synthetic / n_real training rows), whatever their counts
    real_weight: float | Literal["auto"] = "auto"
    real_val_fraction: float = Field(0.3, gt=0.0, lt=1.0)  # seeded share of them that validates (selection, tune)
    # k-fold over the human test questions (`ragtune.folds`): 0 off; k >= 2 trains k out-of-fold adapters
    # that eval reports, and ships one trained on all of them
    folds: int = Field(0, ge=0, le=50)
    compare_linear: bool = False
    device: Literal["cpu", "auto", "cuda", "mps"] = "cpu"
    # CPU threads for torch while training; 0 leaves torch's default. The matrices are small, so one
    # thread is as fast on an idle machine and far faster on a busy one (no OpenMP barrier waits);
    # a fixed count also keeps metrics bit-identical across machines.
    threads: int = Field(1, ge=0, le=1024)

    def adapter_config(self, dim: int) -> AdapterConfig:
        return AdapterConfig(dim=dim, kind=self.kind, hidden_dim=self.hidden_dim,
                             n_hidden_layers=self.n_hidden_layers, dropout=self.dropout,
                             activation=self.activation, residual_scale=self.residual_scale)

    def mining_rule(self) -> MiningRule:
        return MiningRule(count=self.hard_negatives, min_rank=self.hard_negative_min_rank,
                          max_rank=self.hard_negative_max_rank, relative_margin=self.hard_negative_margin,
                          skip_same_parent=self.hard_negative_skip_same_parent)

    @field_validator("folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError("1 fold leaves nothing to train on; use 0 (off) or at least 2")
        return v

    @model_validator(mode="after")
    def _window(self) -> "TrainParams":
        if self.hard_negative_max_rank < self.hard_negative_min_rank:
            raise ValueError(f"hard_negative_max_rank ({self.hard_negative_max_rank}) is below "
                             f"hard_negative_min_rank ({self.hard_negative_min_rank})")
        return self


# Keys the tune stage may search over (the rest say how to run, not what to train).
TUNABLE = frozenset({"kind", "hidden_dim", "n_hidden_layers", "dropout", "activation", "residual_scale",
                     "loss", "temperature", "identity_weight", "lr", "weight_decay", "batch_size",
                     "grad_clip", "hard_negatives", "hard_negative_min_rank", "hard_negative_max_rank",
                     "hard_negative_margin", "real_weight"})


# --- data -------------------------------------------------------------------------------------

@dataclass
class TrainingData:
    """Frozen embeddings, row-aligned. `gold_rows[i]` is the corpus row of question i's chunk;
    `text_group[r]` is shared by corpus rows with identical text."""

    corpus_ids: list[str]
    corpus_emb: torch.Tensor          # (N, d) float32
    text_group: torch.Tensor          # (N,) int64
    question_ids: list[str]
    question_emb: torch.Tensor        # (n, d) float32
    gold_rows: torch.Tensor           # (n,) int64
    dropped: dict[str, int] = field(default_factory=dict)
    parent_group: np.ndarray | None = None   # (N,) int64, shared by chunks of one parent document
    stats: dict[str, Any] = field(default_factory=dict)
    _candidates: Candidates | None = field(default=None, repr=False)
    # Labelled real questions (`with_real_questions`): their rows follow the synthetic ones, one per
    # (question, relevant chunk); `row_real[i]` is row i's real question (-1: synthetic) and
    # `relevant[i]` every corpus row relevant to it (-1 padded), masked as negatives.
    real: "RealQuestions | None" = None
    row_real: np.ndarray | None = None      # (n,) int64
    relevant: torch.Tensor | None = None    # (n, r) int64

    @property
    def has_real(self) -> bool:
        return self.real is not None and len(self.real.ids) > 0

    @property
    def dim(self) -> int:
        return int(self.corpus_emb.shape[1])

    def to(self, device: str) -> "TrainingData":
        return TrainingData(self.corpus_ids, self.corpus_emb.to(device), self.text_group.to(device),
                            self.question_ids, self.question_emb.to(device), self.gold_rows.to(device),
                            dict(self.dropped), self.parent_group, dict(self.stats), self._candidates,
                            self.real, self.row_real, None if self.relevant is None else self.relevant.to(device))

    def hard_negatives(self, rule: MiningRule) -> torch.Tensor:
        """(n, rule.count) mined negatives per question (-1 padded). The raw-cosine ranking is computed
        once, to the deepest window asked for, and reused by every later rule (tuning trials)."""
        depth = min(rule.max_rank, len(self.corpus_ids))
        if self._candidates is None or self._candidates.depth < depth:
            self._candidates = rank_candidates(self.question_emb.cpu(), self.corpus_emb.cpu(), depth)
        negatives = mine_hard_negatives(self.question_emb.cpu(), self.gold_rows.cpu().numpy(),
                                        self.corpus_emb.cpu(), self.text_group.cpu().numpy(),
                                        self.parent_group, rule, self._candidates)
        if self.relevant is not None:
            # A chunk relevant to the row's (real) question is no negative of it.
            groups = self.text_group.cpu().numpy()
            relevant = self.relevant.cpu().numpy()
            rel_groups = np.where(relevant >= 0, groups[np.maximum(relevant, 0)], -1)
            neg_groups = np.where(negatives >= 0, groups[np.maximum(negatives, 0)], -2)
            negatives = np.where((neg_groups[:, :, None] == rel_groups[:, None, :]).any(axis=2), -1, negatives)
        return torch.as_tensor(negatives)


# Backends whose "questions" are drawn from the chunk itself: round-trip filtering would keep them all.
NO_MODEL_BACKENDS = frozenset({"ict"})
# A question whose raw cosine to its own chunk is at least this is a near-copy of the chunk: it teaches
# nothing (raw cosine already ranks it first) and inflates validation.
NEAR_COPY_COSINE = 0.95


def build_training_data(corpus_ids: Sequence[str], corpus_emb: np.ndarray, corpus_texts: Sequence[str],
                        question_ids: Sequence[str], question_emb: np.ndarray,
                        question_chunk_ids: Sequence[str], test_chunk_ids: Sequence[str] = (),
                        source: str = "questions", corpus_parents: Sequence[str | None] | None = None,
                        question_backends: Sequence[str] | None = None,
                        round_trip_top_k: int | None = None) -> TrainingData:
    """Align questions to corpus rows. Questions about `test_chunk_ids` (chunks a test question is
    measured on that training must not see) are dropped; a question whose chunk is not in the corpus is
    an error. With `round_trip_top_k`, questions written by a language model (`question_backends`) whose
    chunk raw cosine does not rank within that many are dropped too (round-trip consistency)."""
    if corpus_emb.shape[0] != len(corpus_ids) or len(corpus_texts) != len(corpus_ids):
        raise DataError(f"corpus: {len(corpus_ids)} ids, {corpus_emb.shape[0]} embeddings and "
                        f"{len(corpus_texts)} texts; rerun the embed stage")
    if question_emb.shape[0] != len(question_ids) or len(question_chunk_ids) != len(question_ids):
        raise DataError(f"{source}: {len(question_ids)} ids, {question_emb.shape[0]} embeddings and "
                        f"{len(question_chunk_ids)} chunk ids; rerun the embed stage")
    if question_emb.shape[1] != corpus_emb.shape[1]:
        raise DataError(f"{source}: questions are {question_emb.shape[1]}-d but the corpus is "
                        f"{corpus_emb.shape[1]}-d; embed both with the same model")
    row_of = {cid: i for i, cid in enumerate(corpus_ids)}
    missing = [c for c in question_chunk_ids if c not in row_of]
    if missing:
        raise DataError(f"{source}: {len(missing)} question(s) name chunks not in the corpus "
                        f"(first: {missing[0]!r}); rerun synthesize and embed on the current corpus")
    corpus = np.ascontiguousarray(corpus_emb, dtype=np.float32)
    questions = np.ascontiguousarray(question_emb, dtype=np.float32)
    held_out = set(test_chunk_ids)
    keep = np.fromiter((c not in held_out for c in question_chunk_ids), dtype=bool, count=len(question_ids))
    n_dropped = int((~keep).sum())
    if n_dropped:
        log.warning("%s: dropped %d question(s) about held-out test chunks", source, n_dropped)
    gold = np.fromiter((row_of[c] for c in question_chunk_ids), dtype=np.int64, count=len(question_ids))
    groups = text_groups(list(corpus_texts))
    dropped = {"test_chunk_questions": n_dropped}
    if round_trip_top_k is not None and question_backends is not None:
        generated = keep & np.fromiter((b not in NO_MODEL_BACKENDS for b in question_backends), dtype=bool,
                                       count=len(question_ids))
        rows = np.flatnonzero(generated)
        if len(rows):
            _, top = exact_top_k(questions[rows], corpus, round_trip_top_k)
            found = (groups[top] == groups[gold[rows]][:, None]).any(axis=1)
            keep[rows[~found]] = False
            dropped["round_trip"] = int((~found).sum())
    if not keep.any():
        raise DataError(f"{source}: no training questions left; run the synthesize stage")
    near_copy = (questions[keep] * corpus[gold[keep]]).sum(axis=1) >= NEAR_COPY_COSINE
    stats = {"near_copy_questions": int(near_copy.sum()),
             "near_copy_share": round(float(near_copy.mean()), 4)}
    parent_group = None
    if corpus_parents is not None and any(p is not None for p in corpus_parents):
        # A chunk without a parent is its own document: it gets a group no other chunk shares.
        keys = [p if p is not None else ("\0chunk", i) for i, p in enumerate(corpus_parents)]
        first: dict[Any, int] = {}
        parent_group = np.fromiter((first.setdefault(k, len(first)) for k in keys), dtype=np.int64, count=len(keys))
    return TrainingData(
        corpus_ids=list(corpus_ids),
        corpus_emb=torch.as_tensor(corpus),
        text_group=torch.as_tensor(groups),
        question_ids=[q for q, k in zip(question_ids, keep) if k],
        question_emb=torch.as_tensor(questions[keep]),
        gold_rows=torch.as_tensor(gold[keep]),
        dropped=dropped,
        parent_group=parent_group,
        stats=stats,
    )


# The pipeline outputs the tune, train and curve stages read, in `load_training_data`'s argument order.
TRAINING_INPUTS = ("data/embed/questions.npz", "data/embed/corpus.npz", "data/fetch/corpus.jsonl",
                   "data/synthesize/test.jsonl", "data/fetch/train_questions.jsonl", "data/embed/real.npz")


def load_training_data(questions_npz: str | Path, corpus_npz: str | Path, corpus_jsonl: str | Path,
                       test_jsonl: str | Path | None = None, real_jsonl: str | Path | None = None,
                       real_npz: str | Path | None = None, *, round_trip_top_k: int | None = None) -> TrainingData:
    """Read the embed stage's questions.npz (`ids`, `emb`, `chunk_ids`, optional `backends`) and
    corpus.npz, and the fetch stage's corpus.jsonl (texts for the identical-text mask, parents). With
    `real_jsonl` (fetch's train_questions.jsonl) and `real_npz` (embed's real.npz), labelled real
    questions join the synthetic ones (`with_real_questions`) when the file has any.

    Which chunks training must not see: with `test_jsonl` (the pipeline's test set), the chunks of its
    *synthetic* test questions (made for held-out chunks: training on them would measure what was
    trained); the synthesize stage already applied `synthesize.test_chunks` to human test chunks.
    Without it, every chunk marked `split: test` (the strict protocol)."""
    from .embedding import load_embeddings_with_columns
    from .records import load_corpus, load_test

    q_ids, q_emb, cols = load_embeddings_with_columns(questions_npz)
    if "chunk_ids" not in cols:
        raise DataError(f"{questions_npz}: no `chunk_ids` column; rerun the embed stage with --questions")
    c_ids, c_emb, _ = load_embeddings_with_columns(corpus_npz)
    chunks = {c.id: c for c in load_corpus(corpus_jsonl)}
    absent = [cid for cid in c_ids if cid not in chunks]
    if absent:
        raise DataError(f"{corpus_npz}: {len(absent)} embedded chunk(s) not in {corpus_jsonl} "
                        f"(first: {absent[0]!r}); rerun the embed stage")
    texts = [chunks[cid].text for cid in c_ids]
    if test_jsonl is None:
        held_out = [cid for cid, c in chunks.items() if c.split == "test"]
    else:
        held_out = synthetic_test_chunks(load_test(test_jsonl, corpus_ids=c_ids))
    data = build_training_data(c_ids, c_emb, texts, q_ids, q_emb, cols["chunk_ids"], held_out,
                               source=str(questions_npz), corpus_parents=[chunks[cid].parent for cid in c_ids],
                               question_backends=cols.get("backends"), round_trip_top_k=round_trip_top_k)
    # A workspace from before real questions existed has no such file: no real questions.
    if real_jsonl is not None and real_npz is not None and Path(real_jsonl).is_file():
        from .real_questions import load_real_questions, with_real_questions

        real = load_real_questions(real_jsonl, real_npz, c_ids)
        if real.ids:
            data = with_real_questions(data, real)
    return data


def synthetic_test_chunks(tests: Sequence[Any]) -> list[str]:
    """Chunks that synthetic test questions were written for: never training material."""
    return sorted({rid for q in tests if q.origin == "synthetic" for rid in q.relevant_ids})


@dataclass(frozen=True)
class Split:
    """Question row indices for training and validation; no text group (chunk) is on both sides. With
    real questions, `val_real` indexes the real questions that validate (and `val` is empty)."""

    train: np.ndarray
    val: np.ndarray
    val_real: np.ndarray | None = None

    @property
    def validation(self) -> str:
        return "real" if self.val_real is not None else "synthetic"


def split_by_chunk(data: TrainingData, val_fraction: float, seed: int, always_train: np.ndarray | None = None) -> Split:
    """Seeded split of the questions by the text group of their chunk, so near-identical
    validation questions never share a chunk with training ones. Rows marked in `always_train` (n,) bool
    (real questions, when validation must stay synthetic) never validate."""
    rows = np.arange(len(data.question_ids)) if always_train is None else np.flatnonzero(~always_train)
    groups = data.text_group[data.gold_rows].cpu().numpy()[rows]
    unique = np.unique(groups)
    if len(unique) < 2:
        raise DataError("training questions cover fewer than 2 distinct chunks; cannot hold out a validation "
                        "set (synthesize questions for more chunks)")
    rng = np.random.default_rng(seed)
    n_val = min(len(unique) - 1, max(1, math.ceil(val_fraction * len(unique))))
    val_groups = rng.permutation(unique)[:n_val]
    val = rows[np.isin(groups, val_groups)]
    return Split(train=np.setdiff1d(np.arange(len(data.question_ids)), val), val=val)


def split_real(data: TrainingData, val_fraction: float, seed: int) -> Split:
    """Seeded split of the real questions: `val_fraction` of them (at least one) validate; every row of
    the others, and every synthetic row, trains. A validating question has no row in training."""
    m = len(data.real.ids)
    if m < 2:
        raise DataError(f"{m} real training question(s): at least 2 are needed to hold one out for validation")
    rng = np.random.default_rng(seed)
    n_val = min(m - 1, max(1, math.ceil(val_fraction * m)))
    val_real = np.sort(rng.permutation(m)[:n_val])
    train = np.flatnonzero(~np.isin(data.row_real, val_real))
    return Split(train=train, val=np.zeros(0, dtype=np.int64), val_real=val_real)


def make_split(data: TrainingData, params: TrainParams, seed: int, validation: str = "auto") -> Split:
    """Real validation when the data has labelled real questions (selection and tuning then measure
    what the user's queries look like), otherwise the synthetic split by chunk. `validation="synthetic"`
    keeps the synthetic split and every real row in training (k-fold's shipped adapter, whose real
    questions are the test set: eval must not select on them)."""
    if data.has_real and validation == "auto":
        return split_real(data, params.real_val_fraction, seed)
    return split_by_chunk(data, params.val_fraction, seed,
                          None if data.row_real is None else data.row_real >= 0)


# --- validation -------------------------------------------------------------------------------

def _validation_top(adapter: QueryAdapter | None, data: TrainingData, query_emb: torch.Tensor) -> np.ndarray:
    """(n, VAL_K) corpus rows of `query_emb` (n, d), adapted in eval mode when an adapter is given."""
    if adapter is not None:
        was_training = adapter.training
        adapter.eval()
        query_emb = adapter(query_emb)
        adapter.train(was_training)
    return exact_top_k(query_emb, data.corpus_emb, VAL_K)[1]


@torch.no_grad()
def validation_metrics(adapter: QueryAdapter | None, data: TrainingData, rows: np.ndarray) -> dict[str, float]:
    """Hit@1/5/10 and MRR@10 of questions `rows`, all at once: one adapter pass, one batched product
    against the corpus. A chunk with the gold chunk's exact text counts as a hit. `adapter=None`
    scores raw cosine."""
    idx = torch.as_tensor(rows, device=data.question_emb.device)
    top = _validation_top(adapter, data, data.question_emb[idx])
    groups = data.text_group.cpu().numpy()
    gold_groups = groups[data.gold_rows[idx].cpu().numpy()]
    hits = groups[top] == gold_groups[:, None]
    return {"hit@1": hit_rate_at_k(hits, 1), "hit@5": hit_rate_at_k(hits, 5),
            "hit@10": hit_rate_at_k(hits, 10), "mrr@10": mrr_at_k(hits, 10)}


@torch.no_grad()
def real_validation_metrics(adapter: QueryAdapter | None, data: TrainingData, real_idx: np.ndarray) -> dict[str, float]:
    """`validation_metrics` for real questions `real_idx`: a hit is any chunk whose text group is one of
    the question's relevant chunks'."""
    real = data.real
    top = _validation_top(adapter, data, torch.as_tensor(real.emb[real_idx], device=data.question_emb.device))
    groups = data.text_group.cpu().numpy()
    wanted = np.zeros((len(real_idx), int(groups.max()) + 1), dtype=bool)
    for i, q in enumerate(real_idx):
        wanted[i, groups[real.relevant[q]]] = True
    hits = wanted[np.arange(len(real_idx))[:, None], groups[top]]
    return {"hit@1": hit_rate_at_k(hits, 1), "hit@5": hit_rate_at_k(hits, 5),
            "hit@10": hit_rate_at_k(hits, 10), "mrr@10": mrr_at_k(hits, 10)}


def split_metrics(adapter: QueryAdapter | None, data: TrainingData, split: Split) -> dict[str, float]:
    """Validation metrics of `split`'s validation side, real or synthetic."""
    if split.val_real is not None:
        return real_validation_metrics(adapter, data, split.val_real)
    return validation_metrics(adapter, data, split.val)


def _selection_key(m: dict[str, float]) -> tuple[float, float]:
    # Hit@5 decides; MRR@10 breaks ties (validation sets are small, so Hit@5 ties are common).
    return (m["hit@5"], m["mrr@10"])


# --- training ---------------------------------------------------------------------------------

@dataclass
class TrainResult:
    adapter: QueryAdapter                 # the selected state (epoch `best_epoch`), eval mode
    history: list[dict[str, float]]       # one row per epoch; epoch 0 is the untrained identity
    best_epoch: int
    best: dict[str, float]                # validation metrics of the selected state
    baseline: dict[str, float]            # validation metrics of raw cosine (epoch 0)
    seconds: float

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"val_{k}": v for k, v in self.best.items()}
        out.update({f"baseline_val_{k}": v for k, v in self.baseline.items()})
        out.update(best_epoch=self.best_epoch, epochs_run=len(self.history) - 1,
                   seconds=round(self.seconds, 3))
        return out


EpochCallback = Callable[[int, dict[str, float]], None]


def resolve_device(preference: str) -> str:
    if preference == "auto":
        from .embedding import pick_device
        return pick_device("auto")
    return preference


def real_row_weight(setting: float | str, row_real: np.ndarray) -> float:
    """The loss weight of a real row: the number given, or for `auto` n_synthetic / n_real of the training
    rows `row_real` (-1: synthetic), so that real and synthetic rows weigh the same in all (1 when either
    side is empty)."""
    if setting != "auto":
        return float(setting)
    n_real = int((row_real >= 0).sum())
    n_synthetic = len(row_real) - n_real
    return n_synthetic / n_real if n_real and n_synthetic else 1.0


def train_adapter(params: TrainParams, data: TrainingData, split: Split,
                  on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train one adapter; `on_epoch(epoch, row)` is called after each epoch's validation (the tuner
    reports to Optuna there and may raise to prune)."""
    n_val = len(split.val) if split.val_real is None else len(split.val_real)
    if len(split.train) == 0 or n_val == 0:
        raise DataError("the training or validation split is empty; synthesize more questions")
    previous_threads = torch.get_num_threads()
    if params.threads:
        torch.set_num_threads(params.threads)
    try:
        negatives = None
        if params.hard_negatives > 0 and params.loss == "in_batch":
            negatives = data.hard_negatives(params.mining_rule())
        return _train(params, data, split, on_epoch, negatives)
    finally:
        torch.set_num_threads(previous_threads)


def _train(params: TrainParams, data: TrainingData, split: Split, on_epoch: EpochCallback | None,
           negatives: torch.Tensor | None) -> TrainResult:
    t0 = time.perf_counter()
    device = resolve_device(params.device)
    data = data.to(device)
    if negatives is not None:
        negatives = negatives.to(device)
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, then restore
        torch.manual_seed(params.seed)
        adapter = build_adapter(params.adapter_config(data.dim), params.seed).to(device)
        loss_fn = make_loss(params.loss, params.temperature)
        optimiser = torch.optim.AdamW(adapter.parameters(), lr=params.lr, weight_decay=params.weight_decay)
        shuffle = torch.Generator().manual_seed(params.seed)
        train_rows = torch.as_tensor(split.train, device=device)
        # Real rows: weighted against synthetic ones, their other relevant chunks masked. Without real
        # questions neither is passed, and the loss is exactly the synthetic-only one.
        weights = relevant = None
        if data.row_real is not None and (data.row_real >= 0).any():
            relevant = data.relevant
            weight = real_row_weight(params.real_weight, data.row_real[split.train])
            weights = torch.where(torch.as_tensor(data.row_real >= 0, device=device), weight, 1.0).to(torch.float32)

        baseline = split_metrics(adapter, data, split)
        history = [{"epoch": 0, "train_loss": float("nan"), **{f"val_{k}": v for k, v in baseline.items()},
                    "seconds": 0.0}]
        best, best_epoch = baseline, 0
        best_state = copy.deepcopy(adapter.state_dict())
        stale = 0
        for epoch in range(1, params.max_epochs + 1):
            t_epoch = time.perf_counter()
            adapter.train()
            order = train_rows[torch.randperm(len(train_rows), generator=shuffle).to(device)]
            loss_sum = torch.zeros((), device=device)
            n_batches = 0
            for s in range(0, len(order), params.batch_size):
                batch = order[s:s + params.batch_size]
                if len(batch) < 2:  # a lone question has no in-batch negatives; it rejoins next epoch
                    continue
                query_emb = data.question_emb[batch]
                adapted = adapter(query_emb)
                loss = loss_fn(adapted, data.gold_rows[batch], data.corpus_emb, data.text_group,
                               None if negatives is None else negatives[batch],
                               None if relevant is None else relevant[batch],
                               None if weights is None else weights[batch])
                if params.identity_weight > 0:
                    loss = loss + params.identity_weight * identity_distance(adapted, query_emb)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if params.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(adapter.parameters(), params.grad_clip)
                optimiser.step()
                loss_sum += loss.detach()
                n_batches += 1
            metrics = split_metrics(adapter, data, split)
            row = {"epoch": epoch, "train_loss": float(loss_sum) / max(n_batches, 1),
                   **{f"val_{k}": v for k, v in metrics.items()},
                   "seconds": time.perf_counter() - t_epoch}
            history.append(row)
            if not math.isfinite(row["train_loss"]):
                log.warning("training diverged at epoch %d (loss %s); keeping epoch %d", epoch,
                            row["train_loss"], best_epoch)
                break
            if _selection_key(metrics) > _selection_key(best):
                best, best_epoch, stale = metrics, epoch, 0
                best_state = copy.deepcopy(adapter.state_dict())
            else:
                stale += 1
            if on_epoch is not None:
                on_epoch(epoch, row)
            if stale >= params.patience:
                break
    adapter.load_state_dict(best_state)
    adapter.eval()
    return TrainResult(adapter=adapter.cpu(), history=history, best_epoch=best_epoch, best=best,
                       baseline=baseline, seconds=time.perf_counter() - t0)


@dataclass
class BaggedResult:
    """`train.bagging` adapters, member i trained with seed `seed + i` on its own validation split, and
    their ensemble (`adapter`): one averaged map when the members are affine, else their mean output."""

    adapter: QueryAdapter
    members: list[TrainResult]
    seeds: list[int]
    splits: list[Split]

    def summary(self) -> dict[str, Any]:
        """Member 0's summary (the single-seed run, as without bagging) plus every member's validation."""
        out = self.members[0].summary()
        if len(self.members) > 1:
            out["seconds"] = round(sum(m.seconds for m in self.members), 3)
            out["members"] = [{"seed": seed, "best_epoch": m.best_epoch, "val_hit@5": m.best["hit@5"],
                               "baseline_val_hit@5": m.baseline["hit@5"], "val_mrr@10": m.best["mrr@10"]}
                              for seed, m in zip(self.seeds, self.members)]
            out["members_mean_val_hit@5"] = float(np.mean([m.best["hit@5"] for m in self.members]))
            out["members_mean_baseline_val_hit@5"] = float(np.mean([m.baseline["hit@5"] for m in self.members]))
        return out


def train_bagged(params: TrainParams, data: TrainingData, validation: str = "auto") -> BaggedResult:
    """Train `params.bagging` adapters on as many seeded validation splits (`make_split`'s `validation`)
    and ensemble them. With bagging 1 this is exactly one `train_adapter` run with `params.seed`."""
    from .adapter import ensemble_adapters

    seeds = [params.seed + i for i in range(params.bagging)]
    members, splits = [], []
    for seed in seeds:
        member_params = params if seed == params.seed else params.model_copy(update={"seed": seed})
        split = make_split(data, params, seed, validation)
        members.append(train_adapter(member_params, data, split))
        splits.append(split)
    return BaggedResult(ensemble_adapters([m.adapter for m in members]), members, seeds, splits)


def load_tuned(params: TrainParams, best_path: str | Path) -> tuple[TrainParams, dict[str, Any]]:
    """`params` with the tune stage's best values (data/tune/best.json) when `use_tuned`, and best.json."""
    if not params.use_tuned:
        return params, {}
    path = Path(best_path)
    if not path.is_file():
        raise RagtuneError(f"{path} not found: run the tune stage first, or set train.use_tuned: false "
                           "to train the params.yaml configuration")
    from .io import read_json

    best = read_json(path)
    return apply_overrides(params, best.get("params", {}), source=str(path)), best


def apply_overrides(params: TrainParams, overrides: dict[str, Any], source: str = "overrides") -> TrainParams:
    """`params` with tuned values; an unknown key or a bad value is an error naming `source`."""
    unknown = sorted(set(overrides) - set(TrainParams.model_fields))
    if unknown:
        raise RagtuneError(f"{source}: unknown train key(s) {unknown}; rerun the tune stage")
    from .params import parse_section

    merged = {**params.model_dump(), **overrides}
    return parse_section(merged, "train", TrainParams, source)
