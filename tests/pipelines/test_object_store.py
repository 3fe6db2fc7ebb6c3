"""The daily job with its tables and index in S3 (moto's HTTP server on loopback): the
store's tables equal a local-root run's, a rerun changes nothing, the index is live in
the store, credentials never land in the run root, and a missing bucket stops the run
before anything starts."""

import shutil

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from contracts import REPRESENTATION_TABLES, RunLayout
from engines import storage
from pipelines import RunConfig, run_pipeline
from tests.moto_s3 import SECRET, s3  # noqa: F401 - the fixture
from tests.pipelines.helpers import untrained_checkpoint
from tests.pipelines.test_run import TINY

# test_run's tiny log with 3 days (train, valid, test): the fewest the split accepts
SOURCE = {**TINY["source"], "generator": {**TINY["source"]["generator"], "days": 3}}


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by([("ds", "ascending"), ("entity_id", "ascending")])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, s3, ray_cluster, spark):  # noqa: F811
    import time

    prefix = s3.bucket("lfm-run") + "/daily"
    remote_root = tmp_path_factory.mktemp("remote")
    cfg = RunConfig.model_validate(
        {
            **TINY,
            "source": SOURCE,
            "root": str(remote_root),
            "storage": {"tables_uri": f"{prefix}/tables", "index_uri": f"{prefix}/indexes", "options": s3.options},
        }
    )
    t0 = time.perf_counter()
    untrained_checkpoint(cfg, "untrained-s3")
    remote = run_pipeline(cfg)
    t1 = time.perf_counter()
    # the reference: a local-root run of the same log, foundation model and extracted samples,
    # up to the tables (the checkpoint and the samples' _SUCCESS days are reused, not redone)
    local_root = tmp_path_factory.mktemp("local")
    for part in ("log", "checkpoints", "samples"):
        shutil.copytree(remote_root / part, local_root / part)
    local = run_pipeline(
        RunConfig.model_validate({**TINY, "source": SOURCE, "root": str(local_root)}), steps=["extract"]
    )
    print(
        f"s3 run {t1 - t0:.1f}s {remote.timings} {remote.substeps}; "
        f"local reference {time.perf_counter() - t1:.1f}s {local.timings} {local.substeps}"
    )
    yield local_root, local, cfg, remote, prefix, s3.options
    for root in (local_root, remote_root):
        storage.unmount(root / "tables")
        storage.unmount(root / "indexes")


@pytest.mark.slow  # the daily job twice (S3 run + local reference): ~2 min on 2 loaded cores
def test_store_tables_equal_the_local_run(runs):
    local_root, local, cfg, remote, prefix, options = runs
    assert remote.manifest.model_version == local.manifest.model_version == "untrained-s3"
    for name in REPRESENTATION_TABLES:
        got = DeltaTable(f"{prefix}/tables/{name}", storage_options=options)  # a consumer elsewhere
        want = DeltaTable(str(RunLayout(local_root).table(name)))
        assert dict(got.metadata().configuration) == dict(want.metadata().configuration)
        g, w = _sorted(got.to_pyarrow_table()), _sorted(want.to_pyarrow_table())
        assert g.num_rows == w.num_rows > 0
        for col in g.column_names:
            if col in ("vector", "decayed_sum"):
                a = np.asarray(g[col].to_pylist(), np.float64)
                b = np.asarray(w[col].to_pylist(), np.float64)
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            else:
                assert g[col].to_pylist() == w[col].to_pylist(), (name, col)
    # nothing of the tables on local disk but the cache of files Spark read
    assert not (cfg.root / "tables").exists()


@pytest.mark.slow  # the daily job twice (S3 run + local reference): ~2 min on 2 loaded cores
def test_index_is_live_in_the_store(runs, tmp_path):
    from retrieval import store

    local_root, local, cfg, remote, prefix, options = runs
    uri = f"{prefix}/indexes"
    assert store.read_current(uri) == remote.index["version"]
    storage.register(uri, options, tmp_path)
    try:
        loaded = store.load_current(uri)  # downloaded: a reader on another machine
    finally:
        storage.unregister(uri)
    assert str(loaded.path).startswith(str(tmp_path))
    assert loaded.manifest.num_items == remote.index["num_items"] > 0
    assert loaded.manifest.source_table_version == remote.index["source_table_version"]
    assert loaded.manifest.params["source_path"] == f"{prefix}/tables/item_ir"


@pytest.mark.slow  # the daily job twice (S3 run + local reference): ~2 min on 2 loaded cores
def test_rerun_is_idempotent(runs):
    local_root, local, cfg, remote, prefix, options = runs
    before = {n: DeltaTable(f"{prefix}/tables/{n}", storage_options=options).version() for n in REPRESENTATION_TABLES}
    again = run_pipeline(cfg)
    assert all(again.timings[s] == 0.0 for s in ("pretrain", "extract", "downstream", "retrieval"))
    after = {n: DeltaTable(f"{prefix}/tables/{n}", storage_options=options).version() for n in REPRESENTATION_TABLES}
    assert after == before and again.index["version"] == remote.index["version"]


@pytest.mark.slow  # the daily job twice (S3 run + local reference): ~2 min on 2 loaded cores
def test_credentials_never_land_in_the_run_root(runs):
    local_root, local, cfg, remote, prefix, options = runs
    files = [p for p in cfg.root.rglob("*") if p.is_file() and "store-cache" not in p.parts]
    assert any(p.name == "ledger.sqlite" for p in files) and any(p.name == "report.md" for p in files)
    leaks = [p for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaks


def test_missing_bucket_stops_the_run_before_any_step(s3, tmp_path):  # noqa: F811
    cfg = RunConfig.model_validate(
        {**TINY, "root": str(tmp_path), "storage": {"tables_uri": "s3://lfm-missing/t", "options": s3.options}}
    )
    with pytest.raises(storage.StorageError, match=r"storage\.tables_uri: s3://lfm-missing/t: bucket 'lfm-missing'"):
        run_pipeline(cfg)
    assert not (tmp_path / "ledger.sqlite").exists()


def test_example_config_validates():
    from pathlib import Path

    from contracts import load_config

    cfg = load_config(Path("configs/object_store.yaml"), RunConfig)
    assert cfg.storage.tables_uri.startswith("s3://") and cfg.storage.index_uri.startswith("s3://")


def test_cli_exits_2_on_a_missing_bucket(s3, tmp_path):  # noqa: F811
    import subprocess
    import sys

    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {**TINY, "root": str(tmp_path / "r"), "storage": {"index_uri": "s3://lfm-missing/i", "options": s3.options}}
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--config", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    out = " ".join((proc.stdout + proc.stderr).split())  # rich may wrap the line
    assert "storage.index_uri: s3://lfm-missing/i: bucket 'lfm-missing' does not exist" in out
