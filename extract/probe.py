"""``probe_layers``: which layer of the mix tower makes the best transferred representation?

Every candidate (each CR layer of both branches, plus ``user_tower`` / ``item_tower``) is
extracted for the train and validation days in one :func:`extract.extract_days` job. Each layer's
per-sample vectors are aggregated, for every sample of the held-out scenario, into the
point-in-time states CR(u) and CR(i) just before the sample:

    S_e(t) = sum_{k: entity_k = e, t_k < t} exp(-(t - t_k)/tau) v_k        [d]

(the same decay as the published tables, :func:`extract.vectors.point_in_time_states`,
computed in-process: the probe is an offline experiment, not the daily job). The probe
input is [l2(S_u), l2(S_i)] ([N, 2d]); a logistic regression (torch, L-BFGS, standardised
features) is fit on the train days and scored by AUC on the **validation** days (never the
test days: the transfer table's test AUCs must not have chosen the layer). Only
**ad-branch** layers (``ad.*``) compete for the ads default; content layers and towers are
scored for the plot only. The best ad layer, the ranking and the plot are written into the
checkpoint (``default_cr_layer`` + ``layer_probe`` of the manifest, atomic rewrite;
``probe.png`` beside it) so that the daily extraction and publishing use it unless a
config pins a layer.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.checkpoint import (
    ADS_BRANCH_PREFIX,
    MANIFEST_FILE,
    PROBE_PLOT_FILE,
    LayerProbe,
    ProbedLayer,
)
from engines import delta_io
from extract.config import ProbeConfig
from extract.job import extract_days, read_manifest
from extract.samples import read_marker
from extract.units import plan_units
from extract.vectors import normalise, point_in_time_states, to_numpy
from extract.worker import open_parquet

TOWERS = ["user_tower", "item_tower"]
# the probe's features are s / |s| with zero states kept zero: l2 with the smallest normal float as floor
UNIT_EPS = float(np.finfo(np.float64).tiny)


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
    var = auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
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
    valid_days: list[str],
    scenario: int | None,
    out_dir: str | Path,
    cfg: ProbeConfig | None = None,
) -> dict:
    """Score every candidate layer on ``scenario`` (None = every scenario pooled): fit on
    ``train_days``, AUC on ``valid_days`` (validation, never the test days); write
    ``probe.md``, ``probe.png`` and ``probe.json`` to ``out_dir`` and, if ``cfg.record``,
    the best **ad-branch** CR layer, the ranking and the plot into the checkpoint
    (``default_cr_layer`` + ``layer_probe`` of the manifest, ``probe.png`` beside it).

    With ``cfg.sample_type == "ad"`` the CR(u)/CR(i) states fold ad samples only (what the
    daily tables publish) and the probe scores the ad samples of the scenario."""
    cfg = cfg or ProbeConfig()
    checkpoint_dir, out_dir = Path(checkpoint_dir).resolve(), Path(out_dir)
    manifest = read_manifest(checkpoint_dir)
    if not train_days or not valid_days:
        raise ValueError("probe: give at least one train day and one validation day")
    if set(train_days) & set(valid_days):
        raise ValueError(f"probe: days {sorted(set(train_days) & set(valid_days))} are both train and validation days")
    if scenario is not None and scenario not in manifest.dataset.scenarios:
        raise ValueError(
            f"probe: scenario {scenario} unknown to model {manifest.model_version}; "
            f"valid: {sorted(manifest.dataset.scenarios)}"
        )
    tasks = manifest.dataset.tasks
    if cfg.task is not None and cfg.task not in tasks:
        raise ValueError(f"probe: task {cfg.task!r} is not one of the model's tasks {tasks}")
    cr_layers = [l.name for l in manifest.layers if l.kind == "CR"]
    ad_layers = [l for l in cr_layers if l.startswith(ADS_BRANCH_PREFIX)]
    if not ad_layers:
        raise ValueError(f"probe: model {manifest.model_version} has no ad-branch CR layer among {cr_layers}")
    days = sorted(set(train_days) | set(valid_days))
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
    kind = np.asarray(table["sample_type"].to_pylist(), dtype=object)
    folded = np.ones(table.num_rows, bool) if cfg.sample_type == "all" else kind == cfg.sample_type
    in_scope = folded & (np.ones(table.num_rows, bool) if scenario is None else scen == scenario)
    task = cfg.task or next(
        (t for t in tasks if log[t].filter(pa.array(in_scope)).null_count < int(in_scope.sum())), None
    )
    where = f"scenario {scenario}" if scenario is not None else "the log"
    if task is None:
        raise ValueError(f"probe: {where} has no labelled {cfg.sample_type} sample for any task {tasks}")
    y = log[task].to_numpy(zero_copy_only=False)
    labelled = in_scope & ~np.isnan(y.astype(np.float64))
    train = labelled & np.isin(day_of, list(train_days))
    valid = labelled & np.isin(day_of, list(valid_days))
    for name, m in (("train", train), ("validation", valid)):
        if len(np.unique(y[m])) < 2:
            raise ValueError(
                f"probe: the {name} days hold {int(m.sum())} labelled {cfg.sample_type} rows of "
                f"{where} for task {task!r}, not both classes"
            )

    users = np.asarray(table["user_id"].to_pylist(), dtype=object)
    items = np.asarray(table["item_id"].to_pylist(), dtype=object)
    t = table["event_time"].cast(pa.int64()).to_numpy() / 1e6
    marker = read_marker(results[days[0]].out_dir)
    columns = {**marker.layers, "user_tower": "ur", "item_tower": "ir"}
    from pretrain.metrics import auc

    rows = []
    for layer in [*cr_layers, *TOWERS]:
        col = columns[layer]
        x = to_numpy(table[col], dtype=np.float64)
        # CR states fold the same samples as the published CR tables; UR/IR (towers) see all
        keep = folded if layer in cr_layers else None
        feats = np.hstack(
            [
                normalise(point_in_time_states(e, t, x, cfg.tau_seconds, keep), "l2", l2_eps=UNIT_EPS)
                for e in (users, items)
            ]
        )
        score = fit_logistic(feats[train], y[train], cfg.l2, cfg.max_iter)
        a = float(auc(y[valid], score(feats[valid])))
        pos = int((y[valid] == 1).sum())
        rows.append(
            {
                "layer": layer,
                "kind": "CR" if layer in cr_layers else manifest.layer(layer).kind,
                "dim": int(x.shape[1]),
                "auc": a,
                "auc_se": auc_standard_error(a, pos, int(valid.sum()) - pos),
            }
        )
    ranking = sorted((r for r in rows if r["layer"] in ad_layers), key=lambda r: -_finite(r["auc"]))
    best = ranking[0]["layer"]  # content.* layers are scored for the plot, never chosen
    previous = manifest.default_cr_layer
    out = {
        "scenario": scenario,
        "task": task,
        "sample_type": cfg.sample_type,
        "train_days": list(train_days),
        "valid_days": list(valid_days),
        "train_rows": int(train.sum()),
        "valid_rows": int(valid.sum()),
        "tau_seconds": cfg.tau_seconds,
        "layers": rows,
        "ranking": [r["layer"] for r in ranking],
        "chosen": best,
        "previous_default": previous,
        "recorded": cfg.record,
        "table": str(out_dir / "probe.md"),
        "plot": str(out_dir / "probe.png"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_table(out_dir / "probe.md", out, manifest.model_version)
    _write_plot(out_dir / "probe.png", out)
    (out_dir / "probe.json").write_text(json.dumps(out, indent=1))
    if cfg.record:
        shutil.copyfile(out_dir / "probe.png", checkpoint_dir / f".{PROBE_PLOT_FILE}.tmp")
        os.replace(checkpoint_dir / f".{PROBE_PLOT_FILE}.tmp", checkpoint_dir / PROBE_PLOT_FILE)
        record = LayerProbe(
            chosen=best,
            scenario=scenario,
            task=task,
            train_days=list(train_days),
            valid_days=list(valid_days),
            ranking=[ProbedLayer(layer=r["layer"], valid_auc=r["auc"], auc_se=r["auc_se"]) for r in ranking],
            probed_at=datetime.now(timezone.utc),
        )
        record_default_layer(checkpoint_dir, best, {f"probe_auc:{r['layer']}": r["auc"] for r in rows}, record)
    return out


def _finite(x: float) -> float:
    return x if np.isfinite(x) else -np.inf


def record_default_layer(
    checkpoint_dir: Path, layer: str, metrics: dict[str, float] | None = None, probe: LayerProbe | None = None
) -> None:
    """Rewrite the manifest with ``default_cr_layer = layer`` (and ``layer_probe``; tmp
    file + rename: readers see the old or the new manifest, never half of one). Only an
    ad-branch CR layer can become the ads default."""
    path = Path(checkpoint_dir) / MANIFEST_FILE
    manifest = read_manifest(Path(checkpoint_dir))
    valid = [l.name for l in manifest.layers if l.kind == "CR" and l.name.startswith(ADS_BRANCH_PREFIX)]
    if manifest.layer(layer).kind != "CR" or layer not in valid:  # KeyError listing the valid names when unknown
        raise ValueError(
            f"{layer!r} is a {manifest.layer(layer).kind} layer"
            f"{'' if manifest.layer(layer).kind != 'CR' else ' of the content branch'}; "
            f"default_cr_layer must be an ad-branch CR layer: {valid}"
        )
    updated = manifest.model_copy(
        update={"default_cr_layer": layer, "layer_probe": probe, "metrics": {**manifest.metrics, **(metrics or {})}}
    )
    updated = type(manifest).model_validate(updated.model_dump())  # the manifest's own checks
    tmp = path.with_name(f".{MANIFEST_FILE}.{os.getpid()}.tmp")
    tmp.write_text(updated.model_dump_json(indent=2))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_table(path: Path, res: dict, model_version: str) -> None:
    where = "all scenarios" if res["scenario"] is None else f"scenario {res['scenario']}"
    lines = [
        f"# Layer probe: model {model_version}, {where}, task {res['task']}",
        "",
        f"Train days {res['train_days']} ({res['train_rows']} rows), validation days {res['valid_days']} "
        f"({res['valid_rows']} rows, {res['sample_type']} samples), tau {res['tau_seconds']:.0f} s. "
        "Probe input: [l2(CR(u)), l2(CR(i))] point in time; logistic regression. Only ad-branch layers "
        f"can be chosen; ranking: {', '.join(res['ranking'])}.",
        "",
        "| layer | kind | dim | valid AUC | AUC s.e. | |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["layers"]:
        mark = (
            "chosen"
            if r["layer"] == res["chosen"]
            else ("previous default" if r["layer"] == res["previous_default"] else "")
        )
        lines.append(f"| {r['layer']} | {r['kind']} | {r['dim']} | {r['auc']:.4f} | {r['auc_se']:.4f} | {mark} |")
    best = max((r for r in res["layers"] if r["layer"] == res["chosen"]), key=lambda r: r["auc"])
    close = [
        r["layer"]
        for r in res["layers"]
        if r["layer"] in res["ranking"] and r["layer"] != res["chosen"] and best["auc"] - r["auc"] < 2 * best["auc_se"]
    ]
    if close:
        lines += [
            "",
            f"Within two standard errors of the chosen layer (not distinguishable on these days): {', '.join(close)}.",
        ]
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
    ax.set_ylabel("validation AUC")
    where = "all scenarios" if res["scenario"] is None else f"scenario {res['scenario']}"
    ax.set_title(f"linear probe, {where} ({res['task']}); red = chosen ad layer")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
