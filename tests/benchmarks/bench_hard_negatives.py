"""Hard negatives at the reference study's scale (1024-d, 4,800 chunks, 12,000 training and 2,000
validation questions; random data of that shape, as bench_training).

1. Mining: the raw-cosine ranking to depth 50 (one blocked product, done once per data set and reused by
   every tuning trial) and the selection of 4 / 8 negatives per question from a rank window.
2. Cost per training epoch (in-batch loss, linear adapter, batch 256, 1 thread) with 0, 4 and 8 mined
   negatives per question: the extra columns are one (B, m, d) gather and a batched dot product.
"""

import torch

from ragtune.adapter.config import TrainParams
from ragtune.adapter.hard_negatives import MiningRule, rank_candidates, select_negatives
from ragtune.adapter.training import train_adapter

from .bench_training import DIM, N_CHUNKS, N_TRAIN, N_VAL, reference_scale_data
from .common import best_of, save


def bench_mining(data) -> dict:
    torch.set_num_threads(1)
    q, c = data.question_emb, data.corpus_emb
    rank_s = best_of(lambda: rank_candidates(q, c, 50), 2)
    cands = rank_candidates(q, c, 50)
    gold = data.gold_rows.numpy()
    gold_scores = (q * c[data.gold_rows]).sum(dim=1).numpy()
    groups = data.text_group.numpy()
    out = {"ranking_depth_50_s": round(rank_s, 3), "ranking_gflop": round(2.0 * len(gold) * N_CHUNKS * DIM / 1e9, 1)}
    for count in (4, 8):
        rule = MiningRule(count=count, min_rank=10, max_rank=50, relative_margin=0.05)
        sel_s = best_of(lambda: select_negatives(cands, gold, gold_scores, groups, None, rule), 3)
        neg = select_negatives(cands, gold, gold_scores, groups, None, rule)
        out[f"select_{count}_s"] = round(sel_s, 4)
        out[f"select_{count}_filled_share"] = round(float((neg >= 0).mean()), 3)
    return out


def bench_epochs(data, split) -> dict:
    out = {}
    for count in (0, 4, 8):
        params = TrainParams(
            kind="linear",
            loss="in_batch",
            batch_size=256,
            max_epochs=2,
            patience=100,
            threads=1,
            hard_negatives=count,
            hard_negative_min_rank=10,
            hard_negative_max_rank=50,
        )
        data._candidates = None  # time the first mining too, as the train stage pays it
        result = train_adapter(params, data, split)
        out[f"negatives_{count}_epoch_s"] = round(min(r["seconds"] for r in result.history[1:]), 3)
        out[f"negatives_{count}_total_s"] = round(result.seconds, 3)
    base = out["negatives_0_epoch_s"]
    for count in (4, 8):
        out[f"negatives_{count}_epoch_vs_none"] = round(out[f"negatives_{count}_epoch_s"] / base, 2)
    return out


def main() -> None:
    data, split = reference_scale_data()
    results = {
        "scale": {"dim": DIM, "chunks": N_CHUNKS, "train": N_TRAIN, "val": N_VAL},
        "mining": bench_mining(data),
        "epochs": bench_epochs(data, split),
    }
    save("hard_negatives", results)


if __name__ == "__main__":
    main()
