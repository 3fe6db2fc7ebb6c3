"""Cells of the transfer table: early stopping against a plain loop, the scenario cache,
one worker pool for the whole table, where the time went (issue 15, item 5)."""

import copy
import json
import math
from pathlib import Path

import torch

from downstream import DownstreamConfig
from downstream.data import load_scenario
from downstream.evaluate import ranking_builder, torch_threads
from downstream.train import fit_scenario, selection_auc, task_aucs
from pretrain.device import seed_everything
from pretrain.losses import multitask_loss
from studies.cells import CellStore
from studies.transfer_config import TransferExperimentConfig
from studies.transfer_table import run_transfer_experiment
from tests.downstream.synth import DAYS, SPEC, make_run


def _plain_loop(build, data, cfg: DownstreamConfig, seed: int):
    """Early stopping written out: train epoch by epoch, score validation, keep the best
    weights, stop after ``patience`` epochs in a row without a gain (> 1e-6)."""
    seed_everything(seed)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history, best, best_epoch, best_state, bad = [], -math.inf, 0, None, 0
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(data.train.num_rows, generator=gen)
        for start in range(0, data.train.num_rows, cfg.batch_size):
            b = data.train.take(perm[start : start + cfg.batch_size])
            loss = multitask_loss(model(b), b["labels"], b["label_mask"], data.tasks, {})[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        v = selection_auc(task_aucs(model, data.valid, data.tasks))
        history.append(v)
        if v > best + 1e-6:
            best, best_epoch, best_state, bad = v, epoch + 1, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
        if bad >= cfg.patience:
            break
    model.load_state_dict(best_state)
    return history, best, best_epoch, task_aucs(model, data.test, data.tasks)


def test_early_stopping_stops_when_validation_does_not_improve(tmp_path):
    make_run(tmp_path, rows_per_day=300)
    _, data = load_scenario(
        tmp_path / "log", tmp_path, SPEC, 0, "all", ["user_ur", "item_ir"], DAYS[:2], [DAYS[2]], [DAYS[3]]
    )
    # a high learning rate on ~300 rows overfits within a few epochs: validation turns down
    cfg = DownstreamConfig(epochs=30, patience=2, lr=0.02, batch_size=64, seeds=[0])
    build = ranking_builder(data, cfg, ["user_ur", "item_ir"], "linear")
    with torch_threads(1):
        _, r = fit_scenario(build, data, cfg, 0)
        history, best, best_epoch, test_auc = _plain_loop(build, data, cfg, 0)
    assert r.history == history and r.epochs == len(history)
    assert r.epochs < cfg.epochs, "the budget bound; the case must stop early"
    assert r.epochs - r.best_epoch == cfg.patience  # stopped exactly `patience` epochs after the best
    assert all(v <= best + 1e-6 for v in history[best_epoch:])
    assert r.best_epoch == best_epoch and r.valid_auc == best
    assert r.test_auc == test_auc  # the best epoch's weights were restored
    assert set(r.seconds) == {"build", "train", "valid", "test"} and r.seconds["train"] > 0


def test_scenario_data_is_built_once_and_reused(tmp_path):
    make_run(tmp_path, rows_per_day=300)
    store = CellStore(tmp_path / "cells" / "x")
    builds = []

    def build():
        builds.append(1)
        return load_scenario(tmp_path / "log", tmp_path, SPEC, 1, "all", [], DAYS[:2], [DAYS[2]], [DAYS[3]])[1]

    p1 = store.cached_data("1", "daily", build)
    mtime = p1.stat().st_mtime_ns
    p2 = CellStore(tmp_path / "cells" / "x").cached_data("1", "daily", build)  # e.g. a resumed run
    assert p1 == p2 and len(builds) == 1 and p2.stat().st_mtime_ns == mtime
    assert torch.load(p2, weights_only=False).train.num_rows > 0


def test_one_pool_for_all_scenarios_and_timing(tmp_path):
    """Two scenarios through 2 workers: the workers start once for the table (not once per
    scenario), every cell is stored by the worker that trained it, and the result says
    where the time went."""
    make_run(tmp_path, rows_per_day=300)
    cfg = TransferExperimentConfig(
        downstream=DownstreamConfig(epochs=2, batch_size=256, seeds=[0, 1]),
        adapters=["linear"],
        cross_adapters=[],
        rep_sets=[],
        module_k=[],
        workers=2,
    )
    out = run_transfer_experiment(tmp_path / "log", tmp_path, tmp_path / "r", cfg)
    assert out["cells"]["computed"] == 2 * 3 * 2 and sorted(out["scenarios"]) == [0, 1]
    files = sorted(Path(out["cells"]["folder"]).glob("s*/*.json"))
    assert len(files) == 12
    stored = [json.loads(f.read_text()) for f in files]
    starts = [c["process_s"]["start"] for c in stored if "start" in c.get("process_s", {})]
    assert 1 <= len(starts) <= 2  # one start per worker process, whatever the number of scenarios
    assert all(len(c["history"]) == c["epochs"] for c in stored)
    t = out["timing"]
    assert {"read_s", "data_s", "fit_s", "report_s", "fit_s_by_method", "phase_s"} <= set(t)
    assert {"build", "train", "valid", "test", "start", "data", "fit_cpu"} <= set(t["phase_s"])
    assert t["phase_s"]["train"] > 0 and t["phase_s"]["fit_cpu"] > 0


def test_join_once_then_slice_equals_the_per_scenario_join(tmp_path):
    """The table joins each split once for all scenarios and slices it; the scenario data
    must be exactly what joining the scenario's own rows gives."""
    import pyarrow as pa

    from downstream.data import build_scenario_data, join_once, read_splits, rep_table_paths, select_indices

    make_run(tmp_path, rows_per_day=300)
    raw = read_splits(tmp_path / "log", DAYS[:2], [DAYS[2]], [DAYS[3]])
    reps = rep_table_paths(tmp_path, ["user_ur", "item_ir", "user_cr", "item_cr"])
    joins = {k: join_once(v, reps) for k, v in raw.items()}
    for s in (0, 1):
        rows = {k: select_indices(v, s, "all") for k, v in raw.items()}
        tables = {k: v.take(pa.array(rows[k])) for k, v in raw.items()}
        a = build_scenario_data(tables, SPEC, reps, joined={k: joins[k].take(rows[k]) for k in raw})
        b = build_scenario_data(tables, SPEC, reps)
        for split in ("train", "valid", "test"):
            x, y = getattr(a, split).batch, getattr(b, split).batch
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        assert a.coverage == b.coverage and a.rep_dims == b.rep_dims
