"""The driver side of Ray Train: start the ``TorchTrainer`` over a file plan, report each
epoch as progress while it runs, and return the last epoch state.

The per-worker body is :func:`pretrain.ray_worker.worker_loop`; the epoch checkpoints it
leaves are read through :mod:`pretrain.run_state`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import ray
import torch

from contracts import DatasetSpec
from engines import ensure_ray
from pretrain.config import ModelConfig, TrainConfig
from pretrain.data import Arrays
from pretrain.device import check_device_config
from pretrain.features import FeatureEncoder
from pretrain.ray_worker import worker_loop
from pretrain.run_state import METRICS_FILE, STATE_FILE, last_epoch_state, load_state
from pretrain.stream import FilePlan, plan_files


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
    resume_path = last_epoch_state(run_dir) if tcfg.resume else None
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
        worker_loop,
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
    watcher = ProgressWatcher(run_dir, tcfg.epochs)
    watcher.start()
    try:
        result = trainer.fit()
    except Exception as e:
        done = last_epoch_state(run_dir)
        hint = f"; epoch checkpoints kept in {run_dir}, rerun the same command to resume" if done else ""
        raise RuntimeError(f"pretraining failed: {e}{hint}") from e
    finally:
        watcher.stop()
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            if (Path(d) / STATE_FILE).is_file():
                return load_state(Path(d) / STATE_FILE)
    state_path = last_epoch_state(run_dir)
    if state_path is None:
        raise RuntimeError(f"pretraining finished without an epoch checkpoint in {run_dir}")
    return load_state(state_path)


class ProgressWatcher:
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
