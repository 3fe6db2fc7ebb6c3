"""``run_query_retrieval``: the daily retrieval step with the query tower.

1. **Train** the query tower (retrieval/query_tower.py, retrieval/query_training.py) on the split's train days: every
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

What it reads: retrieval/query_tables.py; the evaluation of step 3: retrieval/query_quality.py.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import IndexManifest, RunLayout
from datasources import read_log_spec
from retrieval import gate
from retrieval.build import build_index
from retrieval.config import RetrievalConfig
from retrieval.quality import search_topk
from retrieval.query_features import history_means, popularity_column, recent_popularity
from retrieval.query_quality import evaluate_on_day, rank_item_ids, score
from retrieval.query_tables import (
    QUERY_TABLE,
    day_end,
    event_seconds,
    log_facts,
    publish_user_query,
    snapshot_asof,
    user_inputs,
)
from retrieval.query_training import train_query_tower
from retrieval.source import SourceError
from transfer import join_representations
from transfer.join import vectors_of


class TooLittleData(SourceError):
    """The log (or its published snapshots) is still too short to train or evaluate a query
    tower: e.g. no published user vectors before the training days. The daily step then
    serves the plain item index as before, and says so (it does not fail the day)."""


log = logging.getLogger(__name__)


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
    q_day, items = snapshot_asof(item_path, h, expect_model_version, inclusive=False)
    if q_day is None:
        raise TooLittleData(f"{item_path}: no partition before the held-out day {h}")
    mv = expect_model_version or items["model_version"][0].as_py()
    item_ids = np.asarray(items["entity_id"].to_pylist(), dtype=object)
    ir_vecs = vectors_of(items, len(items["vector"][0]))
    irow = {e: i for i, e in enumerate(item_ids)}

    from datasources import log_days

    logt = log_facts(layout, [d for d in log_days(layout.log) if d <= ds], task)
    positive = pc.fill_null(pc.equal(logt[task], 1.0), False)
    hl = None if qcfg.popularity_half_life_days is None else qcfg.popularity_half_life_days * 86400.0
    # every positive of the log up to ds, in time order (popularity, behaviour sequence)
    pos_all = logt.filter(positive)
    pos_all = pos_all.take(pc.sort_indices(pos_all, sort_keys=[("event_time", "ascending")]))
    pos_t = event_seconds(pos_all["event_time"])
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
            col = recent_popularity(rows, pos_t[m], len(ids), hl, day_end(upto))
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
    qpath = layout.table(QUERY_TABLE)
    table_version = publish_user_query(layout, tower, qcfg, mv, sorted({q_day, ds}), inputs_as_of)

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
    _, q_ds_tbl = snapshot_asof(qpath, ds, mv, inclusive=True)
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
