"""The rollover's table I/O: find a model version's table, read the same-day fitting pairs,
write the aligned snapshot and the map file beside it.

Layout (``tables_root`` is a run's ``tables/`` folder; see :func:`table_for_version`):

- the new version's table: ``<name>__<new_version>`` or ``<name>`` (whichever holds it);
- the old version's table: the same lookup in ``old_tables_root`` (default: tables_root);
- the aligned output: ``<name>__aligned_<old_version>`` in ``tables_root``, a normal
  representation table (schema of ``name``) whose rows and properties say
  ``model_version = <old_version>``: an old consumer reading it with
  ``read_asof(..., expect_model_version=<old>)`` works unchanged; only its path changes.
- the fitted map of each day beside it: ``<aligned table>/_alignment/ds=<ds>.json``
  (Delta readers see only files its log references; delta-rs vacuum left it alone when checked).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from contracts import REPRESENTATION_TABLES, TableProperties
from engines import delta_io
from extract.vectors import normalise, to_arrow, to_numpy
from pipelines.rollover_align import AlignMap

ALIGN_DIR = "_alignment"


class RolloverError(ValueError):
    """An alignment was refused (too few shared entities, residual too high, missing
    snapshot); nothing was published."""


def aligned_table_name(name: str, old_model_version: str) -> str:
    return f"{name}__aligned_{old_model_version}"


def map_path(aligned_table: str | Path, ds: str) -> Path:
    """The map file of partition ``ds`` of an aligned table."""
    return Path(aligned_table) / ALIGN_DIR / f"ds={ds}.json"


def table_for_version(tables_root: str | Path, name: str, model_version: str) -> Path:
    """The table of ``name`` written by ``model_version`` under ``tables_root``:
    ``<name>__<version>`` if it exists, else ``<name>`` when its properties name that version."""
    root = Path(tables_root)
    tried = []
    for path in (root / f"{name}__{model_version}", root / name):
        if delta_io.exists(path):
            props = TableProperties.from_delta(delta_io.table_configuration(path))
            if props.source_checkpoint == model_version:
                return path
            tried.append(f"{path} (model_version {props.source_checkpoint!r})")
        else:
            tried.append(f"{path} (absent)")
    raise RolloverError(f"no {name} table of model version {model_version!r}: tried {'; '.join(tried)}")


def vectors(table: pa.Table, col: str = "vector") -> np.ndarray:
    """A list<float> column -> [N, d] float64 (:func:`extract.vectors.to_numpy`)."""
    return to_numpy(table[col], dtype=np.float64)


def shared_rows(old: pa.Table, new: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """Row indices (into old, into new) of the entity ids both hold, sorted by id."""
    old_ids = np.asarray(old["entity_id"].to_pylist(), dtype=object).astype(str)
    new_ids = np.asarray(new["entity_id"].to_pylist(), dtype=object).astype(str)
    _, io, inew = np.intersect1d(old_ids, new_ids, assume_unique=True, return_indices=True)
    return io, inew, len(io)


@dataclass
class AlignSources:
    """What one aligned publish of (table, ds) reads: both versions' tables, the new
    version's ``ds`` snapshot (the rows to align) and the old version's latest snapshot
    at or before ``ds`` (day ``d_old``)."""

    ds: str
    new_path: Path
    old_path: Path
    new_props: TableProperties
    old_props: TableProperties
    new_snap: pa.Table
    old_snap: pa.Table
    d_old: str
    new_days: list[str]  # every day the new version published


def read_sources(
    root: Path, name: str, ds: str, new_model_version: str, old_model_version: str, old_tables_root: Path
) -> AlignSources:
    """Both versions' tables and snapshots; :class:`RolloverError` when one is missing."""
    from extract import read_asof

    new_path = table_for_version(root, name, new_model_version)
    old_path = table_for_version(old_tables_root, name, old_model_version)
    new_props = TableProperties.from_delta(delta_io.table_configuration(new_path))
    old_props = TableProperties.from_delta(delta_io.table_configuration(old_path))
    if ds not in delta_io.list_days(new_path):
        raise RolloverError(f"{new_path}: no ds={ds} snapshot of the new version to align; nothing published")
    new_snap = delta_io.read_days(new_path, [ds])
    old_snap = read_asof(old_path, ds, inclusive=True, expect_model_version=old_model_version)
    if old_snap.num_rows == 0:
        raise RolloverError(f"{old_path}: no snapshot at or before {ds} of the old version; nothing published")
    d_old = old_snap["ds"][0].as_py()
    return AlignSources(
        ds, new_path, old_path, new_props, old_props, new_snap, old_snap, d_old, delta_io.list_days(new_path)
    )


