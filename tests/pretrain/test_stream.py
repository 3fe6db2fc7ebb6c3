"""The Ray Data training stream: the same rows, in the same order and dtypes, as encoding the
files with pyarrow and cutting the arrays into windows; the seeded window shuffle deals
every row to exactly one worker with equal step counts and depends only on (seed, epoch,
window)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pretrain import FeatureEncoder
from pretrain.data import to_arrays
from pretrain.loop import array_windows, window_order
from pretrain.stream import read_in_stream_order, stream_windows, train_dataset
from tests.pretrain.toy import SPEC, toy_table


def test_window_order_deals_one_permutation_evenly():
    n, world = 103, 3
    parts = [window_order(n, 7, 2, 5, r, world) for r in range(world)]
    assert {len(p) for p in parts} == {n // world}  # equal step counts
    perm = np.random.default_rng([7, 2, 5]).permutation(n)  # reference: the shared permutation
    for r, p in enumerate(parts):
        np.testing.assert_array_equal(p, perm[r::world][: n // world])
    dealt = np.concatenate(parts)
    assert len(set(dealt.tolist())) == len(dealt)  # no row twice
    np.testing.assert_array_equal(window_order(n, 7, 2, 5), perm)  # one worker: all rows
    assert not np.array_equal(window_order(n, 7, 3, 5), perm)  # another epoch, another order
    assert not np.array_equal(window_order(n, 7, 2, 6), perm)  # another window too


def _assert_same_windows(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in w:
            assert g[k].dtype == w[k].dtype, k
            np.testing.assert_array_equal(g[k], w[k], err_msg=k)


@pytest.mark.parametrize("source", ["files", "table"])
def test_stream_equals_encoded_arrays(source, tmp_path, ray_cluster):
    days = [toy_table(700, seed=1, days=("2024-01-01",)), toy_table(500, seed=2, days=("2024-01-02",))]
    files = []
    for i, t in enumerate(days):
        f = tmp_path / f"part-{i}.parquet"
        pq.write_table(t, f, row_group_size=300)  # several row groups per file
        files.append(str(f))
    rows = read_in_stream_order(files)
    enc = FeatureEncoder.fit(rows, SPEC)
    ds = train_dataset(files if source == "files" else rows, enc)
    assert ds.count() == rows.num_rows
    want = list(array_windows(to_arrays(enc.encode(rows)), 256))
    _assert_same_windows(list(stream_windows(ds.iterator(), 256, enc)), want)
    _assert_same_windows(list(stream_windows(ds.iterator(), 256, enc)), want)  # a second epoch: same stream


def test_stream_names_a_file_without_a_needed_column(tmp_path, ray_cluster):
    t = toy_table(50)
    enc = FeatureEncoder.fit(t, SPEC)
    f = tmp_path / "part.parquet"
    pq.write_table(t.drop_columns(["click"]), f)
    with pytest.raises(Exception, match=r"part\.parquet: column\(s\) \['click'\] missing"):
        list(stream_windows(train_dataset([str(f)], enc).iterator(), 64, enc))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['click'\]"):
        train_dataset(t.drop_columns(["click"]), enc)
