"""Retrieval-quality metrics, the sampled-softmax loss and its logQ correction, against
plain-Python references written from the formulas."""

import math
import random

import numpy as np
import pytest
import torch

from retrieval.quality import popularity_ranking, popularity_topk, rank_scores, recall_ndcg, search_topk
from retrieval.query_training import train_query_tower
from retrieval.sampled_softmax import sampled_softmax_loss


def _ref_recall_ndcg(ranked, positives, k):
    rec = nd = 0.0
    users = 0
    for row, pos in zip(ranked, positives):
        if not pos:
            continue
        users += 1
        hits = [1 if row[r] in pos else 0 for r in range(min(k, len(row)))]
        rec += sum(hits) / len(pos)
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(pos), k)))
        nd += dcg / idcg
    return rec / users, nd / users


def test_recall_ndcg_match_plain_python():
    rng = random.Random(0)
    ranked = np.array([rng.sample(range(50), 20) for _ in range(30)])
    positives = [set(rng.sample(range(50), rng.randint(0, 6))) for _ in range(30)]
    got = recall_ndcg(ranked, positives, (1, 5, 10, 20))
    for k in (1, 5, 10, 20):
        r, n = _ref_recall_ndcg(ranked.tolist(), positives, k)
        assert got["recall"][str(k)] == pytest.approx(r)
        assert got["ndcg"][str(k)] == pytest.approx(n)
    assert got["users"] == sum(1 for p in positives if p)


def test_ndcg_is_one_for_a_perfect_ranking_and_zero_for_misses():
    got = recall_ndcg(np.array([[3, 1, 0, 2], [0, 1, 2, 3]]), [{3, 1}, {9}], (2, 4))
    assert got["ndcg"]["2"] == pytest.approx(0.5)  # user 1 perfect, user 2 nothing
    assert got["recall"]["4"] == pytest.approx(0.5)


def test_search_topk_and_rank_scores_exclude_seen_items():
    rng = np.random.default_rng(1)
    q, items = rng.standard_normal((7, 4)).astype(np.float32), rng.standard_normal((25, 4)).astype(np.float32)
    excl = [rng.choice(25, rng.integers(0, 6), replace=False).tolist() for _ in range(7)]
    got = search_topk(q, items, 5, excl)
    for u in range(7):
        ref = [i for i in sorted(range(25), key=lambda i: -float(q[u] @ items[i])) if i not in excl[u]][:5]
        assert got[u].tolist() == ref
    assert (rank_scores(q @ items.T, 5, excl) == got).all()


def test_popularity_ranking_and_per_user_exclusion():
    order = popularity_ranking({2: 5, 0: 5, 3: 1}, 5)
    assert order.tolist() == [0, 2, 3, 1, 4]  # ties by row
    assert popularity_topk(order, 2, [[0], []]).tolist() == [[2, 3], [0, 2]]


def _ref_loss(q, items, vecs, log_q, temp, rvecs=None, ritems=None, rlogq=None):
    """Plain loop: -log softmax of the own positive among in-batch (+ random) candidates."""
    total = 0.0
    B = len(items)
    for b in range(B):
        logits, own = [], None
        for j in range(B):
            if j != b and items[j] == items[b]:
                continue  # the same item is not a negative
            s = sum(q[b][d] * vecs[j][d] for d in range(len(q[b]))) / temp
            if log_q is not None:
                s -= log_q[j]
            if j == b:
                own = s
            logits.append(s)
        for r in range(len(rvecs) if rvecs is not None else 0):
            if ritems[r] == items[b]:
                continue
            s = sum(q[b][d] * rvecs[r][d] for d in range(len(q[b]))) / temp
            if log_q is not None:
                s -= rlogq
            logits.append(s)
        m = max(logits)
        total += -(own - (m + math.log(sum(math.exp(x - m) for x in logits))))
    return total / B


@pytest.mark.parametrize("with_logq", [False, True])
@pytest.mark.parametrize("with_random", [False, True])
def test_sampled_softmax_matches_brute_force(with_logq, with_random):
    g = torch.Generator().manual_seed(3)
    B, d = 6, 5
    q = torch.randn(B, d, generator=g, dtype=torch.float64)
    items = torch.tensor([4, 1, 4, 7, 2, 9])  # item 4 twice: masked for each other
    vecs = torch.randn(10, d, generator=g, dtype=torch.float64)
    p = torch.tensor([0.05, 0.2, 0.1, 0.05, 0.3, 0.05, 0.05, 0.1, 0.05, 0.05], dtype=torch.float64)
    log_q = torch.log(p[items]) if with_logq else None
    ritems = torch.tensor([1, 3, 8]) if with_random else None
    rvecs = vecs[ritems] if with_random else None
    got = sampled_softmax_loss(q, items, vecs[items], log_q, 0.5, ritems, rvecs, -math.log(10) if with_random else None)
    ref = _ref_loss(
        q.tolist(),
        items.tolist(),
        vecs[items].tolist(),
        None if log_q is None else log_q.tolist(),
        0.5,
        None if rvecs is None else rvecs.tolist(),
        None if ritems is None else ritems.tolist(),
        -math.log(10),
    )
    assert float(got) == pytest.approx(ref, rel=1e-9)


def test_logq_correction_undoes_popularity_bias():
    """Users with no preference (constant input) whose positives follow a skewed popularity:
    without logQ the in-batch softmax under-ranks popular items (they are over-sampled as
    negatives); with it the learned scores track the true log-popularity."""
    rng = np.random.default_rng(0)
    n_items, d = 20, 20
    items = np.eye(n_items, d, dtype=np.float32)  # one-hot IR: score_i = q_i
    p = np.exp(-0.25 * np.arange(n_items))
    p /= p.sum()
    rows = rng.choice(n_items, 8_000, p=p)
    x = np.ones((len(rows), 1), np.float32)  # no user signal: one query for everybody
    scores = {}
    for logq in (False, True):
        fit = train_query_tower(
            x, rows, items, hidden=8, epochs=8, batch_size=256, lr=0.03, temperature=1.0, logq=logq, seed=0
        )
        scores[logq] = fit.tower.encode(np.ones((1, 1), np.float32))[0]
    corr = {k: np.corrcoef(v, np.log(p))[0, 1] for k, v in scores.items()}
    assert corr[True] > 0.95  # softmax(scores) ~ popularity: the full-softmax optimum
    # without the correction the sampled softmax flattens popularity (slope well below 1)
    slope = {k: np.polyfit(np.log(p), v - v.mean(), 1)[0] for k, v in scores.items()}
    assert slope[False] < 0.5 * slope[True]
