"""Train the foundation model with Ray Train (``TorchTrainer``; CPU workers over gloo, or
one GPU per worker over NCCL with ``train.use_gpu``).

Flow: the driver checks the config (device, task names, warm start) -> fits the vocabulary
with a distributed count over the training days' Parquet files (``pretrain.vocab``: one Ray
task per file reads, validates and counts; the driver merges distinct values only, never
the training rows) -> reads the files' footers (``pretrain.stream.plan_files``) -> each
worker reads, encodes and trains on only its shard of each epoch (``pretrain.stream``:
disjoint, equal-size, rotating per epoch), with DDP, validation AUC each epoch (validation
arrays via the object store), a checkpoint per epoch from rank 0 (model, optimizer, best
weights, early-stopping state) -> the driver takes the best weights, computes diagnostics
and writes the version folder atomically. The training loop itself is the project's one
core (``pretrain.loop.run_epochs``), shared with downstream training.

This module is the driver's flow. The parts: the config checks (``pretrain.preflight``),
the trainer and its progress (``pretrain.ray_fit``), the worker body
(``pretrain.ray_worker``), the epoch checkpoints (``pretrain.run_state``), and one
replica's construction plus the plain loop without Ray (``pretrain.replica.fit_plain``).

Resume: an interrupted run leaves its epoch checkpoints under
``<checkpoint_root>/.runs/<run_key>/`` (run_key = hash of config, log, days). Re-running the
same command continues from the last epoch checkpoint and ends in the same state as an
uninterrupted run (seeded, per-epoch shards and shuffles). The folder is removed once the
version is written.

Reproducible by default (``train.deterministic``): seeds, deterministic torch ops and a
fixed thread count make the same config and log give the same weights on CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts import CheckpointManifest, DatasetSpec, config_hash
from contracts.dataset import CANONICAL_USER_ID, DS
from engines import ensure_ray
from engines.fault_points import fault_point
from pretrain.checkpoint import LoadedModel, save_checkpoint
from pretrain.config import PretrainConfig, TrainConfig
from pretrain.data import Arrays, to_arrays
from pretrain.diagnostics import effective_ranks, erank_plot, task_metrics
from pretrain.features import FeatureEncoder
from pretrain.model import FoundationModel
from pretrain.preflight import check_days, preflight
from pretrain.ray_fit import fit_with_ray_train
from pretrain.stream import FilePlan, log_files_for_days, plan_files, stream_columns_for
from pretrain.vocab import fit_vocabulary

RUNS_DIR = ".runs"  # <checkpoint_root>/.runs/<run_key>/: an unfinished run's epoch checkpoints

__all__ = ["prepare_training", "train_foundation_model", "train_on_tables"]

EncoderFit = Callable[[int, "int | None"], FeatureEncoder]


def train_foundation_model(
    cfg: PretrainConfig,
    log_path: str | Path,
    checkpoint_root: str | Path,
    train_days: list[str],
    valid_days: list[str],
    ray_address: str | None = None,
    *,
    _fail_after_epoch: int | None = None,
) -> tuple[CheckpointManifest, Path]:
    """Train on ``train_days`` of the canonical log, early-stop on ``valid_days``; write
    ``<checkpoint_root>/<model_version>/`` and return (manifest, folder).

    The training days are never read on the driver (only their footers and the vocabulary
    counts); the validation days are (they are scored every epoch).
    ``_fail_after_epoch`` is fault injection for tests (a worker raises after reporting
    that epoch's checkpoint).
    """
    from datasources import read_log, read_log_spec

    check_days(train_days, valid_days)
    log_path = Path(log_path)
    spec = read_log_spec(log_path).canonical()
    init = preflight(cfg, spec, Path(checkpoint_root))
    files = log_files_for_days(log_path, train_days)
    ensure_ray(ray_address)

    def fit_encoder(min_count: int, max_vocab: int | None) -> FeatureEncoder:
        return fit_vocabulary(files, spec, min_count, max_vocab, task_cpus=cfg.train.data_cpus)

    encoder = _encoder(cfg, init, fit_encoder)
    valid_tbl = read_log(log_path, valid_days)
    data_version = (
        f"{log_path.resolve()}@v{_log_version(log_path)} train={train_days[0]}..{train_days[-1]} "
        f"valid={valid_days[0]}..{valid_days[-1]}"
    )
    return _train(
        cfg,
        spec,
        init,
        encoder,
        plan_files(files),
        valid_tbl,
        Path(checkpoint_root),
        data_version,
        ray_address,
        _fail_after_epoch,
        (list(train_days), list(valid_days)),
    )


def prepare_training(
    log_path: str | Path,
    train_days: list[str],
    tcfg: TrainConfig,
    ray_address: str | None = None,
) -> tuple[FeatureEncoder, FilePlan, list[tuple[int, int]]]:
    """What the driver does before any worker starts, on the training days: the distributed
    vocabulary (validating every row in the Ray tasks), the file plan (footers) and epoch 0's
    shard ranges per worker. ``benchmarks.train --memory`` measures its driver memory."""
    from datasources import read_log_spec
    from pretrain.stream import shard_range

    spec = read_log_spec(Path(log_path)).canonical()
    files = log_files_for_days(log_path, train_days)
    ensure_ray(ray_address)
    encoder = fit_vocabulary(files, spec, tcfg.min_count, tcfg.max_vocab, task_cpus=tcfg.data_cpus)
    plan = plan_files(files)
    shards = [shard_range(plan.total_rows, 0, r, tcfg.num_workers) for r in range(tcfg.num_workers)]
    return encoder, plan, shards


def train_on_tables(
    cfg: PretrainConfig,
    spec: DatasetSpec,
    train_tbl: pa.Table,
    valid_tbl: pa.Table,
    checkpoint_root: str | Path,
    data_version: str,
    ray_address: str | None = None,
    *,
    train_files: list[str] | None = None,
    _fail_after_epoch: int | None = None,
) -> tuple[CheckpointManifest, Path]:
    """:func:`train_foundation_model` on tables already in memory (canonical columns).

    The vocabulary is fitted on ``train_tbl`` in this process. ``train_files``: Parquet
    files holding ``train_tbl``'s rows in stream order, which the workers read; None = the
    table is written to one temporary Parquet file under ``<checkpoint_root>/.runs/``."""
    spec = spec.canonical()
    checkpoint_root = Path(checkpoint_root)
    if train_tbl.num_rows == 0:
        raise ValueError(f"no training rows ({data_version})")
    if valid_tbl.num_rows == 0:
        raise ValueError(f"no validation rows ({data_version})")
    init = preflight(cfg, spec, checkpoint_root)

    def fit_encoder(min_count: int, max_vocab: int | None) -> FeatureEncoder:
        enc = FeatureEncoder.fit(train_tbl, spec, min_count, max_vocab)
        enc.encode(train_tbl)  # validation only: a bad row is named here, before any worker starts
        return enc

    encoder = _encoder(cfg, init, fit_encoder)
    tmp_rows = None
    if train_files is None:
        tmp_rows = checkpoint_root / RUNS_DIR / f"{_run_key(cfg, data_version)}.rows"
        tmp_rows.mkdir(parents=True, exist_ok=True)
        pq.write_table(train_tbl.select(stream_columns_for(spec)), tmp_rows / "train.parquet", row_group_size=16_384)
        train_files = [str(tmp_rows / "train.parquet")]
    try:
        ensure_ray(ray_address)
        return _train(
            cfg,
            spec,
            init,
            encoder,
            plan_files(train_files),
            valid_tbl,
            checkpoint_root,
            data_version,
            ray_address,
            _fail_after_epoch,
            (_days_of(train_tbl), _days_of(valid_tbl)),
        )
    finally:
        if tmp_rows is not None:
            shutil.rmtree(tmp_rows, ignore_errors=True)


def _encoder(cfg: PretrainConfig, init: LoadedModel | None, fit_encoder: EncoderFit) -> FeatureEncoder:
    if init is None:
        return fit_encoder(cfg.train.min_count, cfg.train.max_vocab)
    # Old values keep their indices (aligned with the old weights); new frequent ids get rows.
    return init.encoder.extend_with(fit_encoder(cfg.train.min_count, None), cfg.train.min_count, cfg.train.max_vocab)


def _train(
    cfg: PretrainConfig,
    spec: DatasetSpec,
    init: LoadedModel | None,
    encoder: FeatureEncoder,
    plan: FilePlan,
    valid_tbl: pa.Table,
    checkpoint_root: Path,
    data_version: str,
    ray_address: str | None,
    fail_after_epoch: int | None,
    days: tuple[list[str], list[str]],
) -> tuple[CheckpointManifest, Path]:
    """``days``: (train days, valid days), recorded in the manifest for reuse."""
    if plan.total_rows == 0:
        raise ValueError(f"no training rows ({data_version})")
    if valid_tbl.num_rows == 0:
        raise ValueError(f"no validation rows ({data_version})")
    if plan.total_rows < cfg.train.num_workers:
        raise ValueError(f"{plan.total_rows} training rows for {cfg.train.num_workers} workers ({data_version})")
    valid_arr = to_arrays(encoder.encode(valid_tbl))
    init_state = init.model.state_dict() if init is not None else None
    lineage = [*init.manifest.lineage, f"{init.manifest.model_version} {init.manifest.data_version}"] if init else []

    run_key = _run_key(cfg, data_version)
    run_dir = checkpoint_root / RUNS_DIR / run_key
    if not cfg.train.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    final_state = fit_with_ray_train(
        cfg.model,
        cfg.train,
        spec,
        encoder,
        plan,
        valid_arr,
        run_dir,
        init_state=init_state,
        ray_address=ray_address,
        fail_after_epoch=fail_after_epoch,
    )

    model = FoundationModel(cfg.model, spec, encoder.vocab_sizes)
    model.load_state_dict(final_state["best_state"])
    model.eval()
    metrics, extra = _diagnostics(model, encoder, cfg.train, valid_arr, valid_tbl, final_state)
    created = datetime.now(timezone.utc)
    chash = config_hash(cfg)  # the whole PretrainConfig: pipelines reuse a checkpoint by it
    version = cfg.model_version or f"{created:%Y%m%dT%H%M%S}-{run_key[:8]}"
    manifest = CheckpointManifest(
        model_version=version,
        created_at=created,
        dataset=spec,
        model_config_data=cfg.model.model_dump(mode="json"),
        config_hash=chash,
        data_version=data_version,
        train_days=days[0],
        valid_days=days[1],
        vocab_sizes=encoder.vocab_sizes,
        layers=model.layer_infos(),
        default_cr_layer=model.default_cr_layer,
        epochs_trained=int(final_state["epoch"]),
        metrics=metrics,
        lineage=lineage,
    )
    fault_point("pretrain:before-save")
    path = save_checkpoint(checkpoint_root, model, encoder, manifest, extra)
    shutil.rmtree(run_dir, ignore_errors=True)
    return manifest, path


def _diagnostics(
    model: FoundationModel,
    encoder: FeatureEncoder,
    tcfg: TrainConfig,
    valid_arr: Arrays,
    valid_tbl: pa.Table,
    state: dict[str, Any],
) -> tuple[dict[str, float], dict[str, bytes]]:
    metrics: dict[str, float] = {"resumed_from_epoch": float(state.get("resumed_from_epoch", 0))}
    if math.isfinite(float(state["best_score"])):
        metrics["best_valid_auc"] = float(state["best_score"])
    if not tcfg.diagnostics:
        return metrics, {}
    users = valid_tbl[CANONICAL_USER_ID].to_numpy(zero_copy_only=False)
    tm = task_metrics(model, valid_arr, encoder.tasks, encoder.scenario_ids, users)
    er = effective_ranks(model, valid_arr, tcfg.diagnostics_rows)
    metrics.update({f"valid.{k}": v for k, v in tm.items()})
    metrics.update({f"erank.{k}": v for k, v in er.items()})
    diag = {"history": state["history"], "valid": tm, "erank": er}
    extra = {
        "diagnostics.json": json.dumps(diag, indent=2).encode(),
        "erank.png": erank_plot(er, "effective rank on validation rows"),
    }
    return metrics, extra


def _days_of(tbl: pa.Table) -> list[str]:
    """The sorted distinct ``ds`` of an in-memory table (empty if it has no ``ds``)."""
    if DS not in tbl.column_names:
        return []
    return sorted(str(d) for d in pc.unique(tbl[DS]).to_pylist())


def _log_version(log_path: Path) -> str:
    try:
        from engines import delta_io

        return str(delta_io.open_table(log_path).version())
    except Exception:
        return "unknown"


def _run_key(cfg: PretrainConfig, data_version: str) -> str:
    blob = json.dumps(
        {"cfg": cfg.model_dump(mode="json", exclude={"model_version"}), "data": data_version}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
