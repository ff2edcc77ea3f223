"""The hybrid as an artefact: the eval stage writes models/hybrid/, and its standalone loader (run with every
ragtune import blocked) ranks the test questions exactly as eval's `hybrid` arm does, for RRF and for the
weighted fusion whose weight eval chose; fusion params, tokenizer settings and fingerprints are recorded."""

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from deploy_support import QUESTIONS, build_pipeline, run_eval_stage, set_eval_params

from ragtune.deploy import hybrid
from ragtune.deploy.artefact import corpus_fingerprint
from ragtune.evaluation.arms import HybridArm
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.run import prepare_eval
from ragtune.params import load_section
from ragtune.paths import PipelinePaths

pytestmark = pytest.mark.slow

# The loader as a user without ragtune runs it: any `import ragtune...` fails in this process.
STANDALONE = """
import json, sys
sys.modules["ragtune"] = None
sys.path.insert(0, "models/hybrid")
from ragtune_hybrid import HybridRetriever
questions = json.loads(sys.stdin.read())
ranked = HybridRetriever.load("models/hybrid").search(questions, k=20)
print(json.dumps({"ids": ranked.ids, "rows": ranked.rows.tolist()}))
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("pipeline"))


def eval_hybrid(root):
    """Eval's hybrid arm on the test questions (the same code the eval stage ran), and the prepared inputs."""
    params = load_section("eval", EvalParams, root / "params.yaml")
    inputs = prepare_eval(PipelinePaths().under(root), params, fetch_report=root / "data/fetch/report.json")
    arm = next(a for a in inputs.arms if isinstance(a, HybridArm) and a.name == "hybrid")
    return arm, inputs


@pytest.mark.parametrize("method", ["rrf", "weighted"])
def test_the_standalone_loader_ranks_as_eval(base, tmp_path, method, monkeypatch):
    root = tmp_path / "p"
    shutil.copytree(base, root)
    set_eval_params(root, hybrid={"method": method, "weights": [0.2, 0.5, 0.8]})
    run_eval_stage(root)
    monkeypatch.chdir(root)
    arm, inputs = eval_hybrid(root)
    expected = arm.retrieve(inputs.test, 20)

    questions = [q for q, _ in QUESTIONS]
    assert inputs.test.texts == questions
    proc = subprocess.run(
        [sys.executable, "-c", STANDALONE], input=json.dumps(questions), cwd=root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["rows"] == expected.tolist()
    assert got["ids"] == [[inputs.corpus.ids[r] for r in row if r >= 0] for row in expected]
    assert (expected >= 0).all()  # 48 chunks: every slot of the top 20 filled, so the check covers 20 ranks
    # Given eval's own adapted vectors, the fused scores are eval's too (one fusion implementation); the weighted
    # fusion reads the dense scores, a numpy product here and a torch one in eval (float32: 1e-7 apart).
    loaded = hybrid.HybridRetriever.load(root / "models/hybrid", dense_model="")
    scores, rows = loaded.rank(questions, 20, query_emb=arm.dense.adapt(inputs.test))
    eval_scores, eval_rows = hybrid.fuse(*arm.fusion(), *arm.parts(inputs.test, 20), depth=20)
    assert rows.tolist() == eval_rows.tolist() and np.allclose(scores, eval_scores, rtol=0, atol=1e-6)

    manifest = json.loads((root / "models/hybrid/hybrid.json").read_text())
    report = json.loads((root / "data/eval/report.json").read_text())
    assert manifest["fusion"]["method"] == method == report["fusion"]["hybrid"]["method"]
    if method == "weighted":
        assert manifest["fusion"]["params"] == {"weight": report["fusion"]["hybrid"]["weight"]}
    else:
        assert manifest["fusion"]["params"] == {"rrf_k": 60.0}
    assert manifest["fusion"]["candidates"] == report["fusion"]["candidates"] == 100
    assert manifest["bm25"] == {
        "k1": 1.5,
        "b": 0.75,
        "method": "lucene",
        "stopwords": "en",
        "stemmer": "english",
        "include_title": True,  # auto, for a jsonl corpus
    }
    info = json.loads((root / "data/embed/info.json").read_text())
    assert manifest["dense"]["embedder_fingerprint"] == info["fingerprint"] and manifest["dense"]["dim"] == 384
    assert manifest["dense"]["model_dir"] == "../adapter/sentence_transformer"
    assert manifest["corpus"] == {"chunks": 48, "fingerprint": corpus_fingerprint(inputs.corpus)}
    # Readable after a copy: modes follow the umask (022 here), no private temp-dir modes.
    folder = root / "models/hybrid"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "ragtune_hybrid.py").stat().st_mode) == 0o644
    assert (folder / "ragtune_hybrid.py").read_bytes() == Path(hybrid.__file__).read_bytes()


