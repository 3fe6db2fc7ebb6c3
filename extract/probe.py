"""``probe_layers``: which layer of the mix tower makes the best transferred representation?

Every candidate (each CR layer of both branches, plus ``user_tower`` / ``item_tower``) is
extracted for the train and test days in one :func:`extract.extract_days` job. Each layer's
per-sample vectors are aggregated, for every sample of the held-out scenario, into the
point-in-time states CR(u) and CR(i) just before the sample:

    S_e(t) = sum_{k: entity_k = e, t_k < t} exp(-(t - t_k)/tau) v_k        [d]

(the same decay as the published tables, computed in-process with numpy: the probe is an
offline experiment, not the daily job). The probe input is [l2(S_u), l2(S_i)] ([N, 2d]);
a logistic regression (torch, L-BFGS, standardised features) is fit on the train days and
scored by AUC on the test days. The best CR layer is written into the checkpoint manifest
(``default_cr_layer``, atomic rewrite) so that the daily job extracts it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.checkpoint import MANIFEST_FILE
from engines import delta_io
from extract.config import ProbeConfig
from extract.job import _read_manifest, extract_days, plan_units
from extract.samples import read_marker
from extract.worker import open_parquet

TOWERS = ["user_tower", "item_tower"]


def point_in_time_states(entity: np.ndarray, t: np.ndarray, x: np.ndarray, tau: float) -> np.ndarray:
    """entity [N], t [N] seconds, x [N, d] -> S [N, d]: for each row k the decayed sum over
    the rows of the same entity strictly earlier than t_k (rows at the same instant excluded).

    Per entity, S(t_k) = exp(-(t_k - t_0)/tau) * sum_{j: t_j < t_k} exp((t_j - t_0)/tau) x_j,
    an exclusive cumulative sum (t_0: the entity's first time, so the weights stay finite
    while the entity's span is below ~700 tau).
    """
    out = np.zeros(x.shape, dtype=np.float64)
    order = np.lexsort((t, entity))
    e_sorted = entity[order]
    starts = np.flatnonzero(np.r_[True, e_sorted[1:] != e_sorted[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        idx = order[a:b]
        ts = t[idx] - t[idx[0]]
        if ts[-1] / tau > 700:
            raise ValueError(f"entity {entity[idx[0]]!r}: history spans {ts[-1] / tau:.0f} tau (> 700)")
        w = np.exp(ts / tau)
        cum = np.cumsum(w[:, None] * x[idx], axis=0)
        excl = np.vstack([np.zeros((1, x.shape[1])), cum[:-1]])
        # rows at the same instant see only what came strictly before the first of them
        first = np.r_[0, np.flatnonzero(ts[1:] != ts[:-1]) + 1]
        group_start = first[np.searchsorted(first, np.arange(len(ts)), side="right") - 1]
        out[idx] = excl[group_start] * np.exp(-ts / tau)[:, None]
    return out


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 200):
    """Logistic regression on standardised x [N, d], y [N] in {0,1}; returns a scorer
    x [M, d] -> logits [M]. L-BFGS on the mean log loss + l2 * |w|^2 (bias unpenalised)."""
    import torch

    mean, std = x.mean(0), x.std(0) + 1e-8
    xt = torch.tensor((x - mean) / std, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_, b_ = w.detach().numpy(), float(b.detach())
    return lambda z: ((z - mean) / std) @ w_ + b_


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC: differences between layers well
    below two of these are noise of the test set, not a better layer."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc))
    return float(np.sqrt(max(var, 0.0) / (positives * negatives)))


def _aligned_log(log_path, ds: str, rows_per_unit: int, columns: list[str]) -> pa.Table:
    """The day's log rows in shard order (units sorted by shard name), so that row k of the
    concatenated shards is row k of this table."""
    units, _ = plan_units(delta_io.day_file_uris(log_path, ds), rows_per_unit)
    parts = []
    for u in sorted(units, key=lambda u: u["shard"]):
        t = open_parquet(u["uri"]).read_row_groups(u["row_groups"], columns=columns)
        parts.append(t.slice(u["start"], u["stop"] - u["start"]))
    return pa.concat_tables(parts)


def probe_layers(
    checkpoint_dir: str | Path,
    log_path: str | Path,
    train_days: list[str],
    test_days: list[str],
    scenario: int,
    out_dir: str | Path,
    cfg: ProbeConfig | None = None,
) -> dict:
    """Score every candidate layer on ``scenario`` (train on ``train_days``, AUC on
    ``test_days``); write ``probe.md`` and ``probe.png`` to ``out_dir`` and, if
    ``cfg.record``, the best CR layer into the manifest. Returns the results as a dict."""
    cfg = cfg or ProbeConfig()
    checkpoint_dir, out_dir = Path(checkpoint_dir).resolve(), Path(out_dir)
    manifest = _read_manifest(checkpoint_dir)
    if not train_days or not test_days:
        raise ValueError("probe: give at least one train day and one test day")
    if set(train_days) & set(test_days):
        raise ValueError(f"probe: days {sorted(set(train_days) & set(test_days))} are both train and test days")
    if scenario not in manifest.dataset.scenarios:
        raise ValueError(f"probe: scenario {scenario} unknown to model {manifest.model_version}; "
                         f"valid: {sorted(manifest.dataset.scenarios)}")
    tasks = manifest.dataset.tasks
    if cfg.task is not None and cfg.task not in tasks:
        raise ValueError(f"probe: task {cfg.task!r} is not one of the model's tasks {tasks}")
    cr_layers = [l.name for l in manifest.layers if l.kind == "CR"]
    days = sorted(set(train_days) | set(test_days))
    ecfg = cfg.extract.model_copy(update={"layers": cr_layers})
    results = extract_days(checkpoint_dir, log_path, days, {d: out_dir / "samples" / f"ds={d}" for d in days}, ecfg)

    # samples of all days (every scenario feeds the states), aligned with the log's labels
    samples, labels = [], []
    for d in days:
        r = results[d]
        samples.append(pa.concat_tables([pq.read_table(r.out_dir / s) for s in r.shards]))
        labels.append(_aligned_log(log_path, d, ecfg.rows_per_unit, ["user_id", "item_id", *tasks]))
    table, log = pa.concat_tables(samples), pa.concat_tables(labels)
    if table["user_id"].to_pylist() != log["user_id"].to_pylist():
        raise RuntimeError("probe: extracted samples are not aligned with the log rows")
    day_of = np.concatenate([np.full(t.num_rows, d, dtype=object) for d, t in zip(days, samples)])
    scen = table["scenario"].to_numpy()
    task = cfg.task or next((t for t in tasks if log[t].filter(pa.array(scen == scenario)).null_count
                             < int((scen == scenario).sum())), None)
    if task is None:
        raise ValueError(f"probe: scenario {scenario} has no labelled sample for any task {tasks}")
    y = log[task].to_numpy(zero_copy_only=False)
    labelled = (scen == scenario) & ~np.isnan(y.astype(np.float64))
    train = labelled & np.isin(day_of, list(train_days))
    test = labelled & np.isin(day_of, list(test_days))
    for name, m in (("train", train), ("test", test)):
        if len(np.unique(y[m])) < 2:
            raise ValueError(f"probe: the {name} days hold {int(m.sum())} labelled rows of scenario {scenario} "
                             f"for task {task!r}, not both classes")

    users = np.asarray(table["user_id"].to_pylist(), dtype=object)
    items = np.asarray(table["item_id"].to_pylist(), dtype=object)
    t = table["event_time"].cast(pa.int64()).to_numpy() / 1e6
    marker = read_marker(results[days[0]].out_dir)
    columns = {**marker.layers, "user_tower": "ur", "item_tower": "ir"}
    rows = []
    for layer in [*cr_layers, *TOWERS]:
        col = columns[layer]
        x = np.asarray(table[col].combine_chunks().flatten().to_numpy(), dtype=np.float64).reshape(table.num_rows, -1)
        feats = np.hstack([_l2(point_in_time_states(users, t, x, cfg.tau_seconds)),
                           _l2(point_in_time_states(items, t, x, cfg.tau_seconds))])
        score = fit_logistic(feats[train], y[train], cfg.l2, cfg.max_iter)
        from pretrain.metrics import auc

        a = float(auc(y[test], score(feats[test])))
        pos = int((y[test] == 1).sum())
        rows.append({"layer": layer, "kind": "CR" if layer in cr_layers else manifest.layer(layer).kind,
                     "dim": int(x.shape[1]), "auc": a, "auc_se": auc_standard_error(a, pos, int(test.sum()) - pos)})
    best = max((r for r in rows if r["kind"] == "CR"), key=lambda r: r["auc"])["layer"]
    previous = manifest.default_cr_layer
    out = {"scenario": scenario, "task": task, "train_days": list(train_days), "test_days": list(test_days),
           "train_rows": int(train.sum()), "test_rows": int(test.sum()), "tau_seconds": cfg.tau_seconds,
           "layers": rows, "chosen": best, "previous_default": previous, "recorded": cfg.record,
           "table": str(out_dir / "probe.md"), "plot": str(out_dir / "probe.png")}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_table(out_dir / "probe.md", out, manifest.model_version)
    _write_plot(out_dir / "probe.png", out)
    (out_dir / "probe.json").write_text(json.dumps(out, indent=1))
    if cfg.record:
        record_default_layer(checkpoint_dir, best, {f"probe_auc:{r['layer']}": r["auc"] for r in rows})
    return out


def record_default_layer(checkpoint_dir: Path, layer: str, metrics: dict[str, float] | None = None) -> None:
    """Rewrite the manifest with ``default_cr_layer = layer`` (tmp file + rename: readers
    see the old or the new manifest, never half of one)."""
    path = Path(checkpoint_dir) / MANIFEST_FILE
    manifest = _read_manifest(Path(checkpoint_dir))
    if manifest.layer(layer).kind != "CR":  # KeyError listing the valid names when unknown
        raise ValueError(f"{layer!r} is a {manifest.layer(layer).kind} layer; default_cr_layer must be a CR layer: "
                         f"{[l.name for l in manifest.layers if l.kind == 'CR']}")
    updated = manifest.model_copy(update={"default_cr_layer": layer,
                                          "metrics": {**manifest.metrics, **(metrics or {})}})
    tmp = path.with_name(f".{MANIFEST_FILE}.{os.getpid()}.tmp")
    tmp.write_text(updated.model_dump_json(indent=2))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_table(path: Path, res: dict, model_version: str) -> None:
    lines = [f"# Layer probe: model {model_version}, scenario {res['scenario']}, task {res['task']}", "",
             f"Train days {res['train_days']} ({res['train_rows']} rows), test days {res['test_days']} "
             f"({res['test_rows']} rows), tau {res['tau_seconds']:.0f} s. Probe input: [l2(CR(u)), l2(CR(i))] "
             "point in time; logistic regression.", "",
             "| layer | kind | dim | test AUC | AUC s.e. | |", "|---|---|---|---|---|---|"]
    for r in res["layers"]:
        mark = "chosen" if r["layer"] == res["chosen"] else (
            "previous default" if r["layer"] == res["previous_default"] else "")
        lines.append(f"| {r['layer']} | {r['kind']} | {r['dim']} | {r['auc']:.4f} | {r['auc_se']:.4f} | {mark} |")
    best = max((r for r in res["layers"] if r["layer"] == res["chosen"]), key=lambda r: r["auc"])
    close = [r["layer"] for r in res["layers"] if r["kind"] == "CR" and r["layer"] != res["chosen"]
             and best["auc"] - r["auc"] < 2 * best["auc_se"]]
    if close:
        lines += ["", f"Within two standard errors of the chosen layer (not distinguishable on this test set): "
                      f"{', '.join(close)}."]
    path.write_text("\n".join(lines) + "\n")


def _write_plot(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["layer"] for r in res["layers"]]
    aucs = [r["auc"] for r in res["layers"]]
    colors = ["tab:red" if n == res["chosen"] else ("tab:gray" if n in TOWERS else "tab:blue") for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(names)), 3.5))
    ax.bar(range(len(names)), aucs, color=colors, yerr=[r.get("auc_se", 0.0) for r in res["layers"]], capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    lo = min(a for a in aucs if np.isfinite(a)) if any(np.isfinite(aucs)) else 0.5
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(aucs) + 0.05) if any(np.isfinite(aucs)) else 1.0)
    ax.set_ylabel("test AUC")
    ax.set_title(f"linear probe, scenario {res['scenario']} ({res['task']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """``python -m extract probe`` (what ``lfm4ads extract probe`` should call); prints the result JSON."""
    import argparse

    from contracts import load_config
    from extract.config import ExtractStageConfig

    p = argparse.ArgumentParser(description="Score every candidate layer with a linear probe; record the best.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--train-days", required=True, help="comma-separated ds values")
    p.add_argument("--test-days", required=True, help="comma-separated ds values")
    p.add_argument("--scenario", type=int, required=True, help="held-out scenario id")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=None, help="configs/extract.yaml (its probe: section)")
    p.add_argument("--no-record", action="store_true", help="do not rewrite the manifest")
    a = p.parse_args(argv)
    cfg = load_config(a.config, ExtractStageConfig).probe if a.config else ProbeConfig()
    if a.no_record:
        cfg = cfg.model_copy(update={"record": False})
    res = probe_layers(a.checkpoint, a.log, a.train_days.split(","), a.test_days.split(","), a.scenario, a.out, cfg)
    print(json.dumps(res))

