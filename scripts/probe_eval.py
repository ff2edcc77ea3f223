"""What the probe scripts share (not a pipeline stage): a workspace's test set, and an adapter's test scores
against raw cosine with the eval stage's paired tests (exact McNemar on Hit@5, paired bootstrap on MRR@20,
EvalParams' resamples, confidence and seed). Call with the workspace as the working directory and its `src`
importable."""

from pathlib import Path


def load_test_inputs():
    """(corpus with embeddings, test set) of the workspace in the working directory: the test file eval reads
    (data/synthesize/test.jsonl, whose embeddings are data/embed/test.npz)."""
    from ragtune.evaluation.inputs import load_corpus_with_embeddings, load_test_set

    corpus = load_corpus_with_embeddings(Path("data/fetch/corpus.jsonl"), Path("data/embed/corpus.npz"))
    return corpus, load_test_set(Path("data/synthesize/test.jsonl"), Path("data/embed/test.npz"), corpus.ids)


class AgainstCosine:
    """Test Hit@5 / MRR@20 of query transforms, each paired against raw cosine on the same questions."""

    def __init__(self, corpus, test):
        from ragtune.evaluation.arms import identity
        from ragtune.evaluation.metrics import EvalParams

        self.corpus, self.test, self.params = corpus, test, EvalParams()
        self.cosine = self.scores(identity)

    def scores(self, transform) -> dict:
        """Per-question metrics of `transform` (query_emb (n, d) -> (n, d))."""
        from ragtune.evaluation.arms import EmbeddingArm
        from ragtune.evaluation.metrics import per_question_metrics
        from ragtune.evaluation.ranking import hit_matrix

        hits = hit_matrix(
            EmbeddingArm("x", self.corpus.emb, transform).retrieve(self.test, self.params.depth), self.test.relevant
        )
        return per_question_metrics(hits, self.test.n_relevant, self.params)

    def compare(self, transform) -> dict:
        """Mean Hit@5 and MRR@20 of `transform` (fractions) and the p-values against raw cosine (unrounded)."""
        from ragtune.evaluation.statistics import mcnemar_exact, paired_bootstrap

        new, base, ev = self.scores(transform), self.cosine, self.params
        return {
            "hit@5": float(new["hit@5"].mean()),
            "mrr@20": float(new["mrr@20"].mean()),
            "p_hit@5": mcnemar_exact(new["hit@5"] > 0, base["hit@5"] > 0).p_value,
            "p_mrr@20": paired_bootstrap(
                new["mrr@20"], base["mrr@20"], ev.bootstrap_resamples, ev.confidence, ev.seed
            ).p_value,
        }


def train_tuned(overrides: dict | None = None):
    """(params, best.json, bagged result): the train stage's adapter from data/tune/best.json, with `overrides`
    (train keys) on top."""
    from ragtune.adapter.bagging import train_bagged
    from ragtune.adapter.config import TrainParams, apply_overrides, load_tuned
    from ragtune.adapter.data import TRAINING_INPUTS, load_training_data
    from ragtune.params import load_section

    params, best = load_tuned(load_section("train", TrainParams), "data/tune/best.json")
    params = apply_overrides(params, overrides or {})
    data = load_training_data(*TRAINING_INPUTS, round_trip_top_k=params.round_trip_top_k)
    return params, best, train_bagged(params, data)