def fitting_rows(
    src: AlignSources, pairs: list[tuple[str, str]], name: str, versions: tuple[str, str], min_shared_entities: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of the entities both versions hold in each (old day, new day) pair, pooled:
    old [N, d_old], new [N, d_new] and each row's ``sample_count`` [N] in the new day.
    The latest pair is read first and must share ``min_shared_entities`` entities, else
    :class:`RolloverError`; ``versions`` is (new model version, old model version)."""
    new_model_version, old_model_version = versions
    old_rows, new_rows, counts = [], [], []
    for k, (do, dn) in enumerate(reversed(pairs)):  # latest pair first: it is the one min_shared_entities checks
        o = src.old_snap if do == src.d_old else delta_io.read_days(src.old_path, [do])
        n = src.new_snap if dn == src.ds else delta_io.read_days(src.new_path, [dn])
        io, inew, n_shared = shared_rows(o, n)
        if k == 0 and n_shared < min_shared_entities:
            raise RolloverError(
                f"{name} ds={src.ds}: only {n_shared} entities are in both the old ({old_model_version}, ds={do}) "
                f"and new ({new_model_version}, ds={dn}) snapshots, need min_shared_entities="
                f"{min_shared_entities}; nothing published"
            )
        old_rows.append(vectors(o)[io])
        new_rows.append(vectors(n)[inew])
        # the rows each entity stands for, in the day the pair comes from
        counts.append(np.asarray(n["sample_count"].to_numpy(), dtype=np.float64)[inew])
    return np.concatenate(old_rows), np.concatenate(new_rows), np.concatenate(counts)


def aligned_rows(src: AlignSources, name: str, amap: AlignMap, old_model_version: str) -> pa.Table:
    """The new ``ds`` snapshot mapped into the old space, in the old table's normalisation,
    its rows saying ``model_version = old_model_version``."""
    snap = src.new_snap
    cols = {
        "entity_id": snap["entity_id"],
        "ds": snap["ds"],
        "model_version": pa.array([old_model_version] * snap.num_rows, pa.string()),
        "layer": snap["layer"],
        "vector": to_arrow(normalise(amap.apply(vectors(snap)), src.old_props.normalisation)),
        "updated_at": snap["updated_at"],
        "sample_count": snap["sample_count"],
    }
    if REPRESENTATION_TABLES[name].has_state:
        # a derived table is never continued incrementally; the sum gets the linear part
        cols["decayed_sum"] = to_arrow(amap.apply_linear(vectors(snap, "decayed_sum")))
    return pa.table(cols)


@dataclass
class AlignResult:
    """One aligned publish: the output table, its version, and the map's figures."""

    table: Path
    version: int | None  # None: already published, skipped
    residual: float
    n_shared: int
    fit_ds_old: str
    fit_ds_new: str
    rows: int
    applied_residual: float | None = None  # the map's own residual, with its scale (AlignMap)

    def to_dict(self) -> dict:
        return {
            "table": str(self.table),
            "version": self.version,
            "residual": self.residual,
            "applied_residual": self.applied_residual,
            "n_shared": self.n_shared,
            "fit_ds_old": self.fit_ds_old,
            "fit_ds_new": self.fit_ds_new,
            "rows": self.rows,
        }

    @classmethod
    def from_map_file(cls, out: Path, path: Path) -> "AlignResult":
        """The result recorded by an earlier publish (``version`` None: skipped)."""
        m = json.loads(path.read_text())
        return cls(
            out,
            None,
            m["map"]["residual"],
            m["map"]["n_fit"],
            m["fit_ds_old"],
            m["fit_ds_new"],
            m["rows"],
            m["map"].get("applied_residual"),
        )


def publish_aligned_rows(
    out: Path,
    name: str,
    ds: str,
    src: AlignSources,
    amap: AlignMap,
    pairs: list[tuple[str, str]],
    versions: tuple[str, str],
    config_hash: str,
) -> AlignResult:
    """Publish the aligned ``ds`` snapshot into ``out`` (properties of the old table, model
    version and ``config_hash`` of the map), then write its map file; ``versions`` is
    (new model version, old model version)."""
    from extract import publish

    new_model_version, old_model_version = versions
    props = TableProperties(
        dim=src.old_props.dim,
        normalisation=src.old_props.normalisation,
        source_checkpoint=old_model_version,
        config_hash=config_hash,
        tau_seconds=src.old_props.tau_seconds,
    )
    rows = src.new_snap.num_rows
    version = publish(out, name, ds, aligned_rows(src, name, amap, old_model_version), props)
    fit_ds_new = pairs[-1][1]
    _write_map(
        map_path(out, ds),
        {
            "table": name,
            "ds": ds,
            "new_model_version": new_model_version,
            "old_model_version": old_model_version,
            "new_table": str(src.new_path),
            "old_table": str(src.old_path),
            "fit_ds_old": src.d_old,
            "fit_ds_new": fit_ds_new,
            "fit_pairs": pairs,
            "rows": rows,
            "delta_version": version,
            "map": json.loads(amap.to_json()),
        },
    )
    return AlignResult(out, version, amap.residual, amap.n_fit, src.d_old, fit_ds_new, rows, amap.applied_residual)


def _write_map(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)  # readers see the old map or the new one, never a partial file


def read_map(aligned_table: str | Path, ds: str) -> AlignMap:
    """The map used for partition ``ds`` of an aligned table."""
    return AlignMap.from_json(json.dumps(json.loads(map_path(aligned_table, ds).read_text())["map"]))
