"""The run report: one Markdown file (plus copied plots) per ``ds``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from contracts import RunLayout


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _auc_rows(ds_result: dict, too_few: dict[str, int] | None = None) -> list[str]:
    """Test AUC per model and task: mean ± std over seeds and the [min, max] of the seeds;
    a task in ``too_few`` (task -> test positives) gets a warning instead of a figure."""
    too_few = too_few or {}
    rows = [
        "| model | seeds | " + " | ".join(f"test AUC ({t})" for t in ds_result["tasks"]) + " |",
        "|---|---|" + "---|" * len(ds_result["tasks"]),
    ]
    for name in ("vanilla", "transfer"):
        res = ds_result.get(name)
        if not res:
            continue
        per_seed = res.get("per_seed") or []
        cells = []
        for t in ds_result["tasks"]:
            mean, std = res["test_auc"].get(t), res.get("test_auc_std", {}).get(t)
            vals = [r["test_auc"][t] for r in per_seed if r.get("test_auc", {}).get(t) == r.get("test_auc", {}).get(t)]
            if t in too_few:
                cells.append(f"⚠ not shown: {too_few[t]} test positive(s)")
            elif mean is None or mean != mean:
                cells.append("n/a")
            else:
                spread = f" ± {std:.4f} [{min(vals):.4f}, {max(vals):.4f}]" if len(vals) > 1 else ""
                cells.append(f"{mean:.4f}{spread}")
        rows.append(f"| {name} | {max(len(per_seed), 1)} | " + " | ".join(cells) + " |")
    return rows


def split_counts(layout: RunLayout, d: dict, sample_type: str = "all") -> dict[str, dict[str, int]]:
    """``{split: {"rows": n, <task>: positives}}`` of the downstream scenario, counted from
    the log (the rows the downstream model was trained and tested on)."""
    import pyarrow.compute as pc

    from datasources import read_log
    from downstream.data import select_rows

    out = {}
    for part, days in (d.get("days") or {}).items():
        if not days:
            continue
        t = select_rows(read_log(layout.log, list(days)), d["scenario"], sample_type)
        out[part] = {"rows": t.num_rows}
        for task in d["tasks"]:
            out[part][task] = int(pc.sum(pc.equal(t[task], 1)).as_py() or 0) if task in t.column_names else 0
    return out


def representation_health(layout: RunLayout, published: dict, min_share: float) -> list[dict]:
    """Effective rank (exp of the entropy of the normalised singular values) of each
    published table's latest snapshot, against ``min_share`` x its dimension."""
    from engines import delta_io
    from extract.health import table_health

    if not published:
        return []
    last = max(published)
    out = []
    for name in sorted(published[last]):
        path = layout.table(name)
        try:
            snap = delta_io.read_days(path, [last], columns=["vector"])
        except Exception:  # noqa: BLE001 - a table the report cannot read is named, not fatal
            out.append({"table": name, "ds": last, "error": "unreadable"})
            continue
        h = table_health(snap)
        dim = h.get("dim") or 0
        erank = h.get("effective_rank", float("nan"))
        out.append(
            {
                "table": name,
                "ds": last,
                "rows": h.get("rows", 0),
                "dim": dim,
                "effective_rank": erank,
                "collapsed": bool(dim and erank == erank and erank < min_share * dim),
            }
        )
    return out


