"""Model-version rollover: publish a new foundation-model version's vectors *aligned into
the previous version's space*, so downstream models trained on the old vectors keep
working while they are retrained.

The map is an orthogonal Procrustes map fitted on the entities both versions hold:

    W = argmin_{W^T W = I} || (new - mu_new) W - (old - mu_old) ||_F,   W: [d_new, d_old]

With ``A = new - mu_new``, ``B = old - mu_old`` and ``A^T B = U S V^T`` (thin SVD) the
solution is ``W = U V^T``. Optionally (``scale``) one isotropic factor
``s = trace(S) / ||A||_F^2`` is fitted too: two independently trained models rarely agree
on the vectors' overall scale, and a scalar keeps every angle and distance ratio.
When ``d_new != d_old`` the thin SVD gives a *semi-orthogonal* W: columns orthonormal when ``d_new >= d_old`` (a rotation followed by a projection onto d_old
dimensions), rows orthonormal when ``d_new < d_old`` (an isometric embedding into the
old space). ``apply(x) = s (x - mu_new) W + mu_old``; with ``centre=False`` both means
are 0, with ``scale=False`` s = 1. Fit quality, what ``max_residual`` gates:
the *scale-free* relative residual ``min_c ||c A W - B||_F / ||B||_F = sqrt(1 - cos^2)``,
``cos = <A W, B> / (||A W|| ||B||)`` (clipped at 0), on the fitting entities: 0 = exact,
about 1 for unrelated vectors, whatever scale is applied, so one bound fits every
``scale`` setting. The residual of the map as applied, ``||s A W - B||_F / ||B||_F``, is
recorded beside it (``applied_residual``; equal when ``s`` is the least-squares scale).

Layout (``tables_root`` is a run's ``tables/`` folder; see :func:`table_for_version`):

- the new version's table: ``<name>__<new_version>`` or ``<name>`` (whichever holds it);
- the old version's table: the same lookup in ``old_tables_root`` (default: tables_root);
- the aligned output: ``<name>__aligned_<old_version>`` in ``tables_root``, a normal
  representation table (schema of ``name``) whose rows and properties say
  ``model_version = <old_version>``: an old consumer reading it with
  ``read_asof(..., expect_model_version=<old>)`` works unchanged; only its path changes.
- the fitted map of each day beside it: ``<aligned table>/_alignment/ds=<ds>.json``
  (Delta readers see only files its log references; delta-rs vacuum left it alone when checked).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from contracts import REPRESENTATION_TABLES, StrictModel, TableProperties
from engines import delta_io
from extract.vectors import normalise, to_arrow, to_numpy

ALIGN_DIR = "_alignment"


class RolloverError(ValueError):
    """An alignment was refused (too few shared entities, residual too high, missing
    snapshot); nothing was published."""


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
        description="Also apply one isotropic scale factor (similarity Procrustes); off: "
        "plain orthogonal Procrustes, the new vectors keep their own spread (docs/rollover.md).",
    )
    method: Literal["procrustes", "least_squares"] = Field(
        "procrustes", description="procrustes: (scaled) orthogonal map; least_squares: any linear map (see docs)."
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


# --- the map ---------------------------------------------------------------------------
@dataclass
class AlignMap:
    """``apply(x) = scale * (x - mean_new) @ w + mean_old``; ``w`` [d_new, d_old]."""

    w: np.ndarray
    mean_new: np.ndarray  # [d_new]
    mean_old: np.ndarray  # [d_old]
    residual: float  # scale-free: min_c ||c (new - mean_new) w - (old - mean_old)||_F / ||old - mean_old||_F
    n_fit: int
    scale: float = 1.0
    applied_residual: float | None = None  # ||apply(new) - old||_F / ||old - mean_old||_F (None: not recorded)

    @property
    def d_new(self) -> int:
        return int(self.w.shape[0])

    @property
    def d_old(self) -> int:
        return int(self.w.shape[1])

    def apply(self, new: np.ndarray) -> np.ndarray:
        """new [M, d_new] -> [M, d_old] (float64)."""
        new = np.asarray(new, dtype=np.float64)
        if new.ndim != 2 or new.shape[1] != self.d_new:
            raise ValueError(f"apply: expected [M, {self.d_new}] vectors, got shape {new.shape}")
        return self.scale * ((new - self.mean_new) @ self.w) + self.mean_old

    def apply_linear(self, new: np.ndarray) -> np.ndarray:
        """The linear part only, new [M, d_new] -> [M, d_old]: for un-normalised sums
        (CR ``decayed_sum``), which an affine shift does not commute with."""
        return self.scale * (np.asarray(new, dtype=np.float64) @ self.w)

    def to_json(self) -> str:
        return json.dumps(
            {
                "w": self.w.tolist(),
                "mean_new": self.mean_new.tolist(),
                "mean_old": self.mean_old.tolist(),
                "residual": self.residual,
                "n_fit": self.n_fit,
                "scale": self.scale,
                "applied_residual": self.applied_residual,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "AlignMap":
        raw = json.loads(text)
        return cls(
            w=np.asarray(raw["w"], dtype=np.float64),
            mean_new=np.asarray(raw["mean_new"], dtype=np.float64),
            mean_old=np.asarray(raw["mean_old"], dtype=np.float64),
            residual=float(raw["residual"]),
            n_fit=int(raw["n_fit"]),
            scale=float(raw.get("scale", 1.0)),
            applied_residual=None if raw.get("applied_residual") is None else float(raw["applied_residual"]),
        )


def fit_procrustes(
    old: np.ndarray,
    new: np.ndarray,
    centre: bool = True,
    scale: bool = False,
    method: str = "procrustes",
    weights: np.ndarray | None = None,
    fit_space: str = "raw",
    scale_fit: str = "least_squares",
) -> AlignMap:
    """Orthogonal (semi-orthogonal when dims differ) map from ``new`` [N, d_new] onto
    ``old`` [N, d_old]; row i of both is the same entity.

    ``method="least_squares"``: an unconstrained linear W = argmin ||A W - B||_F instead
    (lower residual, but neither angles nor norms are kept, and it needs N >> d_new);
    ``scale`` is then ignored.

    ``weights`` [N] (>= 0, not all 0): minimise sum_i w_i ||s (a_i W) - b_i||^2 instead,
    with weighted means (the SVD of A^T diag(w) B). The reported residual stays the
    unweighted one, so ``max_residual`` means the same with or without weights.

    ``residual`` is scale-free (the residual with the best scalar on ``A W``, whatever
    ``scale`` applies); ``applied_residual`` is the map's own, with ``s``.

    ``fit_space="l2"`` (Procrustes only): W is fitted on the l2-normalised rows (centred on
    their own means), so high-norm entities do not dominate the rotation; the means, the
    scale ``s = trace(W^T A^T B) / ||A||_F^2`` and the residual then use the raw rows.

    ``scale_fit="norm"`` (with ``scale``): ``s = ||B||_F / ||A||_F`` (weighted), so the
    aligned vectors keep the old vectors' spread around their mean; the least-squares
    ``s`` is that times the cosine ``trace(W^T A^T B) / (||A|| ||B||)``, i.e. shrunk
    towards the mean by exactly the part the rotation does not explain."""
    old = np.asarray(old, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    if old.ndim != 2 or new.ndim != 2 or old.shape[0] != new.shape[0]:
        raise ValueError(
            f"fit_procrustes: need [N, d_old] and [N, d_new] with the same N, got {old.shape}, {new.shape}"
        )
    if old.shape[0] < 2:
        raise ValueError(f"fit_procrustes: need at least 2 shared entities, got {old.shape[0]}")
    if not (np.isfinite(old).all() and np.isfinite(new).all()):
        raise ValueError("fit_procrustes: NaN/inf in the input vectors")
    if weights is None:
        wt = np.full(old.shape[0], 1.0 / old.shape[0])
    else:
        wt = np.asarray(weights, dtype=np.float64).reshape(-1)
        if wt.shape[0] != old.shape[0] or not np.isfinite(wt).all() or (wt < 0).any() or wt.sum() <= 0:
            raise ValueError(f"fit_procrustes: weights must be {old.shape[0]} finite values >= 0, not all 0")
        wt = wt / wt.sum()
    mu_old = wt @ old if centre else np.zeros(old.shape[1])
    mu_new = wt @ new if centre else np.zeros(new.shape[1])
    a, b = new - mu_new, old - mu_old
    if method not in ("procrustes", "least_squares"):
        raise ValueError(f"fit_procrustes: method {method!r}, expected 'procrustes' or 'least_squares'")
    if fit_space not in ("raw", "l2"):
        raise ValueError(f"fit_procrustes: fit_space {fit_space!r}, expected 'raw' or 'l2'")
    if fit_space == "l2":
        on, nn_ = normalise(old, "l2"), normalise(new, "l2")
        fa = nn_ - (wt @ nn_ if centre else 0.0)
        fb = on - (wt @ on if centre else 0.0)
    else:
        fa, fb = a, b
    u, sv, vt = np.linalg.svd((fa * wt[:, None]).T @ fb, full_matrices=False)  # u [d_new, k], vt [k, d_old]
    w = u @ vt
    s = 1.0
    if method == "least_squares":
        r = np.sqrt(wt)[:, None]
        w = np.linalg.lstsq(a * r, b * r, rcond=None)[0]
    elif scale:
        if scale_fit not in ("least_squares", "norm"):
            raise ValueError(f"fit_procrustes: scale_fit {scale_fit!r}, expected 'least_squares' or 'norm'")
        na = float(np.sum(wt[:, None] * a * a))
        if scale_fit == "norm":
            s = float(np.sqrt(np.sum(wt[:, None] * b * b) / na)) if na > 0 else 1.0
        else:  # = trace(S) / ||A||^2 when W was fitted on (a, b) themselves
            s = float(np.sum(wt[:, None] * (a @ w) * b) / na) if na > 0 else 1.0
    aw = a @ w
    denom = float(np.linalg.norm(b))
    applied = float(np.linalg.norm(s * aw - b) / denom) if denom > 0 else 0.0
    return AlignMap(
        w=w,
        mean_new=mu_new,
        mean_old=mu_old,
        residual=scale_free_residual(aw, b),
        n_fit=int(old.shape[0]),
        scale=s,
        applied_residual=applied,
    )


def scale_free_residual(mapped: np.ndarray, target: np.ndarray) -> float:
    """``min_{c >= 0} ||c mapped - target||_F / ||target||_F = sqrt(1 - cos^2)`` with
    ``cos = max(0, <mapped, target>) / (||mapped|| ||target||)``; both [N, d]. 0 when the
    target is all zero; 1 when mapped is zero or points away."""
    nt, nm2 = float(np.linalg.norm(target)), float(np.sum(mapped * mapped))
    if nt == 0:
        return 0.0
    if nm2 == 0:
        return 1.0
    # the best scalar, and its residual computed directly: 1 - cos^2 cancels to noise near an exact fit
    c = max(0.0, float(np.sum(mapped * target)) / nm2)
    return float(np.linalg.norm(c * mapped - target) / nt)


# --- tables ----------------------------------------------------------------------------
def aligned_table_name(name: str, old_model_version: str) -> str:
    return f"{name}__aligned_{old_model_version}"


def table_for_version(tables_root: str | Path, name: str, model_version: str) -> Path:
    """The table of ``name`` written by ``model_version`` under ``tables_root``:
    ``<name>__<version>`` if it exists, else ``<name>`` when its properties name that version."""
    root = Path(tables_root)
    tried = []
    for path in (root / f"{name}__{model_version}", root / name):
        if delta_io.exists(path):
            props = TableProperties.from_delta(delta_io.table_configuration(path))
            if props.source_checkpoint == model_version:
                return path
            tried.append(f"{path} (model_version {props.source_checkpoint!r})")
        else:
            tried.append(f"{path} (absent)")
    raise RolloverError(f"no {name} table of model version {model_version!r}: tried {'; '.join(tried)}")


def _vectors(table: pa.Table, col: str = "vector") -> np.ndarray:
    """A list<float> column -> [N, d] float64 (:func:`extract.vectors.to_numpy`)."""
    return to_numpy(table[col], dtype=np.float64)


# the names benchmarks/rollover.py imports
_renormalise = normalise  # re-apply the old table's row normalisation (the aggregate stage's)
_fixed_list = to_arrow


def _shared(old: pa.Table, new: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """Row indices (into old, into new) of the entity ids both hold, sorted by id."""
    old_ids = np.asarray(old["entity_id"].to_pylist(), dtype=object).astype(str)
    new_ids = np.asarray(new["entity_id"].to_pylist(), dtype=object).astype(str)
    _, io, inew = np.intersect1d(old_ids, new_ids, assume_unique=True, return_indices=True)
    return io, inew, len(io)


def _write_map(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)  # readers see the old map or the new one, never a partial file


@dataclass
class AlignResult:
    """One aligned publish: the output table, its version, and the map's figures."""

    table: Path
    version: int | None  # None: already published, skipped
    residual: float
    n_shared: int
    fit_ds_old: str
    fit_ds_new: str
    rows: int
    applied_residual: float | None = None  # the map's own residual, with its scale (AlignMap)

    def to_dict(self) -> dict:
        return {
            "table": str(self.table),
            "version": self.version,
            "residual": self.residual,
            "applied_residual": self.applied_residual,
            "n_shared": self.n_shared,
            "fit_ds_old": self.fit_ds_old,
            "fit_ds_new": self.fit_ds_new,
            "rows": self.rows,
        }


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
    of the new ``ds`` snapshot, entities the old version never saw included. With
    ``cfg.fit_days = k`` the same-day pairs of the k latest days both versions published
    (up to ``d_old``) are pooled into one fit (more entity-days, the same kind of pairs).

    Raises :class:`RolloverError` (nothing published) when a snapshot is missing, fewer
    than ``cfg.min_shared_entities`` entities are shared, or the residual exceeds
    ``cfg.max_residual``. Rerunning a published (table, ds) is a no-op unless ``cfg.force``.
    """
    from extract import already_published, publish, read_asof

    cfg = cfg or RolloverConfig()
    if name not in REPRESENTATION_TABLES:
        raise RolloverError(f"unknown table {name!r}; valid: {sorted(REPRESENTATION_TABLES)}")
    if new_model_version == old_model_version:
        raise RolloverError(f"new and old model version are both {new_model_version!r}")
    root = Path(tables_root)
    out = Path(out) if out is not None else root / aligned_table_name(name, old_model_version)
    map_path = out / ALIGN_DIR / f"ds={ds}.json"
    if not cfg.force and map_path.is_file() and already_published(out, name, old_model_version, ds):
        m = json.loads(map_path.read_text())
        return AlignResult(
            out,
            None,
            m["map"]["residual"],
            m["map"]["n_fit"],
            m["fit_ds_old"],
            m["fit_ds_new"],
            m["rows"],
            m["map"].get("applied_residual"),
        )

    new_path = table_for_version(root, name, new_model_version)
    old_path = table_for_version(old_tables_root or root, name, old_model_version)
    new_props = TableProperties.from_delta(delta_io.table_configuration(new_path))
    old_props = TableProperties.from_delta(delta_io.table_configuration(old_path))
    if ds not in delta_io.list_days(new_path):
        raise RolloverError(f"{new_path}: no ds={ds} snapshot of the new version to align; nothing published")
    new_snap = delta_io.read_days(new_path, [ds])
    old_snap = read_asof(old_path, ds, inclusive=True, expect_model_version=old_model_version)
    if old_snap.num_rows == 0:
        raise RolloverError(f"{old_path}: no snapshot at or before {ds} of the old version; nothing published")
    d_old = old_snap["ds"][0].as_py()
    new_days = set(delta_io.list_days(new_path))
    if d_old in new_days:  # same-day pairs: the fit_days latest days both versions published, up to d_old
        both = [d for d in delta_io.list_days(old_path) if d <= d_old and d in new_days]
        pairs = [(d, d) for d in both[-cfg.fit_days :]]
    else:
        pairs = [(d_old, ds)]
    old_rows, new_rows, wts = [], [], []
    for k, (do, dn) in enumerate(reversed(pairs)):  # latest pair first: it is the one min_shared_entities checks
        o = old_snap if do == d_old else delta_io.read_days(old_path, [do])
        n = new_snap if dn == ds else delta_io.read_days(new_path, [dn])
        io, inew, n_shared = _shared(o, n)
        if k == 0 and n_shared < cfg.min_shared_entities:
            raise RolloverError(
                f"{name} ds={ds}: only {n_shared} entities are in both the old ({old_model_version}, ds={do}) and "
                f"new ({new_model_version}, ds={dn}) snapshots, need min_shared_entities="
                f"{cfg.min_shared_entities}; nothing published"
            )
        old_rows.append(_vectors(o)[io])
        new_rows.append(_vectors(n)[inew])
        # weight: the rows each entity stands for, in the day the pair comes from
        wts.append(np.asarray(n["sample_count"].to_numpy(), dtype=np.float64)[inew])
    n_shared = sum(len(x) for x in old_rows)
    weights = np.concatenate(wts) if cfg.weight == "sample_count" else None
    amap = fit_procrustes(
        np.concatenate(old_rows),
        np.concatenate(new_rows),
        centre=cfg.centre,
        scale=cfg.scale,
        method=cfg.method,
        weights=weights,
        fit_space=cfg.fit_space,
        scale_fit=cfg.scale_fit,
    )
    if amap.residual > cfg.max_residual:
        raise RolloverError(
            f"{name} ds={ds}: alignment residual {amap.residual:.4f} of {new_model_version} onto {old_model_version} "
            f"is above max_residual={cfg.max_residual} (scale-free: sqrt(1 - cos^2) of the mapped new vs the old "
            f"vectors; {n_shared} fitting rows); nothing published"
        )
    fit_ds_new = pairs[-1][1]

    aligned = normalise(amap.apply(_vectors(new_snap)), old_props.normalisation)
    cols = {
        "entity_id": new_snap["entity_id"],
        "ds": new_snap["ds"],
        "model_version": pa.array([old_model_version] * new_snap.num_rows, pa.string()),
        "layer": new_snap["layer"],
        "vector": to_arrow(aligned),
        "updated_at": new_snap["updated_at"],
        "sample_count": new_snap["sample_count"],
    }
    if REPRESENTATION_TABLES[name].has_state:
        # a derived table is never continued incrementally; the sum gets the linear part
        cols["decayed_sum"] = to_arrow(amap.apply_linear(_vectors(new_snap, "decayed_sum")))
    chash = hashlib.sha256(f"{new_props.config_hash}|{new_model_version}|{cfg.model_dump_json()}".encode()).hexdigest()[
        :16
    ]
    props = TableProperties(
        dim=old_props.dim,
        normalisation=old_props.normalisation,
        source_checkpoint=old_model_version,
        config_hash=chash,
        tau_seconds=old_props.tau_seconds,
    )
    version = publish(out, name, ds, pa.table(cols), props)
    _write_map(
        map_path,
        {
            "table": name,
            "ds": ds,
            "new_model_version": new_model_version,
            "old_model_version": old_model_version,
            "new_table": str(new_path),
            "old_table": str(old_path),
            "fit_ds_old": d_old,
            "fit_ds_new": fit_ds_new,
            "fit_pairs": pairs,
            "rows": new_snap.num_rows,
            "delta_version": version,
            "map": json.loads(amap.to_json()),
        },
    )
    return AlignResult(
        out, version, amap.residual, n_shared, d_old, fit_ds_new, new_snap.num_rows, amap.applied_residual
    )


def read_map(aligned_table: str | Path, ds: str) -> AlignMap:
    """The map used for partition ``ds`` of an aligned table."""
    return AlignMap.from_json(
        json.dumps(json.loads((Path(aligned_table) / ALIGN_DIR / f"ds={ds}.json").read_text())["map"])
    )


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
