"""How good a query-tower version is on the held-out day: its recall/NDCG@K beside popularity and
the live index version (:func:`evaluate_on_day` -> ``RetrievalQuality``, which the gate reads)."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pyarrow.compute as pc

from contracts import IndexManifest, RunLayout
from contracts.index import INDEX_MANIFEST_FILE, RetrievalQuality
from extract import read_asof
from retrieval import store
from retrieval.config import RetrievalConfig
from retrieval.quality import popularity_ranking, popularity_topk, recall_ndcg
from retrieval.query_tables import QUERY_TABLE
from transfer.join import vectors_of

log = logging.getLogger(__name__)


def rank_item_ids(search, q: np.ndarray, users: list, seen: dict, k: int) -> list[list]:
    """Top-k item ids per user from ``search(q, fetch) -> ids (U, fetch)``, minus seen items."""
    extra = max((len(seen.get(u, ())) for u in users), default=0)
    ids = search(q, k + extra)
    out = []
    for u, row in zip(users, ids):
        ban = seen.get(u, set())
        out.append([i for i in row if i is not None and i not in ban][:k])
    return out


def score(ranked_ids: list[list], users: list, targets: dict, k_values) -> dict:
    """recall/NDCG of id lists (strings) against each user's target id set."""
    vocab: dict = {}
    rows = np.full((len(users), max(k_values)), -1, dtype=np.int64)
    for j, r in enumerate(ranked_ids):
        for c, i in enumerate(r[: rows.shape[1]]):
            rows[j, c] = vocab.setdefault(i, len(vocab))
    pos = [{vocab.setdefault(i, len(vocab)) for i in targets[u]} for u in users]
    return recall_ndcg(rows, pos, list(k_values))


def evaluate_on_day(
    layout: RunLayout,
    h: str,
    q_day: str,
    mv: str,
    exact,
    catalogue: set,
    seen: dict,
    tgt: dict,
    logt,
    positive,
    k: int,
    cfg: RetrievalConfig,
    table_version: int,
) -> RetrievalQuality:
    """The new version (``user_query`` at ``q_day``), popularity and the live version on day ``h``."""
    ks = sorted({10, 50, 100, k})
    qpath = layout.table(QUERY_TABLE)
    snap = read_asof(qpath, q_day, expect_model_version=mv, inclusive=True, version=table_version)
    ids = snap["entity_id"].to_pylist()
    keep = [j for j, u in enumerate(ids) if tgt.get(u)]
    users = [ids[j] for j in keep]
    qv = vectors_of(snap, len(snap["vector"][0]))[keep] if keep else np.zeros((0, 1), np.float32)
    out = RetrievalQuality(
        held_out_day=h, query_ds=q_day, query_table_version=table_version, users=len(users), gate_k=k
    )
    if not users:
        return out
    new_ranked = rank_item_ids(exact, qv, users, seen, max(ks))
    new = score(new_ranked, users, tgt, ks)
    # popularity: positive counts up to q_day over the catalogue
    before = logt.filter(pc.and_(positive, pc.less_equal(logt["ds"], q_day)))
    counts = Counter(i for i in before["item_id"].to_pylist() if i in catalogue)
    item_ids = sorted(counts)
    order = popularity_ranking({j: counts[i] for j, i in enumerate(item_ids)}, len(item_ids))
    row_of = {i: j for j, i in enumerate(item_ids)}
    excl = [[row_of[i] for i in seen.get(u, ()) if i in row_of] for u in users]
    pop_rows = popularity_topk(order, max(ks), excl)
    pop_ranked = [[item_ids[r] for r in row if r >= 0] for row in pop_rows]
    pop = score(pop_ranked, users, tgt, ks)
    diff = [_user_recall(a, tgt[u], k) - _user_recall(b, tgt[u], k) for a, b, u in zip(new_ranked, pop_ranked, users)]
    se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None
    live = _live_recall(layout, h, seen, tgt, ks, cfg)
    return out.model_copy(
        update={
            "recall_at_k": _r(new["recall"]),
            "ndcg_at_k": _r(new["ndcg"]),
            "popularity_recall_at_k": _r(pop["recall"]),
            "popularity_ndcg_at_k": _r(pop["ndcg"]),
            "popularity_diff_se": None if se is None else round(se, 6),
            "live_version": live[0],
            "live_recall_at_k": live[1],
        }
    )


def _user_recall(ranked: list, targets: set, k: int) -> float:
    return len(set(ranked[:k]) & targets) / len(targets)


def _r(d: dict) -> dict:
    return {k: round(float(v), 6) for k, v in d.items()}


def _live_recall(layout: RunLayout, h: str, seen: dict, tgt: dict, ks, cfg) -> tuple[str | None, dict]:
    """(live version, its recall@K on ``h``) or (version/None, {}) when it cannot be compared."""
    live = store.read_current(layout.indexes)
    if live is None:
        return None, {}
    try:
        m = IndexManifest.model_validate(json.loads((layout.indexes / live / INDEX_MANIFEST_FILE).read_text()))
    except Exception as e:  # noqa: BLE001 - an unreadable live manifest: nothing to compare with
        log.warning("live index %s: manifest unreadable (%s): no comparison", live, e)
        return live, {}
    if m.quality is not None and m.quality.held_out_day == h and m.quality.recall_at_k:
        return live, dict(m.quality.recall_at_k)
    if not m.query_table or not m.query_ds or m.query_ds >= h:
        log.info("live index %s has no query table before %s: no comparison", live, h)
        return live, {}
    try:
        snap = read_asof(layout.table(m.query_table), m.query_ds, inclusive=True, version=m.query_table_version)
        loaded = store.load_version(layout.indexes / live)
    except Exception as e:  # noqa: BLE001 - vacuumed history or a broken old version
        log.warning("live index %s: cannot re-evaluate (%s): no comparison", live, e)
        return live, {}
    ids = snap["entity_id"].to_pylist()
    keep = [j for j, u in enumerate(ids) if tgt.get(u)]
    if not keep:
        return live, {}
    users = [ids[j] for j in keep]
    qv = vectors_of(snap, len(snap["vector"][0]))[keep]

    def search(q, fetch):
        return store.search(loaded, q, min(fetch, loaded.manifest.num_items))[0]

    return live, _r(score(rank_item_ids(search, qv, users, seen, max(ks)), users, tgt, ks)["recall"])
