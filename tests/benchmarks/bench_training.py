"""Adapter training at the reference study's scale (1024-d, 4,800 chunks, 12,000 training and 2,000
validation questions; random data of that shape), and a tuning study on the default data.

1. Validation pass: Hit@5 for all validation questions at once (`training.validation_metrics`: one
   adapter pass, one blocked product against the corpus) against a per-question loop (adapt one
   question, score it against the corpus, take its top 5), the reference study's way (~2.2 s a pass).
2. Seconds per training epoch against the floating-point work of the MLP's forward and backward
   passes (and of the loss's products), as GFLOP/s next to a plain matrix product of the MLP's shapes.
3. Time to quality: wall time for a tuning study with pruning to reach the best validation Hit@5
   that the same study (same seed, 50 trials) reaches without pruning; the pruned study runs until
   it gets there (at most 150 trials or twice the unpruned wall time). Uses data/embed/questions.npz
   (or the path in RAGTUNE_BENCH_QUESTIONS) when present, else learnable random data of the default
   data's shape (384-d, 1,200 chunks, 4 questions each).

Each measurement runs at 1 thread (train.threads' default) and at all cores; best of a few repeats.
"""

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ragtune.adapter.config import TrainParams, TuneParams
from ragtune.adapter.data import TrainingData
from ragtune.adapter.model import AdapterConfig, QueryAdapter
from ragtune.adapter.splits import Split, split_by_chunk, validation_metrics
from ragtune.adapter.training import train_adapter
from ragtune.adapter.trials import Objective
from ragtune.adapter.tuning import make_pruner, make_sampler
from ragtune.embeddings_npz import save_embeddings
from ragtune.records import Chunk, write_jsonl

from .common import best_of, save

DIM, N_CHUNKS, N_TRAIN, N_VAL = 1024, 4_800, 12_000, 2_000
HIDDEN, BATCH = 256, 256
REFERENCE_LOOP_S = 2.2
DEFAULT_INPUTS = ("data/embed/questions.npz", "data/embed/corpus.npz", "data/fetch/corpus.jsonl")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def reference_scale_data(seed: int = 0) -> tuple[TrainingData, Split]:
    gen = torch.Generator().manual_seed(seed)
    corpus = _unit(torch.randn(N_CHUNKS, DIM, generator=gen))
    gold = torch.randint(0, N_CHUNKS, (N_TRAIN + N_VAL,), generator=gen)
    questions = _unit(corpus[gold] + 1.5 * torch.randn(len(gold), DIM, generator=gen) / DIM**0.5)
    data = TrainingData(
        [f"c{i}" for i in range(N_CHUNKS)],
        corpus,
        torch.arange(N_CHUNKS),
        [f"q{i}" for i in range(len(gold))],
        questions,
        gold,
    )
    return data, Split(train=np.arange(N_TRAIN), val=np.arange(N_TRAIN, N_TRAIN + N_VAL))


def trained_mlp(seed: int = 1) -> QueryAdapter:
    adapter = QueryAdapter(AdapterConfig(dim=DIM, hidden_dim=HIDDEN, n_hidden_layers=1, dropout=0.1))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return adapter.eval()


@torch.no_grad()
def per_question_validation(adapter: QueryAdapter, data: TrainingData, rows: np.ndarray, k: int = 5) -> float:
    """The reference study's way: one question at a time."""
    hits = 0
    for r in rows.tolist():
        query = adapter(data.question_emb[r : r + 1])
        top = torch.topk((query @ data.corpus_emb.T)[0], k).indices
        hits += int((data.text_group[top] == data.text_group[data.gold_rows[r]]).any())
    return hits / len(rows)


def bench_validation(data: TrainingData, split: Split, threads: int) -> dict:
    torch.set_num_threads(threads)
    adapter = trained_mlp()
    batched = validation_metrics(adapter, data, split.val)
    looped = per_question_validation(adapter, data, split.val)
    assert abs(batched["hit@5"] - looped) < 2e-3, (batched["hit@5"], looped)  # same metric either way
    t_batched = best_of(lambda: validation_metrics(adapter, data, split.val), 5)
    t_loop = best_of(lambda: per_question_validation(adapter, data, split.val), 2)
    scoring_flop = 2.0 * N_VAL * N_CHUNKS * DIM
    return {
        "threads": threads,
        "batched_s": round(t_batched, 4),
        "per_question_loop_s": round(t_loop, 3),
        "speedup_vs_loop": round(t_loop / t_batched, 1),
        "speedup_vs_reference_2.2s": round(REFERENCE_LOOP_S / t_batched, 1),
        "batched_scoring_gflop_s": round(scoring_flop / t_batched / 1e9, 1),
    }


