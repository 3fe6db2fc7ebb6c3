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
frozen map). A downstream model (``downstream``'s RankingModel, ``gate_linear``
adapter, all four tables; by default every scenario pooled: the most test rows) is trained
on v1's vectors per seed and evaluated, with the SAME weights and test rows, fed each
table set. Reported per feed: the mean click test AUC over seeds, the paired loss
``AUC(old) - AUC(feed)`` with its standard error across seeds (``se_seed``), a paired
bootstrap over test rows (``se_rows``) and both combined (``se``).

    python -m benchmarks.rollover [--users 4000] [--items 2000] [--days 8] [--rows-per-day 12000]
        [--eval pooled|smallest] [--scenario S] [--seeds 0 1 2] [--new-seed 1]
        [--warm-epochs 1] [--log-seed 0] [--workdir DIR]
    python -m benchmarks.rollover --summarise run1.out run2.out ...   # mean loss +- SE across replicates

Last stdout line: JSON with auc_old, auc_raw_new, auc_aligned_new (the from-scratch pair),
their losses and se_*, the warm pair's auc_warm_*, every feed's figures, residuals, timings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.rollover_fits import TABLES, VARIANTS, StudyFit, publish_study, publish_variant, publish_variants
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


def main() -> None:
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
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--summarise",
        type=Path,
        nargs="+",
        default=None,
        metavar="OUT",
        help="no run: summarise earlier runs' stdout files (their last lines) across replicates",
    )
    args = ap.parse_args()
    if args.summarise:
        print(json.dumps(summarise(args.summarise)))
        return

    import torch

    from contracts import RunLayout
    from datasources import read_log_spec
    from downstream import DownstreamConfig
    from downstream.data import build_scenario_data, read_splits, resolve_scenario, select_rows
    from downstream.evaluate import ranking_builder
    from downstream.train import fit, predict
    from pipelines.rollover import RolloverConfig, RolloverError, publish_aligned, read_map
    from pretrain.metrics import auc

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
    scale = {"scale": args.scale != "none"} if args.scale is not None else {}
    rcfg = RolloverConfig(centre=not args.no_centre, force=True, **scale)  # defaults otherwise
    hfit = StudyFit(**over)  # the headline's fit: the product's unless --scale/--weight say otherwise
    published = sorted(st_new.published)
    sp = st_old.split
    later = [d for d in published if d >= sp["train"][-1]]  # the days test/valid rows join to (and the fit day)
    fits: dict[str, dict] = {}
    for pname, root in pairs.items():
        new_tables = RunLayout(root).root / "tables"
        refused: dict[str, list[str]] = {}

        def headline(name: str, d: str, cfg: RolloverConfig, new_tables=new_tables):
            """The product's publish_aligned; the study's publish when --scale/--weight ask
            for a fit the product does not make."""
            if hfit == StudyFit():
                return publish_aligned(new_tables, name, d, "v2", "v1", cfg, old_tables_root=old_tables)
            return publish_study(new_tables, name, d, "v2", "v1", cfg, hfit, old_tables_root=old_tables)

        def gated(name: str, d: str, pname=pname, refused=refused, headline=headline):
            """The default publish; a map the gate refuses is recorded and published ungated,
            so the figures say what the gate kept from the consumer."""
            try:
                return headline(name, d, rcfg)
            except RolloverError as e:
                print(f"rollover: {pname} refused by the gate: {e}", file=sys.stderr, flush=True)
                refused.setdefault(name, []).append(d)
                return headline(name, d, rcfg.model_copy(update={"max_residual": 1e9}))

        aligned = {name: {d: gated(name, d) for d in published} for name in TABLES}
        f = {
            "refused_by_gate": refused,
            "residual_by_day": {n: {d: round(r.residual, 4) for d, r in v.items()} for n, v in aligned.items()},
            "applied_residual_by_day": {
                n: {d: round(r.applied_residual, 4) for d, r in v.items()} for n, v in aligned.items()
            },
            "scale_by_day": {
                n: {d: round(read_map(r.table, d).scale, 4) for d, r in v.items()} for n, v in aligned.items()
            },
        }
        f["frozen_residual"] = {
            n: v[min(v)]
            for n, v in publish_variant(
                new_tables,
                old_tables,
                sp["train"][-1],
                [d for d in published if d > sp["train"][-1]],
                rcfg,
                hfit,
                "frozen_v1",
            ).items()
        }
        if not args.no_variants:
            f["variant_residual"] = publish_variants(new_tables, old_tables, later, rcfg, hfit, VARIANTS)
        fits[pname] = f
    secs["align"] = time.perf_counter() - t1

    log = RunLayout(work / "v1").log
    spec = read_log_spec(log)
    raw = read_splits(log, sp["train"], sp["valid"], sp["test"])
    if args.scenario is not None:
        scenario = resolve_scenario(raw["train"], spec, args.scenario)
    else:
        scenario = resolve_scenario(raw["train"], spec, None) if args.eval == "smallest" else None
    tables = {k: select_rows(v, scenario, "all") for k, v in raw.items()}
    dcfg = DownstreamConfig(epochs=args.downstream_epochs, threads=2, adapter=args.adapter, scenario=scenario)
    feeds: dict[str, tuple[dict, str | None]] = {}
    for pname, root in pairs.items():
        nt = RunLayout(root).root / "tables"
        tag = "" if pname == "scratch" else "warm_"
        feeds[f"{tag}raw_new"] = ({n: nt / n for n in TABLES}, None)  # a silent break: same dims, no check
        feeds[f"{tag}aligned_new"] = ({n: nt / f"{n}__aligned_v1" for n in TABLES}, "v1")
        feeds[f"{tag}frozen_aligned_new"] = ({n: nt / f"{n}__frozen_v1" for n in TABLES}, "v1")
        if not args.no_variants:
            for v in VARIANTS:
                feeds[f"{tag}{v}_aligned_new"] = ({n: nt / f"{n}__{v}_v1" for n in TABLES}, "v1")
    t2 = time.perf_counter()
    data_old = build_scenario_data(tables, spec, {n: old_tables / n for n in TABLES}, expect_model_version="v1")
    one = tables["test"].slice(0, 1)  # fed tables only matter on the test rows: skip joining train/valid again
    built = {
        k: build_scenario_data(
            {"train": one, "valid": one, "test": tables["test"]},
            spec,
            paths,
            encoder=data_old.encoder,
            expect_model_version=mv,
        )
        for k, (paths, mv) in feeds.items()
    }
    evals = {"old": data_old.test, **{k: b.test for k, b in built.items()}}
    secs["join"] = time.perf_counter() - t2
    print(
        f"rollover: {len(evals)} feeds joined in {secs['join']:.0f} s; {data_old.train.num_rows} train rows",
        file=sys.stderr,
        flush=True,
    )
    k_click = data_old.tasks.index("click")
    mask = data_old.test.batch["label_mask"].numpy()[:, k_click]
    y = data_old.test.batch["labels"].numpy()[mask, k_click]
    preds: dict[str, list[np.ndarray]] = {k: [] for k in evals}
    t3 = time.perf_counter()
    cache = work / "_downstream_models"  # the models depend on v1 and the seed only: reused by --new-seed reruns
    cache.mkdir(exist_ok=True)
    v1m = st_old.manifest
    van_aucs = []
    for i, seed in enumerate(args.seeds):
        kw = dict(seed=seed, epochs=dcfg.epochs, lr=dcfg.lr, batch_size=dcfg.batch_size, patience=dcfg.patience)
        kinds = [("transfer", TABLES, dcfg.adapter)] + ([("vanilla", [], "none")] if i < args.vanilla_seeds else [])
        for kind, reps, adapter in kinds:
            key = hashlib.sha256(
                json.dumps(
                    [
                        kind,
                        seed,
                        v1m.config_hash,
                        v1m.data_version,
                        str(v1m.created_at),
                        dcfg.model_dump(mode="json"),
                        data_old.train.num_rows,
                    ]
                ).encode()
            )
            path = cache / f"{kind}_{key.hexdigest()[:16]}.pt"
            build = ranking_builder(data_old, dcfg, reps, adapter)
            if path.is_file():
                model = build()
                model.load_state_dict(torch.load(path))
            else:
                model, _ = fit(build, data_old.train, data_old.valid, data_old.test, data_old.tasks, **kw)
                torch.save(model.state_dict(), path)
            if kind == "transfer":
                for k, split_ in evals.items():
                    preds[k].append(predict(model, split_)[mask, k_click])
            else:
                van_aucs.append(auc(y, predict(model, data_old.test)[mask, k_click]))
        print(f"rollover: seed {seed} done at {time.perf_counter() - t3:.0f} s", file=sys.stderr, flush=True)
    secs["downstream"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    stats = paired_stats(y, preds, "old", args.bootstrap)
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
        "auc_vanilla": round(float(np.mean(van_aucs)), 4) if van_aucs else None,
        "vanilla_per_seed": [round(x, 4) for x in van_aucs],
        "goal": "loss_aligned_new <= 0.005 (headline: the from-scratch pair)",
        # True: the default gate refused some of the from-scratch pair's maps (max_residual); the
        # aligned figures are then what the gate kept from the consumer, published ungated
        "gate_refused": bool(fits["scratch"]["refused_by_gate"]),
        "goal_met": bool(stats["aligned_new"]["loss"] <= 0.005),
        "goal_met_2se": bool(stats["aligned_new"]["loss"] + 2 * stats["aligned_new"]["se"] <= 0.005),
        "feeds": stats,
        "task": "click",
        "scenario": "all" if scenario is None else scenario,
        "adapter": args.adapter,
        "seeds": args.seeds,
        "train_rows": data_old.train.num_rows,
        "test_rows": int(mask.sum()),
        "test_coverage": {"old": data_old.coverage, "aligned_new": built["aligned_new"].coverage},
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
