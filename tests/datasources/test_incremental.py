"""Incremental, all-or-nothing ingest on real Delta tables: growing file, day folders, kills."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from contracts import DatasetSpec, InputError
from datasources import FileSource, last_ingest, log_days, materialize, read_log

T0 = 1_772_323_200  # 2026-03-01 00:00 UTC
SPEC = DatasetSpec(
    name="t",
    user_id="uid",
    item_id="ad",
    event_time="ts",
    scenario="pl",
    scenarios={0: "a", 1: "b"},
    tasks=["click", "conv"],
    user_features=["zip"],
    sequence={"max_len": 3, "positive_task": "click"},
)
KEYS = [("user_id", "ascending"), ("event_time", "ascending"), ("item_id", "ascending")]


def day_rows(k: int, n: int = 40, seed: int | None = None) -> pa.Table:
    """Day ``k`` after 2026-03-01: distinct timestamps per row, conversion null where no click."""
    rng = np.random.default_rng(k if seed is None else seed)
    click = rng.integers(0, 2, n)
    conv = [None if c == 0 else int(v) for c, v in zip(click, rng.integers(0, 2, n))]
    ts = T0 + k * 86_400 + np.sort(rng.choice(86_400, n, replace=False))
    return pa.table(
        {
            "uid": pa.array(rng.choice(["007", "7", "u1", "u2", "u3"], n)),
            "ad": pa.array([f"ad{i}" for i in rng.integers(0, 12, n)]),
            "ts": pa.array(ts, pa.int64()),
            "pl": pa.array(rng.integers(0, 2, n), pa.int64()),
            "click": pa.array(click, pa.int64()),
            "conv": pa.array(conv, pa.int64()),
            "zip": pa.array(["02139"] * n),
        }
    )


def write_csv(path, table: pa.Table, append: bool = False) -> None:
    buf = pa.BufferOutputStream()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=not append, quoting_style="none"))
    with open(path, "ab" if append else "wb") as f:
        f.write(buf.getvalue().to_pybytes())


def sorted_log(path) -> pa.Table:
    t = read_log(path)
    return t.select(sorted(t.column_names)).sort_by(KEYS)


def clean_ingest(tmp_path, tables: list[pa.Table], name: str) -> pa.Table:
    p = tmp_path / f"{name}.parquet"
    pq.write_table(pa.concat_tables(tables), p)
    materialize(FileSource(kind="file", path=p, spec=SPEC), tmp_path / f"{name}_log")
    return sorted_log(tmp_path / f"{name}_log")


def test_growing_file_three_runs_each_new_day_once_equal_to_clean(tmp_path):
    src, log = tmp_path / "log.csv", tmp_path / "log"
    source = FileSource(kind="file", path=src, spec=SPEC)
    write_csv(src, day_rows(0))
    materialize(source, log)
    assert last_ingest(log).ingested_days == ["2026-03-01"]
    for k in (1, 2):
        write_csv(src, day_rows(k), append=True)
        materialize(source, log)
        rep = last_ingest(log)
        assert rep.ingested_days == [f"2026-03-0{k + 1}"]
        assert rep.reused_days == [f"2026-03-0{j + 1}" for j in range(k)]
    version = DeltaTable(str(log)).version()
    materialize(source, log)  # nothing new: nothing read, nothing committed
    assert last_ingest(log).ingested_days == [] and DeltaTable(str(log)).version() == version
    got = sorted_log(log)
    assert got.equals(clean_ingest(tmp_path, [day_rows(k) for k in range(3)], "clean"))
    # ids exactly as written, conversions null where no click (the README's convention)
    assert {"007", "7"} <= set(got["user_id"].to_pylist()) and set(got["zip"].to_pylist()) == {"02139"}
    assert all(v is None for c, v in zip(got["click"].to_pylist(), got["conv"].to_pylist()) if c == 0)
    # sequences crossed the day boundaries (a later day sees clicks of earlier days)
    last_day = got.filter(pa.compute.equal(got["ds"], "2026-03-03"))
    assert max(len(s) for s in last_day["hist_seq"].to_pylist()) == 3


def test_day_partitioned_folder_reads_only_new_partitions(tmp_path):
    src, log = tmp_path / "src", tmp_path / "log"
    source = FileSource(kind="file", path=src, spec=SPEC)
    for k in range(3):
        d = src / f"ds=2026-03-0{k + 1}"
        d.mkdir(parents=True)
        t = day_rows(k)
        pq.write_table(t.slice(0, 20), d / "part-0.parquet")
        pq.write_table(t.slice(20), d / "part-1.parquet")
        materialize(source, log)
        rep = last_ingest(log)
        assert rep.ingested_days == [f"2026-03-0{k + 1}"]
        assert rep.files == 2  # the new partition's two files; earlier partitions are not read
    assert sorted_log(log).equals(clean_ingest(tmp_path, [day_rows(k) for k in range(3)], "clean"))


def test_late_rows_rewrite_their_day_and_later_days(tmp_path):
    src, log = tmp_path / "src", tmp_path / "log"
    src.mkdir()
    source = FileSource(kind="file", path=src, spec=SPEC)
    for k in range(3):
        pq.write_table(day_rows(k), src / f"day{k}.parquet")
    materialize(source, log)
    late = day_rows(1, n=5, seed=99)
    pq.write_table(late, src / "late.parquet")
    materialize(source, log)
    assert last_ingest(log).ingested_days == ["2026-03-02", "2026-03-03"]  # day 3's sequences depend on day 2
    want = clean_ingest(tmp_path, [day_rows(0), day_rows(1), late, day_rows(2)], "clean")
    assert sorted_log(log).equals(want)


def test_bad_row_in_last_new_day_commits_nothing_of_the_batch(tmp_path):
    src, log = tmp_path / "log.csv", tmp_path / "log"
    source = FileSource(kind="file", path=src, spec=SPEC)
    write_csv(src, day_rows(0))
    materialize(source, log)
    before, version = sorted_log(log), DeltaTable(str(log)).version()
    bad = day_rows(2).to_pydict()
    bad["click"][7] = 3
    write_csv(src, day_rows(1), append=True)
    write_csv(src, pa.table(bad), append=True)
    with pytest.raises(InputError, match=r"log.csv: column 'click' \(spec key tasks\) row 87: value 3.0"):
        materialize(source, log)
    assert DeltaTable(str(log)).version() == version and sorted_log(log).equals(before)
    assert sorted(os.listdir(tmp_path)) == ["log", "log.csv"]  # no staging left behind
    assert [p for p in os.listdir(log) if p.startswith("ds=")] == ["ds=2026-03-01"]


def test_killed_ingest_is_not_reused(tmp_path):
    """SIGKILL-equivalent (os._exit) right before the commit: files staged, never committed."""
    src, log = tmp_path / "src.parquet", tmp_path / "log"
    pq.write_table(pa.concat_tables([day_rows(0), day_rows(1)]), src)
    script = textwrap.dedent(f"""
        import os
        from contracts import DatasetSpec
        from datasources import FileSource, materialize, incremental
        spec = DatasetSpec.model_validate_json({SPEC.model_dump_json()!r})
        incremental.commit_days = lambda *a, **k: os._exit(137)
        materialize(FileSource(kind="file", path={str(src)!r}, spec=spec), {str(log)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert log_days(log) == []  # staged day files exist but no commit references them
    assert len(list(log.glob("ds=*/part-ingest-*.parquet"))) == 2
    source = FileSource(kind="file", path=src, spec=SPEC)
    materialize(source, log)
    assert len(list(log.glob("ds=*/*.parquet"))) == 2  # the orphans were removed
    assert last_ingest(log).ingested_days == ["2026-03-01", "2026-03-02"]
    assert sorted_log(log).equals(clean_ingest(tmp_path, [day_rows(0), day_rows(1)], "clean"))


def test_force_rebuilds_and_a_changed_spec_rebuilds(tmp_path):
    src, log = tmp_path / "src", tmp_path / "log"
    src.mkdir()
    for k in range(2):
        pq.write_table(day_rows(k), src / f"day{k}.parquet")
    source = FileSource(kind="file", path=src, spec=SPEC)
    materialize(source, log)
    (src / "day0.parquet").unlink()
    materialize(source, log)  # a removed file's day stays (the log is append-only) ...
    assert log_days(log) == ["2026-03-01", "2026-03-02"]
    materialize(source, log, force=True)  # ... until --force rebuilds from the source as it is
    assert log_days(log) == ["2026-03-02"] and last_ingest(log).ingested_days == ["2026-03-02"]
    spec2 = SPEC.model_copy(update={"tasks": ["click"], "sequence": SPEC.sequence.model_copy(update={"max_len": 1})})
    materialize(FileSource(kind="file", path=src, spec=spec2), log)
    t = read_log(log)
    assert "conv" not in t.column_names and max(len(s) for s in t["hist_seq"].to_pylist()) == 1
