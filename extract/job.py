"""``extract_days`` / ``extract_day``: days of the log -> sample-level UR/IR/CR shards, exactly once.

Plan (driver, nothing written): check the checkpoint against the log's schema, the
requested layers against the manifest, and that every day has rows; split each day's
Parquet files (listed by delta-rs from the Delta log) into work units (:mod:`extract.units`). Run (ONE Ray Data
job for all days): a dataset of unit *packets*, ``map_batches`` with
:class:`extract.worker.ExtractWorker` in an actor pool; each unit becomes one shard named
``part-<hash of the file name>-<first row group>-<first row>.parquet`` inside that day's
``.<out>.inprogress-<fingerprint>/``. Finish (per day): count rows against the input,
write ``_health.json`` and the ``_SUCCESS`` marker, rename the folder into place.

Why units rather than ``read_parquet`` blocks: Ray Data's block boundaries and write
file names are not a function of the input, so a killed run could not resume without
duplicates. A unit's shard name is, so a rerun skips finished units and the final
folder is the same set of shards. The feature columns also never pass through the
object store: only the unit descriptions do.

Why packets and one job for many days: a Ray Data job costs seconds of fixed start-up and
every block a scheduling round trip; a MovieLens day is ~500 rows. Consecutive small row
groups of a file form one unit, and units (of any days) are packed into packets (one per
actor for a pool of one, two per actor otherwise), so a 200-day backfill is a handful of
blocks in one job, and the slices of a big row group are decoded in one pass.
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
from extract.units import pack_units, packet_rows, plan_units
from extract.worker import ID_COLUMNS, IR, UR, open_parquet


@dataclass
class ExtractResult:
    """What extraction did for one day (``seconds``: the whole call that extracted it)."""

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


@dataclass
class _DayPlan:
    ds: str
    out_dir: Path
    units: list[dict]
    total: int
    fingerprint: str
    work: Path | None = None
    todo: list[dict] = field(default_factory=list)


@dataclass
class ExtractJob:
    """One call of :func:`extract_days`: its checked inputs, the days to extract and, once
    run, the rows the actors returned (one per unit written: :class:`extract.worker.ExtractWorker`)."""

    checkpoint_dir: Path
    cfg: ExtractConfig
    manifest: CheckpointManifest
    layers: list[str]
    log_version: int
    days: list[str]
    plans: list[_DayPlan]  # the days to extract
    skipped: dict[str, ExtractResult]  # the days already extracted with the same inputs
    started: float  # time.perf_counter() when the call began
    reports: list[dict] = field(default_factory=list)


def read_manifest(checkpoint_dir: Path) -> CheckpointManifest:
    """The checkpoint folder's manifest; FileNotFoundError naming the folder when it has none."""
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
    return extract_days(checkpoint_dir, log_path, [ds], {ds: Path(out_dir)}, cfg)[ds]


def extract_days(
    checkpoint_dir: str | Path,
    log_path: str | Path,
    days: list[str],
    out_dirs: dict[str, Path],
    cfg: ExtractConfig | None = None,
) -> dict[str, ExtractResult]:
    """:func:`extract_day` for several days in ONE Ray Data job (one actor pool start-up).

    ``out_dirs[d]`` is day ``d``'s output folder. Every day is checked before anything is
    written (a bad day fails the whole call); finished days are skipped unless
    ``cfg.force``; each remaining day is finalised (row count, health, ``_SUCCESS``, atomic
    rename) exactly as :func:`extract_day` does. Returns ds -> result, in ``days`` order.
    The steps (:func:`plan_job`, :func:`prepare_job`, :func:`run_job`, :func:`finish_job`)
    are public so that ``benchmarks/extract.py`` can time each one.
    """
    job = plan_job(checkpoint_dir, log_path, days, out_dirs, cfg)
    prepare_job(job)
    run_job(job)
    return finish_job(job)


