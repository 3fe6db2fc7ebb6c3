"""Start (or join) Ray once per process with settings that suit small machines."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, num_cpus: int | None = None, object_store_gb: float = 1.0) -> None:
    """Idempotent ``ray.init``. ``address`` joins an existing cluster (e.g. ``ray://`` or ``auto``).

    Workers import the project from the installed package, so it must be installed
    (``pip install -e .``) on every node.
    """
    # imported here: a run whose remaining steps need no Ray (resumed after extraction)
    # should not pay Ray's import, let alone its start-up
    import ray
    import ray.data

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        return
    # address="local" always starts a private cluster: a bare ray.init() would join any
    # cluster that `ray start` left on this machine and then reject num_cpus.
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        object_store_memory=int(object_store_gb * 1024**3),
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=False,
        configure_logging=False,
        # Ray nices its workers to 15 by default: on a shared machine an actor then yields the
        # CPU to anything at nice 0-14, e.g. a driver-side loop (docs/extract.md, extraction).
        _system_config={"worker_niceness": int(os.environ.get("LFM4ADS_RAY_WORKER_NICENESS", "0"))},
    )
    ctx = ray.data.DataContext.get_current()
    # Progress bars from every operator flood CI logs; our own rich bars say enough.
    ctx.enable_progress_bars = False
