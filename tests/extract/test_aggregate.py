"""Spark aggregation + Delta publishing: exactness against numpy, incrementality, idempotence."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from contracts import REPRESENTATION_TABLES, TableProperties
from engines import delta_io
from extract import AggregateConfig, aggregate_day, read_asof
from extract.aggregate_inputs import cutoff_seconds
from extract.aggregate_sql import cr_table, decayed_state
from extract.publishing import already_published
from extract.table_checks import PublishError
from tests.extract.helpers import LAYER, fake_manifest, make_samples, numpy_decayed

TAU = 86400.0
DAYS = ["2024-03-01", "2024-03-04"]  # published days; a gap: the state decays over three days
UNPUBLISHED = "2024-03-02"  # extracted, never published: its samples must still be folded in


@pytest.fixture(scope="module")
def published(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("agg")
    cfg = AggregateConfig(tau_seconds=TAU, normalisation="l2")
    m = fake_manifest()
    raw, versions = [], []
    # the later days only see users u0..u2: the others must be carried forward
    extra = make_samples(root, UNPUBLISHED, n=20, seed=7, users=3)
    for i, ds in enumerate(DAYS):
        folder, table = make_samples(root, ds, n=40, seed=i, users=3 if i == 1 else 6)
        if i == 1:
            raw.append(extra)
        raw.append((folder, table))
    for ds in DAYS:
        versions.append(aggregate_day(root / "samples" / f"ds={ds}", root / "tables", ds, m, cfg, spark=spark))
    return root, cfg, m, raw, versions


def upto(raw, ds: str) -> list[pa.Table]:
    return [t for f, t in raw if f.name[3:] <= ds]


def by_id(table: pa.Table, col: str) -> dict[str, np.ndarray]:
    vecs = np.asarray(table[col].combine_chunks().flatten().to_numpy(), dtype=np.float64).reshape(table.num_rows, -1)
    return dict(zip(table["entity_id"].to_pylist(), vecs))


@pytest.mark.parametrize("name,key", [("user_cr", "user_id"), ("item_cr", "item_id")])
def test_incremental_equals_numpy_loop(published, name, key):
    root, cfg, _, raw, _ = published
    for ds in DAYS:
        ref = numpy_decayed(upto(raw, ds), key, cutoff_seconds(ds), TAU)
        got = read_asof(root / "tables" / name, ds, inclusive=True)
        assert set(got["ds"].to_pylist()) == {ds}
        state = by_id(got, "decayed_sum")
        assert set(state) == set(ref)
        for e, v in ref.items():
            np.testing.assert_allclose(state[e], v, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(by_id(got, "vector")[e], v / np.linalg.norm(v), rtol=1e-5, atol=1e-5)


def test_incremental_equals_full_recomputation(published, spark):
    root, cfg, _, raw, _ = published
    everything = spark.read.parquet(*[str(f) for f, _ in raw])
    full = cr_table(decayed_state(everything, "user_id", "cr", 4, DAYS[-1], TAU), 4, DAYS[-1], "m1", LAYER, "l2")
    full = by_id(full.toArrow(), "decayed_sum")
    inc = by_id(read_asof(root / "tables" / "user_cr", DAYS[-1], inclusive=True), "decayed_sum")
    assert set(full) == set(inc)
    for e in full:
        np.testing.assert_allclose(inc[e], full[e], rtol=1e-5, atol=1e-5)


def test_latest_ur_carried_forward_with_cumulative_counts(published):
    root, _, _, raw, _ = published
    got = read_asof(root / "tables" / "user_ur", DAYS[1], inclusive=True)
    all_ = pa.concat_tables(upto(raw, DAYS[1]))
    ids = np.asarray(all_["user_id"].to_pylist())
    ts = all_["event_time"].cast(pa.int64()).to_numpy()
    ur = np.asarray(all_["ur"].combine_chunks().flatten().to_numpy()).reshape(len(ids), -1)
    vec, upd = (
        by_id(got, "vector"),
        dict(zip(got["entity_id"].to_pylist(), got["updated_at"].cast(pa.int64()).to_pylist())),
    )
    cnt = dict(zip(got["entity_id"].to_pylist(), got["sample_count"].to_pylist()))
    assert set(vec) == set(ids) and len(vec) == 6  # u3..u5 not seen after day 1, still present
    for e in set(ids):
        k = np.flatnonzero(ids == e)[np.argmax(ts[ids == e])]
        np.testing.assert_array_equal(vec[e], ur[k])
        assert upd[e] == ts[k] and cnt[e] == int((ids == e).sum())
    assert got.schema.field("vector").type == pa.list_(pa.float32(), 4)


def test_tables_readable_by_deltalake_with_contract_schema(published):
    root, _, _, _, _ = published
    for name, spec in REPRESENTATION_TABLES.items():
        dt = DeltaTable(str(root / "tables" / name))
        assert dt.metadata().partition_columns == ["ds"]
        assert sorted({p["ds"] for p in dt.partitions()}) == DAYS
        arrow = dt.to_pyarrow_table()
        want = spec.arrow_schema(4)
        assert arrow.schema.names == want.names
        props = TableProperties.from_delta(dict(dt.metadata().configuration))
        assert props.dim == 4 and props.source_checkpoint == "m1"
        assert already_published(root / "tables" / name, name, "m1", DAYS[0])


def test_read_asof_is_point_in_time(published):
    root, _, _, _, _ = published
    path = root / "tables" / "item_cr"
    assert read_asof(path, DAYS[0]).num_rows == 0
    assert set(read_asof(path, DAYS[1])["ds"].to_pylist()) == {DAYS[0]}
    assert set(read_asof(path, "2024-03-03")["ds"].to_pylist()) == {DAYS[0]}
    assert set(read_asof(path, "2024-03-09")["ds"].to_pylist()) == {DAYS[1]}
    with pytest.raises(ValueError, match="dim"):
        read_asof(path, DAYS[1], expect_dim=8)
    with pytest.raises(ValueError, match="model_version"):
        read_asof(path, DAYS[1], expect_model_version="other")


def test_republish_is_idempotent_and_skips_when_committed(published, spark):
    root, cfg, m, raw, versions = published
    path = root / "tables" / "user_cr"
    before = {d: delta_io.read_days(path, [d]).sort_by("entity_id") for d in DAYS}
    v_before = delta_io.open_table(path).version()
    last = root / "samples" / f"ds={DAYS[1]}"
    skipped = aggregate_day(last, root / "tables", DAYS[1], m, cfg, spark=spark)
    assert skipped["user_cr"] == v_before  # already committed: nothing written
    again = aggregate_day(last, root / "tables", DAYS[1], m, cfg.model_copy(update={"force": True}), spark=spark)
    assert again["user_cr"] == v_before + 1
    for d in DAYS:
        after = delta_io.read_days(path, [d]).sort_by("entity_id")
        assert after.num_rows == before[d].num_rows  # no duplicates
        assert after["entity_id"].to_pylist() == before[d]["entity_id"].to_pylist()
        np.testing.assert_allclose(
            by_id(after, "decayed_sum")[after["entity_id"][0].as_py()],
            by_id(before[d], "decayed_sum")[after["entity_id"][0].as_py()],
        )


def test_bad_samples_rejected_before_publishing(tmp_path, spark):
    folder, table = make_samples(tmp_path, "2024-03-01", n=10, seed=0)
    with pytest.raises(ValueError, match="holds ds=2024-03-01"):
        aggregate_day(folder, tmp_path / "tables", "2024-03-02", fake_manifest(), spark=spark)
    with pytest.raises(ValueError, match="extracted with model m1"):
        aggregate_day(folder, tmp_path / "tables", "2024-03-01", fake_manifest("m2"), spark=spark)
    with pytest.raises(ValueError, match="was not extracted"):
        aggregate_day(
            folder, tmp_path / "tables", "2024-03-01", fake_manifest(), AggregateConfig(layer="ad.cross_1"), spark=spark
        )
    (folder / "_SUCCESS").unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        aggregate_day(folder, tmp_path / "tables", "2024-03-01", fake_manifest(), spark=spark)
    assert not (tmp_path / "tables").exists()


def test_nan_in_one_table_publishes_no_table(tmp_path, spark):
    import pyarrow.parquet as pq

    folder, table = make_samples(tmp_path, "2024-03-01", n=10, seed=3)
    cr = np.asarray(table["cr"].combine_chunks().flatten().to_numpy()).reshape(10, -1).copy()
    cr[4, 1] = np.nan
    bad = table.set_column(
        table.schema.get_field_index("cr"),
        "cr",
        pa.FixedSizeListArray.from_arrays(pa.array(cr.ravel().astype(np.float32)), 4),
    )
    for f in folder.glob("part-*.parquet"):
        f.unlink()
    pq.write_table(bad.slice(0, 5), folder / "part-00000.parquet")
    pq.write_table(bad.slice(5), folder / "part-00001.parquet")
    with pytest.raises(PublishError, match="NaN/inf in"):
        aggregate_day(folder, tmp_path / "tables", "2024-03-01", fake_manifest(), spark=spark)
    for name in REPRESENTATION_TABLES:  # UR/IR were valid, yet nothing was committed
        assert delta_io.list_days(tmp_path / "tables" / name) == []


def test_columns_formulation_incremental_matches_the_arrow_table(published, spark):
    """The Spark SQL formulation, continued from the published previous partition, gives
    the rows the arrow formulation published (to 1e-5)."""
    from extract.aggregate_inputs import days_to_fold, previous_partition, read_samples

    root, cfg, _, raw, _ = published
    path = root / "tables" / "user_cr"
    prev, prev_ds = previous_partition(spark, path, "user_cr", DAYS[1])
    assert prev_ds == DAYS[0]
    dirs = days_to_fold(root / "samples" / f"ds={DAYS[1]}", DAYS[1], prev_ds, "m1", LAYER, "cr")
    state = decayed_state(read_samples(spark, dirs), "user_id", "cr", 4, DAYS[1], TAU, prev, prev_ds)
    cols = cr_table(state, 4, DAYS[1], "m1", LAYER, "l2").toArrow()
    arrow = read_asof(path, DAYS[1], inclusive=True)
    for col in ("decayed_sum", "vector"):
        a, b = by_id(cols, col), by_id(arrow, col)
        assert set(a) == set(b)
        for e in a:
            np.testing.assert_allclose(a[e], b[e], rtol=1e-5, atol=1e-5)
    assert dict(zip(cols["entity_id"].to_pylist(), cols["sample_count"].to_pylist())) == dict(
        zip(arrow["entity_id"].to_pylist(), arrow["sample_count"].to_pylist())
    )


def test_arrow_kernels_against_plain_loops():
    from extract import aggregate_arrow as A
    from extract import vectors as V

    rng = np.random.default_rng(5)
    n, d, k = 2000, 7, 13
    codes = rng.integers(0, k, n)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.random(n)
    ref = np.zeros((k, d))
    for i in range(n):
        ref[codes[i]] += w[i] * x[i].astype(np.float64)
    np.testing.assert_allclose(V.segment_sum(codes, x, k, w), ref, rtol=1e-12, atol=1e-12)
    unweighted = np.zeros((k, d))
    for i in range(n):
        unweighted[codes[i]] += x[i]
    np.testing.assert_allclose(V.segment_sum(codes, x, k), unweighted, rtol=1e-12, atol=1e-12)
    assert V.segment_sum(codes[:0], x[:0], 3).shape == (3, d)
    s = rng.standard_normal((k, d))
    np.testing.assert_array_equal(A._from_binary(A._binary(s), d), s)
    ln = V.normalise(s, "layernorm")
    for row, out in zip(s, ln):
        np.testing.assert_allclose(out, (row - row.mean()) / np.sqrt(row.var() + 1e-5), rtol=1e-12)
    l2 = V.normalise(s, "l2")
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), 1.0, rtol=1e-12)
    # partials of two halves, summed, equal the partial of the whole
    ids = pa.array([f"e{c}" for c in codes])
    t = pa.array((1_709_251_200 + rng.integers(0, 86400, n)) * 1_000_000, pa.timestamp("us", tz="UTC"))
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d)
    table = pa.table({"k": ids, "event_time": t, "cr": vec})
    halves = [
        A.partial_of_samples(table.slice(a, b), "k", "cr", d, 1_709_337_600, TAU, "x") for a, b in [(0, 700), (700, n)]
    ]
    final = A.final_of_partials(pa.Table.from_batches(halves), d, "none", exact_state=True)
    got = by_id(pa.table({"entity_id": final["entity_id"], "s": final["decayed_sum"]}), "s")
    wt = np.exp((t.cast(pa.int64()).to_numpy() / 1e6 - 1_709_337_600) / TAU)
    for c in range(k):
        np.testing.assert_allclose(
            got[f"e{c}"], (x[codes == c].astype(np.float64) * wt[codes == c, None]).sum(0), rtol=1e-10, atol=1e-10
        )
    counts = dict(zip(final["entity_id"].to_pylist(), final["sample_count"].to_pylist()))
    assert counts == {f"e{c}": int((codes == c).sum()) for c in range(k)}


def _rewrite(folder, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    for f in folder.glob("part-*.parquet"):
        f.unlink()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "part-00000.parquet")
    pq.write_table(table.slice(half), folder / "part-00001.parquet")


def test_bad_sample_rows_are_rejected_and_nothing_is_committed(tmp_path, spark):
    """Timestamps outside the day, vectors of the wrong length and null ids in the
    extraction output: an error naming the row count and an example id, no table written."""
    day0 = int(datetime(2024, 3, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    cases = {
        "outside": (
            lambda t: t.set_column(
                t.schema.get_field_index("event_time"),
                "event_time",
                pa.array(
                    [day0 - 1, day0 + 86_400_000_000] + [day0 + 5] * (t.num_rows - 2), pa.timestamp("us", tz="UTC")
                ),
            ),
            ValueError,
            r"2 sample\(s\) have event_time outside their day \(UTC\), e\.g\. user_id=",
        ),
        "length": (
            lambda t: t.set_column(
                t.schema.get_field_index("cr"),
                "cr",
                pa.array([[1.0, 2.0, 3.0]] + [[1.0, 2.0, 3.0, 4.0]] * (t.num_rows - 1), pa.list_(pa.float32())),
            ),
            ValueError,
            r"1 row\(s\) have a null vector or one whose length is not 4, e\.g\. id=",
        ),
        "null id": (
            lambda t: t.set_column(
                t.schema.get_field_index("user_id"), "user_id", pa.array([None, None] + t["user_id"].to_pylist()[2:])
            ),
            PublishError,
            r"1 row\(s\) have a null entity_id",
        ),
    }
    for case, (corrupt, err, msg) in cases.items():
        folder, table = make_samples(tmp_path / case.replace(" ", "_"), "2024-03-01", n=10, seed=3)
        _rewrite(folder, corrupt(table))
        tables = tmp_path / case.replace(" ", "_") / "tables"
        with pytest.raises(err, match=msg):
            aggregate_day(folder, tables, "2024-03-01", fake_manifest(), spark=spark)
        for name in REPRESENTATION_TABLES:
            assert delta_io.list_days(tables / name) == [], (case, name)


@pytest.mark.parametrize("formulation,setting", [("arrow", "ad"), ("columns", "ad"), ("arrow", "all")])
def test_cr_tables_fold_ad_samples_only(tmp_path, spark, formulation, setting):
    """Content samples go through the ad branch at extraction too; by default CR(u)/CR(i)
    must fold only the ad samples (a plain loop over the ad rows is the reference), while
    UR/IR see every sample. ``cr_samples: all`` folds everything."""
    ds = "2024-03-01"
    folder, table = make_samples(tmp_path, ds, n=60, seed=11)
    kinds = np.where(np.random.default_rng(5).random(table.num_rows) < 0.4, "content", "ad")
    table = table.set_column(table.schema.get_field_index("sample_type"), "sample_type", pa.array(kinds))
    _rewrite(folder, table)
    cutoff = cutoff_seconds(ds)
    t = table["event_time"].cast(pa.int64()).to_numpy() / 1e6
    cr = np.asarray(table["cr"].combine_chunks().flatten().to_numpy(), np.float64).reshape(-1, 4)
    keep = kinds == "ad" if setting == "ad" else np.ones(len(kinds), bool)
    cfg = AggregateConfig(tau_seconds=TAU, normalisation="l2", formulation=formulation, cr_samples=setting)
    tables = tmp_path / "tables"
    aggregate_day(folder, tables, ds, fake_manifest(), cfg, spark=spark)
    for name, key in (("user_cr", "user_id"), ("item_cr", "item_id")):
        ids = np.asarray(table[key].to_pylist(), dtype=object)
        ref: dict[str, np.ndarray] = {}
        for k in range(table.num_rows):  # S(T) = sum over kept samples of exp(-(T - t_k)/tau) CR_k
            if keep[k]:
                ref[ids[k]] = ref.get(ids[k], np.zeros(4)) + np.exp(-(cutoff - t[k]) / TAU) * cr[k]
        got = read_asof(tables / name, ds, inclusive=True)
        state = by_id(got, "decayed_sum")
        assert set(state) == set(ref), (setting, name)
        for e, v in ref.items():
            np.testing.assert_allclose(state[e], v, rtol=1e-5, atol=1e-5)
        counts = dict(zip(got["entity_id"].to_pylist(), got["sample_count"].to_pylist()))
        assert counts == {e: int(((ids == e) & keep).sum()) for e in ref}
    ur = read_asof(tables / "user_ur", ds, inclusive=True)
    assert sum(ur["sample_count"].to_pylist()) == table.num_rows  # UR: every sample
