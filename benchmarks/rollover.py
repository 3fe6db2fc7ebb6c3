"""Benchmark: does a downstream model trained on the OLD foundation-model version survive a
rollover to a NEW version when fed the new vectors (a) raw or (b) Procrustes-aligned?

Real two-model path: one generated log; the old version ``v1`` and two new versions, each
extracted and aggregated into its own run root by the project's chain
(``pipelines.run_pipeline`` up to ``extract``):

- ``v2``: trained from scratch with another seed (the hard case: nothing ties its space
  to v1's; same shape, so raw new vectors are dimension-compatible and the break is *silent*);
- ``v3`` (``--warm-epochs`` > 0): warm-started from v1's checkpoint (``pretrain.init_from``)
  and trained further with another seed: how production rollovers happen.

``pipelines.rollover.publish_aligned`` publishes ``<table>__aligned_v1`` for every day,
plus side-by-side variants of the fit (``benchmarks/rollover_fits.py``, the options the
product does not use: pooled days, l2 fit space, no scale, norm scale, least squares, a
frozen map). A downstream model (``benchmarks/rollover_eval.py``: ``downstream``'s
RankingModel, ``gate_linear`` adapter, all four tables; by default every scenario pooled:
the most test rows) is trained on v1's vectors per seed and evaluated, with the SAME
weights and test rows, fed each table set. Reported per feed: the mean click test AUC over seeds, the paired loss
``AUC(old) - AUC(feed)`` with its standard error across seeds (``se_seed``), a paired
bootstrap over test rows (``se_rows``) and both combined (``se``).

    python -m benchmarks.rollover [--users 4000] [--items 2000] [--days 8] [--rows-per-day 12000]
        [--eval pooled|smallest] [--scenario S] [--seeds 0 1 2] [--new-seed 1]
        [--warm-epochs 1] [--log-seed 0] [--min-shared-entities N] [--workdir DIR]
    python -m benchmarks.rollover --summarise run1.out run2.out ...   # mean loss +- SE across replicates

Last stdout line: JSON with auc_old, auc_raw_new, auc_aligned_new (the from-scratch pair),
their losses and se_*, the warm pair's auc_warm_*, every feed's figures, residuals, timings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.rollover_fits import StudyFit, publish_pairs
from benchmarks.rollover_stats import paired_stats, summarise


def version_config(
    root: Path, source: dict, seed: int, version: str, epochs: int, split: dict, init_from: Path | None = None
) -> dict:
    pre = {
        "model_version": version,
        "model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
        "train": {"epochs": epochs, "batch_size": 512, "seed": seed, "diagnostics": False, "patience": 0},
    }
    if init_from is not None:
        pre["init_from"] = str(init_from)
    return {"root": str(root), "source": source, "split": split, "pretrain": pre}


def run_version(cfg: dict) -> object:
    """Pretrain + extract + aggregate one version in a FRESH process: a second Ray Train
    run after a Ray Data job in the same Ray session was seen to hang (TrainController
    waiting for a CPU that ``ray status`` shows free). Returns the run state (restored
    from the ledger: the child's run is a finished, reusable one)."""
    import subprocess
    import sys

    from pipelines.config import RunConfig
    from pipelines.run import run_pipeline

    code = (
        "import json,sys; from pipelines.config import RunConfig; from pipelines.run import run_pipeline; "
        "run_pipeline(RunConfig.model_validate(json.loads(sys.argv[1])), steps=['extract'])"
    )
    subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], check=True)
    # the ledger makes this a no-op that restores ds, split and what was published
    return run_pipeline(RunConfig.model_validate(cfg), steps=["extract"])


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--rows-per-day", type=int, default=12_000)
    ap.add_argument(
        "--log-seed",
        type=int,
        default=0,
        help="generator seed of the log: another seed = an independent replicate (log, v1, v2, test rows)",
    )
    ap.add_argument(
        "--eval",
        choices=["pooled", "smallest"],
        default="pooled",
        help="downstream rows: every scenario pooled (default: the most test rows) or the smallest",
    )
    ap.add_argument("--scenario", type=int, default=None, help="one scenario id (overrides --eval)")
    ap.add_argument("--adapter", default="gate_linear", choices=["linear", "gate", "gate_linear"])
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--new-seed", type=int, default=1, help="pretraining seed of the from-scratch new version")
    ap.add_argument(
        "--warm-epochs", type=int, default=1, help="epochs of the warm-started new version (init_from v1); 0 = skip it"
    )
    ap.add_argument("--warm-seed", type=int, default=1)
    ap.add_argument("--downstream-epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--vanilla-seeds", type=int, default=1, help="train the vanilla model (context only) for the first N seeds"
    )
    ap.add_argument("--bootstrap", type=int, default=100, help="paired bootstrap resamples of the test rows")
    ap.add_argument("--no-centre", action="store_true")
    ap.add_argument(
        "--scale",
        choices=["none", "least_squares", "norm"],
        default=None,
        help="the headline map's scale (default: the product's, least_squares)",
    )
    ap.add_argument(
        "--weight",
        choices=["none", "sample_count"],
        default=None,
        help="Procrustes fit weights (default: the product's, none).",
    )
    ap.add_argument("--no-variants", action="store_true", help="only the default alignment (and the frozen map)")
    ap.add_argument(
        "--min-shared-entities",
        type=int,
        default=None,
        help="the gate's floor of entities shared by both versions (default: the product's); "
        "lower it for a smoke run on a tiny log",
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--summarise",
        type=Path,
        nargs="+",
        default=None,
        metavar="OUT",
        help="no run: summarise earlier runs' stdout files (their last lines) across replicates",
    )
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.summarise:
        print(json.dumps(summarise(args.summarise)))
        return

    import torch

    from benchmarks.rollover_eval import evaluate
    from contracts import RunLayout
    from pipelines.rollover import RolloverConfig

    torch.set_num_threads(2)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_rollover_"))
    source = {
        "kind": "generated",
        "generator": {
            "num_users": args.users,
            "num_items": args.items,
            "days": args.days,
            "rows_per_day": args.rows_per_day,
            "windows_per_day": 8,
            "seed": args.log_seed,
        },
    }
    split = {"valid_days": 1, "test_days": 1}
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    st_old = run_version(version_config(work / "v1", source, 0, "v1", args.pretrain_epochs, split))
    secs["version_old"] = time.perf_counter() - t0
    new_dir = "v2" if args.new_seed == 1 else f"v2_seed{args.new_seed}"  # the same --workdir reuses v1
    pairs = {"scratch": work / new_dir}
    t = time.perf_counter()
    st_new = run_version(version_config(pairs["scratch"], source, args.new_seed, "v2", args.pretrain_epochs, split))
    secs["version_new"] = time.perf_counter() - t
    if args.warm_epochs > 0:
        # the realistic rollover: v1's weights trained further (another seed, same days)
        pairs["warm"] = work / f"v3_warm{args.warm_epochs}_seed{args.warm_seed}"
        t = time.perf_counter()
        run_version(
            version_config(
                pairs["warm"],
                source,
                args.warm_seed,
                "v2",
                args.warm_epochs,
                split,
                init_from=Path(st_old.checkpoint).resolve(),
            )
        )
        secs["version_warm"] = time.perf_counter() - t
    old_tables = RunLayout(work / "v1").root / "tables"

    t1 = time.perf_counter()
    over = {"weight": args.weight} if args.weight else {}
    if args.scale is not None and args.scale != "none":
        over["scale_fit"] = args.scale
    rkw: dict[str, bool | int] = {"scale": args.scale != "none"} if args.scale is not None else {}
    if args.min_shared_entities is not None:
        rkw["min_shared_entities"] = args.min_shared_entities
    rcfg = RolloverConfig(centre=not args.no_centre, force=True, **rkw)  # defaults otherwise
    hfit = StudyFit(**over)  # the headline's fit: the product's unless --scale/--weight say otherwise
    sp = st_old.split
    fits = publish_pairs(pairs, old_tables, sorted(st_new.published), sp, rcfg, hfit, not args.no_variants)
    secs["align"] = time.perf_counter() - t1

    ev = evaluate(args, work, pairs, old_tables, st_old, secs)
    t4 = time.perf_counter()
    stats = paired_stats(ev.y, ev.preds, "old", args.bootstrap)
    secs["bootstrap"] = time.perf_counter() - t4

    def top(prefix: str) -> dict:
        out = {}
        for k in ("raw_new", "aligned_new"):
            s_ = stats[prefix + k]
            out |= {f"auc_{prefix}{k}": s_["auc"], f"loss_{prefix}{k}": s_["loss"], f"se_loss_{prefix}{k}": s_["se"]}
        return out

    result = {
        "auc_old": stats["old"]["auc"],
        **top(""),
        **(top("warm_") if "warm" in pairs else {}),
        "auc_vanilla": round(float(np.mean(ev.vanilla_aucs)), 4) if ev.vanilla_aucs else None,
        "vanilla_per_seed": [round(x, 4) for x in ev.vanilla_aucs],
        "goal": "loss_aligned_new <= 0.005 (headline: the from-scratch pair)",
        # True: the default gate refused some of the from-scratch pair's maps (max_residual); the
        # aligned figures are then what the gate kept from the consumer, published ungated
        "gate_refused": bool(fits["scratch"]["refused_by_gate"]),
        "goal_met": bool(stats["aligned_new"]["loss"] <= 0.005),
        "goal_met_2se": bool(stats["aligned_new"]["loss"] + 2 * stats["aligned_new"]["se"] <= 0.005),
        "feeds": stats,
        "task": "click",
        "scenario": "all" if ev.scenario is None else ev.scenario,
        "adapter": args.adapter,
        "seeds": args.seeds,
        "train_rows": ev.train_rows,
        "test_rows": ev.test_rows,
        "test_coverage": ev.coverage,
        "fits": fits,
        "frozen_fit_ds": sp["train"][-1],
        "centre": rcfg.centre,
        "scale": hfit.scale_fit if rcfg.scale else "none",
        "config": vars(args) | {"workdir": str(work)},
        "seconds": {k: round(v, 1) for k, v in secs.items()} | {"total": round(time.perf_counter() - t0, 1)},
    }
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
