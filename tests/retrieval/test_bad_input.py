"""Each bad input fails with a clear error before anything is written."""

from __future__ import annotations

import os

import numpy as np
import pytest

from contracts import REPRESENTATION_TABLES, ConfigError, TableProperties, load_config
from engines import delta_io
from retrieval import RetrievalConfig, SourceError, build_index
from tests.retrieval.helpers import clustered, make_table

DS = "2026-01-02"
CFG = RetrievalConfig(k_values=[5], eval_queries=40)


def _ids(n):
    return [f"i{j}" for j in range(n)]


def _assert_nothing_written(root):
    assert not root.exists() or os.listdir(root) == []


def test_empty_table(tmp_path):
    schema = REPRESENTATION_TABLES["item_ir"].arrow_schema(8)
    props = TableProperties(dim=8, source_checkpoint="c", config_hash="h").to_delta()
    delta_io.replace_day(tmp_path / "t", schema.empty_table(), DS, configuration=props)
    with pytest.raises(SourceError, match="no such partition"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG)
    _assert_nothing_written(tmp_path / "idx")


def test_not_a_table(tmp_path):
    with pytest.raises(SourceError, match="not a Delta table"):
        build_index(tmp_path / "nope", DS, tmp_path / "idx", CFG)


def test_nan_vectors(tmp_path):
    v = clustered(50, 8)
    v[7, 3] = np.nan
    v[9, 0] = np.inf
    make_table(tmp_path / "t", _ids(50), v)
    with pytest.raises(SourceError, match=r"2 vector\(s\) contain NaN/inf: ids 'i7', 'i9'"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG)
    _assert_nothing_written(tmp_path / "idx")


def test_duplicate_ids(tmp_path):
    ids = _ids(50)
    ids[10] = ids[3]
    make_table(tmp_path / "t", ids, clustered(50, 8))
    with pytest.raises(SourceError, match="duplicate entity id.*'i3'"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG)
    _assert_nothing_written(tmp_path / "idx")


def test_dim_mismatch_between_properties_and_vectors(tmp_path):
    make_table(tmp_path / "t", _ids(50), clustered(50, 16), props_dim=8)
    with pytest.raises(SourceError, match="length 16 but the table properties say dim=8"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG)


def test_query_dim_mismatch(tmp_path):
    make_table(tmp_path / "t", _ids(50), clustered(50, 8))
    with pytest.raises(SourceError, match="dimension mismatch"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG, queries=np.zeros((30, 4), np.float32))
    with pytest.raises(SourceError, match="evaluation queries.*NaN"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG, queries=np.full((30, 8), np.nan, np.float32))
    _assert_nothing_written(tmp_path / "idx")


def test_mixed_model_versions(tmp_path):
    make_table(tmp_path / "t", _ids(4), clustered(4, 8), model_version=["m1", "m1", "m2", "m1"])
    with pytest.raises(SourceError, match=r"one model_version, found \['m1', 'm2'\]"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG)


def test_unexpected_model_version(tmp_path):
    make_table(tmp_path / "t", _ids(30), clustered(30, 8), model_version="m2")
    with pytest.raises(SourceError, match="model_version is 'm2', expected 'm1'"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG, expect_model_version="m1")
    _assert_nothing_written(tmp_path / "idx")


def test_cosine_zero_vector(tmp_path):
    v = clustered(20, 8)
    v[4] = 0
    make_table(tmp_path / "t", _ids(20), v)
    with pytest.raises(SourceError, match="zero vector.*'i4'"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG.model_copy(update={"metric": "cosine"}))


def test_missing_table_properties(tmp_path):
    schema = REPRESENTATION_TABLES["item_ir"].arrow_schema(8)
    delta_io.ensure_table(tmp_path / "t", schema)  # no lfm4ads.* properties
    with pytest.raises(SourceError, match="table properties"):
        build_index(tmp_path / "t", DS, tmp_path / "idx", CFG)


def test_config_errors(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("metric: cosine\nrecal_target: 0.9\n")
    with pytest.raises(ConfigError, match="recal_target: unknown key"):
        load_config(p, RetrievalConfig)
    with pytest.raises(ValueError, match="not an item table"):
        RetrievalConfig(source_table="user_ur")
    with pytest.raises(ValueError, match="not a user table"):
        RetrievalConfig(query_table="item_ir")
    with pytest.raises(ValueError, match="positive integers"):
        RetrievalConfig(k_values=[0, 10])
    assert RetrievalConfig(k_values=[100, 10, 10]).k_values == [10, 100]
