"""Ablations of the foundation model (issue 3), in one process with the plain loop (the
same per-step code as Ray Train; bit-identical for one worker) to avoid paying Ray
Train start-up per run:

    python -m pretrain.ablation --data generated --seeds 0 1 2
    python -m pretrain.ablation --data movielens --movielens ../shared/data/ml-100k --seeds 0 1 2

Variants: full model (one-sided NLIR); no sequence encoder; full attention everywhere (no
BFTS); no NLIR (plain GELU FFN); NLIR read as a SwiGLU FFN (the earlier form); SFG on;
target tokens (target-aware path into the mix tower); combined-pair loss (alpha=0.8) on the
sparse task (``conversion`` on generated data, the only task on MovieLens). Validation AUC per task, mean and std over
seeds. Last stdout line: JSON {variant: {task: {mean, std, runs}}}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS: dict[str, dict] = {
    "full": {},
    "no_sequence": {"model": {"use_sequence": False}},
    "no_bfts": {"model": {"bfts_full_layers": 99}},
    "no_nlir": {"model": {"nlir": "off"}},
    "nlir_swiglu": {"model": {"nlir_form": "swiglu"}},
    "sfg": {"model": {"sfg": True}},
    "target_tokens": {"model": {"target_tokens": True}},
    "pair_loss": {"train": {"pairwise_alpha": "<sparse>"}},
}


def load_data(args, work: Path):
    from datasources import (
        GeneratorConfig,
        MovieLensSource,
        generate_log,
        log_days,
        materialize,
        read_log,
        read_log_spec,
    )

    log = work / "log"
    if args.data == "generated":
        generate_log(GeneratorConfig(days=args.days, rows_per_day=args.rows_per_day, seed=args.data_seed), log)
        days = log_days(log)
        train_days, valid_days = days[:-1], days[-1:]
    else:
        materialize(MovieLensSource(kind="movielens", path=Path(args.movielens)), log)
        days = log_days(log)
        train_days = [d for d in days if d < "1998-02-01"]
        valid_days = [d for d in days if "1998-02-01" <= d < "1998-03-01"]
    return read_log_spec(log), read_log(log, train_days), read_log(log, valid_days)


def main() -> None:
    ap = argparse.ArgumentParser(description="foundation-model ablations")
    ap.add_argument("--data", choices=["generated", "movielens"], default="generated")
    ap.add_argument("--movielens", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--rows-per-day", type=int, default=8000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--out", default=None, help="also write {args, per-run AUCs, summary} as JSON here")
    args = ap.parse_args()

    from contracts.base import deep_merge
    from pretrain import FeatureEncoder, FoundationModel, PretrainConfig
    from pretrain.data import to_arrays
    from pretrain.diagnostics import task_metrics
    from pretrain.train import fit_plain

    with tempfile.TemporaryDirectory() as tmp:
        spec, tr, va = load_data(args, Path(tmp))
    enc = FeatureEncoder.fit(tr, spec)
    train_arr, valid_arr = to_arrays(enc.encode(tr)), to_arrays(enc.encode(va))
    sparse = "conversion" if "conversion" in spec.tasks else spec.tasks[-1]
    print(f"{args.data}: {tr.num_rows} train / {va.num_rows} valid rows, tasks {spec.tasks}", flush=True)
    results: dict[str, dict[str, list[float]]] = {}
    for name in args.variants:
        over = json.loads(json.dumps(VARIANTS[name]).replace('"<sparse>"', json.dumps({sparse: 0.8})))
        for seed in args.seeds:
            raw = deep_merge(
                {
                    "train": {
                        "epochs": args.epochs,
                        "seed": seed,
                        "torch_threads": args.threads,
                        "patience": 1,
                        "diagnostics": False,
                    }
                },
                over,
            )
            cfg = PretrainConfig.model_validate(raw)
            t0 = time.perf_counter()
            st = fit_plain(cfg.model, cfg.train, spec, enc.vocab_sizes, train_arr, valid_arr)
            model = FoundationModel(cfg.model, spec, enc.vocab_sizes)
            model.load_state_dict(st["best_state"])
            m = task_metrics(model, valid_arr, enc.tasks, enc.scenario_ids, None)
            for task in spec.tasks:
                if f"{task}.auc" in m:
                    results.setdefault(name, {}).setdefault(task, []).append(m[f"{task}.auc"])
            print(
                f"{name} seed={seed}: "
                + ", ".join(f"{t}={m.get(f'{t}.auc', float('nan')):.4f}" for t in spec.tasks)
                + f" ({time.perf_counter() - t0:.0f}s, {st['epoch']} epochs)",
                flush=True,
            )
            if args.out:  # after every run: an interrupted ablation keeps what it measured
                _write(args.out, args, results)
    summary = _summary(results)
    print("| variant | " + " | ".join(f"{t} AUC" for t in spec.tasks) + " |")
    print("|---|" + "---|" * len(spec.tasks))
    for v, r in summary.items():
        print(
            f"| {v} | "
            + " | ".join(f"{r[t]['mean']:.4f} ± {r[t]['std']:.4f}" if t in r else "n/a" for t in spec.tasks)
            + " |"
        )
    if args.out:
        _write(args.out, args, results)
    print(json.dumps(summary))


def _summary(results: dict[str, dict[str, list[float]]]) -> dict:
    """Mean and population std (numpy's default) over seeds, per variant and task."""
    return {
        v: {
            t: {"mean": round(float(np.mean(a)), 4), "std": round(float(np.std(a)), 4), "runs": len(a)}
            for t, a in r.items()
        }
        for v, r in results.items()
    }


def _write(out: str, args: argparse.Namespace, results: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"args": vars(args), "runs": results, "summary": _summary(results)}, indent=1))


if __name__ == "__main__":
    main()
