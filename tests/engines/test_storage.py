"""Delta tables and index versions on a real S3 endpoint (moto's HTTP server on loopback),
checked against the same operations on local disk."""

import threading
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pydantic import ValidationError

from engines import delta_io, storage
from tests.moto_s3 import SECRET, s3  # noqa: F401 - the fixture

DAYS = ["2026-01-01", "2026-01-02"]


def day(ds: str, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"entity_id": [f"e{i}" for i in range(n)], "x": rng.normal(size=n), "ds": [ds] * n})


@pytest.fixture(scope="module")
def bucket(s3, tmp_path_factory):  # noqa: F811
    with s3.registered("lfm-engines", tmp_path_factory.mktemp("store-cache")) as uri:
        yield uri


# --- config --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, uri, msg",
    [
        ("tables_uri", "ftp://host/x", "scheme ftp:// is not supported"),
        ("tables_uri", "runs/tables", r"scheme \(none\) is not supported"),
        ("index_uri", "s3:///indexes", "names no bucket"),
        ("tables_uri", "s3://Bad_Bucket/x", "not a valid S3 bucket name"),
        ("tables_uri", "s3://lfm/x?region=eu", "no query string"),
        ("index_uri", "s3://lfm/a//b", "empty, '.' or '..' segment"),
    ],
)
def test_bad_uris_are_refused_naming_the_key(key, uri, msg):
    from pipelines import RunConfig

    with pytest.raises(ValidationError, match=rf"storage\.{key}[\s\S]*{msg}"):
        RunConfig.model_validate({"storage": {key: uri}})


def test_credentials_in_the_config_are_refused_and_not_echoed():
    from pipelines import RunConfig

    with pytest.raises(ValidationError) as e:
        RunConfig.model_validate({"storage": {"options": {"aws_secret_access_key": "hunter2"}}})
    assert "storage.options.aws_secret_access_key: credentials are not accepted" in str(e.value)
    assert "hunter2" not in str(e.value)


