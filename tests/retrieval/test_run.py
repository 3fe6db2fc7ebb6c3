"""run_retrieval over a run root: user vectors from user_ur become the evaluation queries."""

from __future__ import annotations

from contracts import RunLayout, load_config
from retrieval import RetrievalConfig, load_current, run_retrieval
from tests.retrieval.helpers import clustered, make_table

DS = "2026-01-02"


def test_run_retrieval_uses_user_table(tmp_path):
    layout = RunLayout(tmp_path)
    make_table(layout.table("item_cr"), [f"i{j}" for j in range(300)], clustered(300, 8), name="item_cr")
    make_table(layout.table("user_cr"), [f"u{j}" for j in range(60)], clustered(60, 8, seed=9), name="user_cr")
    cfg = RetrievalConfig(source_table="item_cr", query_table="user_cr", k_values=[10], eval_queries=40)
    m = run_retrieval(tmp_path, DS, cfg)
    assert m.source_table == "item_cr" and m.params["query_source"] == "given"
    assert load_current(layout.indexes).version == m.version


def test_run_retrieval_without_user_table_samples_items(tmp_path):
    layout = RunLayout(tmp_path)
    make_table(layout.table("item_ir"), [f"i{j}" for j in range(100)], clustered(100, 8))
    m = run_retrieval(tmp_path, DS, RetrievalConfig(k_values=[10], eval_queries=40))
    assert m.params["query_source"] == "sampled_items"


def test_shipped_config_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "retrieval.yaml", RetrievalConfig)
    assert cfg == RetrievalConfig()


def test_run_retrieval_hit_rate_from_later_log_days(tmp_path):
    import numpy as np
    import pyarrow.compute as pc

    from datasources import GeneratorConfig, generate_log, read_log
    from tests.retrieval.helpers import numpy_topk

    layout = RunLayout(tmp_path)
    generate_log(GeneratorConfig(num_users=60, num_items=80, days=3, rows_per_day=1500), layout.log)
    log = read_log(layout.log)
    days = sorted(set(log["ds"].to_pylist()))
    ds = days[0]
    users = sorted(set(log["user_id"].to_pylist()))
    items = sorted(set(log["item_id"].to_pylist()))
    rng = np.random.default_rng(0)
    uvec = rng.standard_normal((len(users), 8)).astype(np.float32)
    ivec = rng.standard_normal((len(items), 8)).astype(np.float32)
    make_table(layout.table("item_ir"), items, ivec, ds=ds)
    make_table(layout.table("user_ur"), users, uvec, ds=ds, name="user_ur")
    cfg = RetrievalConfig(k_values=[5, 20], eval_queries=40, hit_rate_days=1)
    m = run_retrieval(tmp_path, ds, cfg)
    # Independent: positives of the first task on the next day, numpy top-K per user.
    from datasources import read_log_spec

    task = read_log_spec(layout.log).tasks[0]
    nxt = log.filter(pc.equal(log["ds"], days[1]))
    nxt = nxt.filter(pc.equal(nxt[task], 1.0))
    fut: dict[str, set] = {}
    for u, i in zip(nxt["user_id"].to_pylist(), nxt["item_id"].to_pylist()):
        fut.setdefault(u, set()).add(i)
    rows, _ = numpy_topk(ivec, uvec, 20)
    for k in (5, 20):
        hits = [bool(fut[u] & {items[r] for r in rows[j, :k]}) for j, u in enumerate(users) if u in fut]
        assert m.hit_rate_at_k[str(k)] == np.round(np.mean(hits), 6)
    assert m.hit_rate_at_k["20"] >= m.hit_rate_at_k["5"]


def test_run_retrieval_user_item_dim_mismatch(tmp_path):
    import pytest

    from retrieval import SourceError

    layout = RunLayout(tmp_path)
    make_table(layout.table("item_ir"), [f"i{j}" for j in range(50)], clustered(50, 8))
    make_table(layout.table("user_ur"), [f"u{j}" for j in range(30)], clustered(30, 4), name="user_ur")
    with pytest.raises(SourceError, match="user vectors have dim 4 but item_ir has dim 8"):
        run_retrieval(tmp_path, DS, RetrievalConfig(k_values=[5], eval_queries=40))
    assert not layout.indexes.exists()
