"""The rollover study's fits: the fitting options the product does not use (:class:`StudyFit`),
published side by side through the product's reads, gate and writer
(``pipelines.rollover_tables``), for ``benchmarks/rollover.py`` to feed downstream.

The product (``pipelines.rollover.publish_aligned``) fits the latest same-day pair with
Procrustes and the least-squares scale; :func:`publish_study` is the same publish with
the options below passed to ``fit_procrustes`` explicitly. :func:`publish_pairs` publishes
every fit (headline, frozen, variants) for each new version the study rolls over to.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
from pydantic import Field

from contracts import RunLayout, StrictModel

if TYPE_CHECKING:  # imported where used: --summarise needs neither
    from pipelines.rollover import AlignResult, RolloverConfig

TABLES = ["user_ur", "item_ir", "user_cr", "item_cr"]


class StudyFit(StrictModel):
    """The fitting options this study compares that the product does not use (they lost:
    docs/rollover.md); the defaults are the product's fit (``pipelines.rollover.PRODUCT_FIT``).
    Field order: as they were dumped in RolloverConfig (the aligned table's config_hash)."""

    method: Literal["procrustes", "least_squares"] = Field(
        "procrustes", description="procrustes: (scaled) orthogonal map; least_squares: any linear map."
    )
    weight: Literal["none", "sample_count"] = Field(
        "none", description="Weight each fitting entity by its sample_count (the rows it stands for) instead of 1."
    )
    scale_fit: Literal["least_squares", "norm"] = Field(
        "least_squares",
        description="With scale: least_squares: s = trace(S)/||A||^2 (the L2 optimum, which shrinks "
        "towards the mean when the fit is imperfect); norm: s = ||B||/||A|| (keeps the old vectors' spread).",
    )
    fit_days: int = Field(
        1,
        ge=1,
        description="Fit on the same-day pairs of this many latest days (<= ds) both versions published, "
        "pooled (an entity of k days counts k times); 1 = the latest day only.",
    )
    fit_space: Literal["raw", "l2"] = Field(
        "raw",
        description="raw: fit the rotation on the vectors as published; l2: on l2-normalised rows (each "
        "entity's direction counts once whatever its norm), then means and scale on the raw rows.",
    )


def publish_study(
    tables_root: Path,
    name: str,
    ds: str,
    new_model_version: str,
    old_model_version: str,
    cfg: RolloverConfig,
    fit: StudyFit,
    *,
    old_tables_root: Path,
    out: Path | None = None,
) -> AlignResult:
    """``pipelines.rollover.publish_aligned`` (always forced) with the study's fitting options:
    the ``fit.fit_days`` latest same-day pairs both versions published (up to the old
    version's day) pooled into one fit, the other options passed to ``fit_procrustes``
    explicitly; the same reads, gate (``cfg.max_residual``) and writer."""
    from engines import delta_io
    from pipelines.rollover import RolloverError, aligned_config_hash, aligned_table_name, fit_procrustes
    from pipelines.rollover_tables import fitting_rows, publish_aligned_rows, read_sources

    versions = (new_model_version, old_model_version)
    out = Path(out) if out is not None else Path(tables_root) / aligned_table_name(name, old_model_version)
    src = read_sources(Path(tables_root), name, ds, *versions, Path(old_tables_root))
    if src.d_old in src.new_days:
        both = [d for d in delta_io.list_days(src.old_path) if d <= src.d_old and d in src.new_days]
        pairs = [(d, d) for d in both[-fit.fit_days :]]
    else:
        pairs = [(src.d_old, ds)]
    old_rows, new_rows, counts = fitting_rows(src, pairs, name, versions, cfg.min_shared_entities)
    amap = fit_procrustes(
        old_rows,
        new_rows,
        centre=cfg.centre,
        scale=cfg.scale,
        method=fit.method,
        weights=counts if fit.weight == "sample_count" else None,
        fit_space=fit.fit_space,
        scale_fit=fit.scale_fit,
    )
    if amap.residual > cfg.max_residual:
        raise RolloverError(
            f"{name} ds={ds}: alignment residual {amap.residual:.4f} of {new_model_version} onto {old_model_version} "
            f"is above max_residual={cfg.max_residual} ({amap.n_fit} fitting rows); nothing published"
        )
    chash = aligned_config_hash(src.new_props, new_model_version, cfg, fit.model_dump())
    return publish_aligned_rows(out, name, ds, src, amap, pairs, versions, chash)


def publish_variant(
    tables_root: Path,
    old_tables: Path,
    fit_ds: str | None,
    days: list[str],
    cfg: RolloverConfig,
    fit: StudyFit,
    suffix: str,
) -> dict:
    """A variant map per table, published as ``<table>__<suffix>`` through the same writer:
    fitted ONCE on ``fit_ds`` (same-day pairs) and applied to every day in ``days`` (the old
    version stopped publishing), or, ``fit_ds=None``, fitted per day like publish_aligned."""
    from contracts import REPRESENTATION_TABLES, TableProperties
    from engines import delta_io
    from extract import publish
    from extract.vectors import normalise, to_arrow
    from pipelines.rollover import fit_procrustes
    from pipelines.rollover_tables import shared_rows, vectors

    def fit_on(new_path: Path, old_path: Path, day: str):
        old_snap, new_snap = delta_io.read_days(old_path, [day]), delta_io.read_days(new_path, [day])
        io, inew, _ = shared_rows(old_snap, new_snap)
        return fit_procrustes(
            vectors(old_snap)[io],
            vectors(new_snap)[inew],
            centre=cfg.centre,
            scale=cfg.scale,
            method=fit.method,
            scale_fit=fit.scale_fit,
        )

    residuals = {}
    for name in TABLES:
        new_path, old_path = tables_root / name, old_tables / name
        props = TableProperties.from_delta(delta_io.table_configuration(old_path))
        amap = fit_on(new_path, old_path, fit_ds) if fit_ds else None
        for d in days:
            if fit_ds is None:
                amap = fit_on(new_path, old_path, d)
            residuals.setdefault(name, {})[d] = round(amap.residual, 4)
            snap = delta_io.read_days(new_path, [d])
            cols = {c: snap[c] for c in ("entity_id", "ds", "layer", "updated_at", "sample_count")}
            cols["model_version"] = pa.array(["v1"] * snap.num_rows, pa.string())
            cols["vector"] = to_arrow(normalise(amap.apply(vectors(snap)), props.normalisation))
            if REPRESENTATION_TABLES[name].has_state:
                cols["decayed_sum"] = to_arrow(amap.apply_linear(vectors(snap, "decayed_sum")))
            publish(tables_root / f"{name}__{suffix}", name, d, pa.table(cols), props)
    return residuals


def publish_variants(
    new_tables: Path, old_tables: Path, days: list[str], base: RolloverConfig, base_fit: StudyFit, variants: dict
) -> dict:
    """Each variant (an update of the product config's ``scale`` and of the study's fit)
    published as ``<table>__<variant>_v1`` through :func:`publish_study`; returns the
    residual per variant, table and day."""
    res = {}
    for vname, upd in variants.items():
        product = {k: v for k, v in upd.items() if k not in StudyFit.model_fields}
        cfg = base.model_copy(update={"max_residual": 1e9, **product})  # measured here, not gated
        fit = base_fit.model_copy(update={k: v for k, v in upd.items() if k in StudyFit.model_fields})
        for name in TABLES:
            for d in days:
                r = publish_study(
                    new_tables,
                    name,
                    d,
                    "v2",
                    "v1",
                    cfg,
                    fit,
                    old_tables_root=old_tables,
                    out=new_tables / f"{name}__{vname}_v1",
                )
                res.setdefault(vname, {}).setdefault(name, {})[d] = round(r.residual, 4)
    return res


# fitting options compared side by side (the default config is "aligned")
VARIANTS = {
    "pooled3": {"fit_days": 3},
    "l2fit": {"fit_space": "l2"},
    "pooled3_l2fit": {"fit_days": 3, "fit_space": "l2"},
    "noscale": {"scale": False},  # plain orthogonal Procrustes
    "normscale": {"scale_fit": "norm"},
    "lstsq": {"method": "least_squares", "scale": False},
}


def publish_pairs(
    pairs: dict[str, Path],
    old_tables: Path,
    published: list[str],
    split: dict,
    rcfg: RolloverConfig,
    hfit: StudyFit,
    variants: bool,
) -> dict:
    """Per new version (``pairs``: name -> run root): the headline map published for every
    day in ``published`` as ``<table>__aligned_v1``, the frozen map fitted on the last
    train day, and with ``variants`` every :data:`VARIANTS` fit; returns the figures of
    the fits (residuals, scales, the days the gate refused) per pair."""
    from pipelines.rollover import RolloverError, publish_aligned, read_map

    later = [d for d in published if d >= split["train"][-1]]  # the days test/valid rows join to (and the fit day)
    fits: dict[str, dict] = {}
    for pname, root in pairs.items():
        new_tables = RunLayout(root).root / "tables"
        refused: dict[str, list[str]] = {}

        def headline(name: str, d: str, cfg: RolloverConfig, new_tables=new_tables):
            """The product's publish_aligned; the study's publish when --scale/--weight ask
            for a fit the product does not make."""
            if hfit == StudyFit():
                return publish_aligned(new_tables, name, d, "v2", "v1", cfg, old_tables_root=old_tables)
            return publish_study(new_tables, name, d, "v2", "v1", cfg, hfit, old_tables_root=old_tables)

        def gated(name: str, d: str, pname=pname, refused=refused, headline=headline):
            """The default publish; a map the gate refuses is recorded and published ungated,
            so the figures say what the gate kept from the consumer."""
            try:
                return headline(name, d, rcfg)
            except RolloverError as e:
                print(f"rollover: {pname} refused by the gate: {e}", file=sys.stderr, flush=True)
                refused.setdefault(name, []).append(d)
                return headline(name, d, rcfg.model_copy(update={"max_residual": 1e9}))

        aligned = {name: {d: gated(name, d) for d in published} for name in TABLES}
        f = {
            "refused_by_gate": refused,
            "residual_by_day": {n: {d: round(r.residual, 4) for d, r in v.items()} for n, v in aligned.items()},
            "applied_residual_by_day": {
                n: {d: round(r.applied_residual, 4) for d, r in v.items()} for n, v in aligned.items()
            },
            "scale_by_day": {
                n: {d: round(read_map(r.table, d).scale, 4) for d, r in v.items()} for n, v in aligned.items()
            },
        }
        f["frozen_residual"] = {
            n: v[min(v)]
            for n, v in publish_variant(
                new_tables,
                old_tables,
                split["train"][-1],
                [d for d in published if d > split["train"][-1]],
                rcfg,
                hfit,
                "frozen_v1",
            ).items()
        }
        if variants:
            f["variant_residual"] = publish_variants(new_tables, old_tables, later, rcfg, hfit, VARIANTS)
        fits[pname] = f
    return fits
