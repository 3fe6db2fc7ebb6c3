"""Point-in-time join with published tables (real Delta tables via delta-rs)."""

import numpy as np
import pyarrow as pa
import pytest

from tests.transfer.reptables import write_rep_day
from transfer import join_representations


def _samples(rows):
    users, items, days = zip(*rows)
    return pa.table({"user_id": list(users), "item_id": list(items), "ds": list(days)})


@pytest.fixture()
def tables(tmp_path):
    u, i = tmp_path / "user_ur", tmp_path / "item_ir"
    # day k's snapshot stores the value k for every entity present that day
    write_rep_day(u, "user_ur", "2026-01-01", ["u1", "u2"], np.full((2, 3), 1.0))
    write_rep_day(u, "user_ur", "2026-01-02", ["u1", "u2", "u3"], np.full((3, 3), 2.0))
    write_rep_day(u, "user_ur", "2026-01-03", ["u1", "u2", "u3", "u4"], np.full((4, 3), 3.0))
    write_rep_day(i, "item_ir", "2026-01-02", ["i1"], np.array([[5.0, 6.0]]))
    return {"user_ur": u, "item_ir": i}


def test_point_in_time_join_never_sees_same_day_or_later(tables):
    s = _samples(
        [
            ("u1", "i1", "2026-01-01"),  # no partition before: absent
            ("u1", "i1", "2026-01-02"),  # sees day 1
            ("u3", "i1", "2026-01-02"),  # u3 first published on day 2: absent
            ("u3", "i1", "2026-01-03"),  # sees day 2
            ("u4", "i9", "2026-01-09"),  # newest before = day 3; i9 never published
            ("u2", "i1", "2026-01-03"),
        ]
    )
    vec, present = join_representations(s, tables, expect_dim={"user_ur": 3, "item_ir": 2})
    np.testing.assert_array_equal(present["user_ur"], [False, True, False, True, True, True])
    np.testing.assert_allclose(vec["user_ur"][:, 0], [0, 1, 0, 2, 3, 2])
    # item_ir has only day 2: rows of day <= 2 cannot see it
    np.testing.assert_array_equal(present["item_ir"], [False, False, False, True, False, True])
    np.testing.assert_allclose(vec["item_ir"][3], [5.0, 6.0])
    assert vec["user_ur"].dtype == np.float32 and vec["user_ur"].shape == (6, 3)

    # brute-force reference: for each row, scan every partition strictly before its day
    from engines.delta_io import read_days

    full = read_days(tables["user_ur"]).to_pylist()
    for k, row in enumerate(s.to_pylist()):
        before = [r for r in full if r["ds"] < row["ds"]]
        newest = max((r["ds"] for r in before), default=None)
        hit = [r for r in before if r["ds"] == newest and r["entity_id"] == row["user_id"]]
        assert present["user_ur"][k] == bool(hit)
        if hit:
            np.testing.assert_allclose(vec["user_ur"][k], hit[0]["vector"])


def test_dim_mismatch_is_a_clear_error(tables):
    s = _samples([("u1", "i1", "2026-01-02")])
    with pytest.raises(ValueError, match="dim is 3, the consumer expects 8"):
        join_representations(s, {"user_ur": tables["user_ur"]}, expect_dim=8)


def test_model_version_mismatch_is_a_clear_error(tables):
    s = _samples([("u1", "i1", "2026-01-02")])
    with pytest.raises(ValueError, match="model_version"):
        join_representations(s, {"user_ur": tables["user_ur"]}, expect_model_version="other")
    vec, present = join_representations(s, {"user_ur": tables["user_ur"]}, expect_model_version="m1")
    assert present["user_ur"].all()


def test_bad_input_names_the_problem(tables, tmp_path):
    s = _samples([("u1", "i1", "2026-01-02")])
    with pytest.raises(ValueError, match="unknown representation table"):
        join_representations(s, {"user_xx": tables["user_ur"]})
    with pytest.raises(ValueError, match="item_id"):
        join_representations(s.drop_columns(["item_id"]), tables)
    with pytest.raises(FileNotFoundError, match="not a Delta table"):
        join_representations(s, {"user_cr": tmp_path / "nope"})