def mlp_epoch_flop(n: int, d: int, h: int, layers: int = 1) -> float:
    """Forward + backward of the MLP's Linear layers: 6 * batch * in * out per layer (forward 2, grad of
    input 2, grad of weight 2), summed over one epoch's questions."""
    shapes = [(d, h)] + [(h, h)] * (layers - 1) + [(h, d)]
    return 6.0 * n * sum(i * o for i, o in shapes)


def loss_epoch_flop(loss: str, n: int, d: int, batch: int, n_corpus: int) -> float:
    """The loss's score product and its gradient: 4 * n * columns * d (columns: batch or corpus)."""
    return 4.0 * n * (batch if loss == "in_batch" else n_corpus) * d


def matmul_rate(threads: int) -> float:
    """GFLOP/s of the MLP's own product shapes: (batch x d) @ (d x h) and (batch x h) @ (h x d)."""
    torch.set_num_threads(threads)
    a, w1 = torch.randn(BATCH, DIM), torch.randn(DIM, HIDDEN)
    h, w2 = torch.randn(BATCH, HIDDEN), torch.randn(HIDDEN, DIM)

    def run():
        for _ in range(20):
            torch.mm(a, w1)
            torch.mm(h, w2)

    run()
    return 20 * 2 * (2.0 * BATCH * DIM * HIDDEN) / best_of(run, 5) / 1e9


def bench_epoch(data: TrainingData, split: Split, loss: str, threads: int) -> dict:
    params = TrainParams(
        kind="mlp",
        hidden_dim=HIDDEN,
        n_hidden_layers=1,
        loss=loss,
        batch_size=BATCH,
        max_epochs=2,
        patience=100,
        threads=threads,
        identity_weight=0.5,
    )
    result = train_adapter(params, data, split)
    epoch_s = min(row["seconds"] for row in result.history[1:])
    val_s = best_of(lambda: validation_metrics(result.adapter, data, split.val), 2)
    train_s = max(epoch_s - val_s, 1e-9)  # an epoch's row includes its validation pass
    mlp = mlp_epoch_flop(N_TRAIN, DIM, HIDDEN)
    loss_flop = loss_epoch_flop(loss, N_TRAIN, DIM, BATCH, N_CHUNKS)
    rate = matmul_rate(threads)
    return {
        "loss": loss,
        "threads": threads,
        "epoch_s": round(epoch_s, 3),
        "of_which_validation_s": round(val_s, 3),
        "mlp_gflop": round(mlp / 1e9, 1),
        "loss_gflop": round(loss_flop / 1e9, 1),
        "achieved_gflop_s": round((mlp + loss_flop) / train_s / 1e9, 1),
        "mlp_shape_matmul_gflop_s": round(rate, 1),
        "share_of_matmul_rate": round((mlp + loss_flop) / train_s / 1e9 / rate, 2),
    }


def default_inputs(tmp: Path) -> tuple[tuple[str, str, str], str]:
    questions = os.environ.get("RAGTUNE_BENCH_QUESTIONS", DEFAULT_INPUTS[0])
    if all(Path(p).is_file() for p in (questions, *DEFAULT_INPUTS[1:])):
        return (questions, *DEFAULT_INPUTS[1:]), f"default data ({questions})"
    # Learnable random data of the default data's shape: noisy, distorted copies of their chunks.
    rng = np.random.default_rng(0)
    n_chunks, dim, per = 1_200, 384, 4
    corpus = rng.standard_normal((n_chunks, dim)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    distort = np.eye(dim) + 1.2 * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    gold = np.repeat(np.arange(n_chunks), per)
    q = (corpus[gold] + 2.5 * rng.standard_normal((len(gold), dim)) / np.sqrt(dim)) @ distort.T
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"c{i}" for i in range(n_chunks)]
    write_jsonl(tmp / "corpus.jsonl", [Chunk(id=c, text=f"text {c}") for c in ids])
    save_embeddings(tmp / "corpus.npz", ids, corpus)
    save_embeddings(tmp / "questions.npz", [f"q{j}" for j in range(len(gold))], q, chunk_ids=[ids[g] for g in gold])
    return tuple(
        str(tmp / n) for n in ("questions.npz", "corpus.npz", "corpus.jsonl")
    ), "learnable random data, 384-d, 1,200 chunks x 4 questions (no data/embed/questions.npz yet)"


