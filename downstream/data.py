"""A scenario's samples as tensors: encoded features, labels and joined representations.

The batch dict is ``pretrain.FeatureEncoder.encode``'s (see there) plus, per joined table
``name``: ``rep:<name>`` float [N, d] and ``present:<name>`` bool [N].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from contracts import DatasetSpec, RunLayout
from contracts.dataset import CANONICAL_SAMPLE_TYPE, CANONICAL_SCENARIO
from pretrain import FeatureEncoder
from transfer import join_representations

REP_PREFIX, PRESENT_PREFIX = "rep:", "present:"


@dataclass
class Split:
    """One split's tensors (all rows in memory: downstream scenarios are small)."""

    batch: dict[str, torch.Tensor]
    days: list[str]

    @property
    def num_rows(self) -> int:
        return int(self.batch["labels"].shape[0])

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.batch.items()}


@dataclass
class ScenarioData:
    """Train/valid/test splits of one scenario, sharing one encoder fitted on train."""

    encoder: FeatureEncoder
    train: Split
    valid: Split
    test: Split
    rep_dims: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, float] = field(default_factory=dict)  # test rows with a vector

    @property
    def tasks(self) -> list[str]:
        return self.encoder.tasks


def _row_mask(table: pa.Table, scenario: int | None, sample_type: str):
    if scenario is None:
        mask = pa.array(np.ones(table.num_rows, bool))
    else:
        mask = pc.equal(table[CANONICAL_SCENARIO], pa.scalar(scenario, table.schema.field(CANONICAL_SCENARIO).type))
    if sample_type != "all":
        mask = pc.and_(mask, pc.equal(table[CANONICAL_SAMPLE_TYPE], sample_type))
    return mask


def select_rows(table: pa.Table, scenario: int | None, sample_type: str) -> pa.Table:
    """Rows of ``scenario`` (None = every scenario) and ``sample_type`` ('all' = both)."""
    return table.filter(_row_mask(table, scenario, sample_type))


def select_indices(table: pa.Table, scenario: int | None, sample_type: str) -> np.ndarray:
    """Positions of :func:`select_rows`' rows in ``table`` (same rows, same order)."""
    return np.flatnonzero(_row_mask(table, scenario, sample_type).to_numpy(zero_copy_only=False))


@dataclass
class Joined:
    """Point-in-time joined vectors of a whole table (``transfer.join_representations``'s
    output), computed once and sliced per scenario: the Delta snapshots are read once per
    split instead of once per scenario and split."""

    vectors: dict[str, np.ndarray]
    present: dict[str, np.ndarray]

    def take(self, rows: np.ndarray) -> "Joined":
        return Joined({k: v[rows] for k, v in self.vectors.items()}, {k: v[rows] for k, v in self.present.items()})


def join_once(
    table: pa.Table,
    rep_tables: dict[str, Path],
    *,
    expect_dims: dict[str, int] | None = None,
    expect_model_version: str | None = None,
) -> Joined:
    """``transfer.join_representations`` of every row of ``table`` (e.g. one split of all
    scenarios); a row's vectors depend only on its own ids and day, so a slice of the
    result equals the join of the sliced rows."""
    vecs, present = join_representations(
        table, rep_tables, expect_dim=expect_dims, expect_model_version=expect_model_version
    )
    return Joined(vecs, present)


def smallest_scenario(table: pa.Table, spec: DatasetSpec) -> int:
    """Scenario of ``spec`` with the fewest (but > 0) rows in ``table``."""
    counts = {int(s): 0 for s in spec.scenarios}
    vc = pc.value_counts(table[CANONICAL_SCENARIO])
    for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
        counts[int(v)] = c
    nonempty = {s: c for s, c in counts.items() if c > 0}
    if not nonempty:
        raise ValueError("no training rows in any scenario")
    return min(nonempty, key=lambda s: (nonempty[s], s))


