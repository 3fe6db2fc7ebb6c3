"""The studies' reports: Markdown tables, the JSON result and a PNG per study.

- :func:`write_transfer_report`: ``transfer.md`` (validation AUC, test AUC per task, mean
  over scenarios, summary), ``transfer.json``, ``transfer_auc.png``.
- :func:`write_rankup_report`: ``rankup.md`` (AUC and effective rank per layer),
  ``rankup.json``, ``rankup_erank.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from contracts import DatasetSpec
from studies.selection import improves


def _pm(stat: dict, task: str) -> str:
    m, s = stat["test_auc"][task], stat["test_auc_std"][task]
    return "n/a" if math.isnan(m) else f"{m:.4f} ± {s:.4f}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tasks_of(spec: DatasetSpec) -> list[str]:
    """The log's tasks in canonical order (the first one, click, is the headline task)."""
    return list(spec.canonical().tasks)


def _span(days: list[str]) -> str:
    return f"{days[0]}..{days[-1]} ({len(days)} days)" if len(days) > 1 else f"{days[0]}"


def _f(x: float | None, sign: bool = False) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:+.4f}" if sign else f"{x:.4f}")


def write_transfer_report(out: Path, result: dict, spec: DatasetSpec, tasks: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = {s: r for s, r in result["table"].items() if "methods" in r}
    methods = list(next(iter(rows.values()))["methods"]) if rows else []
    lines = [
        f"# Transfer table: {result['dataset']}",
        "",
        f"Test AUC ({', '.join(tasks)}), mean ± std over seeds {result['seeds']}; validation AUC "
        f"({tasks[0]}) in the first table. Time split: train {_span(result['days']['train'])}, valid "
        f"{_span(result['days']['valid'])}, test {_span(result['days']['test'])}. Per scenario, **picked** = "
        "the row with the best mean validation AUC (chosen before looking at test); `†` = best on test "
        "(an upper bound only).",
        "",
        "## Validation AUC (selection metric)",
        "",
        "| method | " + " | ".join(f"{s} {r['name']}" for s, r in rows.items()) + " |",
        "|---" * (len(rows) + 1) + "|",
    ]
    for m in methods:
        cells = [
            (
                f"**{r['methods'][m]['valid_auc']:.4f}**"
                if r.get("picked_method") == m
                else f"{r['methods'][m]['valid_auc']:.4f}"
            )
            if m in r["methods"]
            else ""
            for r in rows.values()
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
    for task in tasks:
        lines += [
            f"## Test AUC: {task}",
            "",
            "| method | "
            + " | ".join(f"{s} {r['name']} ({r['rows']['train']} train rows)" for s, r in rows.items())
            + " |",
        ]
        lines.append("|---" * (len(rows) + 1) + "|")
        for m in methods:
            cells = []
            for r in rows.values():
                if m not in r["methods"]:
                    cells.append("")
                    continue
                c = _pm(r["methods"][m], task)
                if r.get("picked_method") == m:
                    c = f"**{c}** (picked)"
                if task == tasks[0] and r.get("best_on_test_method") == m:
                    c += " †"
                cells.append(c)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if rows:
        common = [m for m in methods if all(m in r["methods"] for r in rows.values())]
        lines += [
            "## Mean over scenarios",
            "",
            f"| method | mean valid AUC | mean test AUC ({tasks[0]}) | scenarios above vanilla by > 1 pooled std |",
            "|---|---|---|---|",
        ]
        for m in common:
            mv = float(np.mean([r["methods"][m]["valid_auc"] for r in rows.values()]))
            mt = float(np.mean([r["methods"][m]["test_auc"][tasks[0]] for r in rows.values()]))
            n = sum(improves(r["methods"], m, tasks[0]) for r in rows.values()) if m != "vanilla" else ""
            lines.append(f"| {m} | {mv:.4f} | {mt:.4f} | {n} |")
        lines.append("")
    ub = result["upper_bound_best_on_test"]
    lines += [
        "## Summary",
        "",
        "| | picked on validation | default method | best on test (upper bound) |",
        "|---|---|---|---|",
        f"| scenarios above vanilla by > 1 pooled std | {result['scenarios_improved']} of {len(rows)} | "
        f"{result['default_scenarios_improved']} of {len(rows)} | {ub['scenarios_improved']} of {len(rows)} |",
        f"| mean test AUC over scenarios (vanilla {_f(result['mean_vanilla_test_auc'])}) | "
        f"{_f(result['mean_picked_test_auc'])} | {_f(result['mean_default_test_auc'])} | {_f(ub['mean_test_auc'])} |",
        f"| lift, smallest scenario {result['small_scenario']} | {_f(result['lift'], True)} "
        f"({result['picked_method']}) | {_f(result['default_lift'], True)} | {_f(ub['lift'], True)} |",
        "",
        f"Default method (fixed before the run: the daily run's adapter): `{result['default_method']}`. "
        f"Best on validation across scenarios (mean validation AUC; the rule for the daily default): "
        f"`{result['valid_best_method']}`.",
        "",
        f"Cells: {result['cells']['computed']} computed, {result['cells']['reused']} reused; wall "
        f"{result['wall_s']:.0f} s (read {result['timing']['read_s']:.0f} s, data {result['timing']['data_s']:.0f} s, "
        f"fits {result['timing']['fit_s']:.0f} s).",
        "",
    ]
    (out / "transfer.md").write_text("\n".join(lines))
    (out / "transfer.json").write_text(json.dumps(result, indent=1, default=float))
    if rows:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(methods) * len(rows) / 2), 4))
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            xs = np.arange(len(rows)) + j * width
            ys = [r["methods"].get(m, {}).get("test_auc", {}).get(tasks[0], np.nan) for r in rows.values()]
            es = [r["methods"].get(m, {}).get("test_auc_std", {}).get(tasks[0], 0) for r in rows.values()]
            ax.bar(xs, ys, width, yerr=es, label=m)
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{s} {r['name']}" for s, r in rows.items()])
        finite = [
            v
            for r in rows.values()
            for st in r["methods"].values()
            for v in [st["test_auc"][tasks[0]]]
            if not math.isnan(v)
        ]
        if finite:
            ax.set_ylim(min(finite) - 0.02, max(finite) + 0.02)
        ax.set_ylabel(f"test AUC ({tasks[0]})")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "transfer_auc.png", dpi=100)
        plt.close(fig)


