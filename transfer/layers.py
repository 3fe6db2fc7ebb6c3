"""CR(u)/CR(i) tables per CR layer, for the per-layer rows of the transfer table.

The daily job publishes CR(u)/CR(i) of one layer (the manifest's default). To compare
layers (LFM4Ads' layer study), each candidate layer gets its own CR tables under
``run_root/layers/<layer>/tables/{user_cr,item_cr}`` (a :class:`contracts.RunLayout`
root per layer); UR and IR do not depend on the CR layer and stay the daily tables.

Extraction uses the extraction stage's public API (``extract.extract_days`` with
``layers``, only when the daily samples lack a layer) and every snapshot is published
through ``extract.publish`` (contract schema, validation, atomic commit). The time
decayed sum itself is computed here in numpy instead of by ``extract.aggregate_day``
(Spark): on the shared 2-core machine one Spark aggregation of one layer and one day
took about 6 minutes under load, one numpy pass over all of a small log's days takes
seconds. The formula and its kernels (cutoff, decayed sum, normalisation, vector codec) are the
daily job's own (``extract.aggregate``, :mod:`extract.vectors`): at the cutoff ``c`` of day ``ds`` (end of the
UTC day), ``decayed_sum(e) = sum over e's samples before c of exp((t - c) / tau) * cr``,
``vector`` = its normalisation (the daily table's ``normalisation`` and ``tau``);
``tests/transfer/test_layers.py`` checks it against the Spark-published daily tables.

Shapes: ``N`` samples, ``d`` the layer's width, ``E`` entities.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contracts import REPRESENTATION_TABLES, RunLayout, TableProperties

# The daily job's own cutoff, decayed sum, normalisation and codec: one formula, not two.
from extract.aggregate_inputs import cutoff_seconds
from extract.vectors import TAU_SECONDS, decayed_snapshot, normalise, to_arrow, to_numpy

LAYERS_DIR = "layers"
LAYER_SAMPLES_DIR = "samples"
CR_TABLES = {"user_cr": "user_id", "item_cr": "item_id"}


def layer_root(run_root: str | Path, layer: str) -> Path:
    """The RunLayout root holding ``layer``'s CR tables."""
    return RunLayout(run_root).root / LAYERS_DIR / layer


def layer_rep_paths(run_root: str | Path, layer_dir: str | Path, reps: list[str]) -> dict[str, Path]:
    """Table paths for a downstream join: CR tables from ``layer_dir`` (a layer root),
    UR/IR from the daily tables of ``run_root``."""
    daily, lay = RunLayout(run_root), RunLayout(layer_dir)
    return {r: (lay.table(r) if r in CR_TABLES else daily.table(r)) for r in reps}


def _read_layer(samples_dir: Path, layer: str, sample_type: str | None = None) -> tuple[pa.Table, str] | None:
    """The day's samples with the layer's column (only ``sample_type`` ones when given: the
    daily CR tables fold ad samples only), or None when the day lacks the layer."""
    import pyarrow.compute as pc

    from extract.samples import read_marker

    marker = read_marker(samples_dir)
    if layer not in marker.layers:
        return None
    col = marker.layers[layer]
    cols = ["user_id", "item_id", "event_time", col] + (["sample_type"] if sample_type else [])
    rows = pa.concat_tables([pq.read_table(samples_dir / s, columns=cols) for s in marker.shards])
    if sample_type:
        rows = rows.filter(pc.equal(rows["sample_type"], sample_type)).drop(["sample_type"])
    return rows, col


