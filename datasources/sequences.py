"""Behaviour sequences (``hist_seq``), built day by day in bounded memory.

Each row gets the ``max_len`` most recent *qualifying* items of its user strictly before
its timestamp (oldest first; rows sharing a timestamp do not see each other; ties among
earlier rows keep input order). Days are processed in order with a
:class:`SequenceState` (per user, the last ``max_len`` qualifying events so far), so
memory is one day plus ``users x max_len`` events, whatever the log's length, and a day
gets exactly the sequences a single pass over the whole log would give it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import DatasetSpec
from contracts.dataset import CANONICAL_ITEM_ID

STATE_SCHEMA = pa.schema([("user", pa.string()), ("items", pa.list_(pa.string()))])


def _codes(values) -> np.ndarray:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(values).astype(str))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return np.asarray(pc.dictionary_encode(arr).indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def sequence_index(
    user: np.ndarray, ts: np.ndarray, qualifies: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs: N user codes (int), timestamps (int), 0/1 qualifies, in any order.
    Returns (offsets [N+1] int64, idx [offsets[-1]] int64): row k's sequence is
    ``items[idx[offsets[k]:offsets[k+1]]]``. Vectorised, O(N log N)."""
    n = len(user)
    order = np.lexsort((ts, user))  # stable: equal (user, ts) keep input order
    u, t = user[order], ts[order]
    q = np.asarray(qualifies, dtype=np.int64)[order]
    q_before = np.cumsum(q) - q
    pos = np.arange(n)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (u[1:] != u[:-1]) | (t[1:] != t[:-1])
    # Rows sharing a timestamp must not see each other: count up to their group's first row.
    before = q_before[np.maximum.accumulate(np.where(new_group, pos, 0))]
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = u[1:] != u[:-1]
    count = before - q_before[np.maximum.accumulate(np.where(new_user, pos, 0))]
    q_rows = order[q.astype(bool)]  # original positions of qualifying rows, in (user, ts) order
    lengths = np.empty(n, dtype=np.int64)
    lengths[order] = np.minimum(count, max_len)
    ends = np.empty(n, dtype=np.int64)
    ends[order] = before
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    return offsets, q_rows[np.repeat(ends - lengths, lengths) + within]


def build_sequences(user, ts, item, qualifies, max_len: int) -> pa.ListArray:
    """For each row, the ``max_len`` most recent qualifying items of the same user strictly
    before its timestamp (oldest first). Inputs: 1-D arrays (numpy or Arrow, one or many
    chunks) of length N in any order; output aligned with the input rows."""
    offsets, idx = sequence_index(_codes(user), np.asarray(ts, dtype=np.int64), np.asarray(qualifies), max_len)
    items = item.combine_chunks() if isinstance(item, pa.ChunkedArray) else item
    items = items if isinstance(items, pa.Array) else pa.array(np.asarray(items).astype(str), pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), items.cast(pa.string()).take(idx))


class SequenceState:
    """Per user, the last ``max_len`` qualifying items (oldest first) before the next day.

    Held as one row per user (``user``, ``items`` list): ``users x max_len`` values at most,
    whatever the log's length."""

    def __init__(self, spec: DatasetSpec):
        c = spec.canonical()
        self.max_len = c.sequence.max_len
        self.item_col = c.sequence.item_field or CANONICAL_ITEM_ID
        self.task = c.sequence.positive_task
        self.table = STATE_SCHEMA.empty_table()

    def _events(self, day: pa.Table) -> tuple[pa.Array, np.ndarray]:
        item = day[self.item_col].combine_chunks().cast(pa.string())
        q = pc.is_valid(item)  # a row without the item value adds nothing to sequences
        if self.task:
            q = pc.and_(q, pc.fill_null(pc.equal(day[self.task], 1.0), False))
        return item, np.asarray(q.to_numpy(zero_copy_only=False), dtype=np.int64)

    def day_sequences(self, day: pa.Table) -> pa.ListArray:
        """``hist_seq`` for the rows of one day (canonical columns, any order); advances the state.

        The day's own sequences come from :func:`sequence_index` over the day alone; each
        row's sequence is then topped up, oldest first, from its user's carried items. One
        extra row per user at the end of the day (never qualifying) yields the new state.
        Cost O(day rows + output values)."""
        users = day["user_id"].combine_chunks()
        n = len(users)
        item, q = self._events(day)
        uniq = pc.unique(users)
        u = len(uniq)
        all_users = pa.concat_arrays([users, uniq])
        ts = np.concatenate([day["event_time"].cast(pa.int64()).to_numpy(), np.full(u, np.iinfo(np.int64).max)])
        qual = np.concatenate([q, np.zeros(u, np.int64)])
        offsets, idx = sequence_index(_codes(all_users), ts, qual, self.max_len)
        lengths = np.diff(offsets)
        # carried items of each row's user: their slice in the state's flattened values
        pos = pc.index_in(all_users, value_set=self.table["user"])
        has = np.asarray(pc.is_valid(pos).to_numpy(zero_copy_only=False), dtype=bool)
        pos = np.asarray(pos.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        st_items = (
            self.table["items"].combine_chunks()
            if self.table.num_rows
            else pa.array([], STATE_SCHEMA.field("items").type)
        )
        st_off = np.asarray(st_items.offsets.to_numpy(), dtype=np.int64) if len(st_items) else np.zeros(1, np.int64)
        prior_len = np.where(has, st_off[pos + 1] - st_off[pos], 0) if len(st_items) else np.zeros(n + u, np.int64)
        take = np.minimum(self.max_len - lengths, prior_len)
        prior_start = (st_off[pos] + prior_len - take) if len(st_items) else np.zeros(n + u, np.int64)
        flat = st_items.values if len(st_items) else pa.array([], pa.string())
        flat = flat.slice(0)  # values relative to offsets[0] == st_off[0] (a fresh array: 0)
        total = take + lengths
        fo = np.zeros(n + u + 1, np.int64)
        np.cumsum(total, out=fo[1:])
        out = np.empty(fo[-1], np.int64)
        w_p = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        out[np.repeat(fo[:-1], take) + w_p] = np.repeat(prior_start, take) + w_p
        w_d = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        out[np.repeat(fo[:-1] + take, lengths) + w_d] = len(flat) + idx
        values = pa.concat_arrays([flat, item]).take(pa.array(out))
        seqs = pa.ListArray.from_arrays(pa.array(fo.astype(np.int32)), values)
        keep = pc.invert(pc.is_in(self.table["user"], value_set=uniq))
        new = pa.table({"user": uniq, "items": seqs.slice(n, u)}, schema=STATE_SCHEMA)
        self.table = pa.concat_tables([self.table.filter(keep), new]).combine_chunks()
        return seqs.slice(0, n)

    def advance(self, day: pa.Table) -> None:
        """Move the state past a day already in the log (its sequences are not needed)."""
        self.day_sequences(day)
