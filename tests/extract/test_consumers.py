"""Consumers: published tables open with deltalake, polars and duckdb, and ``read_asof`` is
point in time (a sample of day d sees the partition of d-1 or earlier) by ds and by version.
Every ``python`` block of docs/tables.md runs against a small published table."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from contracts import TableProperties
from engines import delta_io
from extract import publish, read_asof

PROPS = TableProperties(dim=3, normalisation="none", source_checkpoint="m1", config_hash="h", tau_seconds=60.0)
DAYS = ["2024-03-01", "2024-03-03"]


def day_rows(ds: str, n: int, scale: float) -> pa.Table:
    vec = (np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 1) * scale
    t = datetime.strptime(ds, "%Y-%m-%d").replace(hour=12, tzinfo=timezone.utc)
    return pa.table(
        {
            "entity_id": [f"u{i}" for i in range(n)],
            "ds": [ds] * n,
            "model_version": ["m1"] * n,
            "layer": ["ad.mlp_1"] * n,
            "vector": vec.tolist(),
            "updated_at": pa.array([t] * n, pa.timestamp("us", tz="UTC")),
            "sample_count": pa.array(range(1, n + 1), pa.int64()),
            "decayed_sum": vec.tolist(),
        }
    )


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("consumers") / "user_cr"
    versions = [publish(path, "user_cr", ds, day_rows(ds, 3 + i, 1.0 + i), PROPS) for i, ds in enumerate(DAYS)]
    # a rerun of the first day with other values: time travel by version must still see the old one
    versions.append(publish(path, "user_cr", DAYS[0], day_rows(DAYS[0], 3, 10.0), PROPS))
    return path, versions


def vectors(t: pa.Table, col: str = "vector") -> np.ndarray:
    t = t.sort_by("entity_id")
    return np.asarray(t[col].combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float64).reshape(
        t.num_rows, -1
    )


def test_read_asof_point_in_time_by_ds(table):
    path, _ = table
    assert read_asof(path, DAYS[0]).num_rows == 0  # nothing published before the first day
    for ds, want in [("2024-03-02", DAYS[0]), (DAYS[1], DAYS[0]), ("2024-03-04", DAYS[1])]:
        snap = read_asof(path, ds)
        assert set(snap["ds"].to_pylist()) == {want}
    snap = read_asof(path, DAYS[1], inclusive=True)
    assert set(snap["ds"].to_pylist()) == {DAYS[1]} and snap.num_rows == 4
    np.testing.assert_array_equal(vectors(snap), vectors(day_rows(DAYS[1], 4, 2.0)))


def test_read_asof_time_travel_by_version(table):
    path, versions = table
    now = read_asof(path, "2024-03-02")
    np.testing.assert_array_equal(vectors(now), vectors(day_rows(DAYS[0], 3, 10.0)))
    before = read_asof(path, "2024-03-02", version=versions[0])  # the first publish of DAYS[0]
    np.testing.assert_array_equal(vectors(before), vectors(day_rows(DAYS[0], 3, 1.0)))
    assert read_asof(path, "2024-03-09", version=versions[0])["ds"].unique().to_pylist() == [DAYS[0]]


def test_deltalake_polars_duckdb_read_the_same_rows(table):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    path, _ = table
    ref = read_asof(path, DAYS[1], inclusive=True)
    dt = DeltaTable(str(path))
    assert dt.metadata().partition_columns == ["ds"]
    assert TableProperties.from_delta(dict(dt.metadata().configuration)) == PROPS
    via_deltalake = dt.to_pyarrow_table(filters=[("ds", "=", DAYS[1])])  # partitions= is deprecated
    np.testing.assert_array_equal(vectors(via_deltalake), vectors(ref))

    frame = pl.read_delta(str(path)).filter(pl.col("ds") == DAYS[1]).sort("entity_id")
    assert frame["entity_id"].to_list() == ref.sort_by("entity_id")["entity_id"].to_pylist()
    np.testing.assert_array_equal(np.array(frame["vector"].to_list(), np.float64), vectors(ref))

    dataset = dt.to_pyarrow_dataset()  # DuckDB's delta extension needs a download: scan the Arrow dataset
    con = duckdb.connect()
    con.register("user_cr", dataset)
    counts = dict(con.execute("SELECT ds, count(*) FROM user_cr GROUP BY ds").fetchall())
    assert counts == {DAYS[0]: 3, DAYS[1]: 4}
    got = con.execute(f"SELECT entity_id, vector FROM user_cr WHERE ds = '{DAYS[1]}' ORDER BY entity_id").fetchall()
    assert [r[0] for r in got] == ref.sort_by("entity_id")["entity_id"].to_pylist()
    np.testing.assert_array_equal(np.array([r[1] for r in got], np.float64), vectors(ref))


def test_read_asof_refuses_a_table_that_breaks_the_contract(tmp_path):
    path = tmp_path / "user_cr"
    bad = day_rows(DAYS[0], 2, 1.0).drop_columns(["decayed_sum", "layer"])
    delta_io.replace_day(path, bad, DAYS[0], configuration=PROPS.to_delta())
    with pytest.raises(ValueError, match="match no representation table contract"):
        read_asof(path, DAYS[1])
    path2 = tmp_path / "user_ur"
    wrong = day_rows(DAYS[0], 2, 1.0).drop_columns(["decayed_sum"])
    wrong = wrong.set_column(wrong.schema.get_field_index("sample_count"), "sample_count", pa.array(["1", "2"]))
    delta_io.replace_day(path2, wrong, DAYS[0], configuration=PROPS.to_delta())
    with pytest.raises(ValueError, match="the table contract says"):
        read_asof(path2, DAYS[1])


TABLES_MD = Path(__file__).resolve().parents[2] / "docs" / "tables.md"
DOC_DAYS = ["2026-01-03", "2026-01-04"]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


@pytest.fixture()
def demo_tables(tmp_path, monkeypatch):
    """``runs/demo/tables`` (relative, as the docs write it) with the demo's widths: UR/IR 32,
    CR 64 (the default CR layer ad.mlp_1). Versions: 0 created, 1 properties, 2 and 3 the
    two days, 4 a republish of the second day."""
    monkeypatch.chdir(tmp_path)
    for name, dim in [("user_ur", 32), ("item_ir", 32), ("user_cr", 64), ("item_cr", 64)]:
        cr = name.endswith("_cr")
        props = TableProperties(
            dim=dim,
            normalisation="l2" if cr else "none",
            source_checkpoint="m1",
            config_hash="h",
            tau_seconds=86400.0 if cr else None,
        )
        for i, ds in enumerate(DOC_DAYS + DOC_DAYS[-1:]):
            rows = doc_rows(ds, 3 + i, dim, cr, name)
            publish(Path("runs/demo/tables") / name, name, ds, rows, props)
    return tmp_path


def doc_rows(ds: str, n: int, dim: int, cr: bool, name: str) -> pa.Table:
    rng = np.random.default_rng(n)
    vec = rng.normal(size=(n, dim)).astype(np.float32)
    t = datetime.strptime(ds, "%Y-%m-%d").replace(hour=12, tzinfo=timezone.utc)
    cols = {
        "entity_id": [f"{name[0]}{i}" for i in range(n)],
        "ds": [ds] * n,
        "model_version": ["m1"] * n,
        "layer": ["ad.mlp_1" if cr else ("user_tower" if name.startswith("user") else "item_tower")] * n,
        "vector": vec.tolist(),
        "updated_at": pa.array([t] * n, pa.timestamp("us", tz="UTC")),
        "sample_count": pa.array(range(1, n + 1), pa.int64()),
    }
    if cr:
        cols["decayed_sum"] = vec.tolist()
    return pa.table(cols)


def test_every_python_snippet_of_tables_md_runs(demo_tables, spark):
    """The docs' consumer snippets keep working (each block runs alone, in a fresh namespace,
    against ``runs/demo/tables`` of the current directory; Spark blocks reuse the session)."""
    import warnings

    blocks = python_blocks(TABLES_MD.read_text())
    assert len(blocks) >= 5 and any("read_table_spark" in b for b in blocks)
    for i, code in enumerate(blocks):
        with warnings.catch_warnings():
            # a deprecated call in the snippet itself (e.g. the old partitions= argument) fails it
            warnings.filterwarnings("error", category=DeprecationWarning, module=r"tables_md_")
            exec(compile(code, f"{TABLES_MD}:python block {i + 1}", "exec"), {"__name__": f"tables_md_{i}"})