def test_uris_are_normalised_and_gs_az_accepted():
    cfg = storage.ObjectStoreConfig(
        tables_uri="s3://lfm/p/tables/",
        index_uri="gs://b/idx",
        options={"aws_region": "us-east-1", "aws_allow_http": True},
    )
    assert cfg.tables_uri == "s3://lfm/p/tables" and cfg.index_uri == "gs://b/idx"
    assert cfg.options == {"AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    assert storage.ObjectStoreConfig(tables_uri="abfss://c@acct.dfs.core.windows.net/t").enabled


def test_missing_bucket_is_refused_naming_the_key(s3, tmp_path):  # noqa: F811
    cfg = storage.ObjectStoreConfig(tables_uri="s3://no-such-bucket/t", options=s3.options)
    with pytest.raises(storage.StorageError, match=r"storage\.tables_uri: .*bucket 'no-such-bucket' does not exist"):
        storage.mount_run(cfg, tmp_path)
    assert storage.mount_for(tmp_path / "tables") is None
    # one good location and one bad: nothing is mounted
    s3.bucket("lfm-good")
    cfg = storage.ObjectStoreConfig(tables_uri="s3://lfm-good/t", index_uri="s3://no-such-bucket/i", options=s3.options)
    with pytest.raises(storage.StorageError, match=r"storage\.index_uri: "):
        storage.mount_run(cfg, tmp_path)
    assert storage.mount_for(tmp_path / "tables") is None and storage.mount_for(tmp_path / "indexes") is None


# --- Delta tables --------------------------------------------------------------------
def test_delta_on_s3_matches_local(bucket, tmp_path):
    remote, local = f"{bucket}/t1", tmp_path / "t1"
    for i, d in enumerate(DAYS):
        for path in (remote, local):
            v = delta_io.replace_day(
                path, day(d, 50 + i, i), d, configuration={"lfm4ads.dim": "1"}, app_id=f"job:{d}", app_version=7
            )
    delta_io.replace_day(remote, day(DAYS[0], 10, 9), DAYS[0])  # a partition replace
    delta_io.replace_day(local, day(DAYS[0], 10, 9), DAYS[0])
    assert delta_io.exists(remote) and v == delta_io.open_table(local).version() - 1
    assert delta_io.list_days(remote) == delta_io.list_days(local) == DAYS
    assert delta_io.committed_version(remote, f"job:{DAYS[1]}") == 7
    assert delta_io.table_configuration(remote)["lfm4ads.dim"] == "1"
    order = [("ds", "ascending"), ("entity_id", "ascending")]
    assert delta_io.read_days(remote).sort_by(order).equals(delta_io.read_days(local).sort_by(order))
    # a reader with plain deltalake and explicit options (as a consumer elsewhere would)
    opened = DeltaTable(remote, storage_options=s3_options(bucket))
    assert opened.to_pyarrow_table().num_rows == 10 + 51
    # Spark-readable local copies of a day's files, equal to the store's rows
    uris = delta_io.day_file_uris(remote, DAYS[1])
    assert uris and all(Path(u).is_file() for u in uris)
    copy = pa.concat_tables([pq.read_table(u) for u in uris])
    assert copy.num_rows == 51 and sorted(copy["entity_id"].to_pylist()) == sorted(
        delta_io.read_days(remote, [DAYS[1]])["entity_id"].to_pylist()
    )
    # maintenance through the same options: two small files of one day become one, rows unchanged
    from deltalake import write_deltalake

    write_deltalake(remote, day(DAYS[1], 3, 7), mode="append", storage_options=s3_options(bucket))
    before = delta_io.read_days(remote).sort_by(order)
    assert len(delta_io.day_file_uris(remote, DAYS[1])) == 2
    metrics = delta_io.compact(remote, days=[DAYS[1]])
    assert metrics["numFilesRemoved"] == 2 and metrics["numFilesAdded"] == 1
    assert len(delta_io.day_file_uris(remote, DAYS[1])) == 1
    assert delta_io.read_days(remote).sort_by(order).equals(before)
    assert delta_io.vacuum(remote, dry_run=True) == []


def s3_options(bucket: str) -> dict:
    return storage.mount_for(bucket).options


def test_commit_files_uploads_then_commits(bucket, tmp_path):
    remote = f"{bucket}/t2"
    schema = pa.schema([("entity_id", pa.string()), ("x", pa.float64()), ("ds", pa.string())])
    staged = tmp_path / "staged.parquet"
    pq.write_table(day(DAYS[0], 20, 1).drop(["ds"]), staged)
    v = delta_io.commit_files(remote, [staged], DAYS[0], schema, app_id="a", app_version=1)
    assert delta_io.read_days(remote, [DAYS[0]]).num_rows == 20 and v == 1
    # a file with the partition column is refused: nothing committed, nothing left uploaded
    bad = tmp_path / "bad.parquet"
    pq.write_table(day(DAYS[1], 5, 2), bad)
    with pytest.raises(ValueError, match="must not hold the partition column"):
        delta_io.commit_files(remote, [staged, bad], DAYS[1], schema)
    assert delta_io.open_table(remote).version() == 1
    f, path = storage.filesystem(remote, s3_options(bucket))
    from pyarrow import fs

    parts = [i.path for i in f.get_file_info(fs.FileSelector(path, recursive=True)) if i.type == fs.FileType.File]
    assert not [p for p in parts if f"ds={DAYS[1]}" in p]


def test_two_concurrent_writers_lose_no_commit(bucket):
    """delta-rs commits with a conditional PUT; moto answers 412 to the loser, which retries."""
    remote = f"{bucket}/t3"
    delta_io.ensure_table(remote, day(DAYS[0], 1, 0).schema)
    days = [f"2026-02-{i:02d}" for i in range(1, 9)]
    errors = []

    def writer(mine):
        try:
            for d in mine:
                delta_io.replace_day(remote, day(d, 5, 0), d, retries=10)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(days[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert delta_io.list_days(remote) == days and delta_io.read_days(remote).num_rows == 40
    assert delta_io.open_table(remote).version() == len(days)


# --- index versions ------------------------------------------------------------------
def _publish_index(root: Path, n: int, seed: int) -> str:
    from datetime import datetime, timezone

    from contracts import IndexManifest
    from retrieval import store

    x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    index = faiss.IndexFlatIP(8)
    index.add(x)
    version = store.new_version("2026-01-01")
    m = IndexManifest(
        version=version,
        created_at=datetime.now(timezone.utc),
        source_table="item_ir",
        source_table_version=1,
        ds="2026-01-01",
        model_version="m",
        metric="ip",
        factory="Flat",
        params={},
        num_items=n,
        dim=8,
        recall_at_k={"10": 1.0},
    )
    tmp = store.temp_dir(root)
    store.write_index_file(tmp, index)
    store.write_meta(tmp, np.array([f"i{i}" for i in range(n)], dtype=object), m)
    store.publish(tmp, root, version)
    store.set_current(root, version)
    return version


def test_index_versions_on_s3(bucket, tmp_path):
    from retrieval import store

    uri = f"{bucket}/idx"
    root = tmp_path / "indexes"
    storage.mount(root, uri, s3_options(bucket), tmp_path / "cache")
    try:
        assert store.read_current(uri) is None
        v1 = _publish_index(root, 30, 1)
        v2 = _publish_index(root, 40, 2)
        assert store.read_current(uri) == store.read_current(root) == v2
        assert (root / store.CURRENT).read_text().strip() == v2
        assert storage.list_dirs(uri, s3_options(bucket)) == sorted([v1, v2])
        # a reader elsewhere: the URI only, downloads into its own cache
        storage.register(uri, s3_options(bucket), tmp_path / "reader-cache")
        remote = store.load_current(uri)
        local = store.load_version(root / v2)
        assert remote.path != local.path and remote.version == v2
        q = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
        ids_r, sc_r = store.search(remote, q, 5)
        ids_l, sc_l = store.search(local, q, 5)
        assert (ids_r == ids_l).all() and np.allclose(sc_r, sc_l)
        assert store.prune(root, keep=1) == [v1]
        assert storage.list_dirs(uri, s3_options(bucket)) == [v2]
        with pytest.raises(ValueError, match="mounted on the store"):
            store.set_current(uri, v2)
    finally:
        storage.unmount(root)
        storage.unregister(uri)


def test_secret_never_in_a_uri_or_option(bucket):
    loc, opts = storage.locate(f"{bucket}/t1")
    assert SECRET not in loc and SECRET not in str(opts)