def test_without_a_hybrid_the_artefact_says_so_and_the_loader_refuses(base, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(base, root)
    set_eval_params(root, hybrid={"enabled": False})
    run_eval_stage(root)
    manifest = json.loads((root / "models/hybrid/hybrid.json").read_text())
    assert manifest["enabled"] is False and "eval.hybrid.enabled" in manifest["reason"]
    with pytest.raises(ValueError, match="no hybrid in this artefact"):
        hybrid.HybridRetriever.load(root / "models/hybrid")


def test_fusion_registry_is_the_one_eval_uses():
    from ragtune.search import fusion

    assert fusion.reciprocal_rank_fusion is hybrid.reciprocal_rank_fusion
    assert fusion.weighted_score_fusion is hybrid.weighted_score_fusion
    dense = (np.array([[0.9, 0.5, 0.1]]), np.array([[0, 1, 2]]))
    lexical = (np.array([[3.0, 1.0, 0.0]]), np.array([[2, 1, -1]]))
    assert (
        fusion.fuse_hybrid(dense, lexical, 3)[1].tolist()
        == hybrid.fuse("rrf", {"rrf_k": 60.0}, dense, lexical, 3)[1].tolist()
    )
    with pytest.raises(ValueError, match="unknown fusion method 'mystery'; known: \\['rrf', 'weighted'\\]"):
        hybrid.fuse("mystery", {}, dense, lexical, 3)


def test_the_deploy_guides_hybrid_loader_block_runs_on_an_eval_artefact(base, tmp_path, monkeypatch, capsys):
    root = tmp_path / "p"
    shutil.copytree(base, root)
    # RRF, for the property checked below (the default fusion, weighted, has its own test above)
    set_eval_params(root, hybrid={"method": "rrf"})
    run_eval_stage(root)
    from doc_blocks import blocks_tagged

    (block,) = blocks_tagged("hybrid")  # docs/how-to/deploy.md, "The hybrid (models/hybrid)"
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "ragtune_hybrid", raising=False)
    namespace: dict = {}
    exec(compile(block.code, block.where, "exec"), namespace)
    ranked = namespace["ranked"]
    assert len(ranked.ids) == 2 and len(ranked.ids[0]) == 20 and ranked.scores.shape == (2, 20)
    # By RRF every chunk sharing a term with the question (12 here: the GDPR ones and "competent persons") scores at
    # least 1/72 (BM25) + 1/108 (dense, 48 chunks), above any chunk only the dense side brings (at most 1/61).
    retriever = namespace["retriever"]
    _, lexical = hybrid.bm25_top_k(
        retriever.bm25, ["Who must notify a personal data breach?"], 48, 48, retriever.stopwords, retriever.stem
    )
    matched = {retriever.ids[r] for r in lexical[0] if r >= 0}
    assert len(matched) == 12 and set(ranked.ids[0][:12]) == matched
    assert capsys.readouterr().out.startswith(f"{ranked.ids[0][:5]} [")


def test_the_saved_bm25_index_is_the_same_bytes_whatever_the_hash_seed(tmp_path):
    """bm25s numbers stems in set order (Python's hash seed); the artefact is a DVC output, so its index is
    renumbered in sorted order: two runs give the same files."""
    code = (
        "import sys; from ragtune.search.lexical import Bm25Index; "
        "texts = ['Controllers shall notify a breach.', 'Providers of AI systems shall manage risks.', "
        "'Financial entities report incidents to authorities.']; "
        "Bm25Index(texts).save(sys.argv[1])"
    )
    for seed in ("1", "2"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / seed)], env=env, capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    files = sorted(p.name for p in (tmp_path / "1").iterdir())
    assert "vocab.index.json" in files
    assert all((tmp_path / "1" / f).read_bytes() == (tmp_path / "2" / f).read_bytes() for f in files)
    vocab = json.loads((tmp_path / "1/vocab.index.json").read_text())
    assert list(vocab) == sorted(k for k in vocab if k) + [""]  # sorted stems, bm25s's empty token last