def publish_layer_tables(
    run_root: str | Path,
    checkpoint: str | Path,
    layers: list[str],
    days: list[str],
    *,
    tau_seconds: float | None = None,
    normalisation: str | None = None,
    cr_samples: str = "ad",
) -> dict[str, Path]:
    """Publish CR(u) and CR(i) of every layer in ``layers`` for each of ``days``.

    ``tau_seconds``/``normalisation`` default to the daily ``user_cr`` table's, so a layer's
    tables differ from the daily ones only by the layer. The daily samples
    (``run_root/samples/ds=<d>``) are used where they hold the layer; otherwise every log
    day up to the last snapshot is extracted into ``layers/samples/ds=<d>`` first (one
    Ray Data job for all missing layers). Snapshots already published for this model
    version are skipped. ``cr_samples`` (``"ad"`` or ``"all"``) is the daily job's
    ``AggregateConfig.cr_samples``: which samples the CR states fold. Returns layer -> its
    RunLayout root.
    """
    from datasources import log_days
    from engines import delta_io
    from extract import ExtractConfig, already_published, extract_days, publish
    from pretrain import load_checkpoint

    layout = RunLayout(run_root)
    manifest = load_checkpoint(checkpoint).manifest
    mv = manifest.model_version
    valid = {li.name: li.dim for li in manifest.layers if li.kind == "CR"}
    unknown = [l for l in layers if l not in valid]
    if unknown:
        raise ValueError(f"unknown CR layer(s) {unknown} for model {mv}; valid: {sorted(valid)}")
    if not days:
        raise ValueError("publish_layer_tables: no days given")
    days = sorted(days)
    log_d = [d for d in log_days(layout.log) if d <= days[-1]]
    missing_days = [d for d in days if d not in log_d]
    if missing_days:
        raise ValueError(f"day(s) {missing_days} are not in the log {layout.log}")
    daily = layout.table("user_cr")
    base = TableProperties.from_delta(delta_io.table_configuration(daily)) if delta_io.exists(daily) else None
    tau = tau_seconds or (base.tau_seconds if base and base.tau_seconds else TAU_SECONDS)
    norm = normalisation or (base.normalisation if base else "l2")
    chash = hashlib.sha256(f"layers|{tau}|{norm}|{cr_samples}".encode()).hexdigest()[:16]

    todo = {
        l: [
            d
            for d in days
            if not all(already_published(layer_root(run_root, l) / "tables" / n, n, mv, d) for n in CR_TABLES)
        ]
        for l in layers
    }
    todo = {l: ds_ for l, ds_ in todo.items() if ds_}
    side = layout.root / LAYERS_DIR / LAYER_SAMPLES_DIR
    lacking = [l for l in todo if any(_read_layer(layout.samples(d), l) is None for d in log_d[:1])]
    if lacking:
        extract_days(
            checkpoint, layout.log, log_d, {x: side / f"ds={x}" for x in log_d}, ExtractConfig(layers=list(lacking))
        )
    for layer, snap_days in todo.items():
        src = side if layer in lacking else layout.samples(log_d[0]).parent
        parts = []
        for d in log_d:
            got = _read_layer(src / f"ds={d}", layer, None if cr_samples == "all" else cr_samples)
            if got is None:
                raise ValueError(f"{src / f'ds={d}'}: layer {layer!r} was not extracted")
            parts.append(got[0].rename_columns(["user_id", "item_id", "event_time", "cr"]))
        rows = pa.concat_tables(parts)
        t = rows["event_time"].cast(pa.int64()).to_numpy().astype(np.float64) / 1e6
        v = to_numpy(rows["cr"])
        if v.shape[1] != valid[layer]:
            raise ValueError(f"layer {layer}: samples of width {v.shape[1]}, the manifest says {valid[layer]}")
        props = TableProperties(
            dim=v.shape[1], normalisation=norm, source_checkpoint=mv, config_hash=chash, tau_seconds=tau
        )
        for d in snap_days:
            for name, key in CR_TABLES.items():
                ents, s, n, last = decayed_snapshot(
                    rows[key].to_numpy(zero_copy_only=False), t, v, cutoff_seconds(d), tau
                )
                schema = REPRESENTATION_TABLES[name].arrow_schema(v.shape[1])
                data = pa.table(
                    {
                        "entity_id": pa.array(ents.astype(str)),
                        "ds": pa.array([d] * len(ents)),
                        "model_version": pa.array([mv] * len(ents)),
                        "layer": pa.array([layer] * len(ents)),
                        "vector": to_arrow(normalise(s, norm)),
                        "updated_at": pa.array((last * 1e6).round().astype(np.int64), pa.timestamp("us", tz="UTC")),
                        "sample_count": pa.array(n.astype(np.int64)),
                        "decayed_sum": to_arrow(s),
                    }
                )
                publish(layer_root(run_root, layer) / "tables" / name, name, d, data.cast(schema), props)
    return {l: layer_root(run_root, l) for l in layers}
