"""Input files are checked against the Delta log before any engine reads them."""

import pytest

from datasources import GeneratorConfig, generate_log
from engines import delta_io
from pipelines.preflight import InputFileError, check_log_files

DAYS = ["2026-01-01", "2026-01-02"]


@pytest.fixture()
def log(tmp_path):
    path = tmp_path / "log"
    generate_log(GeneratorConfig(num_users=20, num_items=10, days=2, rows_per_day=50, windows_per_day=1), path)
    return path


def _file(log, ds):
    return delta_io.day_file_uris(log, ds)[0].removeprefix("file://")


def test_good_log_passes(log):
    assert check_log_files(log, DAYS) == 2
    assert check_log_files(log, DAYS[:1]) == 1


def test_truncated_file_is_named(log):
    path = _file(log, DAYS[1])
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    check_log_files(log, DAYS[:1])  # other days are not its business
    with pytest.raises(InputFileError, match=rf"{path}.*ds={DAYS[1]}.*truncated or replaced"):
        check_log_files(log, DAYS)


def test_same_size_garbage_and_missing_file(log):
    path = _file(log, DAYS[0])
    size = len(open(path, "rb").read())
    open(path, "wb").write(b"x" * size)
    with pytest.raises(InputFileError, match="unreadable Parquet footer"):
        check_log_files(log, DAYS)
    import os

    os.remove(path)
    with pytest.raises(InputFileError, match="file is missing"):
        check_log_files(log, DAYS)
