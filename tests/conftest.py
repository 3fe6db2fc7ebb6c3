"""Shared engines for the whole test session: one local Ray cluster, one Spark session.

Both are started lazily (only tests that ask for them pay the start-up) and stopped once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ray_cluster(spark):
    """Spark's JVM is launched first: a JVM launched while a Ray driver is up hung Ray's
    GCS client in this process (docs/pipelines.md)."""
    import ray

    from engines import ensure_ray

    ensure_ray(num_cpus=2, object_store_gb=0.5)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def spark():
    from engines import get_spark

    session = get_spark()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100K not found at {ML100K}")
    return ML100K
