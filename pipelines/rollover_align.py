"""The rollover's alignment maths (numpy only): the orthogonal Procrustes map of a new
model version's vectors onto the previous version's, and its residuals.

    W = argmin_{W^T W = I} || (new - mu_new) W - (old - mu_old) ||_F,   W: [d_new, d_old]

With ``A = new - mu_new``, ``B = old - mu_old`` and ``A^T B = U S V^T`` (thin SVD) the
solution is ``W = U V^T``. Optionally (``scale``) one isotropic factor
``s = trace(S) / ||A||_F^2`` is fitted too: two independently trained models rarely agree
on the vectors' overall scale, and a scalar keeps every angle and distance ratio.
When ``d_new != d_old`` the thin SVD gives a *semi-orthogonal* W: columns orthonormal when
``d_new >= d_old`` (a rotation followed by a projection onto d_old dimensions), rows
orthonormal when ``d_new < d_old`` (an isometric embedding into the old space).
``apply(x) = s (x - mu_new) W + mu_old``; with ``centre=False`` both means are 0, with
``scale=False`` s = 1. Fit quality, what ``RolloverConfig.max_residual`` gates: the
*scale-free* relative residual ``min_c ||c A W - B||_F / ||B||_F = sqrt(1 - cos^2)``,
``cos = <A W, B> / (||A W|| ||B||)`` (clipped at 0), on the fitting entities: 0 = exact,
about 1 for unrelated vectors, whatever scale is applied, so one bound fits every
``scale`` setting. The residual of the map as applied, ``||s A W - B||_F / ||B||_F``, is
recorded beside it (``applied_residual``; equal when ``s`` is the least-squares scale).

:func:`fit_procrustes` also takes the fitting options the rollover study compared and the
product does not use (``method``, ``weights``, ``fit_space``, ``scale_fit``; see
docs/rollover.md): ``benchmarks/rollover.py`` passes them explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from extract.vectors import normalise


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
    *,
    method: str = "procrustes",
    weights: np.ndarray | None = None,
    fit_space: str = "raw",
    scale_fit: str = "least_squares",
) -> AlignMap:
    """Orthogonal (semi-orthogonal when dims differ) map from ``new`` [N, d_new] onto
    ``old`` [N, d_old]; row i of both is the same entity. The product fits with the defaults
    of the keyword-only study options (what ``benchmarks/rollover.py`` compares):

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
