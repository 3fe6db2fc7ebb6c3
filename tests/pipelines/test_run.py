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
    "source": {
        "kind": "generated",
        "generator": {"num_users": 300, "num_items": 150, "days": 4, "rows_per_day": 1500, "windows_per_day": 4},
    },
    "split": {"valid_days": 1, "test_days": 1},
    "pretrain": {
        "model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
        "train": {"epochs": 1, "batch_size": 256, "diagnostics_rows": 200},
    },
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
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--config", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "pretrain.train.epoch: unknown key" in proc.stderr


def test_example_configs_validate():
    from pathlib import Path

    from contracts import load_config

    for path in sorted(Path("configs").glob("*.yaml")):
        if path.name in ("demo.yaml", "movielens.yaml") or path.name.startswith("cluster"):
            load_config(path, RunConfig)


# --- engines start lazily: only a step that still has work for them starts them --------------
_RERUN = """
import json, sys
import ray
from engines import spark_session
from pipelines import RunConfig, run_pipeline
st = run_pipeline(RunConfig.model_validate_json(sys.argv[1]), json.loads(sys.argv[2]))
print(json.dumps({"ray": ray.is_initialized(), "spark": spark_session._SESSION is not None,
                  "timings": st.timings}))
"""


def _rerun_in_fresh_process(cfg, root, steps=None) -> dict:
    """run_pipeline(steps) on ``root`` in a new interpreter (no engine of this test
    session); returns whether Ray / Spark were started there, and the step timings."""
    import json

    cfg2 = cfg.model_copy(update={"root": str(root)})
    proc = subprocess.run(
        [sys.executable, "-c", _RERUN, cfg2.model_dump_json(), json.dumps(steps)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rows(path, days):
    t = DeltaTable(str(path)).to_pyarrow_table().sort_by([("ds", "ascending"), ("entity_id", "ascending")])
    return [r for r in t.select(["ds", "entity_id", "vector", "sample_count"]).to_pylist() if r["ds"] in days]


def test_run_without_engine_work_left_starts_neither_spark_nor_ray(finished_run, tmp_path):
    """Ledger gone: every step runs again, but the checkpoint, the extracted days and the
    published days are recognised, so no step has work for Spark or Ray."""
    import shutil

    cfg, st = finished_run
    root = tmp_path / "root"
    shutil.copytree(cfg.root, root, ignore=shutil.ignore_patterns("ledger.sqlite", "*.lock"))
    versions = {n: DeltaTable(str(RunLayout(root).table(n))).version() for n in REPRESENTATION_TABLES}
    out = _rerun_in_fresh_process(cfg, root)
    assert out["ray"] is False and out["spark"] is False
    assert out["timings"]["extract"] > 0 and out["timings"]["downstream"] > 0  # ran, not reused
    assert {n: DeltaTable(str(RunLayout(root).table(n))).version() for n in REPRESENTATION_TABLES} == versions


def test_run_with_only_publishing_left_starts_spark_not_ray(finished_run, tmp_path):
    """One table lost (and the ledger): the extract step must publish it again for every
    day, from the extracted samples (Spark), without extracting again (no Ray); same rows."""
    import shutil

    cfg, st = finished_run
    root = tmp_path / "root"
    shutil.copytree(cfg.root, root, ignore=shutil.ignore_patterns("ledger.sqlite", "*.lock"))
    shutil.rmtree(RunLayout(root).table("item_cr"))
    out = _rerun_in_fresh_process(cfg, root, ["extract"])
    assert out["spark"] is True and out["ray"] is False
    days = st.days
    got, want = _rows(RunLayout(root).table("item_cr"), days), _rows(RunLayout(cfg.root).table("item_cr"), days)
    assert {r["ds"] for r in got} == set(days)
    assert [(r["ds"], r["entity_id"], r["sample_count"]) for r in got] == [
        (r["ds"], r["entity_id"], r["sample_count"]) for r in want
    ]
    for g, w in zip(got, want):
        assert max(abs(a - b) for a, b in zip(g["vector"], w["vector"])) < 1e-6


def test_rollover_step_publishes_aligned_tables_or_refuses_loudly(finished_run, tmp_path):
    """A new version (random weights: the wiring is under test, the map's quality is in
    test_rollover.py and benchmarks.rollover) in its own root, rolled over from the
    finished run's version: a gate it cannot pass fails the step (ledger, report, nothing
    aligned); a bound it passes publishes every day's aligned tables as the old version,
    each equal to the recorded map applied to the new table; a rerun reuses the step."""
    import numpy as np

    from engines import delta_io
    from extract import read_asof
    from pipelines.ledger import Ledger
    from pipelines.rollover import RolloverError, aligned_table_name, read_map
    from tests.pipelines.helpers import untrained_checkpoint

    old_cfg, old_st = finished_run
    v1 = old_st.manifest.model_version
    old_tables = RunLayout(old_cfg.root).root / "tables"
    base = {**TINY, "root": str(tmp_path)}
    roll = {"previous_model_version": v1, "previous_tables_root": str(old_tables), "min_shared_entities": 20}
    cfg = RunConfig.model_validate({**base, "rollover": {**roll, "max_residual": 0.05}})
    untrained_checkpoint(cfg, "v2-untrained")
    with pytest.raises(
        RolloverError,
        match=r"user_ur ds=\S+: alignment residual 0\.\d+ of v2-untrained onto .* "
        r"above max_residual=0\.05",
    ):
        run_pipeline(cfg, steps=["extract", "rollover"])
    rows = {r["step"]: r for r in Ledger(tmp_path / "ledger.sqlite").rows(old_st.ds)}
    assert rows["extract"]["status"] == "done" and rows["rollover"]["status"] == "failed"
    assert "RolloverError" in rows["rollover"]["error"]
    report = next((tmp_path / "reports").rglob("report.md")).read_text()
    assert "## ROLLOVER REFUSED" in report and "max_residual=0.05" in report
    assert not delta_io.exists(tmp_path / "tables" / aligned_table_name("user_ur", v1))

    # a residual <= 1 always passes (scale-free): the same root, extract reused from the ledger
    ok = RunConfig.model_validate({**base, "rollover": {**roll, "max_residual": 1.0}})
    st = run_pipeline(ok, steps=["extract", "rollover", "report"])
    assert st.timings["extract"] == 0.0
    days = sorted(st.published)
    assert sorted(st.rollover) == days
    for name in REPRESENTATION_TABLES:
        out = tmp_path / "tables" / aligned_table_name(name, v1)
        assert delta_io.list_days(out) == days
        props = TableProperties.from_delta(delta_io.table_configuration(out))
        old_props = TableProperties.from_delta(delta_io.table_configuration(old_tables / name))
        assert (props.source_checkpoint, props.dim, props.normalisation) == (v1, old_props.dim, old_props.normalisation)
        d = days[-1]
        got = read_asof(out, d, inclusive=True, expect_model_version=v1).sort_by("entity_id")
        new = delta_io.read_days(tmp_path / "tables" / name, [d]).sort_by("entity_id")
        assert got["entity_id"].to_pylist() == new["entity_id"].to_pylist()  # new-only entities included
        want = read_map(out, d).apply(np.asarray(new["vector"].to_pylist(), dtype=np.float64))
        if old_props.normalisation == "l2":
            want /= np.linalg.norm(want, axis=1, keepdims=True)
        elif old_props.normalisation == "layernorm":
            want = (want - want.mean(1, keepdims=True)) / np.sqrt(want.var(1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(np.asarray(got["vector"].to_pylist()), want, atol=2e-4)
        assert st.rollover[d][name]["residual"] <= 1.0
    assert "## Model-version rollover" in st.report.read_text()
    assert run_pipeline(ok, steps=["extract", "rollover"]).timings["rollover"] == 0.0
    # alone (`lfm4ads stage rollover`): extract is not in the chain, so the step aligns ds itself
    alone = run_pipeline(ok, steps=["rollover"], force=True)
    assert list(alone.rollover) == [old_st.ds] and alone.rollover[old_st.ds]["user_ur"]["version"] is not None


def test_sigint_inside_every_step_stops_it_and_the_next_run_redoes_it(finished_run, tmp_path):
    """Last in this module (it leaves the finished run as it found it). On the finished day,
    each step in turn is rerun (`stage S --force`, a real CLI process) and stopped by SIGINT
    inside it (the pause hook holds the step once the ledger marks it running): exit 130, the
    step `interrupted`, a JSON error line, and every output of the finished run as it was
    (table versions, live index, checkpoints). The next run redoes exactly those steps.
    Stops in the middle of real work: tests/pipelines/test_interrupt.py."""
    import signal
    from pathlib import Path

    import yaml

    from tests.pipelines.test_interrupt import (
        _finish,
        _json_lines,
        _ledger,
        _paused,
        _start_paused,
        _wait_until,
        outputs,
    )

    cfg, _ = finished_run
    root = Path(cfg.root)
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    finished = outputs(root)
    assert all(finished)
    order = ["ingest", "pretrain", "extract", "rollover", "downstream", "retrieval", "report"]
    for step in order:
        err_path = tmp_path / f"err-{step}.jsonl"
        proc = _start_paused(["stage", step, "--force", "--config", str(cfg_path)], step, err_path)
        _wait_until(proc, lambda e=err_path, s=step: _paused(e, s), timeout=180)
        rc, out, _ = _finish(proc, signal.SIGINT)
        err = err_path.read_text()
        assert rc == 130, err[-3000:]
        assert _ledger(root)[step] == "interrupted", step
        assert outputs(root) == finished, f"stopping {step} changed a published output"
        assert out.strip() == ""  # no result object: the run did not finish
        lines = _json_lines(err)  # json mode: every stderr line is a JSON object, the error too
        assert lines[-1]["exit_code"] == 130 and "SIGINT" in lines[-1]["msg"]
    again = run_pipeline(cfg)
    # pretrain, stopped second, was already redone by the next `stage` call (a dependency of
    # it: the checkpoint taken again); every other stopped step runs again here
    assert again.reused == ["pretrain"], again.reused
    assert all(v == "done" for k, v in _ledger(root).items() if k != "ingest"), _ledger(root)
