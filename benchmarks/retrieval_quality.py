"""Retrieval quality of the query tower against real peers, side by side in one run.

    python -m benchmarks.retrieval_quality [--data generated|movielens] [--seeds N]

Protocol (MovieLens-100K: ../shared/data/README.md; generated log: the last 3 days held out):

1. The foundation model is pretrained **once per run** with the project's own plain loop
   (``pretrain.replica.fit_plain``, the same per-step code as Ray Train) on the train days,
   early-stopped on the validation days, at a small budget; it stays frozen.
2. **Validation phase** (every choice is made here): each method fits on the train days
   and is scored on the validation period's positives. The query tower's options are
   chosen greedily, one group at a time, each kept only if validation recall@50 improves:
   inputs (UR, CR(u), UR+CR(u), +hist = mean IR of the user's last 20 positives, hist
   alone), temperature, popularity column (none; all-time share with a learned or fixed
   weight; time-decayed share with half-life ``--half-lives`` and a learned or fixed
   ``--prior-weights`` weight), logQ weight (1, 0.5, 0), item side (learned bias, linear or
   MLP residual IR adapter), 256 random negatives; its epochs, the recent-popularity
   half-life and ALS's size are chosen there too.
3. **Test phase**: each method refits on train + validation days with the chosen settings
   (the foundation model is not retrained) and is scored on the next day's positives
   (the first test day) and on the whole test period's.

Evaluated users: seen in the fit days (a positive there) and with a held-out positive.
Candidates: items seen in the fit days; items the user already interacted with are
excluded from the ranking and from the targets (retrieval of new items). Positive = the
first task's label (MovieLens: rating >= 4). User state for the held-out period: the
user's latest sample before the cutoff (UR as the published ``user_ur``), CR(u) the
time-decayed sum at the cutoff (tau and l2 as ``extract.AggregateConfig``).

Methods: popularity (global; per scenario = counts inside the user's most frequent
training scenario, or inside the scenario being scored), recent popularity (time-decayed
counts at the cutoff, half-life chosen on validation), implicit ALS, a plain two-tower
(user-id and item-id embeddings) trained from scratch with the query tower's loss and
budget, raw UR vs IR (today's served behaviour), the query tower. Per scenario: the two
scenarios with the fewest training positives, candidates restricted to the items seen in
that scenario. On the generated log, ``oracle`` ranks by the generator's own click model
(static tastes): the ceiling of any method. Last stdout line: one JSON object (means and
stds over seeds).

Code: this module (loading, the run, the test phase); the frozen model and the log as
columns: retrieval_quality_log.py; a fit period: retrieval_quality_phase.py; the methods:
retrieval_quality_fit.py; rankers: retrieval_quality_rank.py; the validation phase:
retrieval_quality_choose.py; scores and tables: retrieval_quality_scores.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's ALS: its own threads, not BLAS's

import numpy as np  # noqa: E402

from benchmarks.retrieval_quality_choose import choose_on_validation  # noqa: E402
from benchmarks.retrieval_quality_fit import fit_als, fit_tower, fit_two_tower, generator_oracle  # noqa: E402
from benchmarks.retrieval_quality_log import Log, as_log, pretrain, sample_vectors  # noqa: E402
from benchmarks.retrieval_quality_phase import make_phase, targets  # noqa: E402
from benchmarks.retrieval_quality_rank import rankers_for  # noqa: E402
from benchmarks.retrieval_quality_scores import KS, METHODS, paired_differences, print_tables, score_all  # noqa: E402

DEFAULT_ML = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k")


def load(args, work: Path):
    """``(spec, rows of every split day, split)``: the log made as the pretraining ablation
    makes it (:func:`studies.pretrain_ablation.make_log`); generated = the last 2 days test,
    the one before validation; MovieLens = the shared protocol's dates."""
    from contracts import split_days
    from datasources import log_days, read_log, read_log_spec
    from studies.pretrain_ablation import MOVIELENS_TEST_START, MOVIELENS_VALID_START, make_log

    log = make_log(
        args.data,
        work,
        days=args.days,
        rows_per_day=args.rows_per_day,
        data_seed=args.data_seed,
        movielens=args.movielens,
        num_users=args.users,
        num_items=args.items,
    )
    days = log_days(log)
    if args.data == "generated":
        split = split_days(days, valid_days=1, test_days=2)
    else:
        split = split_days(days, valid_start=MOVIELENS_VALID_START, test_start=MOVIELENS_TEST_START)
    spec = read_log_spec(log)
    table = read_log(log, split["train"] + split["valid"] + split["test"])
    return spec, table, split


