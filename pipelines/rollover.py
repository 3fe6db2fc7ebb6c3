"""Model-version rollover: publish a new foundation-model version's vectors *aligned into
the previous version's space*, so downstream models trained on the old vectors keep
working while they are retrained.

This module is what the daily run calls (:func:`rollover_days`) and its config; the map's
maths (orthogonal Procrustes, residuals) is :mod:`pipelines.rollover_align`, the table
layout and I/O :mod:`pipelines.rollover_tables`. The fitting options the study compared
and the product does not use live with the study (``benchmarks/rollover_fits.py``;
docs/rollover.md).
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_core import to_json

from contracts import REPRESENTATION_TABLES, StrictModel, TableProperties
from engines import delta_io
from pipelines.rollover_align import AlignMap, fit_procrustes, scale_free_residual
from pipelines.rollover_tables import (
    ALIGN_DIR,
    AlignResult,
    AlignSources,
    RolloverError,
    aligned_table_name,
    fitting_rows,
    map_path,
    publish_aligned_rows,
    read_map,
    read_sources,
    table_for_version,
)

__all__ = [
    "ALIGN_DIR",
    "AlignMap",
    "AlignResult",
    "AlignSources",
    "PRODUCT_FIT",
    "RolloverConfig",
    "RolloverError",
    "aligned_config_hash",
    "aligned_table_name",
    "fit_procrustes",
    "in_overlap",
    "publish_aligned",
    "read_map",
    "rollover_day",
    "rollover_days",
    "scale_free_residual",
    "table_for_version",
]


class RolloverConfig(StrictModel):
    """How a new model version is rolled out next to the previous one."""

    overlap_days: int = Field(
        14, ge=0, description="Days after the new version's first published day that aligned tables are published."
    )
    min_shared_entities: int = Field(
        200, ge=2, description="Refuse to fit a map on fewer entities present in both versions."
    )
    max_residual: float = Field(
        0.75,
        gt=0,
        description="Refuse to publish when the map's scale-free relative residual on the fitting "
        "entities (sqrt(1 - cos^2) of the mapped new vs the old vectors) is above this.",
    )
    centre: bool = Field(True, description="Centre both sides before fitting (records the means in the map).")
    scale: bool = Field(
        True,
        description="Also apply one isotropic least-squares scale factor (similarity Procrustes); off: "
        "plain orthogonal Procrustes, the new vectors keep their own spread (docs/rollover.md).",
    )
    tables: list[str] = Field(
        default_factory=lambda: ["user_ur", "item_ir", "user_cr", "item_cr"], description="Tables to align."
    )
    force: bool = Field(False, description="Refit and republish even when (table, ds) is already aligned.")
    previous_model_version: str | None = Field(
        None, description="The version downstream models were trained on; None = no rollover in progress."
    )
    previous_tables_root: Path | None = Field(
        None, description="tables/ folder holding the previous version's tables; None = the run's own tables/."
    )

    @field_validator("tables")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in REPRESENTATION_TABLES]
        if bad:
            raise ValueError(f"unknown table(s) {bad}; valid: {sorted(REPRESENTATION_TABLES)}")
        return v


# The fitting options RolloverConfig held until the study's losing ones left it (issue 18), at
# the values the product fits with. The aligned table's config_hash still hashes them in
# their old place in the config's JSON, so a table published before keeps its hash.
PRODUCT_FIT = {
    "method": "procrustes",
    "weight": "none",
    "scale_fit": "least_squares",
    "fit_days": 1,
    "fit_space": "raw",
}


def aligned_config_hash(
    new_props: TableProperties, new_model_version: str, cfg: RolloverConfig, fit: dict = PRODUCT_FIT
) -> str:
    """The aligned table's ``config_hash``: the new table's, the new version and the
    config's JSON (``fit``: the fitting options, spliced in after ``scale``)."""
    dumped = cfg.model_dump()
    keys = list(dumped)
    cut = keys.index("scale") + 1
    options = {k: dumped[k] for k in keys[:cut]} | fit | {k: dumped[k] for k in keys[cut:]}
    payload = f"{new_props.config_hash}|{new_model_version}|{to_json(options).decode()}"
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def publish_aligned(
    tables_root: str | Path,
    name: str,
    ds: str,
    new_model_version: str,
    old_model_version: str,
    cfg: RolloverConfig | None = None,
    *,
    old_tables_root: str | Path | None = None,
    out: str | Path | None = None,
) -> AlignResult:
    """Publish the new version's ``name`` snapshot of ``ds`` mapped into the old version's
    space as ``<tables_root>/<name>__aligned_<old_version>`` (partition ``ds``; ``out``:
    another table path, e.g. for comparing fitting options side by side).

    The map is fitted on the entities present in both the old version's latest snapshot
    at or before ``ds`` (day ``d_old``) and the new version's snapshot of ``d_old`` (or of
    ``ds`` when the new version has no ``d_old`` partition): same-day pairs, so entity
    drift between days does not count as misalignment. It is then applied to every row
    of the new ``ds`` snapshot, entities the old version never saw included.

    Raises :class:`RolloverError` (nothing published) when a snapshot is missing, fewer
    than ``cfg.min_shared_entities`` entities are shared, or the residual exceeds
    ``cfg.max_residual``. Rerunning a published (table, ds) is a no-op unless ``cfg.force``.
    """
    from extract import already_published

    cfg = cfg or RolloverConfig()
    if name not in REPRESENTATION_TABLES:
        raise RolloverError(f"unknown table {name!r}; valid: {sorted(REPRESENTATION_TABLES)}")
    if new_model_version == old_model_version:
        raise RolloverError(f"new and old model version are both {new_model_version!r}")
    root = Path(tables_root)
    out = Path(out) if out is not None else root / aligned_table_name(name, old_model_version)
    recorded = map_path(out, ds)
    if not cfg.force and recorded.is_file() and already_published(out, name, old_model_version, ds):
        return AlignResult.from_map_file(out, recorded)

    versions = (new_model_version, old_model_version)
    src = read_sources(root, name, ds, *versions, Path(old_tables_root or root))
    # the same-day pair: d_old in both versions (entity drift between days is not misalignment)
    pairs = [(src.d_old, src.d_old if src.d_old in src.new_days else ds)]
    old_rows, new_rows, _ = fitting_rows(src, pairs, name, versions, cfg.min_shared_entities)
    amap = fit_procrustes(old_rows, new_rows, centre=cfg.centre, scale=cfg.scale)
    if amap.residual > cfg.max_residual:
        raise RolloverError(
            f"{name} ds={ds}: alignment residual {amap.residual:.4f} of {new_model_version} onto {old_model_version} "
            f"is above max_residual={cfg.max_residual} (scale-free: sqrt(1 - cos^2) of the mapped new vs the old "
            f"vectors; {amap.n_fit} fitting rows); nothing published"
        )
    chash = aligned_config_hash(src.new_props, new_model_version, cfg)
    return publish_aligned_rows(out, name, ds, src, amap, pairs, versions, chash)