def _study_until(
    tune: TuneParams, data: TrainingData, split: Split, target: float | None, max_trials: int, timeout: float | None
) -> tuple[list[tuple[float, float]], object, float]:
    """Run the tune stage's objective (in-memory storage) until `max_trials`, the timeout, or a complete
    trial reaching `target`. Returns ((seconds, best so far) per finished trial, the study, wall s)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(tune), pruner=make_pruner(tune))
    timeline: list[tuple[float, float]] = []
    t0 = time.perf_counter()

    def record(study, trial) -> None:
        complete = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = max(complete) if complete else float("-inf")
        timeline.append((time.perf_counter() - t0, best))
        if target is not None and best >= target:
            study.stop()

    study.optimize(
        Objective(TrainParams(), tune.search_space, data, split),
        n_trials=max_trials,
        timeout=timeout,
        callbacks=[record],
    )
    return timeline, study, time.perf_counter() - t0


def bench_time_to_quality(n_trials: int = 50) -> dict:
    """The unpruned study's best after `n_trials` is the target; the pruned study (same seed) runs until
    it reaches that target (at most 3x the trials and 2x the unpruned wall time)."""
    import optuna

    from ragtune.adapter.data import load_training_data

    with tempfile.TemporaryDirectory() as tmp:
        inputs, source = default_inputs(Path(tmp))
        data = load_training_data(*inputs)
    split = split_by_chunk(data, TrainParams().val_fraction, TrainParams().seed)
    plain, plain_study, plain_s = _study_until(TuneParams(pruning=False), data, split, None, n_trials, None)
    target = max(b for _, b in plain)
    pruned, pruned_study, pruned_s = _study_until(
        TuneParams(pruning=True), data, split, target, 3 * n_trials, 2 * plain_s
    )
    first_50 = pruned[:n_trials]
    reached = next((t for t, b in pruned if b >= target), None)
    # Hit@5 moves in steps of one validation question; a study one question short is within noise.
    near = target - 1.0 / len(split.val) - 1e-12
    near_plain = next(t for t, b in plain if b >= near)
    near_pruned = next((t for t, b in pruned if b >= near), None)
    n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in pruned_study.trials)
    return {
        "data": source,
        "n_trials": n_trials,
        "target_val_hit@5": round(target, 4),
        "baseline_val_hit@5": round(validation_metrics(None, data, split.val)["hit@5"], 4),
        "without_pruning": {
            "wall_s": round(plain_s, 1),
            "reached_target_at_s": round(next(t for t, b in plain if b >= target), 1),
            "within_one_question_at_s": round(near_plain, 1),
        },
        "with_pruning": {
            "reached_target_at_s": None if reached is None else round(reached, 1),
            "within_one_question_at_s": None if near_pruned is None else round(near_pruned, 1),
            "trials_run": len(pruned),
            "pruned": n_pruned,
            "wall_s": round(pruned_s, 1),
            f"wall_s_for_{n_trials}_trials": round(first_50[-1][0], 1),
            f"best_after_{n_trials}_trials": round(first_50[-1][1], 4),
        },
    }


def main() -> None:
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    data, split = reference_scale_data()
    results: dict = {
        "scale": {
            "dim": DIM,
            "chunks": N_CHUNKS,
            "train_questions": N_TRAIN,
            "val_questions": N_VAL,
            "hidden": HIDDEN,
            "batch": BATCH,
        }
    }
    results["validation_pass"] = []
    for threads in thread_counts:
        row = bench_validation(data, split, threads)
        results["validation_pass"].append(row)
        print(
            f"validation pass, {threads} thread(s): batched {row['batched_s']:.3f} s, per-question loop "
            f"{row['per_question_loop_s']:.2f} s ({row['speedup_vs_loop']}x; {row['speedup_vs_reference_2.2s']}x "
            f"the reference 2.2 s)",
            flush=True,
        )
    results["epoch"] = []
    for loss in ("in_batch", "full_corpus"):
        for threads in thread_counts:
            row = bench_epoch(data, split, loss, threads)
            results["epoch"].append(row)
            print(
                f"epoch, {loss}, {threads} thread(s): {row['epoch_s']:.2f} s ({row['of_which_validation_s']:.2f} s "
                f"validation); MLP {row['mlp_gflop']} + loss {row['loss_gflop']} GFLOP at "
                f"{row['achieved_gflop_s']} GFLOP/s = {row['share_of_matmul_rate']:.0%} of the "
                f"{row['mlp_shape_matmul_gflop_s']} GFLOP/s matmul rate",
                flush=True,
            )
    torch.set_num_threads(cores)
    results["time_to_quality"] = bench_time_to_quality()
    ttq = results["time_to_quality"]
    plain, pruned = ttq["without_pruning"], ttq["with_pruning"]
    trials_key = f"wall_s_for_{ttq['n_trials']}_trials"
    print(
        f"time to quality on {ttq['data']}: {ttq['n_trials']} trials without pruning reach val Hit@5 "
        f"{ttq['target_val_hit@5']} (raw cosine {ttq['baseline_val_hit@5']}) at {plain['reached_target_at_s']} s "
        f"({plain['wall_s']} s in all; within one question at {plain['within_one_question_at_s']} s); "
        f"with pruning: reached at {pruned['reached_target_at_s']} s, within one question at "
        f"{pruned['within_one_question_at_s']} s; {ttq['n_trials']} trials take "
        f"{pruned[trials_key]} s ({pruned['pruned']} of {pruned['trials_run']} pruned)",
        flush=True,
    )
    save("training", results)


if __name__ == "__main__":
    main()