def build_scenario_data(
    tables: dict[str, pa.Table],
    spec: DatasetSpec,
    rep_tables: dict[str, Path],
    *,
    min_count: int = 1,
    max_vocab: int | None = None,
    expect_dims: dict[str, int] | None = None,
    expect_model_version: str | None = None,
    encoder: FeatureEncoder | None = None,
    joined: dict[str, Joined] | None = None,
) -> ScenarioData:
    """``tables``: 'train'/'valid'/'test' canonical rows of one scenario -> tensors.

    Vocabularies are fitted on train only (valid/test ids unseen in train map to OOV,
    as they would in serving), unless ``encoder`` is given (e.g. a checkpoint's, for
    module-level transfer). Every split is joined point-in-time with ``rep_tables``, or
    ``joined[split]`` is that join already done (:func:`join_once` sliced to these rows).
    """
    for name in ("train", "valid", "test"):
        if tables[name].num_rows == 0:
            raise ValueError(f"the {name} split of the scenario has no rows")
    encoder = encoder or FeatureEncoder.fit(tables["train"], spec, min_count=min_count, max_vocab=max_vocab)
    splits: dict[str, Split] = {}
    rep_dims: dict[str, int] = {}
    coverage: dict[str, float] = {}
    for name in ("train", "valid", "test"):
        t = tables[name]
        batch = encoder.encode(t)
        if rep_tables:
            if joined is not None:
                vecs, present = joined[name].vectors, joined[name].present
                if set(vecs) != set(rep_tables) or any(len(v) != t.num_rows for v in vecs.values()):
                    raise ValueError(f"joined vectors of the {name} split do not match its rows / tables")
            else:
                vecs, present = join_representations(
                    t, rep_tables, expect_dim=expect_dims, expect_model_version=expect_model_version
                )
            for rep, v in vecs.items():
                batch[REP_PREFIX + rep] = torch.from_numpy(v)
                batch[PRESENT_PREFIX + rep] = torch.from_numpy(present[rep])
                rep_dims[rep] = v.shape[1]
                if name == "test":
                    coverage[rep] = float(np.mean(present[rep]))
        splits[name] = Split(batch, sorted(pc.unique(t["ds"]).to_pylist()))
    return ScenarioData(encoder, splits["train"], splits["valid"], splits["test"], rep_dims, coverage)


def read_splits(
    log_path: str | Path, train_days: list[str], valid_days: list[str], test_days: list[str]
) -> dict[str, pa.Table]:
    """Canonical rows of each split's days (days must not overlap)."""
    from datasources import read_log

    overlap = (set(train_days) & set(valid_days)) | (set(train_days) | set(valid_days)) & set(test_days)
    if overlap:
        raise ValueError(f"day(s) {sorted(overlap)} are in more than one split")
    return {
        "train": read_log(log_path, train_days),
        "valid": read_log(log_path, valid_days),
        "test": read_log(log_path, test_days),
    }


def rep_table_paths(tables_root: str | Path | None, representations: list[str]) -> dict[str, Path]:
    """Table name -> ``RunLayout(tables_root).table(name)``."""
    if not representations:
        return {}
    if tables_root is None:
        raise ValueError("representations requested but no tables root given")
    layout = RunLayout(tables_root)
    return {name: layout.table(name) for name in representations}


def resolve_scenario(raw_train: pa.Table, spec: DatasetSpec, scenario: int | None) -> int:
    if scenario is None:
        return smallest_scenario(raw_train, spec)
    if scenario not in {int(s) for s in spec.scenarios}:
        raise ValueError(f"scenario {scenario} is not in the log's scenarios {sorted(spec.scenarios)}")
    return scenario


def load_scenario(
    log_path: str | Path,
    tables_root: str | Path | None,
    spec: DatasetSpec,
    scenario: int | None,
    sample_type: str,
    representations: list[str],
    train_days: list[str],
    valid_days: list[str],
    test_days: list[str],
    **kwargs,
) -> tuple[int, ScenarioData]:
    """Read the days from the canonical log, keep one scenario, join and encode."""
    raw = read_splits(log_path, train_days, valid_days, test_days)
    scenario = resolve_scenario(raw["train"], spec, scenario)
    tables = {k: select_rows(v, scenario, sample_type) for k, v in raw.items()}
    rep_tables = rep_table_paths(tables_root, representations)
    return scenario, build_scenario_data(tables, spec, rep_tables, **kwargs)
