"""``read_table_spark``: a table's snapshot read by Spark from the Delta log's file list (no
Delta jars) equals the deltalake read after a ``--force``-style republish (the same ``ds``
published twice through ``publish`` with a Spark frame, the daily job's write path); a
plain Parquet glob double counts until the publish vacuums the superseded files."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from contracts import TableProperties
from engines import delta_io
from extract import AggregateConfig, publish, read_asof, read_table_spark
from extract.table_checks import SPARK_TYPES

PROPS = TableProperties(dim=3, normalisation="none", source_checkpoint="m1", config_hash="h", tau_seconds=60.0)
D1, D2 = "2024-03-01", "2024-03-02"
COLUMNS = ["entity_id", "ds", "model_version", "layer", "vector", "updated_at", "sample_count", "decayed_sum"]


def spark_rows(spark, ds: str, n: int, scale: float):
    """``n`` rows of day ``ds`` as a Spark frame with the publish schema."""
    t = datetime.strptime(ds, "%Y-%m-%d").replace(hour=12, tzinfo=timezone.utc)
    data = [
        (
            f"u{i}",
            ds,
            "m1",
            "ad.mlp_1",
            [scale * (i + k) for k in range(3)],
            t,
            i + 1,
            [scale * (i + k) + 0.5 for k in range(3)],
        )
        for i in range(n)
    ]
    return spark.createDataFrame(data, ", ".join(f"{c} {SPARK_TYPES[c]}" for c in COLUMNS))


def globbed_rows(table: Path) -> int:
    """What a plain Parquet reader counts: every data file on disk under the table folder."""
    return sum(pq.read_metadata(f).num_rows for f in table.rglob("*.parquet") if "_delta_log" not in f.parts)


def canonical(t: pa.Table) -> dict:
    """Rows sorted by (ds, entity_id), vectors as float64 arrays, timestamps as UTC microseconds."""
    t = t.sort_by([("ds", "ascending"), ("entity_id", "ascending")])
    out = {}
    for name in t.column_names:
        col = t[name].combine_chunks()
        if pa.types.is_timestamp(col.type):
            out[name] = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        elif pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type):
            out[name] = np.asarray(col.to_pylist(), np.float64)
        else:
            out[name] = col.to_pylist()
    return out


def assert_same(spark_df, reference: pa.Table) -> None:
    got = spark_df.toArrow()
    assert got.column_names == reference.column_names
    for f in reference.schema:  # same logical types (list field names and nullability aside)
        g = got.schema.field(f.name).type
        if pa.types.is_list(f.type):
            assert pa.types.is_list(g) and g.value_type == f.type.value_type, f.name
        elif pa.types.is_timestamp(f.type):
            assert pa.types.is_timestamp(g) and g.tz in ("UTC", "Etc/UTC") and f.type.tz == "UTC", f.name
        else:
            assert g == f.type, f.name
    a, b = canonical(got), canonical(reference)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def deltalake_read(path, version=None, ds=None) -> pa.Table:
    """The independent reference: delta-rs's own reader."""
    dataset = DeltaTable(str(path), version=version).to_pyarrow_dataset()
    return dataset.to_table(filter=None if ds is None else pc.field("ds") == ds)


@pytest.fixture(scope="module")
def republished(spark, tmp_path_factory):
    """D1 (4 rows), D2 (3 rows), then D1 again (5 other rows) with the default retention."""
    path = tmp_path_factory.mktemp("read_spark") / "user_cr"
    v1 = publish(path, "user_cr", D1, spark_rows(spark, D1, 4, 1.0), PROPS)
    v2 = publish(path, "user_cr", D2, spark_rows(spark, D2, 3, 2.0), PROPS)
    v3 = publish(path, "user_cr", D1, spark_rows(spark, D1, 5, 10.0), PROPS)
    return path, (v1, v2, v3)


