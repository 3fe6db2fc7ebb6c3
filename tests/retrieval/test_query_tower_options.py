"""The query tower's options (issue 14 quality work): item side (learned bias, residual
adapter), fixed-weight popularity prior, time-decayed popularity column, behaviour-sequence
input, partial logQ. Each computed quantity is checked against plain numpy / brute force,
and scores against a real FAISS inner-product search."""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest
import torch

from retrieval.query_features import history_means, recent_popularity
from retrieval.query_tower import QueryTower
from retrieval.query_training import train_query_tower
from retrieval.sampled_softmax import sampled_softmax_loss


def _faiss_topk(q: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    return index.search(np.ascontiguousarray(q, dtype=np.float32), k)


def _randomised(tower: QueryTower, seed: int = 0) -> QueryTower:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tower.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return tower


@pytest.mark.parametrize("adapter", ["none", "linear", "mlp"])
def test_item_bias_and_adapter_scores_equal_brute_force(adapter):
    rng = np.random.default_rng(0)
    d_in, d_ir, n = 6, 5, 40
    tower = _randomised(
        QueryTower(d_in, d_ir + 1, hidden=8, item_adapter=adapter, pass_through=1, num_items=n, item_bias=True)
    )
    x = rng.normal(size=(7, d_in)).astype(np.float32)
    items = np.hstack([rng.normal(size=(n, d_ir)), np.log(rng.dirichlet(np.ones(n)))[:, None]]).astype(np.float32)
    q, v = tower.encode(x), tower.encode_items(items)
    assert q.shape == (7, d_ir + 2) and v.shape == (n, d_ir + 2)
    # brute force from the parameters
    st = tower.state_dict()
    z = (x - st["mean"].numpy()) / st["std"].numpy()
    h = np.maximum(z @ st["adapter.trunk.0.weight"].numpy().T + st["adapter.trunk.0.bias"].numpy(), 0)
    qu = h @ st["adapter.proj.weight"].numpy().T  # [7, d_ir + 1]: IR part and the popularity weight
    ir = items[:, :d_ir].astype(np.float64)
    if adapter == "linear":
        ir = ir + ir @ st["item_map.weight"].numpy().T
    elif adapter == "mlp":
        hid = np.maximum(ir @ st["item_map.0.weight"].numpy().T + st["item_map.0.bias"].numpy(), 0)
        ir = ir + hid @ st["item_map.2.weight"].numpy().T + st["item_map.2.bias"].numpy()
    expect = qu[:, :d_ir] @ ir.T + qu[:, d_ir:] * items[:, d_ir][None] + st["bias"].numpy()[None]
    np.testing.assert_allclose(q @ v.T, expect, rtol=1e-4, atol=1e-4)
    scores, rows = _faiss_topk(q, v, 10)
    np.testing.assert_array_equal(rows, np.argsort(-expect, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(expect, rows, 1), rtol=1e-4, atol=1e-4)


def test_unknown_items_get_no_bias():
    tower = _randomised(QueryTower(3, 4, num_items=5, item_bias=True))
    items = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    v = tower.encode_items(items, rows=np.array([4, -1, 0]))
    b = tower.bias.detach().numpy()
    np.testing.assert_allclose(v[:, -1], [b[4], 0.0, b[0]], rtol=1e-6)
    np.testing.assert_allclose(v[:, :4], items, rtol=1e-6)  # no adapter: IR unchanged


def test_prior_weight_fixes_the_popularity_coordinate():
    rng = np.random.default_rng(2)
    tower = _randomised(QueryTower(4, 6, hidden=5, pass_through=1, prior_weight=1.5))
    x = rng.normal(size=(9, 4)).astype(np.float32)
    items = np.hstack([rng.normal(size=(30, 5)), np.log(rng.dirichlet(np.ones(30)))[:, None]]).astype(np.float32)
    q = tower.encode(x)
    np.testing.assert_array_equal(q[:, -1], np.full(9, 1.5, np.float32))
    expect = q[:, :5].astype(np.float64) @ items[:, :5].T + 1.5 * items[:, 5][None]
    _, rows = _faiss_topk(q, tower.encode_items(items), 5)
    np.testing.assert_array_equal(rows, np.argsort(-expect, axis=1, kind="stable")[:, :5])
    with pytest.raises(ValueError, match="prior_weight"):
        QueryTower(4, 6, prior_weight=1.0)


def test_history_means_point_in_time():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 4, 50)
    rows = rng.integers(0, 10, 50)
    vecs = rng.normal(size=(10, 3)).astype(np.float32)
    for last in (0, 3):
        before, after = history_means(users, rows, vecs, last=last)
        for k in range(50):
            prev = [rows[j] for j in range(k) if users[j] == users[k]]
            prev = prev[-last:] if last else prev
            exp = vecs[prev].mean(0) if prev else np.zeros(3)
            np.testing.assert_allclose(before[k], exp, rtol=1e-5, atol=1e-6)
        for u in set(users.tolist()):
            allp = [rows[j] for j in range(50) if users[j] == u]
            np.testing.assert_allclose(after[u], vecs[allp[-last:] if last else allp].mean(0), rtol=1e-5)


def test_recent_popularity_against_the_formula():
    rng = np.random.default_rng(4)
    n, hl = 6, 2.0
    times = np.sort(rng.integers(0, 20, 40).astype(np.float64))  # ties on purpose
    rows = rng.integers(0, n, 40)
    eps = 1.0 / n

    def brute(t):
        c = np.zeros(n)
        for r, s in zip(rows, times):
            if s < t:
                c[r] += 2.0 ** (-(t - s) / hl)
        return np.log((c + eps) / (c.sum() + eps * n))

    np.testing.assert_allclose(recent_popularity(rows, times, n, hl, 21.5)[:, 0], brute(21.5), rtol=1e-5)
    per_pair = recent_popularity(rows, times, n, hl, times)
    np.testing.assert_allclose(per_pair, [brute(t)[r] for r, t in zip(rows, times)], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        recent_popularity(rows, times[::-1], n, hl, times[::-1])


def test_partial_logq_is_a_scaled_correction():
    rng = np.random.default_rng(5)
    q = torch.as_tensor(rng.normal(size=(6, 4)), dtype=torch.float32)
    items = torch.tensor([0, 1, 2, 3, 1, 4])
    vecs = torch.as_tensor(rng.normal(size=(5, 4)), dtype=torch.float32)
    log_q = torch.as_tensor(np.log(rng.dirichlet(np.ones(5))), dtype=torch.float32)
    got = sampled_softmax_loss(q, items, vecs[items], 0.5 * log_q[items], 0.7)
    total = 0.0
    for b in range(6):
        logits = [
            (float(q[b] @ vecs[items[j]]) / 0.7 - 0.5 * float(log_q[items[j]]))
            for j in range(6)
            if j == b or int(items[j]) != int(items[b])
        ]
        own = float(q[b] @ vecs[items[b]]) / 0.7 - 0.5 * float(log_q[items[b]])
        total += -(own - math.log(sum(math.exp(v) for v in logits)))
    assert float(got) == pytest.approx(total / 6, rel=1e-5)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="logq"):
        train_query_tower(x, np.zeros(20, int), vecs.numpy(), logq=1.5, epochs=1)


def test_training_with_every_option_learns_the_planted_preference():
    """Users of type 0 like items 0-9, type 1 items 10-19 (IR separates the groups); popularity (a fixed-weight
    time-decayed prior column with per-pair values) and a learned bias + residual item
    adapter all on: the trained scores must rank each type's own items first."""
    rng = np.random.default_rng(6)
    n, d = 20, 4
    ir = (0.3 * rng.normal(size=(n, d)) + np.repeat([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]], 10, 0)).astype(np.float32)
    types = rng.integers(0, 2, 600)
    item_rows = types * 10 + rng.integers(0, 10, 600)
    times = np.arange(600, dtype=np.float64)
    x = np.eye(2, dtype=np.float32)[types] + 0.05 * rng.normal(size=(600, 2)).astype(np.float32)
    col = recent_popularity(item_rows, times, n, 100.0, 600.0)
    pit = recent_popularity(item_rows, times, n, 100.0, times)[:, None]
    fit = train_query_tower(
        x, item_rows, np.hstack([ir, col]), hidden=8, epochs=15, batch_size=64, lr=0.02, temperature=0.5,
        random_negatives=4, logq=0.5, item_adapter="linear", item_bias=True, pass_through=1,
        pair_columns=pit, prior_weight=1.0, seed=0,
    )  # fmt: skip
    q = fit.tower.encode(np.eye(2, dtype=np.float32))
    v = fit.tower.encode_items(np.hstack([ir, col]))
    _, rows = _faiss_topk(q, v, 10)
    assert set(rows[0].tolist()) == set(range(10)) and set(rows[1].tolist()) == set(range(10, 20))
    with pytest.raises(ValueError, match="pair_columns"):
        train_query_tower(x, item_rows, ir, pair_columns=np.zeros((600, d + 1)), epochs=1)
