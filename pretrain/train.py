"""Train the foundation model with Ray Train (``TorchTrainer``, CPU workers, gloo).

Flow (driver): read train/valid days -> fit the FeatureEncoder on train days (and validate
every row by encoding it once, so bad input fails before any worker starts) -> workers
stream the train days' Parquet files through Ray Data (``pretrain.stream``: read + encode
per block, seeded shuffle windows), train with DDP, evaluate validation AUC each epoch
(validation arrays via the object store), report a checkpoint per epoch (model,
optimizer, best weights, early-stopping state) -> the driver takes the best weights,
computes diagnostics and writes the version folder atomically.

Resume: an interrupted run leaves its epoch checkpoints under
``<checkpoint_root>/.runs/<run_key>/`` (run_key = hash of config, log, days). Re-running the
same command continues from the last epoch checkpoint and ends in the same state as an
uninterrupted run (seeded, per-epoch shuffles). The folder is removed once the version is
written.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from contracts import CheckpointManifest, DatasetSpec, config_hash
from contracts.dataset import CANONICAL_USER_ID
from engines import ensure_ray
from pretrain.checkpoint import load_checkpoint, save_checkpoint
from pretrain.config import ModelConfig, PretrainConfig, TrainConfig
from pretrain.data import Arrays, num_rows, predict_logits, to_arrays
from pretrain.diagnostics import effective_ranks, erank_plot, task_metrics
from pretrain.features import FeatureEncoder
from pretrain.loop import array_windows, fit_epochs, make_optimizer, new_state
from pretrain.metrics import auc
from pretrain.model import FoundationModel
from pretrain.stream import ingest_options, log_files_for_days, stream_windows, train_dataset

STATE_FILE = "state.pt"
RUNS_DIR = ".runs"

__all__ = ["fit_plain", "fit_with_ray_train", "train_foundation_model", "train_on_tables"]


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

    ``_fail_after_epoch`` is fault injection for tests (a worker raises after reporting
    that epoch's checkpoint).
    """
    from datasources import read_log, read_log_spec

    _check_days(train_days, valid_days)
    log_path = Path(log_path)
    spec = read_log_spec(log_path)
    train_tbl = read_log(log_path, train_days)
    valid_tbl = read_log(log_path, valid_days)
    data_version = f"{log_path.resolve()}@v{_log_version(log_path)} train={train_days[0]}..{train_days[-1]} " \
                   f"valid={valid_days[0]}..{valid_days[-1]}"
    return train_on_tables(
        cfg, spec, train_tbl, valid_tbl, checkpoint_root, data_version, ray_address,
        train_files=log_files_for_days(log_path, train_days), _fail_after_epoch=_fail_after_epoch,
    )


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
    """:func:`train_foundation_model` on tables already read (canonical columns).

    ``train_files``: the Parquet files holding ``train_tbl``'s rows; the workers stream
    them through Ray Data (in :func:`pretrain.stream.log_files_for_days` order). None =
    stream ``train_tbl`` itself."""
    spec = spec.canonical()
    checkpoint_root = Path(checkpoint_root)
    if train_tbl.num_rows == 0:
        raise ValueError(f"no training rows ({data_version})")
    if valid_tbl.num_rows == 0:
        raise ValueError(f"no validation rows ({data_version})")
    _check_task_names(cfg.train, spec)
    if cfg.model_version and (checkpoint_root / cfg.model_version).exists():
        raise FileExistsError(f"checkpoint {checkpoint_root / cfg.model_version} already exists; pick another model_version")
    init_state, lineage = None, []
    if cfg.init_from:
        init = load_checkpoint(cfg.init_from, expect_spec=spec)
        if init.manifest.model_config_data != cfg.model.model_dump(mode="json"):
            raise ValueError(
                f"init_from {cfg.init_from}: its model config differs from this config's `model` section; "
                "warm start needs the same architecture"
            )
        # Old values keep their indices (aligned with the old weights); new frequent ids get rows.
        encoder = init.encoder.extend(train_tbl, cfg.train.min_count, cfg.train.max_vocab)
        init_state = init.model.state_dict()
        lineage = [*init.manifest.lineage, f"{init.manifest.model_version} {init.manifest.data_version}"]
    else:
        encoder = FeatureEncoder.fit(train_tbl, spec, cfg.train.min_count, cfg.train.max_vocab)
    encoder.encode(train_tbl)  # validation only: a bad row is named here, before any worker starts
    valid_arr = to_arrays(encoder.encode(valid_tbl))

    run_key = _run_key(cfg, data_version)
    run_dir = checkpoint_root / RUNS_DIR / run_key
    if not cfg.train.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    final_state = fit_with_ray_train(
        cfg.model, cfg.train, spec, encoder, train_files if train_files is not None else train_tbl, valid_arr, run_dir,
        init_state=init_state, ray_address=ray_address, fail_after_epoch=_fail_after_epoch,
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
        vocab_sizes=encoder.vocab_sizes,
        layers=model.layer_infos(),
        default_cr_layer=model.default_cr_layer,
        epochs_trained=int(final_state["epoch"]),
        metrics=metrics,
        lineage=lineage,
    )
    path = save_checkpoint(checkpoint_root, model, encoder, manifest, extra)
    shutil.rmtree(run_dir, ignore_errors=True)
    return manifest, path