def test_spark_read_equals_deltalake_after_republish(spark, republished):
    path, (v1, v2, v3) = republished
    assert delta_io.open_table(path).version() == v3  # nothing was vacuumed: no vacuum commits
    # the failure users hit: the replaced D1 files are still on disk (7-day retention)
    assert globbed_rows(path) == 4 + 3 + 5
    df = read_table_spark(spark, path)
    assert df.count() == 5 + 3
    assert_same(df, deltalake_read(path))
    assert_same(read_table_spark(spark, path, ds=D1), deltalake_read(path, ds=D1))
    # time travel: the snapshot before the republish, D1's first 4 rows
    old = read_table_spark(spark, path, version=v2)
    assert_same(old, deltalake_read(path, version=v2))
    assert old.where(f"ds = '{D1}'").count() == 4
    assert_same(read_table_spark(spark, path, ds=D1, version=v1), deltalake_read(path, version=v1))
    # the Spark read agrees with the project's own consumer read too (vectors of D1 at scale 10)
    snap = read_asof(path, D2)
    np.testing.assert_array_equal(
        canonical(snap)["vector"], canonical(read_table_spark(spark, path, ds=D1).toArrow())["vector"]
    )


def test_empty_selections_have_the_table_schema(spark, republished):
    path, (v1, _, _) = republished
    none = read_table_spark(spark, path, ds="2030-01-01")
    assert none.count() == 0 and none.columns == COLUMNS
    assert read_table_spark(spark, path, version=v1 - 1).count() == 0  # the table as created, before data
    with pytest.raises(FileNotFoundError, match="not a Delta table"):
        read_table_spark(spark, path.parent / "nothing_here")


def test_vacuum_after_republish_stops_glob_double_counting(spark, tmp_path):
    path = tmp_path / "tables" / "user_cr"
    retention = AggregateConfig(vacuum_retention_hours=0).vacuum_retention_hours  # the test allows at once
    v1 = publish(path, "user_cr", D1, spark_rows(spark, D1, 4, 1.0), PROPS, vacuum_retention_hours=retention)
    v2 = publish(path, "user_cr", D1, spark_rows(spark, D1, 5, 10.0), PROPS, vacuum_retention_hours=retention)
    ref = deltalake_read(path)
    assert ref.num_rows == 5 and globbed_rows(path) == 5  # the first D1 files are gone
    assert delta_io.open_table(path).version() > v2  # vacuum recorded its own commits after the publish
    df = read_table_spark(spark, path)
    assert df.count() == 5
    assert_same(df, ref)
    # the trade-off: time travel to a version whose files were vacuumed no longer works
    with pytest.raises(FileNotFoundError, match="vacuumed"):
        read_table_spark(spark, path, version=v1)
    with pytest.raises(FileNotFoundError, match="vacuumed"):
        read_asof(path, D2, version=v1)


def test_retention_below_seven_days_only_when_asked(tmp_path):
    from pydantic import ValidationError

    from extract.publishing import vacuum_after_publish

    path = tmp_path / "user_cr"
    with pytest.raises(ValueError, match="168 h"):
        delta_io.vacuum(path, retention_hours=0)  # delta-rs refuses < 168 h unless told otherwise
    with pytest.raises(ValidationError, match="vacuum_retention_hours"):
        AggregateConfig(vacuum_retention_hours=-1)
    assert AggregateConfig().vacuum_retention_hours == 168
    assert vacuum_after_publish(path, None) == []
    # not a table: the publish before it is committed, so a failed vacuum is logged, never raised
    assert vacuum_after_publish(path, 0) == []


def test_partition_values_with_odd_characters(spark, tmp_path):
    """``ds`` comes from the log, matched to each row's file through Spark's URI of it."""
    from deltalake import write_deltalake

    path = tmp_path / "a b+c%d é" / "t"
    days = ["2024-03-01", "2024 03%02", "x+y"]
    write_deltalake(str(path), pa.table({"k": [1, 2, 3], "ds": days}), partition_by=["ds"])
    df = read_table_spark(spark, path)
    assert sorted(map(tuple, df.collect())) == [(1, days[0]), (2, days[1]), (3, days[2])]
    assert [tuple(r) for r in read_table_spark(spark, path, ds=days[1]).collect()] == [(2, days[1])]