def plan_job(
    checkpoint_dir: str | Path,
    log_path: str | Path,
    days: list[str],
    out_dirs: dict[str, Path],
    cfg: ExtractConfig | None = None,
) -> ExtractJob:
    """Check every input and plan every day (reads footers only; nothing written)."""
    from datasources import read_log_spec

    started = time.perf_counter()
    cfg = cfg or ExtractConfig()
    checkpoint_dir = Path(checkpoint_dir).resolve()
    if len(set(days)) != len(days):
        raise ValueError(f"days {days}: each day at most once")
    missing = [d for d in days if d not in out_dirs]
    if missing:
        raise ValueError(f"out_dirs has no folder for day(s) {missing}")
    outs = {d: Path(out_dirs[d]).resolve() for d in days}
    if len(set(outs.values())) != len(outs):
        raise ValueError("out_dirs: two days share one output folder")
    manifest = read_manifest(checkpoint_dir)
    manifest.check_compatible(read_log_spec(log_path), source=f"log {log_path}")
    layers = resolve_layers(manifest, cfg.layers)
    log_days = set(delta_io.list_days(log_path))
    log_version = delta_io.open_table(log_path).version()

    plans, skipped = [], {}
    for ds in days:
        if ds not in log_days:
            raise ValueError(f"{log_path}: no rows for ds={ds!r}; nothing extracted")
        uris = delta_io.day_file_uris(log_path, ds)
        units, total = plan_units(uris, cfg.rows_per_unit)
        if total == 0:
            raise ValueError(f"{log_path}: ds={ds!r} has files but no rows; nothing extracted")
        _check_log_columns(units[0]["uri"], manifest)
        fingerprint = hashlib.sha256(
            json.dumps(
                [
                    manifest.model_version,
                    manifest.config_hash,
                    ds,
                    layers,
                    cfg.rows_per_unit,
                    sorted(Path(u).name for u in uris),
                ]
            ).encode()
        ).hexdigest()[:16]
        out_dir = outs[ds]
        if (out_dir / MARKER).is_file() and not cfg.force:
            marker = read_marker(out_dir)
            if marker.fingerprint == fingerprint:
                health = json.loads((out_dir / HEALTH).read_text()) if (out_dir / HEALTH).is_file() else {}
                skipped[ds] = ExtractResult(
                    ds, out_dir, marker.rows, marker.shards, layers, manifest.model_version, skipped=True, health=health
                )
                continue
        plans.append(_DayPlan(ds, out_dir, units, total, fingerprint))

    if plans and cfg.num_gpus > 0:
        _check_gpus(cfg)
    return ExtractJob(checkpoint_dir, cfg, manifest, layers, log_version, list(days), plans, skipped, started)


