"""The run report: the downstream scenario named, rows and positives per split counted like
a plain filter over the log, a warning instead of an AUC/lift resting on too few positives,
the spread over seeds, representation collapse flagged from the published table itself, and
a report that said RUN STOPPED rewritten once the day gets through."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from contracts import RunLayout
from datasources import generate_log, read_log
from datasources.generator import GeneratorConfig
from pipelines import RunConfig, RunState
from pipelines.report import write_report

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]


def _downstream(tasks, seeds=3) -> dict:
    per_seed = [{"test_auc": {t: 0.6 + 0.01 * s for t in tasks}, "valid_auc": 0.6} for s in range(seeds)]
    res = {"test_auc": {t: 0.61 for t in tasks}, "test_auc_std": {t: 0.01 for t in tasks}, "per_seed": per_seed}
    return {
        "scenario": 2,
        "scenario_name": "splash",
        "tasks": tasks,
        "representations": ["user_ur"],
        "adapter": "gate",
        "coverage": {},
        "rows": {"train": 1, "valid": 1, "test": 1},
        "days": {"train": DAYS[:2], "valid": DAYS[2:3], "test": DAYS[3:]},
        "vanilla": res,
        "transfer": res,
        "lift": {t: 0.0123 for t in tasks},
    }


def _vectors(n: int, dim: int, rank: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, dim))
    return x.astype(np.float32).tolist()


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    layout = RunLayout(root)
    spec = generate_log(
        GeneratorConfig(num_users=50, num_items=30, days=4, rows_per_day=400, windows_per_day=1), layout.log
    )
    for name, rank in (("user_ur", 1), ("item_ir", 16)):  # user_ur collapsed onto one direction
        table = pa.table(
            {
                "ds": [DAYS[-1]] * 200,
                "entity_id": [str(i) for i in range(200)],
                "vector": pa.array(_vectors(200, 16, rank), pa.list_(pa.float32())),
            }
        )
        write_deltalake(str(layout.table(name)), table, partition_by=["ds"])
    return root, spec


def _state(spec, downstream) -> RunState:
    return RunState(
        ds=DAYS[-1],
        days=DAYS,
        split={"train": DAYS[:2], "valid": DAYS[2:3], "test": DAYS[3:]},
        published={DAYS[-1]: {"user_ur": 0, "item_ir": 0}},
        downstream=downstream,
        timings={"pretrain": 0.0, "extract": 3.2},
        reused=["pretrain"],
    )


def test_counts_positives_and_warns_instead_of_a_lift(run_root):
    root, spec = run_root
    tasks = list(spec.tasks)
    log = read_log(RunLayout(root).log, DAYS[3:]).to_pylist()  # the reference: a plain loop
    want = {t: sum(1 for r in log if r["scenario"] == 2 and r[t] == 1) for t in tasks}
    cfg = RunConfig.model_validate(
        {"root": str(root), "downstream": {"scenario": 2}, "report": {"min_positives": max(want.values()) + 1}}
    )
    text = write_report(cfg, RunLayout(root), _state(spec, _downstream(tasks))).read_text()
    assert "## Downstream: scenario `splash` (id 2)" in text
    test_row = next(line for line in text.splitlines() if line.startswith("| test |"))
    assert test_row.split("|")[3:-1] == [f" {want[t]} " for t in tasks]
    for t in tasks:
        assert f"**{t}**: only {want[t]} positive(s) in the test split" in text
    assert "Lift (transfer - vanilla)" not in text and "+0.0123" not in text
    assert "| pretrain | reused |" in text

    cfg = cfg.model_copy(update={"report": cfg.report.model_copy(update={"min_positives": 0})})
    text = write_report(cfg, RunLayout(root), _state(spec, _downstream(tasks))).read_text()
    assert "Lift (transfer - vanilla): " + ", ".join(f"{t} +0.0123" for t in tasks) in text
    assert "0.6100 ± 0.0100 [0.6000, 0.6200]" in text  # mean ± std [min, max] over the 3 seeds
    one = write_report(cfg, RunLayout(root), _state(spec, _downstream(tasks, seeds=1))).read_text()
    assert "One seed: no spread" in one


def test_flags_representation_collapse(run_root):
    root, spec = run_root
    cfg = RunConfig.model_validate({"root": str(root), "report": {"min_rank_share": 0.25}})
    text = write_report(cfg, RunLayout(root), _state(spec, None)).read_text()
    rows = {
        line.split("|")[1].strip(): line
        for line in text.splitlines()
        if line.startswith("| user_ur |") or line.startswith("| item_ir |")
    }
    assert "collapsed" in rows["user_ur"] and "collapsed" not in rows["item_ir"]
    assert "representation collapse**: `user_ur`" in text


def test_a_stopped_report_is_rewritten_when_the_day_gets_through(run_root):
    from pipelines.run import _refresh_stopped_report

    root, spec = run_root
    cfg = RunConfig.model_validate({"root": str(root)})
    st = _state(spec, None)
    write_report(cfg, RunLayout(root), st, failure="quality gate failed for ds=x", failed_step="extract")
    assert "RUN STOPPED" in (RunLayout(root).report(DAYS[-1]) / "report.md").read_text()
    _refresh_stopped_report(cfg, RunLayout(root), st, ["ingest", "pretrain"])  # not past the gate yet
    assert "RUN STOPPED" in (RunLayout(root).report(DAYS[-1]) / "report.md").read_text()
    _refresh_stopped_report(cfg, RunLayout(root), st, ["ingest", "pretrain", "extract"])
    assert "RUN STOPPED" not in (RunLayout(root).report(DAYS[-1]) / "report.md").read_text()
