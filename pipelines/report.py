"""The run report: one Markdown file (plus copied plots) per ``ds``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from contracts import RunLayout


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _auc_rows(ds_result: dict) -> list[str]:
    rows = ["| model | " + " | ".join(f"test AUC ({t})" for t in ds_result["tasks"]) + " |",
            "|---|" + "---|" * len(ds_result["tasks"])]
    for name in ("vanilla", "transfer"):
        res = ds_result.get(name)
        if not res:
            continue
        cells = []
        for t in ds_result["tasks"]:
            mean, std = res["test_auc"].get(t), res.get("test_auc_std", {}).get(t)
            cells.append("n/a" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if std else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _rollover_rows(rollover: dict) -> list[str]:
    """``{ds: {table: AlignResult.to_dict()}}`` -> a Markdown table."""
    rows = ["| ds | table | aligned table | residual (gated) | applied residual | fitting rows | Delta version |",
            "|---|---|---|---|---|---|---|"]
    for d in sorted(rollover):
        for name, r in rollover[d].items():
            version = "already published" if r.get("version") is None else r["version"]
            applied = r.get("applied_residual")
            rows.append(f"| {d} | {name} | `{r['table']}` | {r['residual']:.4f} | "
                        f"{'n/a' if applied is None else f'{applied:.4f}'} | {r['n_shared']} | {version} |")
    return rows


def write_report(cfg, layout: RunLayout, st, failure: str | None = None, failed_step: str | None = None) -> Path:
    out = layout.report(st.ds)
    out.mkdir(parents=True, exist_ok=True)
    m = st.manifest
    lines = [f"# lfm4ads run report: ds={st.ds}", ""]
    if failure and failed_step == "rollover":
        lines += ["## ROLLOVER REFUSED", "", f"**{failure}**", "",
                  f"This version's own tables are published; the refused table's aligned table "
                  f"(`<name>__aligned_{cfg.rollover.previous_model_version}`) got nothing for that day, so its "
                  "consumers keep reading its previous partition (point in time). Tables the step aligned "
                  "before the refused one stay published; a rerun skips them. The steps after rollover "
                  "did not run.", ""]
    elif failure:
        lines += ["## RUN STOPPED BEFORE PUBLISHING", "", f"**{failure}**", "",
                  "Nothing of the failing day was published; the previous tables and index stay current.", ""]
    lines += ["## Where things are", "",
              f"- log: `{layout.log}` ({len(st.days)} days, {st.days[0]}..{st.days[-1]})"]
    if st.checkpoint:
        lines.append(f"- checkpoint: `{st.checkpoint}` (model_version `{m.model_version}`, CR layer `{m.default_cr_layer}`)")
    if st.published:
        last_ds = max(st.published)
        for name in sorted(st.published[last_ds]):
            lines.append(f"- table `{name}`: `{layout.table(name)}` (latest ds {last_ds})")
    if st.index:
        lines.append(f"- index: `{layout.indexes}` (version `{st.index['version']}`, factory `{st.index['factory']}`)")
    lines += ["", "## Split", ""]
    for part, days in st.split.items():
        lines.append(f"- {part}: {days[0]}..{days[-1]} ({len(days)} days)")
    if m is not None and m.metrics:
        lines += ["", "## Foundation model (validation)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(m.metrics.items())]
        for png in sorted(Path(st.checkpoint).glob("*.png")):
            shutil.copy(png, out / png.name)
            lines += ["", f"![{png.stem}]({png.name})"]
    if st.rollover:
        lines += ["", f"## Model-version rollover: aligned into `{cfg.rollover.previous_model_version}`", "",
                  f"`{st.manifest.model_version}`'s tables mapped into the previous version's space for old "
                  f"consumers (overlap {cfg.rollover.overlap_days} days, gate max_residual "
                  f"{cfg.rollover.max_residual}; docs/rollover.md).", ""]
        lines += _rollover_rows(st.rollover)
    if st.downstream:
        d = st.downstream
        lines += ["", f"## Downstream: scenario {d['scenario']} ({d.get('scenario_name', '')})", "",
                  f"Rows train/valid/test: {d['rows']['train']}/{d['rows']['valid']}/{d['rows']['test']}; "
                  f"representations {d['representations']} through the `{d['adapter']}` adapter; "
                  f"coverage on test rows {json.dumps(d.get('coverage', {}))}.", ""]
        lines += _auc_rows(d)
        if "lift" in d:
            lines += ["", "Lift (transfer - vanilla): " + ", ".join(f"{t} {v:+.4f}" for t, v in d["lift"].items())]
    if st.index:
        i = st.index
        lines += ["", "## Retrieval index", "",
                  f"{i['num_items']} items x {i['dim']} dims, metric {i['metric']}, factory `{i['factory']}`", "",
                  "| K | recall@K vs exact |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(i["recall_at_k"].items(), key=lambda kv: int(kv[0]))]
        if i.get("hit_rate_at_k"):
            lines += ["", "| K | hit-rate@K of later positives |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in sorted(i["hit_rate_at_k"].items(), key=lambda kv: int(kv[0]))]
    lines += ["", "## Step timings (s)", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in st.timings.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