def frozen_vectors(args) -> tuple[Log, dict[str, list[str]]]:
    """The log with the frozen model's per-row vectors, and the split: read from ``--cache``
    when it exists, else loaded and pretrained (and written to ``--cache`` when given)."""
    if args.cache and Path(args.cache).exists():  # the frozen model's outputs of an earlier run
        with open(args.cache, "rb") as f:
            cached = pickle.load(f)
        lg, split = cached["lg"], cached["split"]
        print(f"frozen-model vectors from {args.cache}", flush=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            spec, table, split = load(args, Path(tmp))
        model, enc, cr_layer = pretrain(spec, table, split, args)
        lg = as_log(table, spec, sample_vectors(model, enc, table, cr_layer))
        if args.cache:
            with open(args.cache, "wb") as f:
                pickle.dump({"lg": lg, "split": split}, f)
    return lg, split


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="retrieval quality: query tower vs peers")
    ap.add_argument("--data", choices=["generated", "movielens"], default="movielens")
    ap.add_argument("--movielens", default=DEFAULT_ML)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--rows-per-day", type=int, default=6000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--fm-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20, help="max epochs of the query tower and the two-tower")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument(
        "--temperatures",
        type=float,
        nargs="*",
        default=[0.05, 0.1, 0.2],
        help="query-tower temperatures tried on validation (with the chosen inputs)",
    )
    ap.add_argument(
        "--half-lives",
        type=float,
        nargs="*",
        default=[7.0, 14.0],
        help="half-lives (days) of the recent-popularity column / peer tried on validation",
    )
    ap.add_argument(
        "--prior-weights",
        type=float,
        nargs="*",
        default=[1.0, 2.0, 4.0],
        help="fixed weights of the recent-popularity column (popularity as a prior) tried on validation",
    )
    ap.add_argument(
        "--tower-inputs",
        nargs="*",
        default=["ur", "cr", "ur+cr+hist", "hist"],
        help="query-tower inputs tried on validation after ur+cr ('+'-joined: ur, cr, hist); the daily "
        "pipeline can express every set with ur or cr in it (hist = retrieval.query_tower.history)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--cache",
        default=None,
        help="pickle of the frozen model's per-row vectors: written after pretraining, read instead of "
        "pretraining when it exists (same data and --fm-epochs only; for reruns of the tower choices)",
    )
    ap.add_argument("--out", default=None, help="also write the full result JSON here")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    from extract.config import AggregateConfig

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    lg, split = frozen_vectors(args)
    tau = AggregateConfig().tau_seconds
    raw_ok = lg.vec["ur"].shape[1] == lg.vec["ir"].shape[1]

    # validation phase: every choice
    choices = choose_on_validation(lg, split, tau, raw_ok, args)
    tc, tower_epochs = choices["query_tower"], choices["query_tower_epochs"]
    recent_hl, tt_epochs = choices["popularity_recent_half_life_days"], choices["two_tower_epochs"]
    als_best = (choices["als"]["factors"], choices["als"]["regularization"])

    # test phase: refit on train + valid with the chosen settings
    te = make_phase(lg, split["train"] + split["valid"], tau)
    pos_fit = Counter(te.train_scen.tolist())
    small = [s for s, _ in sorted(pos_fit.items(), key=lambda kv: kv[1])[:2]]
    evalsets = {"next_day": (split["test"][:1], None), "test": (split["test"], None)}
    evalsets.update({f"test_scenario_{s}": (split["test"], s) for s in small})
    tgts = {name: targets(lg, te, days, s) for name, (days, s) in evalsets.items()}
    runs: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    oracle = generator_oracle(te, args) if args.data == "generated" else None
    per_user: dict[str, list[np.ndarray]] = defaultdict(list)
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        fitted = {}
        _, tq, ti = fit_tower(te, tc, seed, args, epochs=tower_epochs)
        fitted["query_tower"] = (tq, ti)
        if raw_ok:
            fitted["raw_ur"] = (te.state["ur"], te.ir)
        uq, it, _ = fit_two_tower(te, seed, args, epochs=tt_epochs)
        fitted["two_tower"] = (uq, it)
        fitted["als"] = fit_als(te, als_best[0], als_best[1], 10.0, seed, args.threads)
        if args.data == "generated" and oracle is not None:
            fitted["oracle"] = oracle
        rankers = rankers_for(te, fitted, recent_hl)
        for name, (days, s) in evalsets.items():
            cand = None if s is None else np.array(sorted(te.item_scen.get(s, set())))
            for method, m in score_all(te, tgts[name], rankers, cand, s).items():
                for metric in ("recall", "ndcg"):
                    for k in KS:
                        runs[name][f"{method}.{metric}@{k}"].append(m[metric][str(k)])
                runs[name][f"{method}.users"] = [m["users"]]
                if name == "test":
                    per_user[method].append(np.asarray(m["per_user_recall@50"]))
        print(f"seed {seed}: {time.perf_counter() - t0:.0f}s", flush=True)

    results = {
        name: {key: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4)} for key, v in r.items()}
        for name, r in runs.items()
    }
    print_tables(results)
    main_set = results["test"]

    def pick(metric: str, stat: str) -> dict:
        keys = METHODS
        return {m: main_set.get(f"{m}.{metric}", {}).get(stat) for m in keys}

    summary = {
        "dataset": args.data,
        "seeds": args.seeds,
        "eval_set": "test",
        "recall_at_50": pick("recall@50", "mean"),
        "ndcg_at_50": pick("ndcg@50", "mean"),
        "recall_at_50_std": pick("recall@50", "std"),
        "ndcg_at_50_std": pick("ndcg@50", "std"),
        "next_day_recall_at_50": {m: results["next_day"].get(f"{m}.recall@50", {}).get("mean") for m in METHODS},
        "small_scenarios": small,
        "tower_minus_peer_recall_at_50": paired_differences(per_user),
        "choices": choices,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "results": results}, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
