"""Device placement, mixed precision and seeding: the one place training decides where
tensors live (pretraining and downstream training both go through here).

- :func:`check_device_config` fails with one readable line when the config asks for a GPU
  (or bf16) the machine does not have: a run never falls back to the CPU silently.
- :func:`training_device` is the device a process trains on (under Ray Train: the GPU Ray
  assigned to the worker).
- :func:`autocast` is bf16 autocast on CUDA, a no-op otherwise.
- :func:`seed_everything` seeds torch and numpy, fixes the thread count and turns on
  deterministic algorithms: same config + same rows = same weights on CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from contracts import ConfigError


class DeviceUnavailable(ConfigError):
    """The config asks for a device (or precision) this machine does not have: a bad config
    (exit 2), raised before any data is read or any worker starts."""


def check_device_config(use_gpu: bool, amp: str = "off", key: str = "pretrain.train") -> None:
    """Refuse ``use_gpu``/``amp`` settings the local machine cannot honour, naming the key."""
    if use_gpu and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"{key}.use_gpu: true, but no CUDA GPU is visible here (torch {torch.__version__}, "
            f"cuda build {torch.version.cuda or 'none'}); set {key}.use_gpu: false to train on CPU"
        )
    if amp == "bf16":
        if not use_gpu:
            raise DeviceUnavailable(f"{key}.amp: bf16 needs {key}.use_gpu: true (CPU training runs in float32)")
        if not torch.cuda.is_bf16_supported():
            raise DeviceUnavailable(f"{key}.amp: bf16 is not supported by {torch.cuda.get_device_name()}; use amp: off")


def training_device(use_gpu: bool) -> torch.device:
    """The device this process trains on: its CUDA device (Ray Train's assignment when inside a
    worker, else ``cuda:0``) or the CPU. Call :func:`check_device_config` first."""
    if not use_gpu:
        return torch.device("cpu")
    try:
        import ray.train.torch

        return ray.train.torch.get_device()
    except Exception:  # not inside a Ray Train worker
        return torch.device("cuda", torch.cuda.current_device())


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp == 'bf16'``; nothing otherwise."""
    if amp == "bf16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch (no-op on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def seed_everything(seed: int, threads: int | None = None, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; fix torch's thread count; deterministic ops.

    On CPU this makes a run bit-reproducible for a fixed thread count. On CUDA it also sets
    ``CUBLAS_WORKSPACE_CONFIG`` and disables cuDNN autotuning; ops without a deterministic
    CUDA kernel (e.g. ``index_add_``/scatter-add in embedding backward) only warn, so GPU
    runs may differ in the last bits (docs/pretrain.md)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model.eval()`` inside, the previous mode restored after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
