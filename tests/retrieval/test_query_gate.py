"""The daily query-tower retrieval end to end (real Delta log and tables, real FAISS): the
tower learns, ``user_query`` is published under the table contract, the paired index is
promoted; then a deliberately broken query table (the tower fed shuffled user vectors)
is refused by the quality gate, kept on disk, and the live version keeps serving."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from contracts import IndexManifest, RunLayout, TableProperties
from contracts.dataset import DatasetSpec
from contracts.tables import PUBLISHED_TABLES
from datasources.log_store import write_log_day
from engines import delta_io
from extract import read_asof
from retrieval import load_current, store
from retrieval.config import PromotionGateConfig, QueryTowerConfig, RetrievalConfig
from retrieval.paired import run_query_retrieval

DAYS = [f"2026-03-0{i}" for i in range(1, 7)]
SPLIT = {"train": DAYS[:3], "valid": DAYS[3:4], "test": DAYS[4:]}
U, N_ITEMS, D = 150, 80, 8


def _world(seed=0):
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((N_ITEMS, D)).astype(np.float32)
    z = rng.standard_normal((U, D)).astype(np.float32)
    return rng, items, z


def _write_log(root, rng, items, z):
    spec = DatasetSpec(name="t", scenarios={0: "a"}, tasks=["click"])
    logits = 2.0 * z @ items.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    for di, d in enumerate(DAYS):
        base = datetime.fromisoformat(d).replace(tzinfo=timezone.utc)
        users, its, ts = [], [], []
        for u in range(U):
            for i in rng.choice(N_ITEMS, 3, replace=False, p=p[u]):
                users.append(f"u{u}")
                its.append(f"i{i}")
                ts.append(base + timedelta(seconds=int(rng.integers(3600, 80000))))
        n = len(users)
        day = pa.table(
            {
                "user_id": users,
                "item_id": its,
                "event_time": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "ds": [d] * n,
                "scenario": pa.array([0] * n, pa.int32()),
                "sample_type": ["ad"] * n,
                "click": pa.array([1.0] * n, pa.float32()),
                "hist_seq": pa.array([[]] * n, pa.list_(pa.string())),
            }
        )
        write_log_day(RunLayout(root).log, day, d, spec)


def _publish_reps(root, items, z, shuffle_users=False, seed=1):
    rng = np.random.default_rng(seed)
    ur = z + 0.1 * rng.standard_normal(z.shape).astype(np.float32)
    if shuffle_users:  # the broken input: each user gets someone else's vector
        ur = ur[rng.permutation(U)]
    tables = {
        "user_ur": ([f"u{u}" for u in range(U)], ur),
        "user_cr": ([f"u{u}" for u in range(U)], ur[:, :4]),
        "item_ir": ([f"i{i}" for i in range(N_ITEMS)], items),
    }
    for d in DAYS:
        for name, (ids, vecs) in tables.items():
            n, dim = vecs.shape
            cols = {
                "entity_id": pa.array(ids, pa.string()),
                "ds": pa.array([d] * n, pa.string()),
                "model_version": pa.array(["m1"] * n, pa.string()),
                "layer": pa.array(["t"] * n, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel(), pa.float32()), dim),
                "updated_at": pa.array(
                    [datetime.fromisoformat(d).replace(tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC")
                ),
                "sample_count": pa.array([1] * n, pa.int64()),
            }
            if PUBLISHED_TABLES[name].has_state:
                cols["decayed_sum"] = cols["vector"]
            props = TableProperties(dim=dim, source_checkpoint="m1", config_hash="x")
            delta_io.replace_day(
                RunLayout(root).table(name),
                pa.table(cols, schema=PUBLISHED_TABLES[name].arrow_schema(dim)),
                d,
                configuration=props.to_delta(),
            )


CFG = RetrievalConfig(
    recall_target=0.9,
    k_values=[10],
    hit_rate_days=0,
    use_gpu=False,
    query_tower=QueryTowerConfig(hidden=16, epochs=12, batch_size=128, lr=0.01, temperature=0.5),
    promotion=PromotionGateConfig(k=10, max_drop=0.1, min_users=20),
)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("qgate")
    rng, items, z = _world()
    _write_log(root, rng, items, z)
    _publish_reps(root, items, z)
    return root, items, z


def test_query_tower_published_promoted_then_broken_table_refused(run_root):
    root, items, z = run_root
    layout = RunLayout(root)
    good = run_query_retrieval(root, DAYS[-1], SPLIT, CFG, expect_model_version="m1")
    q = good.quality
    assert q.promoted and q.refused is None, q
    assert q.held_out_day == DAYS[4] and q.query_ds == DAYS[3] and q.users > 40
    assert q.recall_at_k["10"] > 1.5 * q.popularity_recall_at_k["10"]
    assert good.query_table == "user_query" and good.query_model_version == good.model_version == "m1"
    assert store.read_current(layout.indexes) == good.version

    # user_query: the table contract, one partition per published day, model version of item_ir
    qpath = layout.table("user_query")
    assert delta_io.list_days(qpath) == [DAYS[3], DAYS[5]]
    snap = read_asof(qpath, DAYS[5], inclusive=True, expect_model_version="m1")
    # IR dim + the popularity column (an item-bias coordinate)
    assert PUBLISHED_TABLES["user_query"].schema_problems(snap.schema, D + 1) == []
    assert snap.num_rows == U
    assert TableProperties.from_delta(delta_io.table_configuration(qpath)).dim == D + 1
    assert load_current(layout.indexes).manifest.dim == D + 1

    # the recorded recall is what a plain recomputation gives (numpy, no FAISS)
    qsnap = read_asof(qpath, DAYS[3], inclusive=True)
    qv = np.stack(qsnap["vector"].to_numpy(zero_copy_only=False)).astype(np.float64)
    uids = qsnap["entity_id"].to_pylist()
    log = DeltaTable(str(layout.log)).to_pyarrow_table()
    rows = list(zip(log["user_id"].to_pylist(), log["item_id"].to_pylist(), log["ds"].to_pylist()))
    seen = {}
    for u, i, d in rows:
        if d < DAYS[4]:
            seen.setdefault(u, set()).add(i)
    tgt = {}
    for u, i, d in rows:
        if d == DAYS[4] and i not in seen.get(u, set()):
            tgt.setdefault(u, set()).add(i)
    counts = np.zeros(N_ITEMS)
    for u, i, d in rows:
        if d <= DAYS[3]:  # positives up to the query day (every row of this log is a click)
            counts[int(i[1:])] += 1
    aug = np.hstack([items.astype(np.float64), np.log((counts + 1) / (counts.sum() + N_ITEMS))[:, None]])
    total = n = 0
    for j, u in enumerate(uids):
        if not tgt.get(u):
            continue
        s = aug @ qv[j]
        order = [f"i{i}" for i in np.argsort(-s, kind="stable") if f"i{i}" not in seen.get(u, set())][:10]
        total += len(set(order) & tgt[u]) / len(tgt[u])
        n += 1
    assert q.users == n
    assert q.recall_at_k["10"] == pytest.approx(total / n, abs=1e-5)

    # rerun: same partitions replaced (idempotent), still two days
    # broken: every user's UR belongs to someone else -> the query table is garbage
    _publish_reps(root, items, z, shuffle_users=True)
    before = sorted(p.name for p in layout.indexes.iterdir() if p.is_dir())
    bad = run_query_retrieval(root, DAYS[-1], SPLIT, CFG, expect_model_version="m1")
    assert not bad.quality.promoted
    assert "live version" in bad.quality.refused
    assert bad.quality.live_version == good.version
    assert bad.quality.live_recall_at_k == good.quality.recall_at_k
    # kept on disk, recorded, not live; the live version still loads and serves
    assert (layout.indexes / bad.version).is_dir()
    kept = IndexManifest.model_validate_json((layout.indexes / bad.version / "manifest.json").read_text())
    assert kept.quality.refused == bad.quality.refused
    assert bad.version not in before
    assert store.read_current(layout.indexes) == good.version
    assert load_current(layout.indexes).version == good.version
    assert delta_io.list_days(qpath) == [DAYS[3], DAYS[5]]


def _quality(recall, pop, live=None, users=100):
    from contracts.index import RetrievalQuality

    return RetrievalQuality(
        held_out_day="d",
        query_ds="c",
        users=users,
        recall_at_k={"50": recall},
        popularity_recall_at_k={"50": pop},
        live_version="v0" if live else None,
        live_recall_at_k={"50": live} if live else {},
    )


def test_gate_decisions():
    from retrieval.gate import decide

    cfg = PromotionGateConfig(k=50, max_drop=0.1, min_users=30)
    assert decide(_quality(0.3, 0.2), cfg).promoted  # first version, beats popularity
    refused = decide(_quality(0.2, 0.2), cfg)  # a tie with popularity is not a win
    assert not refused.promoted and "popularity" in refused.refused
    assert decide(_quality(0.3, 0.1, live=0.33), cfg).promoted  # within 10% of live
    r = decide(_quality(0.29, 0.1, live=0.33), cfg)
    assert not r.promoted and "live version v0" in r.refused and "popularity" not in r.refused
    assert decide(_quality(0.0, 0.5, users=29), cfg).promoted  # too few users to decide
    assert decide(_quality(0.15, 0.2), cfg.model_copy(update={"beat_popularity": False})).promoted
    tol = cfg.model_copy(update={"popularity_tolerance": 0.05, "popularity_z": 0.0})
    assert decide(_quality(0.195, 0.2), tol).promoted  # a tie within 5%
    assert not decide(_quality(0.189, 0.2), tol).promoted
    noisy = _quality(0.19, 0.2).model_copy(update={"popularity_diff_se": 0.006})
    assert decide(noisy, cfg).promoted  # 0.01 behind, 2 x SE = 0.012: noise
    assert not decide(noisy.model_copy(update={"popularity_diff_se": 0.004}), cfg).promoted
    assert not decide(noisy, cfg.model_copy(update={"popularity_z": 0.0})).promoted


def test_config_names_a_bad_key_and_a_bad_input_table():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="query_tower.epoch"):
        RetrievalConfig.model_validate({"query_tower": {"epoch": 3}})
    with pytest.raises(ValidationError, match="item_ir"):
        RetrievalConfig.model_validate({"query_tower": {"inputs": ["item_ir"]}})
    assert RetrievalConfig.model_validate({"query_tower": None}).query_tower is None
    assert RetrievalConfig.model_validate({"query_table": "user_query"}).query_table == "user_query"
