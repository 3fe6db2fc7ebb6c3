"""FeatureEncoder: vocabularies, OOV, sequence padding, validation errors, JSON round trip."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from pretrain import FeatureEncoder
from tests.pretrain.toy import SPEC, toy_table


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return toy_table(300, seed=0)


def test_vocab_is_frequency_ranked_with_oov_zero(table):
    enc = FeatureEncoder.fit(table, SPEC)
    col = table["city"].to_pylist()
    counts = {v: col.count(v) for v in set(col)}
    expected = sorted(counts, key=lambda v: (-counts[v], v))
    assert enc.vocabs["city"] == expected
    assert enc.vocab_sizes["city"] == len(expected) + 1
    batch = enc.encode(table)
    ref = np.array([expected.index(v) + 1 for v in col])
    np.testing.assert_array_equal(batch["city"].numpy(), ref)


def test_min_count_and_max_vocab(table):
    enc = FeatureEncoder.fit(table, SPEC, min_count=10, max_vocab=3)
    col = table["user_id"].to_pylist()
    assert len(enc.vocabs["user_id"]) <= 3
    assert all(col.count(v) >= 10 for v in enc.vocabs["user_id"])


def test_unseen_values_map_to_oov(table):
    enc = FeatureEncoder.fit(table, SPEC)
    other = table.set_column(table.column_names.index("user_id"), "user_id", pa.array(["never-seen"] * len(table)))
    other = other.set_column(
        other.column_names.index("hist_seq"),
        "hist_seq",
        pa.array([["zzz", "i1"]] * len(table), type=pa.list_(pa.string())),
    )
    batch = enc.encode(other)
    assert (batch["user_id"] == 0).all()
    seq, mask = batch["hist_seq"], batch["hist_mask"]
    assert seq[0, -2] == 0 and mask[0, -2]  # OOV event is a real (masked-in) event
    assert seq[0, -1] == enc.vocabs["item_id"].index("i1") + 1


def test_sequence_right_aligned_truncated_and_masked():
    t = toy_table(3, seed=1)
    seqs = [[], ["i1", "i2"], [f"i{k}" for k in range(25)]]  # longer than max_len=20
    t = t.set_column(t.column_names.index("hist_seq"), "hist_seq", pa.array(seqs, type=pa.list_(pa.string())))
    enc = FeatureEncoder.fit(toy_table(400), SPEC)
    b = enc.encode(t)
    L = SPEC.sequence.max_len
    assert b["hist_seq"].shape == (3, L) and b["hist_mask"].dtype == torch.bool
    assert not b["hist_mask"][0].any()
    assert b["hist_mask"][1].tolist() == [False] * (L - 2) + [True, True]
    idx = lambda v: enc.vocabs["item_id"].index(v) + 1  # noqa: E731
    assert b["hist_seq"][1, -2:].tolist() == [idx("i1"), idx("i2")]
    # keeps the most recent (last) L events
    assert b["hist_mask"][2].all()
    assert b["hist_seq"][2].tolist() == [idx(f"i{k}") for k in range(5, 25)]


def test_labels_and_masks(table):
    enc = FeatureEncoder.fit(table, SPEC)
    b = enc.encode(table)
    conv = table["conversion"]
    np.testing.assert_array_equal(b["label_mask"][:, 1].numpy(), conv.is_valid().to_numpy(zero_copy_only=False))
    assert b["labels"].dtype == torch.float32 and b["labels"].shape == (len(table), 2)
    assert set(torch.unique(b["labels"]).tolist()) <= {0.0, 1.0}
    scen = np.array(table["scenario"].to_pylist())
    np.testing.assert_array_equal(np.array(enc.scenario_ids)[b["scenario"].numpy()], scen)
    np.testing.assert_array_equal(
        b["is_ad"].numpy(), pc.equal(table["sample_type"], "ad").to_numpy(zero_copy_only=False)
    )


def test_missing_column_names_it(table):
    enc = FeatureEncoder.fit(table, SPEC)
    with pytest.raises(ValueError, match="city"):
        enc.encode(table.drop_columns(["city"]))
    with pytest.raises(ValueError, match="click"):
        enc.encode(table.drop_columns(["click"]))
    enc.encode(table.drop_columns(["click", "conversion"]), require_labels=False)


@pytest.mark.parametrize("bad", [2.0, -1.0, float("nan"), float("inf")])
def test_bad_label_names_column_and_row(table, bad):
    enc = FeatureEncoder.fit(table, SPEC)
    vals = table["click"].to_pylist()
    vals[7] = bad
    t = table.set_column(table.column_names.index("click"), "click", pa.array(vals, type=pa.float32()))
    with pytest.raises(ValueError, match=r"click.*row 7"):
        enc.encode(t)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_feature_names_column_and_row(table, bad):
    """An id column stored as float: NaN/inf is refused at fit and at encode (a null is OOV)."""
    ages = [float(i % 5) for i in range(table.num_rows)]
    good = table.set_column(table.column_names.index("age"), "age", pa.array(ages, type=pa.float64()))
    enc = FeatureEncoder.fit(good, SPEC)
    ages[11] = bad
    t = good.set_column(good.column_names.index("age"), "age", pa.array(ages, type=pa.float64()))
    with pytest.raises(ValueError, match=r"feature column 'age'.*row 11 is not finite"):
        enc.encode(t)
    with pytest.raises(ValueError, match=r"feature column 'age'.*row 11"):
        FeatureEncoder.fit(t, SPEC)
    ages[11] = None
    t = good.set_column(good.column_names.index("age"), "age", pa.array(ages, type=pa.float64()))
    assert int(enc.encode(t)["age"][11]) == 0


def test_unknown_scenario_and_sample_type(table):
    enc = FeatureEncoder.fit(table, SPEC)
    s = table["scenario"].to_pylist()
    s[3] = 99
    with pytest.raises(ValueError, match=r"scenario 99 at row 3"):
        enc.encode(table.set_column(table.column_names.index("scenario"), "scenario", pa.array(s, type=pa.int32())))
    st = table["sample_type"].to_pylist()
    st[5] = "banner"
    with pytest.raises(ValueError, match=r"sample_type.*banner.*row 5"):
        enc.encode(table.set_column(table.column_names.index("sample_type"), "sample_type", pa.array(st)))


def test_json_round_trip(table):
    enc = FeatureEncoder.fit(table, SPEC, min_count=2)
    back = FeatureEncoder.from_json(enc.to_json())
    assert back.vocabs == enc.vocabs and back.vocab_sizes == enc.vocab_sizes
    a, b = enc.encode(table), back.encode(table)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="not valid JSON"):
        FeatureEncoder.from_json("{broken")


def test_extend_keeps_old_indices_and_appends_new(table):
    enc = FeatureEncoder.fit(table, SPEC)
    newer = table.set_column(
        table.column_names.index("user_id"), "user_id", pa.array([f"new{i % 3}" for i in range(len(table))])
    )
    ext = enc.extend(newer)
    old = enc.vocabs["user_id"]
    assert ext.vocabs["user_id"][: len(old)] == old
    assert sorted(ext.vocabs["user_id"][len(old) :]) == ["new0", "new1", "new2"]
    assert enc.encode(table)["user_id"].tolist() == ext.encode(table)["user_id"].tolist()
    capped = enc.extend(newer, max_vocab=len(old) + 1)
    assert len(capped.vocabs["user_id"]) == len(old) + 1


def test_empty_table_encodes_to_empty_batch(table):
    enc = FeatureEncoder.fit(table, SPEC)
    b = enc.encode(table.slice(0, 0))
    assert b["hist_seq"].shape == (0, SPEC.sequence.max_len) and b["labels"].shape == (0, 2)
