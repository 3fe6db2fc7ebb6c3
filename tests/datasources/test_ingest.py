from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from contracts import DatasetSpec
from datasources import (
    LogValidationError,
    canonicalize,
    ingest,
    log_days,
    read_log,
    read_log_spec,
)
from datasources.ingest import build_sequences

SPEC = DatasetSpec(
    name="t",
    user_id="uid",
    item_id="iid",
    event_time="ts",
    scenario="scen",
    scenarios={1: "a", 2: "b"},
    tasks=["click"],
    user_features=["age"],
    item_features=["cat"],
    sequence={"item_field": "iid", "max_len": 2, "positive_task": "click"},
)


T0 = 1_772_323_200  # 2026-03-01 00:00 UTC


def raw(**over):
    cols = {
        "uid": pa.array([1, 1, 2, 1], pa.int64()),
        "iid": pa.array(["x", "y", "x", "z"]),
        "ts": pa.array([T0 + 100, T0 + 200, T0 + 200, T0 + 90_000], pa.int64()),
        "scen": pa.array([1, 2, 1, 1], pa.int32()),
        "click": pa.array([1, 1, 0, 0], pa.int8()),
        "age": pa.array(["20", "20", "30", "20"]),
        "cat": pa.array(["c1", "c2", "c1", "c3"]),
    }
    cols.update(over)
    return pa.table(cols)


def test_canonical_log_and_sequences(tmp_path):
    days = ingest(raw(), SPEC, tmp_path / "log")
    assert days == ["2026-03-01", "2026-03-02"]
    assert log_days(tmp_path / "log") == days
    assert read_log_spec(tmp_path / "log") == SPEC.canonical()
    t = read_log(tmp_path / "log")
    assert t["user_id"].to_pylist() == ["1", "1", "2", "1"]
    assert t["hist_seq"].to_pylist() == [[], ["x"], [], ["x", "y"]]
    assert t["sample_type"].to_pylist() == ["ad"] * 4


def test_build_sequences_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    n = 400
    user = rng.integers(0, 15, n).astype(str)
    ts = rng.integers(0, 60, n)
    item = rng.integers(0, 30, n).astype(str)
    q = rng.integers(0, 2, n)
    got = build_sequences(user, ts, item, q, 4).to_pylist()
    for k in range(n):
        prior = sorted((ts[j], j) for j in range(n) if user[j] == user[k] and ts[j] < ts[k] and q[j])
        # Same-timestamp order among earlier rows follows the stable sort (input order).
        want = [item[j] for _, j in prior][-4:]
        assert got[k] == want


@pytest.mark.parametrize(
    "over, message",
    [
        ({"cat": None}, r"missing column\(s\) 'cat' \(spec key item_features\)"),
        (
            {"ts": pa.array(["a", "b", "c", "d"])},
            r"'ts' \(spec key event_time\) row 0: value 'a': not an ISO-8601 timestamp",
        ),
        (
            {"scen": pa.array([1, 2, 7, 1], pa.int32())},
            r"'scen' \(spec key scenario\) row 2: value 7: unknown scenario id",
        ),
        (
            {"click": pa.array([1, 2, 0, 0], pa.int8())},
            r"'click' \(spec key tasks\) row 1: value 2.0: labels must be 0, 1 or null",
        ),
        ({"uid": pa.array([1, None, 2, 1], pa.int64())}, r"'uid' \(spec key user_id\) row 1: value None: null id"),
        ({"iid": pa.array([1.5, 2.0, 3.0, 4.0])}, r"'iid' \(spec key item_id\): must be string or integer"),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(tmp_path, over, message):
    table = raw(**{k: v for k, v in over.items() if v is not None})
    if over.get("cat", 0) is None:
        table = table.drop(["cat"])
    with pytest.raises(LogValidationError, match=message):
        ingest(table, SPEC, tmp_path / "log")
    assert not (tmp_path / "log").exists()


def test_bad_sample_type(tmp_path):
    spec = SPEC.model_copy(update={"sample_type": "kind"})
    with pytest.raises(LogValidationError, match=r"'kind'.* row 3: value 'banner'"):
        canonicalize(raw(kind=pa.array(["ad", "content", "ad", "banner"])), spec)


def test_empty_day_is_an_error(tmp_path):
    ingest(raw(), SPEC, tmp_path / "log")
    with pytest.raises(ValueError, match=r"no rows for ds=\['1999-01-01'\]"):
        read_log(tmp_path / "log", ["1999-01-01"])


def test_timestamps_and_days_are_utc(tmp_path):
    ts = pa.array([datetime(2026, 3, 1, 23, 30, tzinfo=UTC)] * 4, pa.timestamp("s", tz="UTC"))
    t = canonicalize(raw(ts=ts), SPEC)
    assert set(t["ds"].to_pylist()) == {"2026-03-01"}
