"""The rollover study's statistics: the paired AUC loss of each feed against the old
version's vectors (SE over seeds and a test-row bootstrap), and the summary across
independent replicates (``python -m benchmarks.rollover --summarise``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _auc_fast(y: np.ndarray, p: np.ndarray) -> float:
    """Rank-sum AUC (ties: average ranks), as pretrain.metrics.auc, for the bootstrap loop."""
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((rankdata(p)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def paired_stats(y: np.ndarray, preds: dict[str, list[np.ndarray]], ref: str, n_boot: int, seed: int = 0) -> dict:
    """Per feed: mean AUC over seeds, loss = mean_s AUC(ref) - AUC(feed), its standard error
    across seeds, a paired bootstrap SE over test rows (the same resampled rows for both
    feeds and every seed), and both combined (variances added).

    ``y`` [N] 0/1; ``preds[feed][s]`` [N] scores of seed s on the same rows."""
    from pretrain.metrics import auc

    aucs = {k: np.array([auc(y, p) for p in v]) for k, v in preds.items()}
    rng = np.random.default_rng(seed)
    boots = {k: np.zeros(n_boot) for k in preds}
    for b in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        for k, v in preds.items():
            boots[k][b] = np.mean([_auc_fast(y[idx], p[idx]) for p in v])
    out = {}
    for k in preds:
        d = aucs[ref] - aucs[k]
        se_seed = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        se_rows = float(np.std(boots[ref] - boots[k], ddof=1)) if n_boot > 1 else float("nan")
        out[k] = {
            "auc": round(float(aucs[k].mean()), 4),
            "loss": round(float(d.mean()), 4),
            "se_seed": round(se_seed, 4),
            "se_rows": round(se_rows, 4),
            "se": round(float(np.sqrt(se_seed**2 + se_rows**2)), 4),
            "per_seed": [round(float(x), 4) for x in aucs[k]],
        }
    return out


def summarise(paths: list[Path], goal: float = 0.005) -> dict:
    """Across k runs (each file: a run's stdout, its last line the result JSON): per feed
    the mean loss, its SE across runs (SD / sqrt(k)) and the per-run losses. With
    independent replicates (``--log-seed``: another log, other models, other test rows)
    the SE holds every source of variance, so ``goal_met_2se`` = mean + 2 SE <= goal is
    the claim one run's within-pair SE cannot make. A run whose maps the default gate refused
    (``gate_refused``: measured ungated) counts in the headline; ``*_published`` leave it out
    (what consumers would have been fed)."""
    runs = [json.loads(Path(p).read_text().strip().splitlines()[-1]) for p in paths]
    feeds = sorted(set.intersection(*(set(r["feeds"]) for r in runs)) - {"old"})
    k = len(runs)
    out = {}
    for f in feeds:
        x = np.array([r["feeds"][f]["loss"] for r in runs])
        se = float(np.std(x, ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
        out[f] = {"mean_loss": round(float(x.mean()), 4), "se": round(se, 4), "losses": x.round(4).tolist()}
    head = out["aligned_new"]
    # the replicates whose maps the default gate passed: what consumers would have been fed
    kept = np.array([r["feeds"]["aligned_new"]["loss"] for r in runs if not r.get("gate_refused", False)])
    se_kept = float(np.std(kept, ddof=1) / np.sqrt(len(kept))) if len(kept) > 1 else float("nan")
    return {
        "runs": k,
        "files": [str(p) for p in paths],
        "log_seeds": [r["config"].get("log_seed", 0) for r in runs],
        "gate_refused": [bool(r.get("gate_refused", False)) for r in runs],
        "mean_loss_aligned_new": head["mean_loss"],
        "se_loss_aligned_new": head["se"],
        "mean_loss_raw_new": out["raw_new"]["mean_loss"],
        "se_loss_raw_new": out["raw_new"]["se"],
        "goal": f"mean loss_aligned_new + 2 se <= {goal}",
        "goal_met": head["mean_loss"] <= goal,
        "goal_met_2se": bool(head["mean_loss"] + 2 * head["se"] <= goal),
        "published_runs": int(len(kept)),
        "mean_loss_aligned_new_published": round(float(kept.mean()), 4) if len(kept) else None,
        "se_loss_aligned_new_published": round(se_kept, 4),
        "goal_met_2se_published": bool(len(kept) > 1 and kept.mean() + 2 * se_kept <= goal),
        "feeds": out,
    }
