"""Quality gates between extraction and publishing.

Each extracted day carries ``_health.json`` (extract.health: row counts, coverage,
NaN/inf rows, norm statistics and effective rank per representation column). Before
a day is published it is compared with absolute bounds and with the previous extracted
day; any breach stops the run before the publish, so yesterday's tables and index stay
current, and the reasons go to the ledger and the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from contracts import StrictModel

HEALTH_FILE = "_health.json"


class GateConfig(StrictModel):
    """Bounds a day must meet to be published (``enabled: false`` skips every check)."""

    enabled: bool = True
    min_coverage: float = Field(0.999, ge=0, le=1, description="Extracted rows / log rows of the day.")
    max_nan_inf_rows: int = Field(0, ge=0, description="Rows with a NaN/inf in any representation.")
    max_norm_drift: float = Field(0.5, ge=0, description="|mean norm - previous| / previous, per column.")
    max_erank_drop: float = Field(0.5, ge=0, le=1, description="Relative drop of effective rank vs previous day.")
    max_row_change: float = Field(
        5.0, ge=0, description="Rows may change by this factor vs the previous day (x or 1/x)."
    )
    min_rows_for_drift: int = Field(
        1000,
        ge=0,
        description="Day-over-day checks (norm, rank, rows) need both days this large: "
        "statistics of tiny days are noise, not drift.",
    )


class GateFailed(RuntimeError):
    """A day failed its quality gates; nothing of it was published."""

    def __init__(self, ds: str, reasons: list[str]):
        self.ds, self.reasons = ds, reasons
        super().__init__(f"quality gate failed for ds={ds}: " + "; ".join(reasons))


def read_health(samples_dir: str | Path) -> dict:
    path = Path(samples_dir) / HEALTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no health report; was the day extracted?")
    return json.loads(path.read_text())


def check_day(ds: str, health: dict, previous: dict | None, cfg: GateConfig) -> list[str]:
    """Reasons the day must not be published (empty = pass)."""
    if not cfg.enabled:
        return []
    reasons = []
    cov = health.get("coverage_rows", 0.0)
    if cov < cfg.min_coverage:
        reasons.append(
            f"coverage {cov:.4f} < {cfg.min_coverage} ({health.get('rows')} of {health.get('log_rows')} rows)"
        )
    comparable = previous is not None and min(health.get("rows", 0), previous.get("rows", 0)) >= cfg.min_rows_for_drift
    for col, stats in health.get("columns", {}).items():
        if stats["nan_inf_rows"] > cfg.max_nan_inf_rows:
            reasons.append(f"{col}: {stats['nan_inf_rows']} row(s) with NaN/inf")
        prev = (previous or {}).get("columns", {}).get(col) if comparable else None
        if not prev:
            continue
        if prev["norm_mean"] > 0:
            drift = abs(stats["norm_mean"] - prev["norm_mean"]) / prev["norm_mean"]
            if drift > cfg.max_norm_drift:
                reasons.append(
                    f"{col}: mean norm moved {drift:.0%} ({prev['norm_mean']:.3f} -> {stats['norm_mean']:.3f})"
                )
        if prev["effective_rank"] > 0:
            drop = 1 - stats["effective_rank"] / prev["effective_rank"]
            if drop > cfg.max_erank_drop:
                reasons.append(
                    f"{col}: effective rank fell {drop:.0%} "
                    f"({prev['effective_rank']:.2f} -> {stats['effective_rank']:.2f})"
                )
    # A collapse to a tiny day is itself the anomaly: the row check needs only a large previous day.
    if previous and previous.get("rows", 0) >= max(cfg.min_rows_for_drift, 1):
        ratio = health.get("rows", 0) / previous["rows"]
        if ratio > cfg.max_row_change or ratio < 1 / max(cfg.max_row_change, 1e-9):
            reasons.append(f"row count {health.get('rows')} vs {previous['rows']} the day before (x{ratio:.2f})")
    return reasons
