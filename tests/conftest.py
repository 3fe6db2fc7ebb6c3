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
TESTS = Path(__file__).resolve().parent

# The files that take longest (about 170 s down to 10 s each on two workers, this machine),
# longest first. `make test` hands whole files to its two workers in collection order, so the
# long ones start first and the short ones fill in at the end: both workers finish at about
# the same time (longest-first scheduling). Files not listed keep their collection order.
LONGEST_FIRST = (
    "pipelines/test_run.py",
    "pipelines/test_cluster.py",
    "pretrain/test_train.py",
    "pipelines/test_daily_growing.py",
    "extract/test_aggregate.py",
    "pipelines/test_object_store.py",
    "extract/test_publish.py",
    "pipelines/test_interrupt.py",
    "extract/test_extract.py",
    "pipelines/test_readme.py",
    "pipelines/test_faults.py",
    "studies/test_experiments.py",
    "extract/test_probe.py",
    "transfer/test_layers.py",
    "studies/test_cells.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    missing = [name for name in LONGEST_FIRST if not (TESTS / name).is_file()]
    assert not missing, f"tests/conftest.py LONGEST_FIRST names files that are gone: {missing}"

    def file_rank(item) -> int:
        return rank.get(item.path.relative_to(TESTS).as_posix(), len(rank))

    items.sort(key=file_rank)  # stable: a file's tests keep their order


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
    """The session every in-process test shares, tuned for tiny data: a job's planning and
    its shuffle stages, not its rows, are the cost here (two shuffle partitions for two
    local cores, no adaptive re-planning: about a quarter off each day's publish). Tests
    that run the CLI in a child process use the product's defaults."""
    from engines import get_spark

    session = get_spark(shuffle_partitions=2, conf={"spark.sql.adaptive.enabled": "false"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100K not found at {ML100K}")
    return ML100K
