"""``extract_day``: one day of the log -> sample-level UR/IR/CR shards, exactly once.

Plan (driver, nothing written): check the checkpoint against the log's schema, the
requested layers against the manifest, and that the day has rows; split the day's
Parquet files (listed by delta-rs from the Delta log) into work units of whole row
groups. Run (Ray Data): a dataset of units, ``map_batches`` with
:class:`extract.worker.ExtractWorker` in an actor pool; each unit becomes one shard named
``part-<hash of the file name>-<first row group>.parquet`` inside
``.<out>.inprogress-<fingerprint>/``. Finish: count rows against the input, write
``_health.json`` and the ``_SUCCESS`` marker, rename the folder into place.

Why units rather than ``read_parquet`` blocks: Ray Data's block boundaries and write
file names are not a function of the input, so a killed run could not resume without
duplicates. A unit's shard name is, so a rerun skips finished units and the final
folder is byte-for-byte the same set of shards. The feature columns also never pass
through the object store: only the unit descriptions do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from contracts import CheckpointManifest
from contracts.checkpoint import MANIFEST_FILE
from engines import delta_io
from extract.config import ExtractConfig
from extract.samples import HEALTH, MARKER, SamplesMarker, layer_column, read_marker
from extract.worker import ID_COLUMNS, IR, UR, open_parquet


@dataclass
class ExtractResult:
    """What one ``extract_day`` call did."""

    ds: str
    out_dir: Path
    rows: int
    shards: list[str]
    layers: list[str]
    model_version: str
    skipped: bool = False
    resumed_shards: int = 0
    seconds: float = 0.0
    health: dict = field(default_factory=dict)


def _read_manifest(checkpoint_dir: Path) -> CheckpointManifest:
    path = checkpoint_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {checkpoint_dir} is not a checkpoint folder")
    return CheckpointManifest.model_validate_json(path.read_text())


def resolve_layers(manifest: CheckpointManifest, layers: list[str] | None) -> list[str]:
    """Requested CR layers (default: the manifest's); ValueError listing the valid names."""
    layers = list(layers) if layers else [manifest.default_cr_layer]
    valid = [l.name for l in manifest.layers if l.kind == "CR"]
    unknown = [l for l in layers if l not in valid]
    if unknown:
        raise ValueError(f"unknown CR layer(s) {unknown} for model {manifest.model_version}; valid: {valid}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers}: each layer at most once")
    return layers


def plan_units(uris: list[str], rows_per_unit: int) -> tuple[list[dict], int]:
    """Work units and the day's row count. A unit is rows [start, stop) of one row group
    (at most ``rows_per_unit``); its shard name depends only on the file name, the row
    group and ``start``, so the same input always gives the same shards."""
    units, total = [], 0
    for uri in sorted(uris):
        md = open_parquet(uri).metadata
        tag = hashlib.sha1(Path(uri).name.encode()).hexdigest()[:12]
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            total += n
            for start in range(0, n, rows_per_unit):
                units.append({"uri": uri, "row_group": g, "start": start, "stop": min(n, start + rows_per_unit),
                              "shard": f"part-{tag}-{g:04d}-{start:09d}.parquet"})
    return units, total


def _check_log_columns(uri: str, manifest: CheckpointManifest) -> None:
    names = set(open_parquet(uri).schema_arrow.names)
    spec = manifest.dataset
    needed = [*spec.categorical_columns, "scenario", "sample_type", "hist_seq", *ID_COLUMNS]
    missing = sorted(set(needed) - names)
    if missing:
        raise ValueError(f"{uri}: log file lacks column(s) {missing} the model {manifest.model_version} needs")


def extract_day(
    checkpoint_dir: str | Path,
    log_path: str | Path,
    ds: str,
    out_dir: str | Path,
    cfg: ExtractConfig | None = None,
) -> ExtractResult:
    """Extract UR, IR and CR (``cfg.layers``) for every sample of day ``ds``.

    ``out_dir`` is normally ``RunLayout.samples(ds)``. A finished day with the same
    inputs (checkpoint, the day's files, layers) is skipped unless ``cfg.force``. Bad
    input (schema mismatch, unknown layer, empty day) raises before anything is written.
    """
    from datasources import read_log_spec

    t0 = time.perf_counter()
    cfg = cfg or ExtractConfig()
    checkpoint_dir, out_dir = Path(checkpoint_dir).resolve(), Path(out_dir).resolve()
    manifest = _read_manifest(checkpoint_dir)
    manifest.check_compatible(read_log_spec(log_path), source=f"log {log_path}")
    layers = resolve_layers(manifest, cfg.layers)
    if ds not in delta_io.list_days(log_path):
        raise ValueError(f"{log_path}: no rows for ds={ds!r}; nothing extracted")
    uris = delta_io.day_file_uris(log_path, ds)
    units, total = plan_units(uris, cfg.rows_per_unit)
    if total == 0:
        raise ValueError(f"{log_path}: ds={ds!r} has files but no rows; nothing extracted")
    _check_log_columns(units[0]["uri"], manifest)

    fingerprint = hashlib.sha256(json.dumps(
        [manifest.model_version, manifest.config_hash, ds, layers, cfg.rows_per_unit,
         sorted(Path(u).name for u in uris)]).encode()).hexdigest()[:16]
    if (out_dir / MARKER).is_file() and not cfg.force:
        marker = read_marker(out_dir)
        if marker.fingerprint == fingerprint:
            health = json.loads((out_dir / HEALTH).read_text()) if (out_dir / HEALTH).is_file() else {}
            return ExtractResult(ds, out_dir, marker.rows, marker.shards, layers, manifest.model_version,
                                 skipped=True, seconds=time.perf_counter() - t0, health=health)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".{out_dir.name}.inprogress-{fingerprint}"
    for stale in out_dir.parent.glob(f".{out_dir.name}.inprogress-*"):
        if stale != work:  # left by a run with other inputs: its shards are not ours
            shutil.rmtree(stale, ignore_errors=True)
    if cfg.force and work.exists():
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)
    for tmp in work.glob("*.tmp"):
        tmp.unlink()
    done = {p.name for p in work.glob("part-*.parquet")}
    todo = [u for u in units if u["shard"] not in done]
    if todo:
        _run_units(checkpoint_dir, layers, todo, work, cfg)

    shards = sorted(u["shard"] for u in units)
    present = sorted(p.name for p in work.glob("part-*.parquet"))
    if present != shards:
        raise RuntimeError(f"{work}: expected shards {shards[:3]}..., found {present[:3]}... ({len(present)})")
    rows = sum(pq.read_metadata(work / s).num_rows for s in shards)
    if rows != total:
        raise RuntimeError(f"{work}: shards hold {rows} rows, the log day has {total}; not published")

    from extract.health import samples_health

    dims = {"ur": manifest.layer(UR).dim, "ir": manifest.layer(IR).dim}
    dims.update({layer_column(l, i == 0): manifest.layer(l).dim for i, l in enumerate(layers)})
    health = samples_health(work, dims, log_rows=total)
    (work / HEALTH).write_text(json.dumps(health, indent=1))
    marker = SamplesMarker(
        ds=ds, rows=rows, model_version=manifest.model_version, log_version=delta_io.open_table(log_path).version(),
        layers={l: layer_column(l, i == 0) for i, l in enumerate(layers)}, dims=dims, shards=shards,
        fingerprint=fingerprint,
    )
    marker.write(work)
    if out_dir.exists():
        trash = out_dir.parent / f".{out_dir.name}.old-{fingerprint}"
        shutil.rmtree(trash, ignore_errors=True)
        out_dir.rename(trash)
        work.rename(out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        work.rename(out_dir)
    return ExtractResult(ds, out_dir, rows, shards, layers, manifest.model_version,
                         resumed_shards=len(units) - len(todo), seconds=time.perf_counter() - t0, health=health)


def _run_units(checkpoint_dir: Path, layers: list[str], units: list[dict], work: Path, cfg: ExtractConfig) -> None:
    import ray

    from engines import ensure_ray
    from extract.worker import ExtractWorker

    ensure_ray(cfg.ray_address)
    threads = cfg.torch_threads or max(1, round(cfg.num_cpus))
    dataset = ray.data.from_items(units, override_num_blocks=len(units))
    out = dataset.map_batches(
        ExtractWorker,
        fn_constructor_kwargs=dict(
            checkpoint_dir=str(checkpoint_dir), layers=layers, batch_size=cfg.batch_size,
            torch_threads=threads, out_dir=str(work), use_gpu=cfg.num_gpus > 0,
        ),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(cfg.actor_pool_size, len(units))),
        num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus,
    )
    written = out.take_all()
    if len(written) != len(units):
        raise RuntimeError(f"{work}: {len(written)} of {len(units)} units reported back")