def write_rankup_report(out: Path, result: dict, tasks: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    v = result["variants"]
    layers = list(next(iter(v.values()))["erank"])
    lines = [
        f"# RankUp ablation: {result['dataset']}",
        "",
        f"Scenario {result['scenario'] if result['scenario'] is not None else 'all'}, rows {result['rows']}, "
        f"seeds {result['seeds']}. Test AUC mean ± std; effective rank after each layer (mean over seeds).",
        "",
        "| variant | params | "
        + " | ".join(f"AUC {t}" for t in tasks)
        + " | "
        + " | ".join(f"erank {l}" for l in layers)
        + " |",
        "|---" * (2 + len(tasks) + len(layers)) + "|",
    ]
    for name, s in v.items():
        lines.append(
            f"| {name} | {s['params']} | "
            + " | ".join(_pm(s, t) for t in tasks)
            + " | "
            + " | ".join(f"{s['erank'][l]:.2f}" for l in layers)
            + " |"
        )
    lines.append("")
    (out / "rankup.md").write_text("\n".join(lines))
    (out / "rankup.json").write_text(json.dumps(result, indent=1, default=float))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in v.items():
        style = "-" if name in ("rankmixer", "rankup") else ":"
        ax.plot(layers, [s["erank"][l] for l in layers], style, marker="o", label=name)
    ax.set_ylabel("effective rank (per-sample T x D)")
    ax.set_xlabel("layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rankup_erank.png", dpi=100)
    plt.close(fig)
