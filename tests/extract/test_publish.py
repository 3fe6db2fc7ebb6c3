"""The publishing interface refuses contract breaks (nothing committed) on both inputs."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from contracts import REPRESENTATION_TABLES, TableProperties
from engines import delta_io
from extract import PublishError, publish, read_asof
from extract.publishing import already_published

DS = "2024-03-01"
PROPS = TableProperties(dim=3, normalisation="l2", source_checkpoint="m1", config_hash="h", tau_seconds=60.0)


def rows(n: int = 4, **over) -> pa.Table:
    vec = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 1
    cols = {
        "entity_id": [f"u{i}" for i in range(n)],
        "ds": [DS] * n,
        "model_version": ["m1"] * n,
        "layer": ["ad.mlp_1"] * n,
        "vector": vec.tolist(),
        "updated_at": pa.array([datetime(2024, 3, 1, 12, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
        "sample_count": pa.array([1] * n, pa.int64()),
        "decayed_sum": vec.tolist(),
    }
    cols.update(over)
    return pa.table(cols)


BAD = {
    "wrong length": (
        dict(vector=[[1.0, 2.0]] + [[1.0, 2.0, 3.0]] * 3),
        r"1 row\(s\) have a vector whose length is not 3, e.g. entity_id='u0'",
    ),
    "nan": (
        dict(decayed_sum=[[1.0, 2.0, 3.0]] * 3 + [[np.nan, 1.0, 1.0]]),
        r"1 row\(s\) have NaN/inf in decayed_sum, e.g. entity_id='u3'",
    ),
    "inf": (
        dict(vector=[[1.0, np.inf, 3.0]] * 2 + [[1.0, 2.0, 3.0]] * 2),
        r"2 row\(s\) have NaN/inf in vector, e.g. entity_id='u0'",
    ),
    "null id": (dict(entity_id=["u0", None, "u2", "u3"]), r"1 row\(s\) have a null entity_id"),
    "model version": (
        dict(model_version=["m1", "m2", "m1", "m1"]),
        r"model_version other than the table's 'm1', e.g. entity_id='u1'",
    ),
    "future update": (
        dict(
            updated_at=pa.array(
                [datetime(2024, 3, 2, 0, tzinfo=timezone.utc)] + [datetime(2024, 3, 1, tzinfo=timezone.utc)] * 3,
                pa.timestamp("us", tz="UTC"),
            )
        ),
        r"1 row\(s\) have updated_at at or after the end of 2024-03-01",
    ),
    "duplicate": (
        dict(entity_id=["u0", "u0", "u2", "u3"]),
        r"2 row\(s\) share a duplicated entity_id, e.g. entity_id='u0'",
    ),
    "other day": (dict(ds=[DS, DS, DS, "2024-03-02"]), r"have a ds other than"),
}


@pytest.fixture()
def table(tmp_path):
    path = tmp_path / "user_cr"
    publish(path, "user_cr", DS, rows(), PROPS)
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_arrow_rejections_commit_nothing(table, case):
    over, msg = BAD[case]
    v = delta_io.open_table(table).version()
    with pytest.raises(PublishError, match=msg):
        publish(table, "user_cr", DS, rows(**over), PROPS)
    assert delta_io.open_table(table).version() == v


@pytest.mark.parametrize("case", ["wrong length", "nan", "future update", "duplicate"])
def test_spark_rejections_commit_nothing(table, spark, case):
    over, msg = BAD[case]
    from pyspark.sql import functions as F

    df = spark.createDataFrame(rows(**over).to_pandas())
    df = df.withColumn("vector", F.col("vector").cast("array<float>"))
    df = df.withColumn("decayed_sum", F.col("decayed_sum").cast("array<float>"))
    v = delta_io.open_table(table).version()
    files = sorted(p.name for p in (table / f"ds={DS}").iterdir())
    with pytest.raises(PublishError, match=msg):
        publish(table, "user_cr", DS, df, PROPS)
    assert delta_io.open_table(table).version() == v
    assert sorted(p.name for p in (table / f"ds={DS}").iterdir()) == files  # no staged leftovers


def _spark_frame(spark, data: pa.Table):
    from pyspark.sql import functions as F

    df = spark.createDataFrame(data.to_pandas())
    for col in ("vector", "decayed_sum"):
        df = df.withColumn(col, F.col(col).cast("array<float>"))
    return df


def test_arrow_and_spark_checks_compile_one_rule_list(spark):
    """Both checks walk contracts.table_rules.row_rules: the same bad rows get the same
    message, example id included (the smallest offending one, not the first row)."""
    from extract.table_checks import validate_arrow, validate_spark

    schema = REPRESENTATION_TABLES["user_cr"].arrow_schema(3)
    reversed_ids = dict(entity_id=["u3", "u2", "u1", "u0"])
    cases = {
        **{k: over for k, (over, _) in BAD.items()},
        "unordered ids": dict(reversed_ids, model_version=["m2", "m1", "m2", "m1"]),
        "unordered duplicates": dict(entity_id=["u3", "u3", "u1", "u1"]),
    }
    said = {}
    for case, over in cases.items():
        data = rows(**over)
        with pytest.raises(PublishError) as arrow_err:
            validate_arrow("user_cr", DS, data, schema, PROPS)
        with pytest.raises(PublishError) as spark_err:
            validate_spark("user_cr", DS, _spark_frame(spark, data), schema, PROPS)
        assert str(arrow_err.value) == str(spark_err.value), case
        said[case] = str(arrow_err.value)
    assert "2 row(s) have a model_version other than the table's 'm1', e.g. entity_id='u1'" in said["unordered ids"]
    assert "4 row(s) share a duplicated entity_id, e.g. entity_id='u1'" in said["unordered duplicates"]


def test_table_of_another_model_or_dim_is_refused(table):
    with pytest.raises(PublishError, match="source_checkpoint"):
        publish(
            table, "user_cr", DS, rows(model_version=["m2"] * 4), PROPS.model_copy(update={"source_checkpoint": "m2"})
        )
    with pytest.raises(PublishError, match="dim"):
        publish(table, "user_cr", DS, rows(), PROPS.model_copy(update={"dim": 4}))


def test_replace_is_idempotent_and_leaves_other_days(table):
    other = rows(
        2,
        ds=["2024-03-02"] * 2,
        updated_at=pa.array([datetime(2024, 3, 2, 1, tzinfo=timezone.utc)] * 2, pa.timestamp("us", tz="UTC")),
    )
    publish(table, "user_cr", "2024-03-02", other, PROPS)
    for _ in range(2):
        publish(table, "user_cr", DS, rows(3), PROPS)
    assert delta_io.read_days(table, [DS]).num_rows == 3
    assert delta_io.read_days(table, ["2024-03-02"]).num_rows == 2
    assert already_published(table, "user_cr", "m1", DS)
    assert not already_published(table, "user_cr", "m1", "2024-03-05")
    # time travel by version still sees the first publish
    assert delta_io.read_days(table, [DS], version=2).num_rows == 4
    snap = read_asof(table, "2024-03-02")
    assert snap.num_rows == 3 and snap.schema.field("vector").type == pa.list_(pa.float32(), 3)
    assert snap.schema.names == REPRESENTATION_TABLES["user_cr"].arrow_schema(3).names


def test_spark_parquet_commit_path_round_trips(table, spark):
    df = spark.createDataFrame(rows(5).to_pandas())
    from pyspark.sql import functions as F

    df = df.withColumn("vector", F.col("vector").cast("array<float>")).withColumn(
        "decayed_sum", F.col("decayed_sum").cast("array<float>")
    )
    v = publish(table, "user_cr", DS, df, PROPS, write_path="parquet_commit")
    got = delta_io.read_days(table, [DS])
    assert got.num_rows == 5 and v == delta_io.open_table(table).version()
    np.testing.assert_allclose(
        np.asarray(got.sort_by("entity_id")["vector"].to_pylist()), np.asarray(rows(5)["vector"].to_pylist())
    )
    assert got["updated_at"].type == pa.timestamp("us", tz="UTC")


def test_maintenance_and_snapshot_health(tmp_path):
    from extract import maintain_tables
    from extract.health import table_health

    root = tmp_path / "tables"
    for _ in range(3):
        publish(root / "user_cr", "user_cr", DS, rows(), PROPS)
    with pytest.raises(ValueError, match="at least 7 days"):
        maintain_tables(root, retention_hours=24)
    report = maintain_tables(root)
    assert set(report) == {"user_cr"} and report["user_cr"]["vacuumed"] == 0  # history < 7 days is kept
    assert delta_io.read_days(root / "user_cr", [DS]).num_rows == 4
    h = table_health(read_asof(root / "user_cr", DS, inclusive=True), log_entities=8)
    assert h["entities"] == 4 and h["coverage"] == 0.5 and h["nan_inf_rows"] == 0 and h["dim"] == 3
    vec = np.arange(12, dtype=np.float64).reshape(4, 3) + 1
    assert h["norm_max"] == pytest.approx(np.linalg.norm(vec, axis=1).max(), rel=1e-6)


WRITER = """
import sys, time
from pathlib import Path
from tests.extract.test_publish import PROPS, rows, other_day
from extract import publish
path, me, start = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
while time.time() < start:  # both processes commit at the same moment
    time.sleep(0.005)