def _rollover_rows(rollover: dict) -> list[str]:
    """``{ds: {table: AlignResult.to_dict()}}`` -> a Markdown table."""
    rows = [
        "| ds | table | aligned table | residual (gated) | applied residual | fitting rows | Delta version |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in sorted(rollover):
        for name, r in rollover[d].items():
            version = "already published" if r.get("version") is None else r["version"]
            applied = r.get("applied_residual")
            rows.append(
                f"| {d} | {name} | `{r['table']}` | {r['residual']:.4f} | "
                f"{'n/a' if applied is None else f'{applied:.4f}'} | {r['n_shared']} | {version} |"
            )
    return rows


def _quality_rows(index: dict) -> list[str]:
    """The retrieval-quality section: the query table's recall/NDCG@K on the held-out day
    beside popularity and the live version, and the promotion decision."""
    q = index.get("quality")
    if not q:
        return []
    rows = [
        "",
        "## Retrieval quality (query tower)",
        "",
        f"`{index.get('query_table')}` partition {q['query_ds']} against the positives of {q['held_out_day']} "
        f"({q['users']} users seen before; tower {json.dumps(q.get('tower', {}))}).",
        "",
        "| K | recall@K | NDCG@K | popularity recall@K | popularity NDCG@K | live recall@K |",
        "|---|---|---|---|---|---|",
    ]
    for k in sorted(q.get("recall_at_k", {}), key=int):
        cells = [
            q["recall_at_k"].get(k),
            q["ndcg_at_k"].get(k),
            q["popularity_recall_at_k"].get(k),
            q["popularity_ndcg_at_k"].get(k),
            q.get("live_recall_at_k", {}).get(k),
        ]
        rows.append(f"| {k} | " + " | ".join("n/a" if c is None else f"{c:.4f}" for c in cells) + " |")
    verdict = "promoted (CURRENT)" if q.get("promoted") else f"**NOT promoted**: {q.get('refused')}"
    rows += [
        "",
        f"Version `{index['version']}`: {verdict} (gate on recall@{q.get('gate_k')}, live version "
        f"`{q.get('live_version')}`).",
    ]
    return rows


def write_report(cfg, layout: RunLayout, st, failure: str | None = None, failed_step: str | None = None) -> Path:
    out = layout.report(st.ds)
    out.mkdir(parents=True, exist_ok=True)
    m = st.manifest
    lines = [f"# lfm4ads run report: ds={st.ds}", ""]
    if failure and failed_step == "rollover":
        lines += [
            "## ROLLOVER REFUSED",
            "",
            f"**{failure}**",
            "",
            f"This version's own tables are published; the refused table's aligned table "
            f"(`<name>__aligned_{cfg.rollover.previous_model_version}`) got nothing for that day, so its "
            "consumers keep reading its previous partition (point in time). Tables the step aligned "
            "before the refused one stay published; a rerun skips them. The steps after rollover "
            "did not run.",
            "",
        ]
    elif failure and failed_step == "retrieval":
        lines += [
            "## INDEX PROMOTION REFUSED",
            "",
            f"**{failure}**",
            "",
            "The tables (user_query included) are published; the new index version is kept on disk, "
            "not CURRENT: the live version keeps serving (see Retrieval quality below).",
            "",
        ]
    elif failure and failed_step == "retrieval":
        lines += [
            "## INDEX NOT PROMOTED",
            "",
            f"**{failure}**",
            "",
            "The day's tables are published; the new index version is kept on disk but the live "
            "(CURRENT) index stays the previous one.",
            "",
        ]
    elif failure:
        lines += [
            "## RUN STOPPED BEFORE PUBLISHING",
            "",
            f"**{failure}**",
            "",
            "Nothing of the failing day was published; the previous tables and index stay current.",
            "",
        ]
    lines += ["## Where things are", "", f"- log: `{layout.log}` ({len(st.days)} days, {st.days[0]}..{st.days[-1]})"]
    if st.checkpoint:
        lines.append(
            f"- checkpoint: `{st.checkpoint}` (model_version `{m.model_version}`, CR layer `{m.default_cr_layer}`)"
        )
    if st.published:
        last_ds = max(st.published)
        for name in sorted(st.published[last_ds]):
            lines.append(f"- table `{name}`: `{layout.table(name)}` (latest ds {last_ds})")
    if st.index:
        lines.append(f"- index: `{layout.indexes}` (version `{st.index['version']}`, factory `{st.index['factory']}`)")
        if st.index.get("query_tower_skipped"):
            lines.append(f"- query tower skipped (too little data yet): {st.index['query_tower_skipped']}")
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
        lines += [
            "",
            f"## Model-version rollover: aligned into `{cfg.rollover.previous_model_version}`",
            "",
            f"`{st.manifest.model_version}`'s tables mapped into the previous version's space for old "
            f"consumers (overlap {cfg.rollover.overlap_days} days, gate max_residual "
            f"{cfg.rollover.max_residual}; docs/rollover.md).",
            "",
        ]
        lines += _rollover_rows(st.rollover)
    if st.downstream:
        d = st.downstream
        rcfg = getattr(cfg, "report", None)
        min_pos = rcfg.min_positives if rcfg is not None else 30
        name = d.get("scenario_name") or str(d["scenario"])
        lines += [
            "",
            f"## Downstream: scenario `{name}` (id {d['scenario']})",
            "",
            f"The downstream ranking model is trained on scenario `{name}` alone "
            f"({'chosen in the config' if cfg.downstream.scenario is not None else 'the smallest scenario'}); "
            f"representations {d['representations']} through the `{d['adapter']}` adapter; "
            f"coverage on test rows {json.dumps(d.get('coverage', {}))}.",
            "",
        ]
        try:
            counts = split_counts(layout, d, getattr(cfg.downstream, "sample_type", "all"))
        except Exception:  # noqa: BLE001 - counts are context; the model rows below still show
            counts = {}
        lines += [
            "| split | rows | " + " | ".join(f"positives ({t})" for t in d["tasks"]) + " |",
            "|---|---|" + "---|" * len(d["tasks"]),
        ]
        for part in ("train", "valid", "test"):
            c = counts.get(part, {})
            lines.append(
                f"| {part} | {d['rows'].get(part, c.get('rows', 'n/a'))} | "
                + " | ".join(str(c.get(t, "n/a")) for t in d["tasks"])
                + " |"
            )
        test = counts.get("test", {})
        too_few = {t: test[t] for t in d["tasks"] if t in test and test[t] < min_pos}
        lines += [""]
        lines += _auc_rows(d, too_few)
        if "lift" in d:
            shown = {t: v for t, v in d["lift"].items() if t not in too_few}
            if shown:
                lines += ["", "Lift (transfer - vanilla): " + ", ".join(f"{t} {v:+.4f}" for t, v in shown.items())]
        for t, n in too_few.items():
            lines += [
                "",
                f"> ⚠ **{t}**: only {n} positive(s) in the test split (< report.min_positives={min_pos}): "
                "its AUC and lift would be noise, so they are not shown.",
            ]
        seeds = len((d.get("vanilla") or {}).get("per_seed") or [])
        if seeds <= 1:
            lines += ["", "One seed: no spread over seeds is shown (downstream.seeds lists more)."]
    if st.index:
        i = st.index
        lines += [
            "",
            "## Retrieval index",
            "",
            f"{i['num_items']} items x {i['dim']} dims, metric {i['metric']}, factory `{i['factory']}`",
            "",
            "| K | recall@K vs exact |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(i["recall_at_k"].items(), key=lambda kv: int(kv[0]))]
        if i.get("hit_rate_at_k"):
            lines += ["", "| K | hit-rate@K of later positives |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in sorted(i["hit_rate_at_k"].items(), key=lambda kv: int(kv[0]))]
        lines += _quality_rows(i)
    rcfg = getattr(cfg, "report", None)
    share = rcfg.min_rank_share if rcfg is not None else 0.15
    health = representation_health(layout, st.published, share) if st.published else []
    if health:
        lines += [
            "",
            "## Representation health (latest published snapshot)",
            "",
            "| table | ds | rows | dim | effective rank | share of dim |",
            "|---|---|---|---|---|---|",
        ]
        for h in health:
            if "error" in h:
                lines.append(f"| {h['table']} | {h['ds']} | unreadable | | | |")
                continue
            frac = h["effective_rank"] / h["dim"] if h["dim"] else float("nan")
            flag = " ⚠ collapsed" if h["collapsed"] else ""
            lines.append(
                f"| {h['table']} | {h['ds']} | {h['rows']} | {h['dim']} | {h['effective_rank']:.2f} | "
                f"{frac:.2f}{flag} |"
            )
        for h in (h for h in health if h.get("collapsed")):
            lines += [
                "",
                f"> ⚠ **representation collapse**: `{h['table']}` uses an effective rank of "
                f"{h['effective_rank']:.1f} of its {h['dim']} dimensions (below report.min_rank_share="
                f"{share}): its vectors vary along few directions; consumers get little from it.",
            ]
    lines += ["", "## Step timings (s)", "", "| step | seconds |", "|---|---|"]
    reused = set(getattr(st, "reused", []))
    lines += [f"| {k} | {'reused' if k in reused else v} |" for k, v in st.timings.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
