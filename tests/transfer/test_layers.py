"""Per-CR-layer tables (real Ray Data extraction through extract.extract_days, real Delta
tables through extract.publish), checked against the Spark-aggregated daily tables and a
plain-loop decayed sum."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pyarrow.parquet as pq
import pytest

from contracts import RunLayout
from tests.extract.helpers import tiny_checkpointed_run

TAU = 7 * 86400.0


@pytest.fixture(scope="module")
def run_with_daily_tables(tmp_path_factory, ray_cluster, spark):
    from extract import AggregateConfig, ExtractConfig, aggregate_day, extract_days

    layout, ckpt, manifest, days = tiny_checkpointed_run(
        tmp_path_factory.mktemp("layers"), "lay-v1", num_users=40, num_items=30, rows_per_day=200, seq_len=4
    )
    # the daily job: the default layer only
    extract_days(ckpt, layout.log, days, {d: layout.samples(d) for d in days}, ExtractConfig())
    for d in days:
        aggregate_day(layout.samples(d), layout.root / "tables", d, manifest, AggregateConfig(tau_seconds=TAU), spark)
    return layout, ckpt, manifest, days


def _vectors(path, ds):
    from engines.delta_io import read_days

    t = read_days(path, [ds]).to_pydict()
    return {e: (np.asarray(v), np.asarray(s)) for e, v, s in zip(t["entity_id"], t["vector"], t["decayed_sum"])}


def test_layer_tables_match_daily_tables_and_a_loop_decayed_sum(run_with_daily_tables):
    from extract.samples import read_marker
    from transfer import layer_root, publish_layer_tables

    layout, ckpt, manifest, days = run_with_daily_tables
    default = manifest.default_cr_layer
    roots = publish_layer_tables(layout.root, ckpt, ["ad.cross_1", default], days)
    assert roots == {"ad.cross_1": layer_root(layout.root, "ad.cross_1"), default: layer_root(layout.root, default)}
    # the default layer, re-published from the daily samples, equals the daily (Spark) tables
    for name in ("user_cr", "item_cr"):
        for d in days:
            daily = _vectors(layout.table(name), d)
            again = _vectors(RunLayout(roots[default]).table(name), d)
            assert daily.keys() == again.keys()
            for e in daily:
                np.testing.assert_allclose(again[e][0], daily[e][0], rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(again[e][1], daily[e][1], rtol=1e-4, atol=1e-5)
    # ad.cross_1 was not in the daily samples: extracted on the side, then aggregated
    side = layout.root / "layers" / "samples"
    col = read_marker(side / f"ds={days[-1]}").layers["ad.cross_1"]
    rows = [pq.read_table(f).to_pydict() for d in days for f in sorted((side / f"ds={d}").glob("*.parquet"))]
    cutoff = datetime(2026, 1, 3, tzinfo=timezone.utc).timestamp()
    ref: dict[str, np.ndarray] = {}
    for r in rows:  # the daily CR tables fold ad samples only (AggregateConfig.cr_samples)
        for u, t, v, kind in zip(r["user_id"], r["event_time"], r[col], r["sample_type"]):
            if kind != "ad":
                continue
            w = math.exp((t.timestamp() - cutoff) / TAU)
            ref[u] = ref.get(u, 0.0) + w * np.asarray(v, np.float64)
    got = _vectors(RunLayout(roots["ad.cross_1"]).table("user_cr"), days[-1])
    assert got.keys() == ref.keys()
    for u, s in ref.items():
        assert got[u][0].shape == (16,)  # cross layer width = ur_dim + ir_dim
        np.testing.assert_allclose(got[u][1], s, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[u][0], s / np.linalg.norm(s), rtol=1e-4, atol=1e-5)
    # published again: nothing changes (already-committed snapshots are skipped)
    before = RunLayout(roots["ad.cross_1"]).table("user_cr")
    from engines.delta_io import open_table

    v0 = open_table(before).version()
    publish_layer_tables(layout.root, ckpt, ["ad.cross_1"], days)
    assert open_table(before).version() == v0


def test_unknown_layer_or_day_is_a_clear_error(run_with_daily_tables):
    from transfer import publish_layer_tables

    layout, ckpt, _, days = run_with_daily_tables
    with pytest.raises(ValueError, match=r"unknown CR layer\(s\) \['ad.mlp_9'\].*valid"):
        publish_layer_tables(layout.root, ckpt, ["ad.mlp_9"], days)
    with pytest.raises(ValueError, match="not in the log"):
        publish_layer_tables(layout.root, ckpt, ["ad.cross_1"], ["2025-12-31"])
