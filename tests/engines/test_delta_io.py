"""delta_io: committing externally written Parquet, concurrent writers, maintenance."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from engines import delta_io

SCHEMA = pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64()), pa.field("ds", pa.string())])


def day(ds: str, n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {"k": [f"k{i}" for i in range(start, start + n)], "v": list(range(n)), "ds": [ds] * n}, schema=SCHEMA
    )


def stage(root, ds: str, name: str, n: int):
    folder = root / f"ds={ds}" / "w-test"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(day(ds, n).drop(["ds"]), folder / name)
    return folder / name


def test_commit_files_replaces_only_its_partition(tmp_path):
    root = tmp_path / "t"
    delta_io.replace_day(root, day("2024-01-01", 3), "2024-01-01")
    f1, f2 = stage(root, "2024-01-02", "a.parquet", 4), stage(root, "2024-01-02", "b.parquet", 2)
    v = delta_io.commit_files(root, [f1, f2], "2024-01-02", SCHEMA, app_id="job", app_version=7)
    assert delta_io.read_days(root, ["2024-01-02"]).num_rows == 6
    f3 = stage(root, "2024-01-02", "c.parquet", 5)
    v2 = delta_io.commit_files(root, [f3], "2024-01-02", SCHEMA)
    assert v2 == v + 1
    assert delta_io.read_days(root, ["2024-01-02"]).num_rows == 5
    assert delta_io.read_days(root, ["2024-01-01"]).num_rows == 3
    assert delta_io.read_days(root, ["2024-01-02"], version=v).num_rows == 6  # time travel
    assert delta_io.committed_version(root, "job") == 7
    assert DeltaTable(str(root)).to_pyarrow_table().num_rows == 8


def test_commit_files_refuses_files_with_the_partition_column(tmp_path):
    root = tmp_path / "t"
    delta_io.replace_day(root, day("2024-01-01", 1), "2024-01-01")
    (root / "x").mkdir()
    pq.write_table(day("2024-01-02", 2), root / "x" / "bad.parquet")
    with pytest.raises(ValueError, match="partition column"):
        delta_io.commit_files(root, [root / "x" / "bad.parquet"], "2024-01-02", SCHEMA)


def test_concurrent_replacers_of_one_day_leave_one_consistent_partition(tmp_path):
    root = tmp_path / "t"
    delta_io.replace_day(root, day("2024-01-01", 1), "2024-01-01")
    errors = []

    def writer(i: int):
        try:
            for _ in range(3):
                delta_io.replace_day(root, day("2024-01-02", 10 + i, start=100 * i), "2024-01-02")
        except Exception as e:  # a clean, typed failure is acceptable; a corrupt table is not
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    rows = delta_io.read_days(root, ["2024-01-02"]).num_rows
    assert rows in (10, 11)  # exactly one writer's partition, never a mix or a duplicate
    assert all("onflict" in str(e) or "ommit" in str(e) for e in errors), errors


def test_concurrent_replacers_of_other_days_all_succeed(tmp_path):
    """Each writer's partition replace lands, whatever the others commit meanwhile (delta-rs
    alone fails such commits as conflicts: engines.delta_io._retrying rebuilds and retries)."""
    root = tmp_path / "t"
    delta_io.replace_day(root, day("2024-01-01", 1), "2024-01-01")
    errors = []
    days = [f"2024-02-0{i + 1}" for i in range(3)]

    def writer(i: int):
        try:
            for r in range(4):
                delta_io.replace_day(root, day(days[i], 5 + r, start=100 * i), days[i], retries=20)
        except Exception as e:  # noqa: BLE001 - collected and asserted empty below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert delta_io.list_days(root) == ["2024-01-01", *days]
    assert DeltaTable(str(root)).version() == 1 + 3 * 4  # the first day, then every replace exactly once
    for i, d in enumerate(days):  # each day holds its writer's last replace, exactly
        got = delta_io.read_days(root, [d])
        assert sorted(got["k"].to_pylist()) == sorted(f"k{j}" for j in range(100 * i, 100 * i + 8))


def test_compact_and_vacuum_keep_seven_days(tmp_path):
    from deltalake import write_deltalake

    root = tmp_path / "t"
    delta_io.replace_day(root, day("2024-01-01", 2), "2024-01-01")
    for i in range(3):  # three small files in one partition
        write_deltalake(str(root), day("2024-01-02", 2, start=10 * i), mode="append")
    metrics = delta_io.compact(root, days=["2024-01-02"])
    assert metrics["numFilesRemoved"] == 3 and metrics["numFilesAdded"] == 1
    assert len(delta_io.day_file_uris(root, "2024-01-02")) == 1
    with pytest.raises(ValueError, match="at least 7 days"):
        delta_io.vacuum(root, retention_hours=24)
    assert delta_io.vacuum(root, dry_run=True) == []  # the replaced files are younger than 7 days
    assert delta_io.read_days(root).num_rows == 8
