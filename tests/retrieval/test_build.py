"""Index build, search and evaluation against an independent numpy brute force."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from contracts.index import IDS_FILE, INDEX_FILE
from retrieval import RetrievalConfig, build_index, hit_rate_at_k, load_current, recall_at_k, search
from retrieval.faiss_index import auto_factory
from tests.retrieval.helpers import clustered, make_table, numpy_topk

DS = "2026-01-02"


def _ids(n: int) -> list[str]:
    return [f"item{i:05d}" for i in range(n)]


def test_flat_exact_equals_numpy_topk(tmp_path):
    items = clustered(600, 16, seed=1)
    make_table(tmp_path / "item_ir", _ids(600), items)
    m = build_index(tmp_path / "item_ir", DS, tmp_path / "idx", RetrievalConfig(k_values=[5, 20], eval_queries=40))
    assert m.factory == "Flat" and m.num_items == 600 and m.dim == 16
    assert m.recall_at_k == {"5": 1.0, "20": 1.0}
    loaded = load_current(tmp_path / "idx")
    q = np.random.default_rng(7).standard_normal((30, 16)).astype(np.float32)
    ids, scores = search(loaded, q, 20)
    rows, ref_scores = numpy_topk(items, q, 20)
    assert (ids == np.asarray(_ids(600), dtype=object)[rows]).all()
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-4)
    # A single query as a 1-d vector works too.
    one_ids, _ = search(loaded, q[0], 3)
    assert one_ids.shape == (1, 3) and list(one_ids[0]) == list(ids[0, :3])


def test_ivf_recall_matches_numpy_bruteforce(tmp_path):
    items = clustered(4000, 32, seed=2, clusters=40)
    make_table(tmp_path / "item_ir", _ids(4000), items)
    cfg = RetrievalConfig(flat_max_items=1000, k_values=[10, 50], eval_queries=200, recall_target=0.9)
    m = build_index(tmp_path / "item_ir", DS, tmp_path / "idx", cfg)
    assert m.factory.startswith("IVF") and m.factory.endswith("RFlat")
    assert "nprobe" in m.params and "k_factor" in m.params
    assert min(m.recall_at_k.values()) >= 0.9
    # Independent check on fresh queries: our search vs numpy brute force.
    loaded = load_current(tmp_path / "idx")
    rng = np.random.default_rng(11)
    q = items[rng.choice(4000, 200)] + 0.05 * rng.standard_normal((200, 32)).astype(np.float32)
    ids, _ = search(loaded, q, 50)
    rows, _ = numpy_topk(items, q, 50)
    truth = np.asarray(_ids(4000), dtype=object)[rows]
    rec = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(ids, truth)])
    assert rec >= 0.85
    assert abs(rec - m.recall_at_k["50"]) < 0.1


def test_recall_and_hit_rate_definitions():
    truth = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    found = np.array([[0, 9, 2, -1], [7, 6, 5, 4]])
    assert recall_at_k(found, truth, 4) == pytest.approx((2 + 4) / 8)
    assert recall_at_k(found, truth, 2) == pytest.approx((1 + 0) / 4)
    found_ids = np.array([["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]], dtype=object)
    fut = [["c"], ["x"], []]  # third user has no future item: skipped
    assert hit_rate_at_k(found_ids, fut, [1, 3]) == {"1": 0.0, "3": 0.5}


def test_auto_choice_by_size():
    assert auto_factory(1_000, 64, 50_000) == "Flat"
    assert auto_factory(50_000, 64, 50_000) == "Flat"
    big = auto_factory(1_000_000, 64, 50_000)
    assert big.startswith("IVF1024,") and big.endswith(",RFlat")
    assert auto_factory(100_000, 64, 50_000).startswith("IVF256,")


def test_factory_override_and_hnsw_tuning(tmp_path):
    items = clustered(1500, 16, seed=3)
    make_table(tmp_path / "item_ir", _ids(1500), items)
    cfg = RetrievalConfig(factory="HNSW16", k_values=[10], eval_queries=100, recall_target=0.9)
    m = build_index(tmp_path / "item_ir", DS, tmp_path / "idx", cfg)
    assert m.factory == "HNSW16" and "efSearch" in m.params
    loaded = load_current(tmp_path / "idx")
    assert faiss.downcast_index(loaded.index).hnsw.efSearch == m.params["efSearch"]


def test_cosine_normalises_items_and_queries(tmp_path):
    rng = np.random.default_rng(4)
    items = (rng.standard_normal((300, 8)) * rng.uniform(0.1, 10, (300, 1))).astype(np.float32)
    make_table(tmp_path / "item_ir", _ids(300), items)
    m = build_index(
        tmp_path / "item_ir", DS, tmp_path / "idx", RetrievalConfig(metric="cosine", k_values=[10], eval_queries=40)
    )
    assert m.metric == "cosine"
    loaded = load_current(tmp_path / "idx")
    stored = loaded.index.reconstruct_n(0, 300)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, rtol=1e-5)
    q = (rng.standard_normal((20, 8)) * 50).astype(np.float32)  # raw, unnormalised queries
    ids, scores = search(loaded, q, 10)
    un = items / np.linalg.norm(items, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rows, ref = numpy_topk(un, qn, 10)
    assert (ids == np.asarray(_ids(300), dtype=object)[rows]).all()
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    assert scores.max() <= 1.0 + 1e-5


def test_saved_index_opens_with_plain_faiss(tmp_path):
    items = clustered(2000, 16, seed=5)
    make_table(tmp_path / "item_ir", _ids(2000), items)
    cfg = RetrievalConfig(flat_max_items=500, k_values=[10], eval_queries=300, recall_target=0.8)
    m = build_index(tmp_path / "item_ir", DS, tmp_path / "idx", cfg)
    folder = tmp_path / "idx" / m.version
    index = faiss.read_index(str(folder / INDEX_FILE))
    assert index.ntotal == 2000 and index.d == 16
    import pyarrow.parquet as pq

    assert pq.read_table(folder / IDS_FILE).column("entity_id").to_pylist() == _ids(2000)
    assert m.source_table_version >= 0 and m.model_version == "m1" and m.ds == DS
    assert m.params["bytes_per_item"] > 0


def test_given_queries_and_hit_rate_in_manifest(tmp_path):
    items = clustered(500, 8, seed=6)
    make_table(tmp_path / "item_ir", _ids(500), items)
    users = items[:50] + 0.01
    future = [[f"item{i:05d}"] for i in range(50)]  # each user's nearest item is "its" item
    m = build_index(
        tmp_path / "item_ir",
        DS,
        tmp_path / "idx",
        RetrievalConfig(metric="cosine", k_values=[1, 10], eval_queries=40),
        queries=users,
        future=(users, future),
    )
    assert m.params["query_source"] == "given" and m.params["eval_queries"] == 20
    assert m.hit_rate_at_k["10"] >= m.hit_rate_at_k["1"] >= 0.8


def test_tune_reaches_target_with_fewest_probes():
    from retrieval import faiss_index
    from retrieval.evaluate import tune

    items = clustered(5000, 16, seed=8, clusters=50)
    index = faiss_index.build("IVF64,SQ8,RFlat", items, 100_000, 0, use_gpu=False)
    rng = np.random.default_rng(9)
    q = items[rng.choice(5000, 200)] + 0.3 * rng.standard_normal((200, 16)).astype(np.float32)
    truth, _ = numpy_topk(items, q, 20)
    params, points = tune(index, q, truth, [20], 0.95)
    # The chosen setting reaches the target against the numpy truth ...
    faiss_index.set_params(index, params)
    _, rows = index.search(q, 20)
    assert recall_at_k(rows, truth, 20) >= 0.95
    # ... and one step fewer probes at the same k_factor does not.
    grid = faiss_index.NPROBES
    i = grid.index(params["nprobe"])
    if i > 0:
        faiss_index.set_params(index, {**params, "nprobe": grid[i - 1]})
        assert recall_at_k(index.search(q, 20)[1], truth, 20) < 0.95
    assert all(p["params"]["k_factor"] in (1, 2, 4, 8) for p in points)
