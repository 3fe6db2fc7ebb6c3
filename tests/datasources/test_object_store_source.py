"""A ``file`` source in S3 (moto's HTTP server on loopback, real Delta logs): the same log
as the same files ingested from a local folder, incremental per object (size, mtime), a
missing bucket / prefix as one line with its exit code, and a bad CSV value naming the
object URI and row. The endpoint comes from the environment (AWS_ENDPOINT_URL), as the
credentials do; nothing is configured in the source but its URI."""

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable
from pydantic import ValidationError

from contracts import ConfigError, InputError
from datasources import FileSource, last_ingest, materialize, validate_source
from datasources.ingest_manifest import read_manifest
from engines import storage
from tests.datasources.test_incremental import SPEC, day_rows, sorted_log, write_csv
from tests.moto_s3 import s3  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def store(s3):  # noqa: F811
    """The moto server with its endpoint in the environment (where AWS SDKs and pyarrow read it)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    mp.setenv("AWS_REGION", "us-east-1")
    yield s3
    mp.undo()


def upload(local, uri: str, s3) -> None:  # noqa: F811
    storage.upload(local, uri, s3.options)


def delete(uri: str, s3) -> None:  # noqa: F811
    f, path = storage.filesystem(uri, s3.options)
    f.delete_file(path)


def day_name(k: int) -> str:
    return f"2026-03-0{k + 1}"


def test_config_keeps_uris_and_local_paths():
    from pathlib import Path

    from pipelines.config import resolve_relative_paths

    assert FileSource(kind="file", path="s3://bkt/logs/", spec=SPEC).path == "s3://bkt/logs"
    assert FileSource(kind="file", path="rel/log.csv", spec=SPEC).path == Path("rel/log.csv")
    assert FileSource(kind="file", path="file:///data/log.csv", spec=SPEC).path == Path("/data/log.csv")
    src = FileSource(kind="file", path="s3://bkt/logs", spec=SPEC)
    assert FileSource.model_validate(src.model_dump(mode="json")).path == "s3://bkt/logs"
    with pytest.raises(ValidationError, match=r"ftp://h/x': scheme ftp:// is not supported for a source"):
        FileSource(kind="file", path="ftp://h/x", spec=SPEC)
    with pytest.raises(ValidationError, match=r"names no bucket"):
        FileSource(kind="file", path="s3:///x", spec=SPEC)
    raw = {"source": {"kind": "file", "path": "s3://bkt/logs", "spec_path": "spec.yaml"}}
    out = resolve_relative_paths(raw, Path("/cfg"))
    assert out["source"] == {"kind": "file", "path": "s3://bkt/logs", "spec_path": "/cfg/spec.yaml"}


def test_day_folders_in_s3_equal_local_and_ingest_only_what_changed(store, tmp_path):
    prefix = store.bucket("lfm-src-days") + "/events"
    local = tmp_path / "src"
    s3_source = FileSource(kind="file", path=prefix, spec=SPEC)
    local_source = FileSource(kind="file", path=local, spec=SPEC)
    s3_log, local_log = tmp_path / "s3_log", tmp_path / "local_log"

    def put_day(k: int, table: pa.Table) -> None:
        d = local / f"ds={day_name(k)}"
        d.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate((table.slice(0, 20), table.slice(20))):
            pq.write_table(part, d / f"part-{i}.parquet", row_group_size=8)  # several row groups
            upload(d / f"part-{i}.parquet", f"{prefix}/ds={day_name(k)}/part-{i}.parquet", store)

    for k in range(3):
        put_day(k, day_rows(k))
    upload(local / f"ds={day_name(0)}" / "part-0.parquet", f"{prefix}/_tmp/ignored.parquet", store)  # skipped
    materialize(s3_source, s3_log)
    materialize(local_source, local_log)
    assert last_ingest(s3_log).ingested_days == [day_name(k) for k in range(3)]
    assert sorted_log(s3_log).equals(sorted_log(local_log))
    man = read_manifest(s3_log)
    assert sorted(man.files) == [f"{prefix}/ds={day_name(k)}/part-{i}.parquet" for k in range(3) for i in (0, 1)]

    # unchanged objects: nothing read, nothing committed
    version = DeltaTable(str(s3_log)).version()
    materialize(s3_source, s3_log)
    assert last_ingest(s3_log).files == 0 and DeltaTable(str(s3_log)).version() == version

    # a new day's objects: only they are read, only that day is written
    put_day(3, day_rows(3))
    materialize(s3_source, s3_log)
    materialize(local_source, local_log)
    rep = last_ingest(s3_log)
    assert rep.files == 2 and rep.ingested_days == [day_name(3)]
    assert rep.reused_days == [day_name(k) for k in range(3)]
    assert sorted_log(s3_log).equals(sorted_log(local_log))

    # a changed object (other content and size): its day and the later days are re-ingested;
    # the day's other object is read again (a day is read whole), other days' objects are not
    put_day(1, day_rows(1, n=44, seed=99))
    materialize(s3_source, s3_log)
    materialize(local_source, local_log)
    rep = last_ingest(s3_log)
    assert rep.files == 2 and rep.ingested_days == [day_name(k) for k in (1, 2, 3)]
    assert sorted_log(s3_log).equals(sorted_log(local_log))


def test_growing_csv_object_ingests_only_new_days(store, tmp_path):
    uri = store.bucket("lfm-src-growing") + "/log.csv"
    local = tmp_path / "log.csv"
    s3_source = FileSource(kind="file", path=uri, spec=SPEC)
    s3_log, local_log = tmp_path / "s3_log", tmp_path / "local_log"
    write_csv(local, day_rows(0))
    upload(local, uri, store)
    materialize(s3_source, s3_log)
    assert last_ingest(s3_log).ingested_days == [day_name(0)]
    for k in (1, 2):
        write_csv(local, day_rows(k), append=True)  # the object is replaced by the longer file
        upload(local, uri, store)
        materialize(s3_source, s3_log)
        rep = last_ingest(s3_log)
        assert rep.ingested_days == [day_name(k)] and rep.reused_days == [day_name(j) for j in range(k)]
    materialize(FileSource(kind="file", path=local, spec=SPEC), local_log)
    got = sorted_log(s3_log)
    assert got.equals(sorted_log(local_log))
    assert {"007", "7"} <= set(got["user_id"].to_pylist()) and set(got["zip"].to_pylist()) == {"02139"}  # as written


def test_missing_bucket_and_missing_prefix_are_one_line(store, tmp_path):
    bucket = store.bucket("lfm-src-present")
    cases = [
        (
            "s3://lfm-src-absent/events",
            ConfigError,
            "source.path: s3://lfm-src-absent/events: bucket 'lfm-src-absent' does not exist",
        ),
        ("s3://lfm-src-absent", ConfigError, "source.path: s3://lfm-src-absent: bucket 'lfm-src-absent' does not"),
        (f"{bucket}/nothing/here", InputError, f"{bucket}/nothing/here: log not found"),
    ]
    for uri, err, msg in cases:
        source = FileSource(kind="file", path=uri, spec=SPEC)
        for call, args in ((materialize, (source, tmp_path / "log")), (validate_source, (source,))):
            with pytest.raises(err) as e:
                call(*args)
            assert str(e.value).startswith(msg) and "\n" not in str(e.value)
        assert not (tmp_path / "log").exists()
    # a prefix with objects, none of them data
    f, path = storage.filesystem(bucket, store.options)
    with f.open_output_stream(f"{path}/notes/readme.md") as out:
        out.write(b"not a log")
    with pytest.raises(InputError, match=r"notes: prefix holds no Parquet or CSV object"):
        validate_source(FileSource(kind="file", path=f"{bucket}/notes", spec=SPEC))


def test_bad_value_in_s3_csv_names_the_uri_and_row(store, tmp_path):
    uri = store.bucket("lfm-src-bad") + "/logs/log.csv"
    local, log = tmp_path / "log.csv", tmp_path / "log"
    bad = day_rows(0).to_pydict()
    bad["click"][7] = 3
    write_csv(local, pa.table(bad))
    upload(local, uri, store)
    source = FileSource(kind="file", path=uri, spec=SPEC)
    want = rf"^{uri}: column 'click' \(spec key tasks\) row 7: value 3.0: labels must be 0, 1 or null$"
    with pytest.raises(InputError, match=want):
        materialize(source, log)
    with pytest.raises(InputError, match=want):
        validate_source(source)
    assert not log.exists()
    # a missing column names the object too
    write_csv(local, day_rows(0).drop_columns(["zip"]))
    upload(local, uri, store)
    with pytest.raises(InputError, match=rf"^{uri}: .*'zip'"):
        validate_source(source)


def test_registered_options_replace_the_environment(store, tmp_path, monkeypatch):
    """The published tables' convention: non-secret options registered for a URI prefix."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    prefix = store.bucket("lfm-src-registered")
    local = tmp_path / "d.parquet"
    pq.write_table(day_rows(0), local)
    upload(local, f"{prefix}/a/d.parquet", store)
    storage.register(prefix, store.options)
    try:
        rep = validate_source(FileSource(kind="file", path=f"{prefix}/a", spec=SPEC))
    finally:
        storage.unregister(prefix)
    assert rep.rows == 40 and rep.days == [day_name(0)]


