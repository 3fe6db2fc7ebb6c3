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
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from contracts import CheckpointManifest, DatasetSpec, config_hash
from contracts.dataset import CANONICAL_USER_ID
from engines import ensure_ray
from pretrain.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from pretrain.config import ModelConfig, PretrainConfig, TrainConfig
from pretrain.data import Arrays, num_rows, predict_logits, to_arrays
from pretrain.device import check_device_config, seed_everything, training_device
from pretrain.diagnostics import effective_ranks, erank_plot, task_metrics
from pretrain.features import FeatureEncoder
from pretrain.loop import array_windows, fit_epochs, make_optimizer, new_state
from pretrain.metrics import auc
from pretrain.model import FoundationModel
from pretrain.stream import FilePlan, log_files_for_days, plan_files, shard_windows, stream_columns_for
from pretrain.vocab import fit_vocabulary

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.json"
RUNS_DIR = ".runs"

__all__ = ["fit_plain", "fit_with_ray_train", "prepare_training", "train_foundation_model", "train_on_tables"]

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

    _check_days(train_days, valid_days)
    log_path = Path(log_path)
    spec = read_log_spec(log_path).canonical()
    init = _preflight(cfg, spec, Path(checkpoint_root))
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
    init = _preflight(cfg, spec, checkpoint_root)

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
        )
    finally:
        if tmp_rows is not None:
            shutil.rmtree(tmp_rows, ignore_errors=True)


