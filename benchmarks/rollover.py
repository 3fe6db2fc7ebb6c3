"""Benchmark: does a downstream model trained on the OLD foundation-model version survive a
rollover to a NEW version when fed the new vectors (a) raw or (b) Procrustes-aligned?

Real two-model path: one generated log; two foundation models trained from scratch with
different seeds (``v1``, ``v2``: same shape, so raw new vectors are dimension-compatible
and the break would be *silent*); each extracted and aggregated into its own run root by
the project's chain (``pipelines.run_pipeline`` up to ``extract``); then
``pipelines.rollover.publish_aligned`` publishes ``<table>__aligned_v1`` for every day.

A downstream model (``downstream``'s RankingModel, ``gate_linear`` adapter, all four
tables, the smallest scenario: where transfer matters most) is trained on v1's vectors and evaluated on the test days fed
  (a) v1 vectors, (b) raw v2 vectors, (c) v2 vectors aligned into v1's space,
plus (d) a *frozen* map: fitted once on the last training day, applied to every later day
(the case where the old version stopped publishing), and a vanilla model (no vectors)
for context. The same trained weights and test rows are used for (a)-(d).

    python -m benchmarks.rollover [--users 4000] [--items 2000] [--days 8] [--rows-per-day 12000]
        [--scenario S] [--adapter gate_linear] [--seeds 0 1] [--workdir DIR]

Last stdout line: JSON with auc_old, auc_raw_new, auc_aligned_new, auc_frozen_aligned_new,
auc_vanilla, residuals per table, timings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

TABLES = ["user_ur", "item_ir", "user_cr", "item_cr"]


def version_config(root: Path, source: dict, seed: int, version: str, epochs: int, split: dict) -> dict:
    return {
        "root": str(root),
        "source": source,
        "split": split,
        "pretrain": {"model_version": version,
                     "model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
                     "train": {"epochs": epochs, "batch_size": 512, "seed": seed, "diagnostics": False,
                               "patience": 0}},
    }


def run_version(cfg: dict) -> object:
    """Pretrain + extract + aggregate one version in a FRESH process: a second Ray Train
    run after a Ray Data job in the same Ray session was seen to hang (TrainController
    waiting for a CPU that ``ray status`` shows free). Returns the run state (restored
    from the ledger: the child's run is a finished, reusable one)."""
    import subprocess
    import sys

    from pipelines.config import RunConfig
    from pipelines.run import run_pipeline

    code = ("import json,sys; from pipelines.config import RunConfig; from pipelines.run import run_pipeline; "
            "run_pipeline(RunConfig.model_validate(json.loads(sys.argv[1])), steps=['extract'])")
    subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], check=True)
    # the ledger makes this a no-op that restores ds, split and what was published
    return run_pipeline(RunConfig.model_validate(cfg), steps=["extract"])


