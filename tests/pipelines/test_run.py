"""End to end: a small generated log through every stage, on the real engines."""

import subprocess
import sys

import faiss
import pytest
from deltalake import DeltaTable

from contracts import REPRESENTATION_TABLES, RunLayout, TableProperties
from contracts.index import INDEX_FILE
from pipelines import RunConfig, run_pipeline

TINY = {
    "source": {"kind": "generated", "generator": {"num_users": 300, "num_items": 150, "days": 4,
                                                  "rows_per_day": 1500, "windows_per_day": 4}},
    "split": {"valid_days": 1, "test_days": 1},
    "pretrain": {"model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
                 "train": {"epochs": 1, "batch_size": 256, "diagnostics_rows": 200}},
    "downstream": {"scenario": 0, "epochs": 2, "representations": ["user_ur", "item_ir", "user_cr", "item_cr"]},
    "retrieval": {"recall_target": 0.5},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, ray_cluster, spark):
    root = tmp_path_factory.mktemp("run")
    cfg = RunConfig.model_validate({**TINY, "root": str(root)})
    st = run_pipeline(cfg)
    return cfg, st


def test_tables_are_delta_with_the_contract_schema(finished_run):
    cfg, st = finished_run
    layout = RunLayout(cfg.root)
    days = st.days
    for name, spec in REPRESENTATION_TABLES.items():
        dt = DeltaTable(str(layout.table(name)))
        props = TableProperties.from_delta(dict(dt.metadata().configuration))
        assert props.source_checkpoint == st.manifest.model_version
        assert dt.metadata().partition_columns == ["ds"]
        assert sorted({p["ds"] for p in dt.partitions()}) == days
        table = dt.to_pyarrow_table()
        assert set(table.column_names) == set(spec.arrow_schema(props.dim).names)
        assert table.num_rows > 0


def test_index_and_report(finished_run):
    cfg, st = finished_run
    layout = RunLayout(cfg.root)
    current = (layout.indexes / "CURRENT").read_text().strip()
    index = faiss.read_index(str(layout.indexes / current / INDEX_FILE))
    assert index.ntotal == st.index["num_items"] > 0
    report = st.report.read_text()
    assert "| vanilla |" in report and "| transfer |" in report and "recall@K" in report
    # Tiny data: the AUC itself is noise here; its learnability is tested in downstream/.
    assert 0.0 < st.downstream["vanilla"]["test_auc"]["click"] < 1.0


def test_rerun_reuses_every_finished_step(finished_run):
    cfg, st = finished_run
    again = run_pipeline(cfg)
    assert all(again.timings[s] == 0.0 for s in ("pretrain", "extract", "downstream", "retrieval"))
    assert again.checkpoint == st.checkpoint and again.index["version"] == st.index["version"]


def test_cli_names_a_misspelled_key(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text(f"root: {tmp_path}\npretrain:\n  train:\n    epoch: 3\n")
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--config", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pretrain.train.epoch: unknown key" in proc.stderr


def test_example_configs_validate():
    from pathlib import Path

    from contracts import load_config

    for path in sorted(Path("configs").glob("*.yaml")):
        if path.name in ("demo.yaml", "movielens.yaml") or path.name.startswith("cluster"):
            load_config(path, RunConfig)