for _ in range(3):
    publish(path, "user_cr", "2024-03-01", rows(3 + me), PROPS)            # the SAME day
    publish(path, "user_cr", f"2024-03-0{2 + me}", other_day(f"2024-03-0{2 + me}", 2 + me), PROPS)  # its own day
print("done")
"""


def other_day(ds: str, n: int) -> pa.Table:
    t = datetime.strptime(ds, "%Y-%m-%d").replace(hour=1, tzinfo=timezone.utc)
    return rows(n, ds=[ds] * n, updated_at=pa.array([t] * n, pa.timestamp("us", tz="UTC")))


def test_two_processes_publishing_one_table(table):
    """Two real writer processes: each commit either lands whole (after retrying a lost
    race) or fails with a commit error; the table never holds a mix or a duplicate."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    start = time.time() + 8  # both interpreters are up and importing by then, even on a busy machine
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(table), str(i), str(start)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 or "CommitFailed" in err, err[-2000:]
    shared = delta_io.read_days(table, ["2024-03-01"])
    assert shared.num_rows in (3, 4)  # exactly one writer's rows
    assert sorted(shared["entity_id"].to_pylist()) == [f"u{i}" for i in range(shared.num_rows)]
    for i, (p, _) in enumerate(zip(procs, outs)):
        if p.returncode == 0:
            assert delta_io.read_days(table, [f"2024-03-0{2 + i}"]).num_rows == 2 + i
    # every committed version reads back (no torn commit)
    for v in range(delta_io.open_table(table).version() + 1):
        delta_io.read_days(table, version=v)