def publish_variant(tables_root: Path, old_tables: Path, fit_ds: str | None, days: list[str], centre: bool,
                    scale: bool, method: str, suffix: str) -> dict:
    """A variant map per table, published as ``<table>__<suffix>`` through the same writer:
    fitted ONCE on ``fit_ds`` (same-day pairs) and applied to every day in ``days`` (the old
    version stopped publishing), or, ``fit_ds=None``, fitted per day like publish_aligned."""
    from contracts import REPRESENTATION_TABLES, TableProperties
    from engines import delta_io
    from extract import publish
    from pipelines.rollover import _fixed_list, _renormalise, _shared, _vectors, fit_procrustes

    def fit_on(new_path: Path, old_path: Path, day: str):
        old_snap, new_snap = delta_io.read_days(old_path, [day]), delta_io.read_days(new_path, [day])
        io, inew, _ = _shared(old_snap, new_snap)
        return fit_procrustes(_vectors(old_snap)[io], _vectors(new_snap)[inew], centre=centre, scale=scale,
                              method=method)

    residuals = {}
    for name in TABLES:
        new_path, old_path = tables_root / name, old_tables / name
        props = TableProperties.from_delta(delta_io.table_configuration(old_path))
        amap = fit_on(new_path, old_path, fit_ds) if fit_ds else None
        for d in days:
            if fit_ds is None:
                amap = fit_on(new_path, old_path, d)
            residuals.setdefault(name, {})[d] = round(amap.residual, 4)
            snap = delta_io.read_days(new_path, [d])
            cols = {c: snap[c] for c in ("entity_id", "ds", "layer", "updated_at", "sample_count")}
            cols["model_version"] = pa.array(["v1"] * snap.num_rows, pa.string())
            cols["vector"] = _fixed_list(_renormalise(amap.apply(_vectors(snap)), props.normalisation))
            if REPRESENTATION_TABLES[name].has_state:
                cols["decayed_sum"] = _fixed_list(amap.apply_linear(_vectors(snap, "decayed_sum")))
            publish(tables_root / f"{name}__{suffix}", name, d, pa.table(cols), props)
    return residuals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--rows-per-day", type=int, default=12_000)
    ap.add_argument("--scenario", type=int, default=None,
                    help="downstream scenario; default: the smallest (where transfer matters most)")
    ap.add_argument("--adapter", default="gate_linear", choices=["linear", "gate", "gate_linear"])
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--downstream-epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--no-centre", action="store_true")
    ap.add_argument("--no-scale", action="store_true")
    ap.add_argument("--weight", choices=["none", "sample_count"], default=None,
                    help="Procrustes fit weights (default: RolloverConfig's).")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from contracts import RunLayout
    from datasources import read_log_spec
    from downstream import DownstreamConfig
    from downstream.data import build_scenario_data, read_splits, resolve_scenario, select_rows
    from downstream.evaluate import ranking_builder
    from downstream.train import fit, task_aucs
    from pipelines.rollover import RolloverConfig, publish_aligned, read_map

    torch.set_num_threads(2)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_rollover_"))
    source = {"kind": "generated", "generator": {"num_users": args.users, "num_items": args.items, "days": args.days,
                                                 "rows_per_day": args.rows_per_day, "windows_per_day": 8}}
    split = {"valid_days": 1, "test_days": 1}
    t0 = time.perf_counter()
    st_old = run_version(version_config(work / "v1", source, 0, "v1", args.pretrain_epochs, split))
    t_old = time.perf_counter() - t0
    st_new = run_version(version_config(work / "v2", source, 1, "v2", args.pretrain_epochs, split))
    t_new = time.perf_counter() - t0 - t_old
    old_tables, new_tables = RunLayout(work / "v1").root / "tables", RunLayout(work / "v2").root / "tables"

    t1 = time.perf_counter()
    rcfg = RolloverConfig(centre=not args.no_centre, scale=not args.no_scale, force=True,
                          **({"weight": args.weight} if args.weight else {}))  # defaults otherwise
    published = sorted(st_new.published)
    aligned = {name: {d: publish_aligned(new_tables, name, d, "v2", "v1", rcfg, old_tables_root=old_tables)
                      for d in published} for name in TABLES}
    t_align = time.perf_counter() - t1
    residual = {n: {d: round(r.residual, 4) for d, r in v.items()} for n, v in aligned.items()}
    frozen_fit_ds = st_old.split["train"][-1]
    frozen_res = publish_variant(new_tables, old_tables, frozen_fit_ds, [d for d in published if d > frozen_fit_ds],
                                 not args.no_centre, not args.no_scale, "procrustes", "frozen_v1")
    lstsq_res = publish_variant(new_tables, old_tables, None, published, not args.no_centre, False,
                                "least_squares", "lstsq_v1")

    log = RunLayout(work / "v1").log
    spec = read_log_spec(log)
    sp = st_old.split
    raw = read_splits(log, sp["train"], sp["valid"], sp["test"])
    scenario = resolve_scenario(raw["train"], spec, args.scenario)
    tables = {k: select_rows(v, scenario, "all") for k, v in raw.items()}
    dcfg = DownstreamConfig(epochs=args.downstream_epochs, threads=2, adapter=args.adapter, scenario=scenario)
    feeds = {
        "old": ({n: old_tables / n for n in TABLES}, "v1"),
        "raw_new": ({n: new_tables / n for n in TABLES}, None),  # a silent break: same dims, no version check
        "aligned_new": ({n: new_tables / f"{n}__aligned_v1" for n in TABLES}, "v1"),
        "frozen_aligned_new": ({n: new_tables / f"{n}__frozen_v1" for n in TABLES}, "v1"),
        "lstsq_aligned_new": ({n: new_tables / f"{n}__lstsq_v1" for n in TABLES}, "v1"),
    }
    t2 = time.perf_counter()
    data_old = build_scenario_data(tables, spec, feeds["old"][0], expect_model_version="v1")
    evals = {k: (data_old if k == "old" else build_scenario_data(tables, spec, paths, encoder=data_old.encoder,
                                                                  expect_model_version=mv))
             for k, (paths, mv) in feeds.items()}
    aucs: dict[str, list[float]] = {k: [] for k in [*feeds, "vanilla"]}
    for seed in args.seeds:
        kw = dict(seed=seed, epochs=dcfg.epochs, lr=dcfg.lr, batch_size=dcfg.batch_size, patience=dcfg.patience)
        model, _ = fit(ranking_builder(data_old, dcfg, TABLES, dcfg.adapter), data_old.train, data_old.valid,
                       data_old.test, data_old.tasks, **kw)
        for k, data in evals.items():
            aucs[k].append(task_aucs(model, data.test, data_old.tasks)["click"])
        _, van = fit(ranking_builder(data_old, dcfg, [], "none"), data_old.train, data_old.valid, data_old.test,
                     data_old.tasks, **kw)
        aucs["vanilla"].append(van.test_auc["click"])
    t_down = time.perf_counter() - t2

    mean = {k: round(float(np.mean(v)), 4) for k, v in aucs.items()}
    result = {
        "auc_old": mean["old"],
        "auc_raw_new": mean["raw_new"],
        "auc_aligned_new": mean["aligned_new"],
        "auc_frozen_aligned_new": mean["frozen_aligned_new"],
        "auc_lstsq_aligned_new": mean["lstsq_aligned_new"],
        "auc_vanilla": mean["vanilla"],
        "loss_raw_new": round(mean["old"] - mean["raw_new"], 4),
        "loss_aligned_new": round(mean["old"] - mean["aligned_new"], 4),
        "loss_frozen_aligned_new": round(mean["old"] - mean["frozen_aligned_new"], 4),
        "loss_lstsq_aligned_new": round(mean["old"] - mean["lstsq_aligned_new"], 4),
        "per_seed": {k: [round(x, 4) for x in v] for k, v in aucs.items()},
        "task": "click",
        "scenario": scenario,
        "adapter": args.adapter,
        "train_rows": data_old.train.num_rows,
        "test_rows": data_old.test.num_rows,
        "test_coverage": evals["aligned_new"].coverage,
        "residual_by_day": residual,
        "frozen_fit_ds": frozen_fit_ds,
        "frozen_residual": {n: v[min(v)] for n, v in frozen_res.items()},
        "lstsq_residual_by_day": lstsq_res,
        "centre": not args.no_centre,
        "scale": not args.no_scale,
        "scale_by_day": {n: {d: round(read_map(r.table, d).scale, 4) for d, r in v.items()} for n, v in aligned.items()},
        "config": vars(args) | {"workdir": str(work)},
        "seconds": {"version_old": round(t_old, 1), "version_new": round(t_new, 1), "align": round(t_align, 1),
                    "downstream": round(t_down, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
