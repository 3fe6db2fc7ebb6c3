"""``run_query_retrieval``: the daily retrieval step with the query tower.

1. **Train** the query tower (retrieval/query_tower.py) on the split's train days: every
   positive (user, item) pair, the user's input vectors (``cfg.query_tower.inputs``, e.g.
   UR and CR(u)) as of the day before the pair (point in time, ``transfer.join``), the
   item's IR from the catalogue as of the day before the held-out day. The epoch is chosen
   on the valid days (recall@``promotion.k``, user state the day before they start).
   Options (``QueryTowerConfig``): ``history`` appends the mean IR of the user's last N
   positives (point in time per pair); ``popularity_half_life_days`` makes the popularity
   column time-decayed (per pair in training, as of the end of the indexed day in the
   index); ``popularity_prior_weight`` fixes its weight; ``item_adapter`` / ``item_bias``
   add the item side, which the index is built through (``QueryTower.encode_items``), so
   the served scores are exactly the evaluated ones.
2. **Publish** ``user_query`` (same Delta contract, ``model_version`` = item_ir's) for the
   query day ``q`` (the newest published day before the held-out day ``h`` = the first
   test day; every input of the tower is <= q, so the partition is point-in-time) and for
   ``ds`` (what the service uses), through :func:`extract.publish` (idempotent replace).
3. **Evaluate** on ``h``: the ``user_query`` partition ``q`` read back from Delta, exact
   inner-product top-K over the catalogue at ``q``, against ``h``'s positives (items seen
   up to ``q`` excluded when ``exclude_seen``), beside popularity (positive counts up to
   ``q``) and the live index version (its recorded figure when it was measured on ``h``,
   else its own index searched with its own ``user_query`` partition read at its recorded
   Delta version, when that partition is before ``h``).
4. **Build** the index over ``item_ir`` at ``ds`` (ANN-recall gate with the published
   ``ds`` query vectors as queries) and **promote** it only when :func:`retrieval.gate.decide`
   passes; a refused version is kept on disk (not CURRENT) with its quality in the manifest.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import IndexManifest, RunLayout, TableProperties, config_hash
from contracts.index import INDEX_MANIFEST_FILE, RetrievalQuality
from datasources import read_log, read_log_spec
from engines import delta_io
from extract import publish, read_asof
from retrieval import gate, store
from retrieval.build import build_index
from retrieval.config import RetrievalConfig
from retrieval.quality import popularity_ranking, popularity_topk, recall_ndcg, search_topk
from retrieval.query_tower import history_means, popularity_column, recent_popularity, train_query_tower
from retrieval.source import SourceError
from transfer import join_representations
from transfer.join import vectors_of


class TooLittleData(SourceError):
    """The log (or its published snapshots) is still too short to train or evaluate a query
    tower: e.g. no published user vectors before the training days. The daily step then
    serves the plain item index as before, and says so (it does not fail the day)."""


log = logging.getLogger(__name__)
QUERY_TABLE = "user_query"


def _snapshot(path, day: str, mv: str | None, inclusive: bool) -> tuple[str | None, pa.Table]:
    t = read_asof(path, day, expect_model_version=mv, inclusive=inclusive)
    return (t["ds"][0].as_py() if t.num_rows else None), t


def user_inputs(layout: RunLayout, names: list[str], day: str, mv: str | None, inclusive: bool):
    """(ids (n,), X (n, sum dims), source table of the first input) for the users present in
    every input table's snapshot as of ``day``."""
    snaps = [_snapshot(layout.table(n), day, mv, inclusive)[1] for n in names]
    if any(s.num_rows == 0 for s in snaps):
        return np.zeros(0, object), np.zeros((0, 0), np.float32), snaps[0]
    common = set(snaps[0]["entity_id"].to_pylist())
    for s in snaps[1:]:
        common &= set(s["entity_id"].to_pylist())
    ids = np.asarray(sorted(common), dtype=object)
    parts = []
    for s in snaps:
        pos = {e: i for i, e in enumerate(s["entity_id"].to_pylist())}
        parts.append(vectors_of(s, len(s["vector"][0]))[[pos[e] for e in ids]])
    first = snaps[0].take(
        pa.array([{e: i for i, e in enumerate(snaps[0]["entity_id"].to_pylist())}[e] for e in ids], pa.int64())
    )
    return ids, np.concatenate(parts, axis=1).astype(np.float32), first


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