def in_overlap(first_new_ds: str, ds: str, overlap_days: int) -> bool:
    """True while ``ds`` is within ``overlap_days`` days from the new version's first day."""
    start = date.fromisoformat(first_new_ds)
    return start <= date.fromisoformat(ds) <= start + timedelta(days=overlap_days)


def rollover_day(
    tables_root: str | Path,
    ds: str,
    new_model_version: str,
    old_model_version: str,
    first_new_ds: str,
    cfg: RolloverConfig | None = None,
    *,
    old_tables_root: str | Path | None = None,
) -> dict[str, dict]:
    """Align every ``cfg.tables`` table of ``ds`` while within the overlap period (else {}).

    Each table is its own atomic publish: a refused table raises :class:`RolloverError`
    after the day's earlier tables were published (each alone is consistent; a rerun
    skips them and retries the rest)."""
    cfg = cfg or RolloverConfig()
    if not in_overlap(first_new_ds, ds, cfg.overlap_days):
        return {}
    return {
        name: publish_aligned(
            tables_root, name, ds, new_model_version, old_model_version, cfg, old_tables_root=old_tables_root
        ).to_dict()
        for name in cfg.tables
    }


def rollover_days(tables_root: str | Path, days: list[str], new_model_version: str, cfg: RolloverConfig) -> dict:
    """The pipeline's entry point: align each of ``days`` (in order) from
    ``new_model_version`` into ``cfg.previous_model_version`` while in the overlap period.

    The overlap starts at the new version's first published day (the first partition of
    its first ``cfg.tables`` table). A no-op ({}) when no previous version is configured
    or it is the current one. Returns ``{ds: {table: AlignResult.to_dict()}}``.
    """
    old = cfg.previous_model_version
    if old is None or old == new_model_version:
        return {}
    first = delta_io.list_days(table_for_version(tables_root, cfg.tables[0], new_model_version))
    if not first:
        raise RolloverError(f"{tables_root}: model version {new_model_version!r} has published nothing to align")
    out = {}
    for d in sorted(days):
        done = rollover_day(
            tables_root, d, new_model_version, old, first[0], cfg, old_tables_root=cfg.previous_tables_root
        )
        if done:
            out[d] = done
    return out
