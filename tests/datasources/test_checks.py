"""Input sanity: each case names file, column, row and value, or is counted as a warning."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contracts import ConfigError, DatasetSpec, InputError, validate_config
from datasources import (
    FileSource,
    canonicalize,
    ingest,
    materialize,
    read_log,
    validate_source,
)
from datasources.sequences import SequenceState

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
)
HEADER = "uid,ad,ts,pl,click,conv,zip\n"


def table(n=6, **over):
    cols = {
        "uid": pa.array([f"u{i % 3}" for i in range(n)]),
        "ad": pa.array([f"a{i % 4}" for i in range(n)]),
        "ts": pa.array([T0 + 3600 * i for i in range(n)], pa.int64()),
        "pl": pa.array([i % 2 for i in range(n)], pa.int64()),
        "click": pa.array([i % 2 for i in range(n)], pa.int64()),
        "conv": pa.array([None if i % 2 == 0 else 1 for i in range(n)], pa.int64()),
        "zip": pa.array(["02139"] * n),
    }
    cols.update(over)
    return pa.table(cols)


def csv_source(tmp_path, text: str, spec=SPEC, name="log.csv") -> FileSource:
    p = tmp_path / name
    p.write_text(text)
    return FileSource(kind="file", path=p, spec=spec)


def spec(**over) -> DatasetSpec:
    return DatasetSpec.model_validate({**SPEC.model_dump(exclude={"sequence"}), **over})


@pytest.mark.parametrize("scale", [1, 1000, 1_000_000])
def test_timestamp_unit_detected(scale):
    t = canonicalize(table(ts=pa.array([(T0 + 3600 * i) * scale for i in range(6)], pa.int64())), SPEC)
    assert t["event_time"].cast(pa.int64()).to_pylist() == [(T0 + 3600 * i) * 1_000_000 for i in range(6)]


def test_implausible_and_mixed_unit_timestamps_are_refused():
    with pytest.raises(
        InputError, match=r"'ts' \(spec key event_time\) row 0: value 5: integer timestamps fit no unit"
    ):
        canonicalize(table(ts=pa.array([5, 6, 7, 8, 9, 10], pa.int64())), SPEC, source="f.parquet")
    mixed = [T0 + i for i in range(6)]
    mixed[4] *= 1000  # one millisecond value among seconds
    with pytest.raises(
        InputError, match=r"row 4: value 1772323204000: outside the plausible range 1990-01-01..2100-01-01 read as s"
    ):
        canonicalize(table(ts=pa.array(mixed, pa.int64())), SPEC)


def test_future_events_fail_warn_or_drop(tmp_path):
    now = datetime.now(UTC)
    ts = [T0 + i for i in range(5)] + [int((now + timedelta(days=3)).timestamp())]
    p = tmp_path / "f.parquet"
    pq.write_table(table(ts=pa.array(ts, pa.int64())), p)
    with pytest.raises(
        InputError, match=r"f.parquet: column 'ts' \(spec key event_time\) row 5: value \d+: in the future"
    ):
        validate_source(FileSource(kind="file", path=p, spec=SPEC))
    rep = validate_source(FileSource(kind="file", path=p, spec=spec(checks={"future_events": "warn"})))
    assert [(w.check, w.count) for w in rep.warnings] == [("future_events", 1)] and rep.rows == 6
    src = FileSource(kind="file", path=p, spec=spec(checks={"future_events": "drop"}))
    materialize(src, tmp_path / "log")
    assert read_log(tmp_path / "log").num_rows == 5


def test_exact_duplicates_dropped_with_count_or_refused(tmp_path):
    rows = table().to_pylist()
    dup = pa.Table.from_pylist(rows + [rows[2], rows[2], rows[4]], schema=table().schema)
    p = tmp_path / "d.parquet"
    pq.write_table(dup, p)
    rep = validate_source(FileSource(kind="file", path=p, spec=SPEC))
    assert [(w.check, w.count) for w in rep.warnings] == [("duplicates", 3)]
    assert "d.parquet row 6" in rep.warnings[0].message
    materialize(FileSource(kind="file", path=p, spec=SPEC), tmp_path / "log")
    assert read_log(tmp_path / "log").num_rows == 6
    with pytest.raises(InputError, match=r"d.parquet row 6: exact duplicate row \(3 duplicate\(s\) on 2026-03-01"):
        validate_source(FileSource(kind="file", path=p, spec=spec(checks={"duplicates": "fail"})))


def test_over_long_id():
    ids = ["u1"] * 5 + ["x" * 100_000]
    with pytest.raises(
        InputError, match=r"'uid' \(spec key user_id\) row 5: value 'xxx.*\(100000 chars\): longer than"
    ):
        canonicalize(table(uid=pa.array(ids)), SPEC)


def test_empty_and_header_only_files(tmp_path):
    with pytest.raises(InputError, match=r"empty.csv: empty file"):
        validate_source(csv_source(tmp_path, "", name="empty.csv"))
    with pytest.raises(InputError, match=r"head.csv: no data rows \(header only\)"):
        validate_source(csv_source(tmp_path, HEADER, name="head.csv"))
    pq.write_table(table().slice(0, 0), tmp_path / "e.parquet")
    with pytest.raises(InputError, match=r"e.parquet: no data rows"):
        validate_source(FileSource(kind="file", path=tmp_path / "e.parquet", spec=SPEC))
    assert not (tmp_path / "log").exists()


def test_csv_ids_as_written_null_labels_and_iso_timestamps(tmp_path):
    text = HEADER + (
        "007,0042,2026-03-01T10:00:00Z,0,0,,02139\n"
        "7,42,2026-03-01T11:00:00+02:00,1,1,1,02139\n"
        "007,42,2026-03-01 12:00:00.250Z,1,1,0,\n"
    )
    src = csv_source(tmp_path, text)
    rep = validate_source(src)
    assert (rep.rows, rep.days, rep.warnings) == (3, ["2026-03-01"], [])
    materialize(src, tmp_path / "log")
    t = read_log(tmp_path / "log")
    assert t["user_id"].to_pylist() == ["7", "007", "007"]  # sorted by time: 09:00Z, 10:00Z, 12:00Z
    assert t["item_id"].to_pylist() == ["42", "0042", "42"] and t["zip"].to_pylist() == ["02139", "02139", None]
    assert t["conv"].to_pylist() == [1.0, None, 0.0]
    assert t["event_time"][2].as_py() == datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def test_csv_bad_number_and_bad_timestamp_are_named(tmp_path):
    with pytest.raises(InputError, match=r"log.csv: column 'pl' \(spec key scenario\) row 1: value 'x': not a number"):
        validate_source(csv_source(tmp_path, HEADER + f"a,b,{T0},0,0,,z\na,b,{T0},x,0,,z\n"))
    with pytest.raises(
        InputError, match=r"column 'ts' \(spec key event_time\) row 1: value 'yesterday': not an ISO-8601"
    ):
        validate_source(csv_source(tmp_path, HEADER + "a,b,2026-03-01,0,0,,z\na,b,yesterday,0,0,,z\n"))


def test_headerless_csv_needs_column_names_in_the_spec(tmp_path):
    body = f"u1,a1,{T0},0,1,0,02139\nu2,a2,{T0 + 60},1,0,,02139\n"
    with pytest.raises(InputError, match=r"missing column\(s\) 'uid' \(spec key user_id\).*csv.columns"):
        validate_source(csv_source(tmp_path, body))
    named = spec(csv={"columns": ["uid", "ad", "ts", "pl", "click", "conv", "zip"]})
    src = csv_source(tmp_path, body, spec=named)
    assert validate_source(src).rows == 2
    materialize(src, tmp_path / "log")
    assert read_log(tmp_path / "log")["user_id"].to_pylist() == ["u1", "u2"]


def test_timezone_sets_day_boundaries_and_reads_naive_times_as_local():
    ts = pa.array([T0 - 1800] * 6, pa.int64())  # 2026-02-28 23:30 UTC = 2026-03-01 08:30 in Tokyo
    assert set(canonicalize(table(ts=ts), SPEC)["ds"].to_pylist()) == {"2026-02-28"}
    tokyo = spec(timezone="Asia/Tokyo")
    assert set(canonicalize(table(ts=ts), tokyo)["ds"].to_pylist()) == {"2026-03-01"}
    naive = pa.array(["2026-03-01 08:30:00"] * 6)
    assert canonicalize(table(ts=naive), tokyo)["event_time"].cast(pa.int64()).to_pylist()[0] == (T0 - 1800) * 10**6
    with pytest.raises(ConfigError, match=r"timezone: .*unknown time zone 'Mars/Olympus'"):
        validate_config({**SPEC.model_dump(), "timezone": "Mars/Olympus"}, DatasetSpec)


def test_spec_defaults_follow_the_specs_own_column_names():
    s = DatasetSpec(name="x", item_id="ad_id", scenarios={0: "a"}, tasks=["click"])
    assert s.sequence.item_field == "ad_id" and s.canonical().sequence.item_field == "item_id"
    with pytest.raises(
        ValueError,
        match=r"sequence.item_field 'cat' must be the item id column 'ad_id' or one of "
        r"item_features \[\]: set sequence.item_field",
    ):
        DatasetSpec(name="x", item_id="ad_id", scenarios={0: "a"}, tasks=["click"], sequence={"item_field": "cat"})


def test_multi_chunk_table_ingests_like_one_chunk(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    t = table(
        n,
        uid=pa.array(rng.choice([f"u{i}" for i in range(50)], n)),
        ts=pa.array(T0 + np.sort(rng.choice(5 * 86_400, n, replace=False)), pa.int64()),
    )
    chunked = pa.concat_tables([t.slice(i, 700) for i in range(0, n, 700)])
    assert chunked["uid"].num_chunks > 1
    assert canonicalize(chunked, SPEC).equals(canonicalize(t.combine_chunks(), SPEC))
    ingest(chunked, SPEC, tmp_path / "a")
    ingest(t.combine_chunks(), SPEC, tmp_path / "b")
    assert read_log(tmp_path / "a").equals(read_log(tmp_path / "b"))


def test_day_by_day_sequences_match_a_plain_loop():
    """SequenceState over days == the formula over the whole log (independent brute force)."""
    rng = np.random.default_rng(1)
    n = 300
    user = rng.choice(["a", "b", "c", "d"], n)
    ts = T0 * 10**6 + rng.integers(0, 4, n) * 86_400 * 10**6 + rng.integers(0, 50, n) * 10**6
    item = rng.choice([f"i{k}" for k in range(9)], n)
    click = rng.integers(0, 2, n).astype(float)
    s = DatasetSpec(name="x", scenarios={0: "a"}, tasks=["click"], sequence={"max_len": 3, "positive_task": "click"})
    state = SequenceState(s)
    day = (ts - T0 * 10**6) // (86_400 * 10**6)
    got = {}
    for d in range(4):
        rows = np.flatnonzero(day == d)
        t = pa.table(
            {
                "user_id": user[rows],
                "item_id": item[rows],
                "click": click[rows],
                "event_time": pa.array(ts[rows], pa.timestamp("us", tz="UTC")),
            }
        )
        for r, seq in zip(rows, state.day_sequences(t).to_pylist()):
            got[r] = seq
    for k in range(n):
        prior = sorted((ts[j], j) for j in range(n) if user[j] == user[k] and ts[j] < ts[k] and click[j] == 1)
        assert got[k] == [item[j] for _, j in prior][-3:]
