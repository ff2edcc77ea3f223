"""The adapter's scores that selection may read: adapted vectors of real questions from members that never
trained on them.

With labelled real questions (`fetch.jsonl.train_questions`) each bagged member selects its epochs on its
own seeded slice of them (`train.real_val_fraction`) and, with `train.refit`, then trains on that slice too,
so the shipped ensemble has trained on every real question some member validated on: its score there says
little about the users' next question. `held_out_vectors` keeps, for every member, the adapted vectors of the
real questions it held out, computed with the member as selected (before any refit; interpolated toward raw
cosine as the shipped members are). `merge` gives each such question the normalised mean of the vectors of
the members that held it out: a sub-ensemble that never saw it. Eval scores the adapter (and the hybrid
that fuses it) on the real validation questions from these vectors only (`ragtune.evaluation.arms`).

File: data/train/held_out.npz (`ragtune.embeddings_npz.save_embeddings`), one row per (question,
member that held it out): `ids` the question ids, `emb` (k, d) the vectors, column `members` the seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import RagtuneError
from ..paths import PipelinePaths

if TYPE_CHECKING:
    from .bagging import BaggedResult
    from .data import TrainingData

HELD_OUT_FILE = PipelinePaths().held_out


@dataclass(frozen=True)
class HeldOut:
    """Row i: member `members[i]`'s adapted vector `emb[i]` (L2-normalised) of real question `ids[i]`, which
    that member never trained on. A question appears once per member that held it out."""

    ids: list[str]
    members: list[int]
    emb: np.ndarray  # (k, d) float32

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.members) == self.emb.shape[0]):
            raise ValueError(
                f"held-out rows disagree: {len(self.ids)} ids, {len(self.members)} members, {self.emb.shape}"
            )

    def merged(self) -> dict[str, np.ndarray]:
        """question id -> (d,) the normalised mean of its held-out vectors (the members that never saw it)."""
        if not self.ids:
            return {}
        unique, inverse = np.unique(np.asarray(self.ids), return_inverse=True)
        sums = np.zeros((len(unique), self.emb.shape[1]), dtype=np.float64)
        np.add.at(sums, inverse, self.emb.astype(np.float64))
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        mean = (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return {str(q): mean[i] for i, q in enumerate(unique)}

    def question_ids(self) -> list[str]:
        """The distinct questions, in order of first appearance."""
        return list(dict.fromkeys(self.ids))


def held_out_vectors(bagged: BaggedResult, data: TrainingData) -> HeldOut:
    """Every member's adapted vectors of the real questions it validated on (`Split.val_real`), from the
    member as selected (`TrainResult.held_out_adapter`). Members on synthetic validation add nothing."""
    from .model import adapt_queries

    ids: list[str] = []
    members: list[int] = []
    blocks: list[np.ndarray] = []
    dim = data.dim
    for seed, member, split in zip(bagged.seeds, bagged.members, bagged.splits):
        if split.val_real is None or data.real is None or len(split.val_real) == 0:
            continue
        rows = np.asarray(split.val_real, dtype=np.int64)
        blocks.append(adapt_queries(member.held_out_adapter, data.real.emb[rows]))
        ids += [data.real.ids[i] for i in rows]
        members += [seed] * len(rows)
    emb = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    return HeldOut(ids, members, emb.astype(np.float32, copy=False))


def save_held_out(path: Path, held: HeldOut) -> None:
    from ..embeddings_npz import save_embeddings

    save_embeddings(path, held.ids, held.emb, members=[str(m) for m in held.members])


def load_held_out(path: Path) -> HeldOut | None:
    """The file's rows; None when it does not exist (a pipeline trained before it was written)."""
    from ..embeddings_npz import load_embeddings_with_columns

    if not Path(path).is_file():
        return None
    ids, emb, cols = load_embeddings_with_columns(path)
    if "members" not in cols:
        raise RagtuneError(f"{path}: no members column; rerun the train stage (dvc repro train)")
    return HeldOut(ids, [int(m) for m in cols["members"]], emb)
