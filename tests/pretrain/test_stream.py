"""Sharded training reads: each worker's shard of an epoch is disjoint from the others',
their union is the epoch (less the N mod W rows that sit it out), every worker gets the
same row count, assignments rotate between epochs, a worker decodes only the row groups
of its shard (about 1/W of the rows), and one worker's windows equal encoding the files
with pyarrow and cutting the arrays into windows. The window shuffle depends only on
(seed, epoch, window, rank)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pretrain import FeatureEncoder
from pretrain.data import to_arrays
from pretrain.loop import array_windows, window_order
from pretrain.stream import plan_files, read_in_stream_order, read_range, shard_range, shard_windows
from tests.pretrain.toy import SPEC, toy_table


def _files(tmp_path, sizes=(700, 500, 333), row_group=128):
    files = []
    for i, n in enumerate(sizes):
        t = toy_table(n, seed=i + 1, days=(f"2024-01-0{i + 1}",))
        t = t.append_column("row_id", pa.array(np.arange(n) + sum(sizes[:i]), pa.int64()))
        f = tmp_path / f"part-{i}.parquet"
        pq.write_table(t, f, row_group_size=row_group)  # several row groups per file
        files.append(str(f))
    return files


def test_window_order_is_a_seeded_permutation():
    perm = np.random.default_rng([7, 2, 5, 1]).permutation(103)  # reference: the seeded generator
    np.testing.assert_array_equal(window_order(103, 7, 2, 5, 1), perm)
    np.testing.assert_array_equal(window_order(103, 7, 2, 5, 1), perm)  # again: same
    assert not np.array_equal(window_order(103, 7, 3, 5, 1), perm)  # another epoch
    assert not np.array_equal(window_order(103, 7, 2, 6, 1), perm)  # another window
    assert not np.array_equal(window_order(103, 7, 2, 5, 0), perm)  # another worker


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_disjoint_equal_and_cover_the_epoch(tmp_path, world):
    files = _files(tmp_path)
    plan = plan_files(files)
    total = 700 + 500 + 333
    assert plan.total_rows == total
    enc = FeatureEncoder.fit(read_in_stream_order(files), SPEC)
    assignments = []
    for epoch in range(3):
        ids, read = [], []
        for rank in range(world):
            counter: dict = {}
            got = list(shard_windows(plan, enc, 200, epoch, rank, world, counter))
            assert sum(len(w["labels"]) for w in got) == total // world  # equal counts: equal DDP steps
            read.append(counter["rows_read"])
            start, stop = shard_range(total, epoch, rank, world)  # the same rows, by their row_id
            ids.append({int(x) for t in read_range(plan, start, stop, ["row_id"]) for x in t["row_id"].to_numpy()})
        union = set().union(*ids)
        assert sum(len(s) for s in ids) == len(union)  # disjoint
        assert len(union) == total - total % world  # the epoch, less N mod W rows
        assignments.append([min(s) for s in ids])
        # each worker decodes only the row groups overlapping its shard: ~1/W of the rows
        assert max(read) <= total // world + 2 * 128, read
    if world > 1:
        assert assignments[0] != assignments[1], "assignments rotate between epochs"


def test_shard_rows_are_the_epoch_rows_in_order(tmp_path):
    """The rows a worker gets (by a row_id column) are exactly its range of the stream."""
    files = _files(tmp_path)
    plan = plan_files(files)
    everything = read_in_stream_order(files)["row_id"].to_numpy()
    seen = []
    for rank in range(3):
        start, stop = shard_range(plan.total_rows, 1, rank, 3)
        got = np.concatenate([t["row_id"].to_numpy() for t in read_range(plan, start, stop, ["row_id"])])
        np.testing.assert_array_equal(got, everything[start:stop])
        seen.append(got)
    allseen = np.concatenate(seen)
    assert len(np.unique(allseen)) == len(allseen) == plan.total_rows - plan.total_rows % 3


def test_one_worker_stream_equals_encoded_arrays(tmp_path):
    files = _files(tmp_path, sizes=(700, 500), row_group=300)
    rows = read_in_stream_order(files)
    enc = FeatureEncoder.fit(rows, SPEC)
    want = list(array_windows(to_arrays(enc.encode(rows)), 256))
    for epoch in (0, 1):
        got = list(shard_windows(plan_files(files), enc, 256, epoch))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.keys() == w.keys()
            for k in w:
                assert g[k].dtype == w[k].dtype, k
                np.testing.assert_array_equal(g[k], w[k], err_msg=k)


def test_stream_names_a_file_without_a_needed_column(tmp_path):
    t = toy_table(50)
    enc = FeatureEncoder.fit(t, SPEC)
    f = tmp_path / "part.parquet"
    pq.write_table(t.drop_columns(["click"]), f)
    with pytest.raises(ValueError, match=r"part\.parquet: column\(s\) \['click'\] missing"):
        list(shard_windows(plan_files([str(f)]), enc, 64, 0))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: not a readable Parquet file"):
        plan_files([str(bad)])
