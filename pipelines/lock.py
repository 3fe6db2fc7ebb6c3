"""One run per ``ds`` at a time: an exclusive, non-blocking file lock.

``fcntl.flock`` is released by the kernel when the holder dies (even on SIGKILL), so a
crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


class RunLocked(RuntimeError):
    """Another run of the same ds holds the lock."""


@contextmanager
def ds_lock(root: str | Path, ds: str, wait: bool = False):
    path = Path(root) / "locks" / f"{ds}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "unknown"
            raise RunLocked(
                f"another run of ds={ds} is in progress (pid {holder}, lock {path}); wait for it or pass --wait"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)
