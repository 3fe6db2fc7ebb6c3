"""Canonical log rows -> the tensor batch the foundation model takes.

:class:`FeatureEncoder` holds one frequency-thresholded vocabulary per categorical column
(``spec.categorical_columns``). Index 0 of every vocabulary is out-of-vocabulary (OOV), so
ids never seen in training map to 0 instead of failing; known values get ``1 + rank``
(rank by descending training frequency, ties by value, so a refit is deterministic).

The behaviour sequence ``hist_seq`` uses the vocabulary of ``spec.sequence.item_field``
(the same embedding table as that item column). It is right-aligned: the last
(most recent) ``max_len`` events sit at the end, padding at the front, and
``hist_mask`` marks real events, so padding is never confused with OOV.

The batch (``encode``), B rows, T tasks, L = ``spec.sequence.max_len``:

==============  ===========  =======  ===============================================
key             shape        dtype    meaning
==============  ===========  =======  ===============================================
``<column>``    [B]          long     vocabulary index of each categorical column
``hist_seq``    [B, L]       long     item-field vocabulary index per event (0 if pad)
``hist_mask``   [B, L]       bool     True = a real event
``scenario``    [B]          long     index into ``encoder.scenario_ids`` (sorted ids)
``is_ad``       [B]          bool     sample_type == 'ad'
``labels``      [B, T]       float    0/1 (0 where masked)
``label_mask``  [B, T]       bool     False = task absent for this row (null label)
==============  ===========  =======  ===============================================

Every lookup is vectorised (``pyarrow.compute.index_in``): extraction runs this on
millions of rows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import DatasetSpec
from contracts.dataset import CANONICAL_SAMPLE_TYPE, CANONICAL_SCENARIO, CANONICAL_SEQUENCE, SAMPLE_TYPES

if TYPE_CHECKING:
    import torch

# torch is imported inside encode() only: the vocabulary-count Ray tasks (pretrain.vocab)
# validate rows through validate_arrays() and must start without importing torch.
OOV = 0
FORMAT_VERSION = 1


def _as_string(col: pa.ChunkedArray | pa.Array, name: str | None = None) -> pa.Array:
    """One contiguous string array (dictionary, large_string or ints are cast). A float
    column (an id stored as float) with NaN/inf is refused, naming ``name`` and the row:
    'nan' would otherwise become a category of its own. Null stays null (-> OOV)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_floating(col.type):
        vals = pc.fill_null(col.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(vals)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"feature column {name or '?'!r}: value {float(vals[row])!r} at row {row} is not finite")
    if not pa.types.is_string(col.type):
        col = col.cast(pa.string())
    return col


def _lookup(values: pa.Array, vocab: pa.Array) -> np.ndarray:
    """Vocabulary index per value: 1 + position in ``vocab``, 0 (OOV) if unknown or null."""
    pos = pc.index_in(values, value_set=vocab)
    return pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1