# --- Ray Train -------------------------------------------------------------------------
def fit_with_ray_train(
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    spec: DatasetSpec,
    encoder: FeatureEncoder,
    train_source: list[str] | pa.Table,
    valid_arr: Arrays,
    run_dir: Path,
    init_state: dict[str, torch.Tensor] | None = None,
    ray_address: str | None = None,
    fail_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Run the TorchTrainer on ``train_source`` (Parquet files or a table, streamed through
    Ray Data and encoded by ``encoder``); returns the last epoch state (``best_state``,
    ``epoch``, ``history``)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray(ray_address)
    run_dir = Path(run_dir).resolve()
    resume_path = _last_epoch_state(run_dir) if tcfg.resume else None
    config = {
        "model": mcfg.model_dump(mode="json"),
        "train": tcfg.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "vocab_sizes": encoder.vocab_sizes,
        "encoder_json": encoder.to_json(),
        # A ref, not arrays: the object store ships it once per node, not per pickle.
        "valid_ref": ray.put(valid_arr),
        "init_ref": ray.put(init_state) if init_state is not None else None,
        "resume_path": str(resume_path) if resume_path else None,
        "fail_after_epoch": fail_after_epoch,
    }
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=config,
        # Every worker iterates the whole stream and keeps its share of each window
        # (deterministic, unlike a dynamic split): see pretrain.stream.
        datasets={"train": train_dataset(train_source, encoder, tcfg.data_cpus)},
        dataset_config=DataConfig(datasets_to_split=[], execution_options={"train": ingest_options()}),
        scaling_config=ScalingConfig(
            num_workers=tcfg.num_workers, use_gpu=False, resources_per_worker={"CPU": tcfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as e:
        done = _last_epoch_state(run_dir)
        hint = f"; epoch checkpoints kept in {run_dir}, rerun the same command to resume" if done else ""
        raise RuntimeError(f"pretraining failed: {e}{hint}") from e
    state_path = None
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            if (Path(d) / STATE_FILE).is_file():
                return torch.load(Path(d) / STATE_FILE, weights_only=True)
    state_path = _last_epoch_state(run_dir)
    if state_path is None:
        raise RuntimeError(f"pretraining finished without an epoch checkpoint in {run_dir}")
    return torch.load(state_path, weights_only=True)


def _worker_loop(config: dict[str, Any]) -> None:
    """Per-worker body: DDP over gloo (``prepare_model``), sharded epochs, gathered
    validation, a checkpoint per epoch from rank 0, early stopping agreed by all ranks
    (every rank sees the same gathered AUC)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    mcfg = ModelConfig.model_validate(config["model"])
    tcfg = TrainConfig.model_validate(config["train"])
    spec = DatasetSpec.model_validate(config["spec"])
    model, opt = build_model_and_optimizer(mcfg, tcfg, spec, config["vocab_sizes"])
    if config["init_ref"] is not None:
        with torch.no_grad():
            model.load_warm_start(ray.get(config["init_ref"]))
    state = new_state(model, opt)
    restored = _restore(config)
    if restored is not None:
        model.load_state_dict(restored["model"])
        opt.load_state_dict(restored["optim"])
        state = {**restored, "resumed_from_epoch": int(restored["epoch"])}
    ddp_model = ray.train.torch.prepare_model(model)
    valid_arr = ray.get(config["valid_ref"])
    train_it = ray.train.get_dataset_shard("train")
    fail_after = config["fail_after_epoch"]

    encoder = FeatureEncoder.from_json(config["encoder_json"])

    def windows(epoch: int) -> Iterator[Arrays]:
        return stream_windows(train_it, tcfg.shuffle_window, encoder)

    def on_epoch_end(st: dict, metrics: dict) -> None:
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                torch.save(st, Path(d) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        if fail_after is not None and st["epoch"] >= fail_after:
            raise RuntimeError(f"injected failure after epoch {st['epoch']}")

    def valid_auc(m: torch.nn.Module, arrays: Arrays, task: int) -> float:
        return _gathered_valid_auc(m, arrays, task, rank, world)

    fit_epochs(model, ddp_model, opt, state, windows, valid_arr, list(spec.tasks), tcfg, valid_auc,
               on_epoch_end, rank, world)


def build_model_and_optimizer(
    mcfg: ModelConfig, tcfg: TrainConfig, spec: DatasetSpec, vocab_sizes: dict[str, int]
) -> tuple[FoundationModel, torch.optim.Optimizer]:
    """Seeded construction, identical in every worker and in the plain loop."""
    torch.set_num_threads(tcfg.torch_threads or max(1, int(tcfg.cpus_per_worker)))
    torch.manual_seed(tcfg.seed)
    model = FoundationModel(mcfg, spec, vocab_sizes)
    return model, make_optimizer(model, tcfg)


def fit_plain(
    mcfg: ModelConfig, tcfg: TrainConfig, spec: DatasetSpec, vocab_sizes: dict[str, int],
    train_arr: Arrays, valid_arr: Arrays, init_state: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The same training in this process, without Ray (reference for tests and benchmarks)."""
    model, opt = build_model_and_optimizer(mcfg, tcfg, spec, vocab_sizes)
    if init_state is not None:
        with torch.no_grad():
            model.load_warm_start(init_state)
    state = new_state(model, opt)

    def valid_auc(m: torch.nn.Module, arrays: Arrays, task: int) -> float:
        return _gathered_valid_auc(m, arrays, task, 0, 1)

    def windows(epoch: int) -> Iterator[Arrays]:
        return array_windows(train_arr, tcfg.shuffle_window)

    return fit_epochs(model, model, opt, state, windows, valid_arr, list(spec.tasks), tcfg, valid_auc,
                      lambda st, metrics: None)


def _restore(config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if (Path(d) / STATE_FILE).is_file():
                return torch.load(Path(d) / STATE_FILE, weights_only=True)
    if config["resume_path"]:
        return torch.load(config["resume_path"], weights_only=True)
    return None


def _gathered_valid_auc(model: FoundationModel, valid: Arrays, task: int, rank: int, world: int) -> float:
    """AUC of ``task`` over all validation rows; each rank scores its slice, then gather."""
    n = num_rows(valid)
    rows = np.arange(rank, n, world)
    part = {k: v[rows] for k, v in valid.items()}
    logits = predict_logits(model, part)
    labels, mask = part["labels"][:, task], part["label_mask"][:, task]
    pair = (labels[mask], logits[mask, task] if logits.size else np.zeros(0))
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, pair)
        y = np.concatenate([g[0] for g in gathered])
        s = np.concatenate([g[1] for g in gathered])
    else:
        y, s = pair
    return auc(y, s)


def _last_epoch_state(run_dir: Path) -> Path | None:
    """The epoch state with the highest epoch under a Ray Train run folder."""
    best: tuple[int, Path] | None = None
    if not run_dir.is_dir():
        return None
    for f in run_dir.glob(f"checkpoint_*/{STATE_FILE}"):
        try:
            epoch = int(torch.load(f, weights_only=True)["epoch"])
        except Exception:
            continue  # a partly persisted checkpoint: ignore it
        if best is None or epoch > best[0]:
            best = (epoch, f)
    return best[1] if best else None


# --- helpers ---------------------------------------------------------------------------
def _diagnostics(
    model: FoundationModel, encoder: FeatureEncoder, tcfg: TrainConfig, valid_arr: Arrays, valid_tbl: pa.Table,
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


def _check_task_names(tcfg: TrainConfig, spec: DatasetSpec) -> None:
    named = {"train.pairwise_alpha": list(tcfg.pairwise_alpha), "train.task_weights": list(tcfg.task_weights),
             "train.early_stop_task": [tcfg.early_stop_task] if tcfg.early_stop_task else []}
    for key, tasks in named.items():
        unknown = [t for t in tasks if t not in spec.tasks]
        if unknown:
            raise ValueError(f"{key}: unknown task(s) {unknown}; the log's tasks are {spec.tasks}")


def _check_days(train_days: list[str], valid_days: list[str]) -> None:
    if not train_days:
        raise ValueError("train_days is empty")
    if not valid_days:
        raise ValueError("valid_days is empty")
    overlap = sorted(set(train_days) & set(valid_days))
    if overlap:
        raise ValueError(f"days {overlap} are in both train_days and valid_days")
    if max(train_days) >= min(valid_days):
        raise ValueError(
            f"time split violated: last train day {max(train_days)} is not before first valid day {min(valid_days)}"
        )


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


def split_days(days: list[str], valid_days: int) -> tuple[list[str], list[str]]:
    """Time split: the last ``valid_days`` days validate, the rest train."""
    days = sorted(days)
    if len(days) <= valid_days:
        raise ValueError(f"need more than {valid_days} day(s) to split off validation, log has {days}")
    return days[:-valid_days], days[-valid_days:]