def prepare_job(job: ExtractJob) -> None:
    """Prepare each day's in-progress folder, keeping the shards a killed run finished."""
    for p in job.plans:
        p.out_dir.parent.mkdir(parents=True, exist_ok=True)
        p.work = p.out_dir.parent / f".{p.out_dir.name}.inprogress-{p.fingerprint}"
        for stale in p.out_dir.parent.glob(f".{p.out_dir.name}.inprogress-*"):
            if stale != p.work:  # left by a run with other inputs: its shards are not ours
                shutil.rmtree(stale, ignore_errors=True)
        if job.cfg.force and p.work.exists():
            shutil.rmtree(p.work)
        p.work.mkdir(exist_ok=True)
        for tmp in [*p.work.glob("*.tmp"), *p.work.glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
        done = {f.name for f in p.work.glob("part-*.parquet")}
        p.todo = [{**u, "out": str(p.work)} for u in p.units if u["shard"] not in done]


def run_job(job: ExtractJob) -> None:
    """The units still to do, in ONE Ray Data job; keeps the actors' rows in ``job.reports``."""
    todo = [u for p in job.plans for u in p.todo]
    job.reports = _run_units(job.checkpoint_dir, job.layers, todo, job.cfg) if todo else []


def finish_job(job: ExtractJob) -> dict[str, ExtractResult]:
    """Finalise each extracted day (row count, health, ``_SUCCESS``, atomic rename);
    ds -> result for every day of the call, in its order."""
    from extract.health import STATS_DIR, samples_health

    manifest, layers, results = job.manifest, job.layers, dict(job.skipped)
    dims = {"ur": manifest.layer(UR).dim, "ir": manifest.layer(IR).dim}
    dims.update({layer_column(l, i == 0): manifest.layer(l).dim for i, l in enumerate(layers)})
    for p in job.plans:
        work = p.work
        shards = sorted(u["shard"] for u in p.units)
        present = sorted(f.name for f in work.glob("part-*.parquet"))
        if present != shards:
            raise RuntimeError(f"{work}: expected shards {shards[:3]}..., found {present[:3]}... ({len(present)})")
        rows = sum(pq.read_metadata(work / s).num_rows for s in shards)
        if rows != p.total:
            raise RuntimeError(f"{work}: shards hold {rows} rows, the log day has {p.total}; not published")
        health = samples_health(work, dims, log_rows=p.total, shards=shards)
        (work / HEALTH).write_text(json.dumps(health, indent=1))
        shutil.rmtree(work / STATS_DIR, ignore_errors=True)  # merged into _health.json
        SamplesMarker(
            ds=p.ds,
            rows=rows,
            model_version=manifest.model_version,
            log_version=job.log_version,
            layers={l: layer_column(l, i == 0) for i, l in enumerate(layers)},
            dims=dims,
            shards=shards,
            fingerprint=p.fingerprint,
        ).write(work)
        if p.out_dir.exists():
            trash = p.out_dir.parent / f".{p.out_dir.name}.old-{p.fingerprint}"
            shutil.rmtree(trash, ignore_errors=True)
            p.out_dir.rename(trash)
            work.rename(p.out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            work.rename(p.out_dir)
        results[p.ds] = ExtractResult(
            p.ds,
            p.out_dir,
            rows,
            shards,
            layers,
            manifest.model_version,
            resumed_shards=len(p.units) - len(p.todo),
            health=health,
        )
    seconds = time.perf_counter() - job.started
    for r in results.values():
        r.seconds = seconds
    return {d: results[d] for d in job.days}


def _check_gpus(cfg: ExtractConfig) -> None:
    """GPUs requested per actor must exist in the Ray cluster (else Ray Data would wait for
    them forever); checked before anything is written."""
    import ray

    from engines import ensure_ray

    ensure_ray(cfg.ray_address)
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if gpus < cfg.num_gpus:
        raise ValueError(
            f"extract: num_gpus={cfg.num_gpus:g} per actor, but the Ray cluster has {gpus:g} GPU(s); "
            "set num_gpus: 0 to run on CPU"
        )


def _run_units(checkpoint_dir: Path, layers: list[str], units: list[dict], cfg: ExtractConfig) -> list[dict]:
    """Run ``units`` through ONE actor-pool job; returns the row each unit's actor returned."""
    import ray

    from engines import ensure_ray
    from extract.worker import ExtractWorker

    ensure_ray(cfg.ray_address)
    threads = cfg.torch_threads or max(1, round(cfg.num_cpus))
    total = sum(u["stop"] - u["start"] for u in units)
    packets = pack_units(units, packet_rows(total, cfg.actor_pool_size))
    items = [{"packet": json.dumps(p)} for p in packets]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    out = dataset.map_batches(
        ExtractWorker,
        fn_constructor_kwargs=dict(
            checkpoint_dir=str(checkpoint_dir),
            layers=layers,
            batch_size=cfg.batch_size,
            torch_threads=threads,
            use_gpu=cfg.num_gpus > 0,
        ),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(cfg.actor_pool_size, len(items))),
        num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus,
    )
    from engines.progress import report_progress

    # streamed rather than take_all(): a progress record (rows, ETA in the CLI) per finished unit
    written, done = [], 0
    for row in out.iter_rows():
        written.append(row)
        done += int(row["rows"])
        report_progress("extract.rows", done, total)
    if len(written) != len(units):
        raise RuntimeError(f"{len(written)} of {len(units)} units reported back")
    return written