class FeatureEncoder:
    """Vocabularies fitted on training days; ``encode`` turns any canonical table into a batch."""

    def __init__(
        self,
        spec: DatasetSpec,
        vocabs: dict[str, list[str]],
        min_count: int = 1,
        max_vocab: int | None = None,
    ):
        self.spec = spec.canonical()
        missing = [c for c in self.spec.categorical_columns if c not in vocabs]
        if missing:
            raise ValueError(f"vocabularies missing for column(s) {missing}")
        self.vocabs = {c: list(vocabs[c]) for c in self.spec.categorical_columns}
        self.min_count = min_count
        self.max_vocab = max_vocab
        self._arrow = {c: pa.array(v, type=pa.string()) for c, v in self.vocabs.items()}
        self.scenario_ids: list[int] = sorted(int(s) for s in self.spec.scenarios)

    # --- fitting ---------------------------------------------------------------------
    @classmethod
    def fit(
        cls, table: pa.Table, spec: DatasetSpec, min_count: int = 1, max_vocab: int | None = None
    ) -> "FeatureEncoder":
        """Count each categorical column of ``table``; keep values seen >= ``min_count`` times,
        at most ``max_vocab`` (most frequent first). ``hist_seq`` events count toward the
        item-field vocabulary, so items only seen in histories still get an embedding."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_vocab is not None and max_vocab < 1:
            raise ValueError(f"max_vocab must be >= 1 or None, got {max_vocab}")
        canon = spec.canonical()
        _require_columns(table, canon.categorical_columns)
        seq_field = canon.sequence.item_field
        vocabs: dict[str, list[str]] = {}
        for col in canon.categorical_columns:
            values = _as_string(table[col], col)
            if col == seq_field and CANONICAL_SEQUENCE in table.column_names:
                flat = _as_string(pc.list_flatten(table[CANONICAL_SEQUENCE]), CANONICAL_SEQUENCE)
                values = pa.concat_arrays([values, flat])
            vocabs[col] = _frequent_values(values, min_count, max_vocab)
        return cls(canon, vocabs, min_count=min_count, max_vocab=max_vocab)

    @classmethod
    def from_counts(
        cls, spec: DatasetSpec, counts: dict[str, pa.Table], min_count: int = 1, max_vocab: int | None = None
    ) -> "FeatureEncoder":
        """The encoder :meth:`fit` would build, from per-column count tables (columns
        ``values`` string, ``counts`` int64; the item field's table includes ``hist_seq``
        events): what ``pretrain.vocab`` aggregates over the log without materialising it."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_vocab is not None and max_vocab < 1:
            raise ValueError(f"max_vocab must be >= 1 or None, got {max_vocab}")
        canon = spec.canonical()
        vocabs = {
            c: select_frequent(
                counts[c]["values"].combine_chunks(), counts[c]["counts"].combine_chunks(), min_count, max_vocab
            )
            for c in canon.categorical_columns
        }
        return cls(canon, vocabs, min_count=min_count, max_vocab=max_vocab)

    def extend(self, table: pa.Table, min_count: int | None = None, max_vocab: int | None = None) -> "FeatureEncoder":
        """Warm start on new days: a new encoder whose known values keep their indices and
        whose frequent new values (fitted on ``table``) are appended, up to ``max_vocab``
        per column in total. Old embedding rows stay valid for the grown tables."""
        return self.extend_with(
            FeatureEncoder.fit(table, self.spec, min_count or self.min_count, None), min_count, max_vocab
        )

    def extend_with(
        self, new: "FeatureEncoder", min_count: int | None = None, max_vocab: int | None = None
    ) -> "FeatureEncoder":
        """:meth:`extend` with the new days' encoder already fitted (uncapped), e.g. by the
        distributed count."""
        cap = max_vocab if max_vocab is not None else self.max_vocab
        vocabs = {}
        for col, old in self.vocabs.items():
            known = set(old)
            extra = [v for v in new.vocabs[col] if v not in known]
            room = len(extra) if cap is None else max(0, cap - len(old))
            vocabs[col] = old + extra[:room]
        return FeatureEncoder(self.spec, vocabs, min_count=min_count or self.min_count, max_vocab=cap)

    # --- shape facts the model needs -------------------------------------------------
    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Column -> embedding rows (known values + 1 for OOV)."""
        return {c: len(v) + 1 for c, v in self.vocabs.items()}

    @property
    def num_scenarios(self) -> int:
        return len(self.scenario_ids)

    @property
    def tasks(self) -> list[str]:
        return list(self.spec.tasks)

    @property
    def max_len(self) -> int:
        return self.spec.sequence.max_len

    # --- encoding --------------------------------------------------------------------
    def encode(self, table: pa.Table, require_labels: bool = True) -> dict[str, torch.Tensor]:
        """Validate and encode ``table`` (canonical columns) into the batch dict (see module doc).

        ``require_labels=False`` lets unlabelled rows through (labels 0, label_mask False).
        Raises ValueError naming the column (and a row) on a missing column, a label other
        than 0/1/null, NaN/inf, an unknown scenario or a sample_type other than ad/content.
        """
        import torch

        return {k: torch.from_numpy(v) for k, v in self.encode_arrays(table, require_labels).items()}

    def encode_arrays(self, table: pa.Table, require_labels: bool = True) -> dict[str, np.ndarray]:
        """:meth:`encode` as numpy arrays (no torch import: what validation-only callers use)."""
        spec = self.spec
        required = [*spec.categorical_columns, CANONICAL_SCENARIO, CANONICAL_SAMPLE_TYPE, CANONICAL_SEQUENCE]
        if require_labels:
            required += spec.tasks
        _require_columns(table, required)
        n = table.num_rows
        out: dict[str, np.ndarray] = {}
        for col in spec.categorical_columns:
            out[col] = _lookup(_as_string(table[col], col), self._arrow[col])
        out["hist_seq"], out["hist_mask"] = self._encode_sequence(table[CANONICAL_SEQUENCE])
        out["scenario"] = self._encode_scenario(table[CANONICAL_SCENARIO])
        out["is_ad"] = _encode_sample_type(table[CANONICAL_SAMPLE_TYPE])
        labels = np.zeros((n, len(spec.tasks)), dtype=np.float32)
        lmask = np.zeros((n, len(spec.tasks)), dtype=bool)
        for t, task in enumerate(spec.tasks):
            if task in table.column_names:
                labels[:, t], lmask[:, t] = _encode_label(table[task], task)
        out["labels"], out["label_mask"] = labels, lmask
        return out

    def _encode_sequence(self, col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """list<string> -> right-aligned [B, L] indices and mask; keeps the last L events."""
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
            raise ValueError(f"column {CANONICAL_SEQUENCE!r} must be list<string>, got {col.type}")
        n, L = len(col), self.max_len
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat_idx = _lookup(
            _as_string(pc.list_flatten(col), CANONICAL_SEQUENCE), self._arrow[self.spec.sequence.item_field]
        )
        seq = np.zeros((n, L), dtype=np.int64)
        mask = np.zeros((n, L), dtype=bool)
        if flat_idx.size:
            row = np.repeat(np.arange(n), lengths)
            starts = np.cumsum(lengths) - lengths
            pos = np.arange(flat_idx.size) - np.repeat(starts, lengths)
            from_end = np.repeat(lengths, lengths) - 1 - pos  # 0 = the most recent event
            keep = from_end < L
            dst = L - 1 - from_end[keep]
            seq[row[keep], dst] = flat_idx[keep]
            mask[row[keep], dst] = True
        return seq, mask

    def _encode_scenario(self, col: pa.ChunkedArray) -> np.ndarray:
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"column {CANONICAL_SCENARIO!r}: null at row {row}")
        ids = col.to_numpy().astype(np.int64)
        known = np.asarray(self.scenario_ids, dtype=np.int64)
        idx = np.searchsorted(known, ids)
        bad = (idx >= len(known)) | (known[np.minimum(idx, len(known) - 1)] != ids)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"column {CANONICAL_SCENARIO!r}: unknown scenario {int(ids[row])} at row {row} "
                f"(known: {self.scenario_ids})"
            )
        return idx.astype(np.int64)

    # --- persistence -----------------------------------------------------------------
    def to_json(self) -> str:
        """JSON (the checkpoint's vocab.json): ``vocabs`` column -> known values, where the
        value at list position k has index k + 1 (index 0 = OOV)."""
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "spec": self.spec.model_dump(mode="json"),
                "min_count": self.min_count,
                "max_vocab": self.max_vocab,
                "vocabs": self.vocabs,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "FeatureEncoder":
        try:
            raw: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"vocabulary JSON is not valid JSON: {e}") from e
        for key in ("spec", "vocabs"):
            if key not in raw:
                raise ValueError(f"vocabulary JSON lacks key {key!r}")
        if raw.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"vocabulary JSON format_version {raw['format_version']} != {FORMAT_VERSION}")
        spec = DatasetSpec.model_validate(raw["spec"])
        return cls(spec, raw["vocabs"], min_count=raw.get("min_count", 1), max_vocab=raw.get("max_vocab"))

    def __repr__(self) -> str:
        return f"FeatureEncoder({self.spec.name!r}, vocab_sizes={self.vocab_sizes})"


def training_columns(spec: DatasetSpec) -> list[str]:
    """The canonical columns training reads and :meth:`FeatureEncoder.encode` needs."""
    spec = spec.canonical()
    return [*spec.categorical_columns, CANONICAL_SCENARIO, CANONICAL_SAMPLE_TYPE, CANONICAL_SEQUENCE, *spec.tasks]


def _require_columns(table: pa.Table, columns: list[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"input table lacks column(s) {missing} (has {table.column_names})")


def _frequent_values(values: pa.Array, min_count: int, max_vocab: int | None) -> list[str]:
    counts = pc.value_counts(values.drop_null())
    return select_frequent(counts.field("values"), counts.field("counts"), min_count, max_vocab)


def select_frequent(values: pa.Array, counts: pa.Array, min_count: int, max_vocab: int | None) -> list[str]:
    """The vocabulary from (distinct value, count) pairs: count >= ``min_count``, by count
    descending then value, at most ``max_vocab``. Shared by the in-memory fit and the
    distributed count (``pretrain.vocab``), so both give the same list."""
    vals = values.cast(pa.string()).to_numpy(zero_copy_only=False)
    cnt = np.asarray(counts.to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = cnt >= min_count
    vals, cnt = vals[keep], cnt[keep]
    order = np.lexsort((vals.astype(str), -cnt))  # frequency desc, then value: deterministic
    if max_vocab is not None:
        order = order[:max_vocab]
    return [str(v) for v in vals[order]]


def _encode_sample_type(col: pa.ChunkedArray) -> np.ndarray:
    s = _as_string(col)
    is_ad = pc.fill_null(pc.equal(s, "ad"), False).to_numpy(zero_copy_only=False)
    ok = pc.fill_null(pc.is_in(s, value_set=pa.array(SAMPLE_TYPES)), False).to_numpy(zero_copy_only=False)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"column {CANONICAL_SAMPLE_TYPE!r}: value {s[row].as_py()!r} at row {row} is not one of {SAMPLE_TYPES}"
        )
    return np.asarray(is_ad, dtype=bool)


def _encode_label(col: pa.ChunkedArray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """float column with 0/1/null -> (values with null -> 0, mask of non-null)."""
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)):
        raise ValueError(f"label column {name!r} must be numeric 0/1, got {col.type}")
    present = col.is_valid().to_numpy(zero_copy_only=False)
    vals = pc.fill_null(col.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    bad = ~((vals == 0.0) | (vals == 1.0))  # NaN and inf fail here too
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"label column {name!r}: value {float(vals[row])!r} at row {row} is not 0, 1 or null")
    return vals.astype(np.float32), present.astype(bool)
