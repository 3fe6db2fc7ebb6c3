"""A user's own log, day after day: a growing CSV file and a day-partitioned folder, three
daily runs each (one checkpoint on fixed training days, as a scheduled daily job keeps),
every new day ingested once, and the published tables equal to one clean run over the
same days with the same checkpoint. The checkpoint has random weights, made once and
found by each root's pretrain step as its reusable checkpoint: what is under test is
ingest, extraction and publishing on a growing source. (Training is tested in
tests/pretrain/test_train.py, which also shows that a fresh root trains the same
checkpoint, and in test_run.py.)"""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from contracts import REPRESENTATION_TABLES, RunLayout
from datasources import GeneratorConfig, generate_days
from pipelines import RunConfig, run_pipeline

GEN = GeneratorConfig(num_users=200, num_items=100, days=5, rows_per_day=600, windows_per_day=2)
SPEC = {
    "name": "daily",
    "scenarios": {int(k): v for k, v in GEN.scenarios.items()},
    "sample_type": "sample_type",
    "tasks": ["click", "conversion"],
    "user_features": ["age", "gender", "city", "device"],
    "item_features": ["category", "advertiser", "item_type"],
    "event_time_unit": "us",
    "sequence": {"max_len": GEN.seq_len, "positive_task": "click"},
}
BASE = {
    "split": {"valid_start": "2026-01-02", "test_start": "2026-01-03"},
    "pretrain": {
        "model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
        "train": {"epochs": 1, "batch_size": 256, "diagnostics_rows": 200},
    },
}
FIRST = 3  # days in the source at the first daily run; one more day arrives per run


@pytest.fixture(scope="module")
def days() -> list[tuple[str, pa.Table]]:
    """The generator's days as a user's raw log: epoch-microsecond times, no sequences."""
    out = []
    for ds, t in generate_days(GEN):
        t = t.drop_columns(["ds", "hist_seq"])
        t = t.set_column(t.schema.get_field_index("event_time"), "event_time", t["event_time"].cast(pa.int64()))
        out.append((ds, t))
    return out


def _cfg(root, path) -> RunConfig:
    return RunConfig.model_validate(
        {**BASE, "root": str(root), "source": {"kind": "file", "path": str(path), "spec": SPEC}}
    )


def _append_csv(path, t: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    pacsv.write_csv(t, buf, pacsv.WriteOptions(include_header=not path.exists()))
    with open(path, "ab") as f:
        f.write(buf.getvalue().to_pybytes())


def _snapshot(root) -> dict[str, pa.Table]:
    """Each representation table's current rows, sorted, without the checkpoint's name
    (``model_version`` carries the checkpoint's creation time)."""
    out = {}
    for name in REPRESENTATION_TABLES:
        t = DeltaTable(str(RunLayout(root).table(name))).to_pyarrow_table().drop_columns(["model_version"])
        out[name] = t.sort_by([("ds", "ascending"), ("entity_id", "ascending")])
    return out


def _assert_equal_tables(got: dict[str, pa.Table], want: dict[str, pa.Table]) -> None:
    for name, w in want.items():
        g = got[name]
        assert g.num_rows == w.num_rows > 0, name
        for col in w.column_names:
            if col in ("vector", "decayed_sum"):
                a = np.asarray(g[col].combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float64)
                b = np.asarray(w[col].combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float64)
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{name}.{col}")
            else:
                assert g[col].equals(w[col]), f"{name}.{col}"


def _checkpoint_on_the_training_days(tmp_path, days) -> RunLayout:
    """A random-weight checkpoint for BASE's split, made in a scratch root from the first
    FIRST days (the training days' vocabulary is all it reads)."""
    from tests.pipelines.helpers import untrained_checkpoint

    src = tmp_path / "scratch.csv"
    for _, t in days[:FIRST]:
        _append_csv(src, t)
    cfg = _cfg(tmp_path / "scratch", src)
    untrained_checkpoint(cfg, "v-daily")
    return RunLayout(cfg.root)


def test_daily_runs_on_a_growing_file_and_a_day_folder_equal_a_clean_run(tmp_path, days, ray_cluster, spark):
    src = tmp_path / "source.csv"
    folder = tmp_path / "by_day"
    file_root, folder_root, clean_root = tmp_path / "daily_file", tmp_path / "daily_folder", tmp_path / "clean"
    scratch = _checkpoint_on_the_training_days(tmp_path, days)
    for root in (file_root, folder_root, clean_root):  # a user pinning one model
        shutil.copytree(scratch.checkpoints, RunLayout(root).checkpoints)
    for run, n in enumerate(range(FIRST, len(days) + 1)):
        new = days[:FIRST] if run == 0 else [days[n - 1]]
        for ds, t in new:  # the day's rows land in both sources
            _append_csv(src, t)
            (folder / f"ds={ds}").mkdir(parents=True)
            pq.write_table(t, folder / f"ds={ds}" / "part-0.parquet")
        st = run_pipeline(_cfg(file_root, src), steps=["extract"])
        assert st.ingest.ingested_days == [ds for ds, _ in new], run  # each new day once, old days not again
        assert st.ds == days[n - 1][0]
        assert st.checkpoint.name == "v-daily"  # found, not trained: the training days are fixed
        st2 = run_pipeline(_cfg(folder_root, folder), steps=["extract"])
        assert st2.ingest.ingested_days == [ds for ds, _ in new], run
        assert st2.checkpoint.name == "v-daily"

    clean = run_pipeline(_cfg(clean_root, src), steps=["extract"])  # every day at once
    assert clean.ingest.ingested_days == [ds for ds, _ in days] and clean.checkpoint.name == "v-daily"
    want = _snapshot(clean_root)
    _assert_equal_tables(_snapshot(file_root), want)
    _assert_equal_tables(_snapshot(folder_root), want)