def _preflight(cfg: PretrainConfig, spec: DatasetSpec, checkpoint_root: Path) -> LoadedModel | None:
    """Every config check that needs no training rows: device, task names, version, warm start."""
    check_device_config(cfg.train.use_gpu, cfg.train.amp)
    _check_task_names(cfg.train, spec)
    if cfg.model_version and (checkpoint_root / cfg.model_version).exists():
        raise FileExistsError(
            f"checkpoint {checkpoint_root / cfg.model_version} already exists; pick another model_version"
        )
    if not cfg.init_from:
        return None
    init = load_checkpoint(cfg.init_from, expect_spec=spec)
    if init.manifest.model_config_data != cfg.model.model_dump(mode="json"):
        raise ValueError(
            f"init_from {cfg.init_from}: its model config differs from this config's `model` section; "
            "warm start needs the same architecture"
        )
    return init


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
) -> tuple[CheckpointManifest, Path]:
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
    train_source: FilePlan | list[str],
    valid_arr: Arrays,
    run_dir: Path,
    init_state: dict[str, torch.Tensor] | None = None,
    ray_address: str | None = None,
    fail_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Run the TorchTrainer on ``train_source`` (a file plan, or Parquet files in stream
    order): each worker reads and encodes only its shard of each epoch; returns the last
    epoch state (``best_state``, ``epoch``, ``history``)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_device_config(tcfg.use_gpu, tcfg.amp)
    plan = train_source if isinstance(train_source, FilePlan) else plan_files(list(train_source))
    ensure_ray(ray_address)
    run_dir = Path(run_dir).resolve()
    resume_path = _last_epoch_state(run_dir) if tcfg.resume else None
    config = {
        "model": mcfg.model_dump(mode="json"),
        "train": tcfg.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "vocab_sizes": encoder.vocab_sizes,
        "encoder_json": encoder.to_json(),
        "plan": {"files": plan.files, "row_groups": plan.row_groups},
        # A ref, not arrays: the object store ships it once per node, not per pickle.
        "valid_ref": ray.put(valid_arr),
        "init_ref": ray.put(init_state) if init_state is not None else None,
        "resume_path": str(resume_path) if resume_path else None,
        "fail_after_epoch": fail_after_epoch,
    }
    resources = {"CPU": tcfg.cpus_per_worker, **({"GPU": 1} if tcfg.use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    watcher = _ProgressWatcher(run_dir, tcfg.epochs)
    watcher.start()
    try:
        result = trainer.fit()
    except Exception as e:
        done = _last_epoch_state(run_dir)
        hint = f"; epoch checkpoints kept in {run_dir}, rerun the same command to resume" if done else ""
        raise RuntimeError(f"pretraining failed: {e}{hint}") from e
    finally:
        watcher.stop()
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            if (Path(d) / STATE_FILE).is_file():
                return _load_state(Path(d) / STATE_FILE)
    state_path = _last_epoch_state(run_dir)
    if state_path is None:
        raise RuntimeError(f"pretraining finished without an epoch checkpoint in {run_dir}")
    return _load_state(state_path)


def _worker_loop(config: dict[str, Any]) -> None:
    """Per-worker body: DDP (``prepare_model``: gloo on CPU, NCCL on GPU), this worker's shard
    of each epoch, gathered validation, a checkpoint per epoch from rank 0, early stopping
    agreed by all ranks (every rank sees the same gathered AUC)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    mcfg = ModelConfig.model_validate(config["model"])
    tcfg = TrainConfig.model_validate(config["train"])
    spec = DatasetSpec.model_validate(config["spec"])
    device = training_device(tcfg.use_gpu)
    model, opt = build_model_and_optimizer(mcfg, tcfg, spec, config["vocab_sizes"], device)
    if config["init_ref"] is not None:
        with torch.no_grad():
            model.load_warm_start(ray.get(config["init_ref"]))
    state = new_state(model, opt)
    restored = _restore(config)
    if restored is not None:
        model.load_state_dict(restored["model"])
        opt.load_state_dict(restored["optim"])
        state = {**restored, "resumed_from_epoch": int(restored["epoch"])}
    ddp_model = ray.train.torch.prepare_model(model) if world > 1 else model
    valid_arr = ray.get(config["valid_ref"])
    plan = FilePlan(config["plan"]["files"], config["plan"]["row_groups"])
    fail_after = config["fail_after_epoch"]
    encoder = FeatureEncoder.from_json(config["encoder_json"])
    counter: dict[str, int] = {}

    def windows(epoch: int) -> Iterator[Arrays]:
        counter["rows_read"] = 0
        return shard_windows(plan, encoder, tcfg.shuffle_window, epoch, rank, world, counter)

    def extras(epoch: int) -> dict[str, Any]:
        mine = int(counter.get("rows_read", 0))
        if world > 1:
            import torch.distributed as dist

            got: list[Any] = [None] * world
            dist.all_gather_object(got, mine)
            return {"rows_read_per_worker": [int(g) for g in got]}
        return {"rows_read_per_worker": [mine]}

    def on_epoch_end(st: dict, metrics: dict) -> None:
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                torch.save(st, Path(d) / STATE_FILE)
                (Path(d) / METRICS_FILE).write_text(json.dumps(metrics))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        if fail_after is not None and st["epoch"] >= fail_after:
            raise RuntimeError(f"injected failure after epoch {st['epoch']}")

    def valid_auc(m: torch.nn.Module, arrays: Arrays, task: int) -> float:
        return _gathered_valid_auc(m, arrays, task, rank, world)

    fit_epochs(
        model,
        ddp_model,
        opt,
        state,
        windows,
        valid_arr,
        list(spec.tasks),
        tcfg,
        valid_auc,
        on_epoch_end,
        rank,
        world,
        device=device,
        epoch_extras=extras,
    )


def build_model_and_optimizer(
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    spec: DatasetSpec,
    vocab_sizes: dict[str, int],
    device: torch.device | None = None,
) -> tuple[FoundationModel, torch.optim.Optimizer]:
    """Seeded construction, identical in every worker and in the plain loop."""
    seed_everything(tcfg.seed, tcfg.torch_threads or max(1, int(tcfg.cpus_per_worker)), tcfg.deterministic)
    model = FoundationModel(mcfg, spec, vocab_sizes)
    if device is not None:
        model.to(device)
    return model, make_optimizer(model, tcfg)


def fit_plain(
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    spec: DatasetSpec,
    vocab_sizes: dict[str, int],
    train_arr: Arrays,
    valid_arr: Arrays,
    init_state: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The same training in this process, without Ray (reference for tests and benchmarks):
    one worker's view of the same rows in stream order."""
    check_device_config(tcfg.use_gpu, tcfg.amp)
    device = training_device(tcfg.use_gpu)
    model, opt = build_model_and_optimizer(mcfg, tcfg, spec, vocab_sizes, device)
    if init_state is not None:
        with torch.no_grad():
            model.load_warm_start(init_state)
    state = new_state(model, opt)

    def valid_auc(m: torch.nn.Module, arrays: Arrays, task: int) -> float:
        return _gathered_valid_auc(m, arrays, task, 0, 1)

    def windows(epoch: int) -> Iterator[Arrays]:
        return array_windows(train_arr, tcfg.shuffle_window)

    n = num_rows(train_arr)
    return fit_epochs(
        model,
        model,
        opt,
        state,
        windows,
        valid_arr,
        list(spec.tasks),
        tcfg,
        valid_auc,
        lambda st, metrics: None,
        device=device,
        epoch_extras=lambda epoch: {"rows_read_per_worker": [n]},
        progress_task="pretrain.epoch",
    )


class _ProgressWatcher:
    """Reports each epoch checkpoint's metrics (written by rank 0) as ``pretrain.epoch``
    progress from the driver, while ``trainer.fit()`` blocks it."""

    def __init__(self, run_dir: Path, epochs: int, every_s: float = 1.0):
        self.run_dir, self.epochs, self.every_s = run_dir, epochs, every_s
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pretrain-progress", daemon=True)

    def start(self) -> None:
        self.seen = {e for e, _ in self._scan()}  # epochs of an earlier (resumed) attempt were reported then
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll()

    def _scan(self) -> list[tuple[int, dict]]:
        out = []
        for f in self.run_dir.glob(f"checkpoint_*/{METRICS_FILE}"):
            try:
                m = json.loads(f.read_text())
                out.append((int(m["epoch"]), m))
            except Exception:
                continue  # being written
        return sorted(out, key=lambda x: x[0])

    def _poll(self) -> None:
        from engines.progress import report_progress

        for epoch, m in self._scan():
            if epoch not in self.seen:
                self.seen.add(epoch)
                report_progress(
                    "pretrain.epoch",
                    epoch,
                    self.epochs,
                    loss=round(float(m["train_loss"]), 5),
                    valid_auc=round(float(m["valid_auc"]), 5),
                )

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._poll()


def _load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True, map_location="cpu")


def _restore(config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if (Path(d) / STATE_FILE).is_file():
                return _load_state(Path(d) / STATE_FILE)
    if config["resume_path"]:
        return _load_state(Path(config["resume_path"]))
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
            epoch = int(_load_state(f)["epoch"])
        except Exception:
            continue  # a partly persisted checkpoint: ignore it
        if best is None or epoch > best[0]:
            best = (epoch, f)
    return best[1] if best else None


# --- helpers ---------------------------------------------------------------------------
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


def _check_task_names(tcfg: TrainConfig, spec: DatasetSpec) -> None:
    named = {
        "train.pairwise_alpha": list(tcfg.pairwise_alpha),
        "train.task_weights": list(tcfg.task_weights),
        "train.early_stop_task": [tcfg.early_stop_task] if tcfg.early_stop_task else [],
    }
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
