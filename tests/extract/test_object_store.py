"""Publishing, reading and maintaining representation tables in S3 (moto's HTTP server on
loopback), through a URI and through a mounted run folder, against the local results."""

from __future__ import annotations

import pytest

from engines import delta_io, storage
from extract import PublishError, maintain_tables, publish, read_asof
from extract.publishing import already_published, check_table_properties
from tests.extract.test_publish import BAD, DS, PROPS, rows
from tests.moto_s3 import s3  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def prefix(s3, tmp_path_factory):  # noqa: F811
    with s3.registered("lfm-extract", tmp_path_factory.mktemp("cache")) as uri:
        yield uri


def test_publish_read_maintain_on_s3_equal_local(prefix, tmp_path):
    remote, local = f"{prefix}/tables/user_cr", tmp_path / "tables" / "user_cr"
    for path in (remote, local):
        for _ in range(2):  # a rerun replaces the day: still 4 rows
            publish(path, "user_cr", DS, rows(), PROPS)
    assert already_published(remote, "user_cr", "m1", DS)
    assert read_asof(remote, DS, inclusive=True).equals(read_asof(local, DS, inclusive=True))
    assert read_asof(remote, DS).num_rows == 0  # strictly before: nothing yet
    got = maintain_tables(f"{prefix}/tables")
    want = maintain_tables(tmp_path / "tables")
    assert set(got) == set(want) == {"user_cr"} and got["user_cr"]["vacuumed"] == want["user_cr"]["vacuumed"] == 0
    assert delta_io.read_days(remote, [DS]).num_rows == 4


def test_contract_breaks_commit_nothing_on_s3(prefix):
    path = f"{prefix}/tables/user_ur_bad"
    publish(path, "user_cr", DS, rows(), PROPS)
    v = delta_io.open_table(path).version()
    for case in ("nan", "duplicate", "model version"):
        over, msg = BAD[case]
        with pytest.raises(PublishError, match=msg):
            publish(path, "user_cr", DS, rows(**over), PROPS)
    with pytest.raises(PublishError, match="table has dim=3, this publish has 4"):
        check_table_properties(path, PROPS.model_copy(update={"dim": 4}))
    assert delta_io.open_table(path).version() == v


def test_mounted_run_folder_goes_to_the_store(prefix, s3, tmp_path):  # noqa: F811
    cfg = storage.ObjectStoreConfig(tables_uri=f"{prefix}/mounted", options=s3.options)
    storage.mount_run(cfg, tmp_path)
    try:
        publish(tmp_path / "tables" / "item_cr", "item_cr", DS, rows(), PROPS)
        assert storage.locate(tmp_path / "tables" / "item_cr")[0] == f"{prefix}/mounted/item_cr"
        assert not (tmp_path / "tables").exists()
        assert read_asof(f"{prefix}/mounted/item_cr", DS, inclusive=True).num_rows == 4
    finally:
        storage.unmount(tmp_path / "tables")