def test_cli_validate_exit_codes(store, tmp_path):
    """`lfm4ads validate` on a config naming an S3 source (spec_path relative to the file):
    0 on a clean log, 2 on a missing bucket, 5 on a bad value (one line naming the URI)."""
    bucket = store.bucket("lfm-src-cli")
    local = tmp_path / "log.csv"
    write_csv(local, day_rows(0))
    upload(local, f"{bucket}/good/log.csv", store)
    lines = local.read_text().splitlines()
    assert lines[0].split(",")[3].strip('"') == "pl"
    fields = lines[4].split(",")  # data row 3
    fields[3] = "x"
    lines[4] = ",".join(fields)
    local.write_text("\n".join(lines) + "\n")
    upload(local, f"{bucket}/bad/log.csv", store)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC.model_dump(mode="json")))

    def validate(path: str, storage_options: dict | None = None):
        cfg = tmp_path / "run.yaml"
        doc = {"root": "r", "source": {"kind": "file", "path": path, "spec_path": "spec.yaml"}}
        env = {**os.environ}
        if storage_options:  # the endpoint from the run config's storage.options, not the environment
            doc["storage"] = {"options": storage_options}
            env.pop("AWS_ENDPOINT_URL", None)
        cfg.write_text(yaml.safe_dump(doc))
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "validate", "--config", str(cfg)],
            capture_output=True,
            text=True,
            env=env,
        )
        return proc.returncode, " ".join((proc.stdout + proc.stderr).split())

    code, out = validate(f"{bucket}/good")
    assert code == 0, out
    code, out = validate(f"{bucket}/good", store.options)
    assert code == 0, out
    code, out = validate("s3://lfm-src-nowhere/logs")
    assert code == 2 and "source.path: s3://lfm-src-nowhere/logs: bucket 'lfm-src-nowhere' does not exist" in out
    code, out = validate(f"{bucket}/bad")
    assert code == 5 and f"{bucket}/bad/log.csv: column 'pl' (spec key scenario) row 3: value 'x'" in out, out