def _log_facts(layout: RunLayout, days: list[str], task: str):
    t = read_log(layout.log, days, columns=["user_id", "item_id", "ds", "event_time", task])
    return t


def _seconds(col) -> np.ndarray:
    return pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False) / 1e6


def _day_end(day: str) -> float:
    from datetime import datetime, timedelta, timezone

    d = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc) + timedelta(days=1)
    return d.timestamp()


def run_query_retrieval(
    run_root: str | Path,
    ds: str,
    split: dict[str, list[str]],
    cfg: RetrievalConfig,
    *,
    expect_model_version: str | None = None,
) -> IndexManifest:
    """Train, publish, evaluate and (gated) promote; returns the new version's manifest
    (``quality.promoted`` False when the gate refused: the caller raises)."""
    qcfg, gcfg = cfg.query_tower, cfg.promotion
    if qcfg is None:
        raise ValueError("run_query_retrieval needs retrieval.query_tower")
    if cfg.source_table != "item_ir":
        raise SourceError(f"query_tower maps into the IR space: source_table must be item_ir, not {cfg.source_table}")
    layout = RunLayout(run_root)
    item_path = layout.table("item_ir")
    spec = read_log_spec(layout.log)
    task = qcfg.task or spec.tasks[0]
    if task not in spec.tasks:
        raise ValueError(f"retrieval.query_tower.task {task!r} is not a task of the log ({spec.tasks})")
    test = [d for d in split.get("test", []) if d <= ds]
    train_days, valid_days = split["train"], split["valid"]
    h = test[0] if test else ds
    q_day, items = _snapshot(item_path, h, expect_model_version, inclusive=False)
    if q_day is None:
        raise TooLittleData(f"{item_path}: no partition before the held-out day {h}")
    mv = expect_model_version or items["model_version"][0].as_py()
    item_ids = np.asarray(items["entity_id"].to_pylist(), dtype=object)
    ir_vecs = vectors_of(items, len(items["vector"][0]))
    irow = {e: i for i, e in enumerate(item_ids)}

    from datasources import log_days

    logt = _log_facts(layout, [d for d in log_days(layout.log) if d <= ds], task)
    positive = pc.fill_null(pc.equal(logt[task], 1.0), False)
    hl = None if qcfg.popularity_half_life_days is None else qcfg.popularity_half_life_days * 86400.0
    # every positive of the log up to ds, in time order (popularity, behaviour sequence)
    pos_all = logt.filter(positive)
    pos_all = pos_all.take(pc.sort_indices(pos_all, sort_keys=[("event_time", "ascending")]))
    pos_t = _seconds(pos_all["event_time"])
    pos_ds = np.asarray(pos_all["ds"].to_pylist(), dtype=object)
    pos_u = np.asarray(pos_all["user_id"].to_pylist(), dtype=object)
    pos_i = np.asarray(pos_all["item_id"].to_pylist(), dtype=object)

    def with_popularity(ids: np.ndarray, vecs: np.ndarray, upto: str) -> np.ndarray:
        """IR (+ the popularity column from positives of days <= ``upto``, when configured:
        all-time log share, or time-decayed as of the end of ``upto``)."""
        if not qcfg.popularity_column:
            return vecs
        row = {e: j for j, e in enumerate(ids.tolist())}
        m = (pos_ds <= upto) & np.array([i in row for i in pos_i], dtype=bool)
        rows = np.array([row[i] for i in pos_i[m]], dtype=np.int64)
        if hl is None:
            col = popularity_column(np.bincount(rows, minlength=len(ids)))
        else:
            col = recent_popularity(rows, pos_t[m], len(ids), hl, _day_end(upto))
        return np.hstack([vecs, col])

    item_vecs = with_popularity(item_ids, ir_vecs, q_day)
    # the behaviour sequence in the IR space (catalogue at q_day; items outside it are skipped)
    in_cat = np.array([i in irow for i in pos_i], dtype=bool)

    def history_state(ids, upto: str, inclusive: bool) -> np.ndarray:
        m = in_cat & ((pos_ds <= upto) if inclusive else (pos_ds < upto))
        _, after = history_means(pos_u[m], np.array([irow[i] for i in pos_i[m]], np.int64), ir_vecs, qcfg.history)
        zero = np.zeros(ir_vecs.shape[1], np.float32)
        return np.stack([after.get(u, zero) for u in ids]) if len(ids) else np.zeros((0, len(zero)), np.float32)

    def inputs_as_of(day: str, inclusive: bool):
        ids, xd, first = user_inputs(layout, qcfg.inputs, day, mv, inclusive=inclusive)
        if qcfg.history and len(ids):
            xd = np.hstack([xd, history_state(ids, day, inclusive)])
        return ids, xd, first

    seen_by_day: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for u, i, d in zip(logt["user_id"].to_pylist(), logt["item_id"].to_pylist(), logt["ds"].to_pylist()):
        seen_by_day[d][u].add(i)

    def seen_before(day: str) -> dict[str, set]:
        out: dict[str, set] = defaultdict(set)
        if qcfg.exclude_seen:
            for d, per in seen_by_day.items():
                if d < day:
                    for u, s in per.items():
                        out[u] |= s
        return out

    def targets_on(days: list[str], seen: dict) -> dict[str, set]:
        t = logt.filter(pc.and_(positive, pc.is_in(logt["ds"], pa.array(days))))
        out: dict[str, set] = defaultdict(set)
        for u, i in zip(t["user_id"].to_pylist(), t["item_id"].to_pylist()):
            if i in irow and i not in seen.get(u, ()):
                out[u].add(i)
        return out

    def exact_over(indexed: np.ndarray):
        def exact(q: np.ndarray, fetch: int) -> np.ndarray:
            rows = search_topk(q, indexed, min(fetch, len(item_ids)))
            return np.where(rows >= 0, item_ids[np.clip(rows, 0, None)], None)

        return exact

    # 1. training pairs, point in time (positives of the train days on catalogue items, time order)
    upto_train = in_cat & (pos_ds <= max(train_days))
    train_m = np.isin(pos_ds[upto_train], train_days)
    pos_train = pos_all.filter(pa.array(upto_train)).filter(pa.array(train_m))
    vecs, present = join_representations(pos_train, {n: layout.table(n) for n in qcfg.inputs}, expect_model_version=mv)
    ok = np.logical_and.reduce([present[n] for n in qcfg.inputs])
    rows = np.array([irow.get(i, -1) for i in pos_train["item_id"].to_pylist()], dtype=np.int64)
    ok &= rows >= 0
    pair_cols = None
    if qcfg.popularity_column and hl is not None:  # the column as of each pair's time
        t_up = pos_t[upto_train]
        pit = recent_popularity(np.array([irow[i] for i in pos_i[upto_train]], np.int64), t_up, len(item_ids), hl, t_up)
        pair_cols = pit[train_m][:, None]
    extra = []
    if qcfg.history:
        before, _ = history_means(
            pos_u[upto_train], np.array([irow[i] for i in pos_i[upto_train]], np.int64), ir_vecs, qcfg.history
        )
        extra.append(before[train_m])
    if ok.sum() < 2:
        raise TooLittleData(
            f"query tower: {int(ok.sum())} training positive(s) with user vectors on {train_days[0]}.."
            f"{train_days[-1]}; need at least 2"
        )
    x = np.concatenate([vecs[n][ok] for n in qcfg.inputs] + [e[ok] for e in extra], axis=1)

    # validation: user state the day before the valid days, targets on the valid days
    k = gcfg.k
    v_ids, v_x, _ = inputs_as_of(valid_days[0], inclusive=False)
    v_seen = seen_before(valid_days[0])
    v_tgt = targets_on(valid_days, v_seen)
    v_keep = [j for j, u in enumerate(v_ids) if v_tgt.get(u)]

    def evaluate(tower) -> float:
        if not v_keep:
            return 0.0
        users = [v_ids[j] for j in v_keep]
        ranked = rank_item_ids(exact_over(tower.encode_items(item_vecs)), tower.encode(v_x[v_keep]), users, v_seen, k)
        return score(ranked, users, v_tgt, [k])["recall"].get(str(k), 0.0)

    fit = train_query_tower(
        x,
        rows[ok],
        item_vecs,
        hidden=qcfg.hidden,
        epochs=qcfg.epochs,
        batch_size=qcfg.batch_size,
        lr=qcfg.lr,
        temperature=qcfg.temperature,
        random_negatives=qcfg.random_negatives,
        logq=float(qcfg.logq),
        item_adapter=qcfg.item_adapter,
        item_bias=qcfg.item_bias,
        pass_through=int(qcfg.popularity_column),
        pair_columns=None if pair_cols is None else pair_cols[ok],
        prior_weight=qcfg.popularity_prior_weight,
        seed=qcfg.seed,
        evaluate=evaluate if v_keep else None,
        patience=qcfg.patience,
    )
    log.info("query tower: %d positives, epoch %d chosen (%s)", int(ok.sum()), fit.epochs, fit.history[-1])
    tower = fit.tower
    exact = exact_over(tower.encode_items(item_vecs))

    # 2. publish user_query for q_day and ds
    props = TableProperties(
        dim=tower.out_dim, normalisation="none", source_checkpoint=mv, config_hash=config_hash(qcfg)
    )
    layer = "query_tower[" + "+".join(qcfg.inputs + ([f"history{qcfg.history}"] if qcfg.history else [])) + "]"
    qpath = layout.table(QUERY_TABLE)
    versions = {}
    for day in sorted({q_day, ds}):
        ids, xd, first = inputs_as_of(day, inclusive=True)
        if len(ids) == 0:
            raise SourceError(f"{[str(layout.table(n)) for n in qcfg.inputs]}: no user vectors as of {day}")
        qv = fit.tower.encode(xd)
        tbl = pa.table(
            {
                "entity_id": pa.array(ids.tolist(), pa.string()),
                "ds": pa.array([day] * len(ids), pa.string()),
                "model_version": pa.array([mv] * len(ids), pa.string()),
                "layer": pa.array([layer] * len(ids), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(qv.reshape(-1), pa.float32()), qv.shape[1]),
                "updated_at": first["updated_at"].cast(pa.timestamp("us", tz="UTC")),
                "sample_count": first["sample_count"],
            }
        )
        versions[day] = publish(qpath, QUERY_TABLE, day, tbl, props, write_path="arrow")
    table_version = delta_io.open_table(qpath).version()

    # 3. quality on h, from the table as published
    seen_h = seen_before(h)
    quality = evaluate_on_day(
        layout,
        h,
        q_day,
        mv,
        exact,
        set(irow),
        seen_h,
        targets_on([h], seen_h),
        logt,
        positive,
        gcfg.k,
        cfg,
        table_version,
    )
    quality = quality.model_copy(
        update={
            "tower": {
                "inputs": "+".join(qcfg.inputs),
                "epochs": fit.epochs,
                "positives": int(ok.sum()),
                "valid_recall": round(float(fit.history[fit.epochs - 1].get("valid", float("nan"))), 6),
            }
        }
    )

    # 4. the paired index, gated promotion
    _, q_ds_tbl = _snapshot(qpath, ds, mv, inclusive=True)
    queries = vectors_of(q_ds_tbl, tower.out_dim)
    facts = {
        "popularity_column": int(qcfg.popularity_column),
        "popularity_half_life_days": qcfg.popularity_half_life_days,
        "popularity_prior_weight": qcfg.popularity_prior_weight,
        "history": qcfg.history,
        "item_adapter": qcfg.item_adapter,
        "item_bias": int(qcfg.item_bias),
        "logq": float(qcfg.logq),
    }
    facts = {k: v for k, v in facts.items() if v is not None}
    quality = quality.model_copy(update={"tower": {**quality.tower, **facts}})

    def complete(m: IndexManifest) -> IndexManifest:
        return m.model_copy(
            update={
                "query_table": QUERY_TABLE,
                "query_model_version": mv,
                "query_ds": ds,
                "query_table_version": table_version,
                "quality": gate.decide(quality, gcfg),
            }
        )

    return build_index(
        item_path,
        ds,
        layout.indexes,
        cfg.model_copy(update={"query_table": QUERY_TABLE}),
        queries=queries if len(queries) >= 20 else None,
        expect_model_version=mv,
        decide=complete,
        # exactly what was evaluated: IR (+ popularity column as of ds) through the tower's item
        # side (adapter, learned bias keyed by the training catalogue; new items get none)
        augment=lambda ids, v: tower.encode_items(
            with_popularity(ids, v, ds), np.array([irow.get(i, -1) for i in ids.tolist()], np.int64)
        ),
    )


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
