"""The daily query-tower step with every new option on (behaviour-sequence input, time-decayed
popularity column as a fixed-weight prior, residual item adapter, learned item bias, partial
logQ), real Delta tables and real FAISS: the served index holds exactly the item vectors
that were evaluated (checked against a numpy recomputation from the log)."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from deltalake import DeltaTable

from contracts import RunLayout
from extract import read_asof
from retrieval import load_current, store
from retrieval.config import PromotionGateConfig, QueryTowerConfig, RetrievalConfig
from retrieval.paired import run_query_retrieval
from tests.retrieval.test_query_gate import DAYS, N_ITEMS, SPLIT, D, _publish_reps, _world, _write_log

HL_DAYS = 1.5
CFG = RetrievalConfig(
    recall_target=0.9,
    k_values=[10],
    hit_rate_days=0,
    use_gpu=False,
    query_tower=QueryTowerConfig(
        hidden=16,
        epochs=8,
        batch_size=128,
        lr=0.01,
        temperature=0.5,
        logq=0.5,
        history=5,
        popularity_half_life_days=HL_DAYS,
        popularity_prior_weight=1.0,
        item_adapter="linear",
        item_bias=True,
    ),
    promotion=PromotionGateConfig(k=10, max_drop=0.1, min_users=20),
)


def _decayed_column(rows, upto: str) -> np.ndarray:
    """log((c_i + 1/n) / (sum c + 1)) with c_i = sum 2^(-(t_end - t)/hl) over positives of days <= upto."""
    t_end = (datetime.fromisoformat(upto).replace(tzinfo=timezone.utc) + timedelta(days=1)).timestamp()
    c = np.zeros(N_ITEMS)
    for _, i, d, t in rows:
        if d <= upto:
            c[int(i[1:])] += 2.0 ** (-(t_end - t) / (HL_DAYS * 86400))
    eps = 1.0 / N_ITEMS
    return np.log((c + eps) / (c.sum() + eps * N_ITEMS))


def test_every_option_served_index_equals_the_evaluated_one(tmp_path):
    rng, items, z = _world()
    _write_log(tmp_path, rng, items, z)
    _publish_reps(tmp_path, items, z)
    layout = RunLayout(tmp_path)
    m = run_query_retrieval(tmp_path, DAYS[-1], SPLIT, CFG, expect_model_version="m1")
    q = m.quality
    assert q.promoted, q.refused
    assert q.tower["history"] == 5 and q.tower["item_bias"] == 1 and q.tower["item_adapter"] == "linear"
    # IR dim + popularity column + learned-bias coordinate, everywhere
    assert m.dim == D + 2 and load_current(layout.indexes).manifest.dim == D + 2
    qds = read_asof(layout.table("user_query"), DAYS[5], inclusive=True)
    qv_ds = np.stack(qds["vector"].to_numpy(zero_copy_only=False)).astype(np.float64)
    assert qv_ds.shape[1] == D + 2
    np.testing.assert_array_equal(qv_ds[:, -2], 1.0)  # the fixed prior weight
    np.testing.assert_array_equal(qv_ds[:, -1], 1.0)  # the bias coordinate

    log = DeltaTable(str(layout.log)).to_pyarrow_table()
    ts = [t.timestamp() for t in log["event_time"].to_pylist()]
    rows = list(zip(log["user_id"].to_pylist(), log["item_id"].to_pylist(), log["ds"].to_pylist(), ts))
    loaded = load_current(layout.indexes)
    idx_vecs = loaded.index.reconstruct_n(0, loaded.index.ntotal).astype(np.float64)
    order = [int(i[1:]) for i in loaded.ids]
    served = np.zeros_like(idx_vecs)
    served[order] = idx_vecs
    # the popularity column of the served index: decayed shares as of the end of ds
    np.testing.assert_allclose(served[:, D], _decayed_column(rows, DAYS[5]), rtol=1e-4, atol=1e-4)
    # the live index answers == numpy brute force over its own vectors
    ids, _ = store.search(loaded, qv_ds[:5].astype(np.float32), 10)
    for j in range(5):
        want = [f"i{i}" for i in np.argsort(-(served @ qv_ds[j]), kind="stable")[:10]]
        assert list(ids[j]) == want

    # the recorded recall@10: the query day's user_query against the *same* item side (IR
    # adapter and bias are the served ones) with the popularity column as of the query day
    evaluated = served.copy()
    evaluated[:, D] = _decayed_column(rows, DAYS[3])
    qsnap = read_asof(layout.table("user_query"), DAYS[3], inclusive=True)
    qv = np.stack(qsnap["vector"].to_numpy(zero_copy_only=False)).astype(np.float64)
    seen, tgt = {}, {}
    for u, i, d, _ in rows:
        if d < DAYS[4]:
            seen.setdefault(u, set()).add(i)
    for u, i, d, _ in rows:
        if d == DAYS[4] and i not in seen.get(u, set()):
            tgt.setdefault(u, set()).add(i)
    total = n = 0
    for j, u in enumerate(qsnap["entity_id"].to_pylist()):
        if not tgt.get(u):
            continue
        s = evaluated @ qv[j]
        top = [f"i{i}" for i in np.argsort(-s, kind="stable") if f"i{i}" not in seen.get(u, set())][:10]
        total += len(set(top) & tgt[u]) / len(tgt[u])
        n += 1
    assert q.users == n
    assert q.recall_at_k["10"] == pytest.approx(total / n, abs=1e-5)
    assert q.recall_at_k["10"] > 1.5 * q.popularity_recall_at_k["10"]
