"""The representation core: the time decay, the normalisation and the vector codec, once.

Every stage that folds, normalises or converts representation vectors calls this module
(aggregation in both formulations, the per-layer tables, the layer probe, the consumers'
joins, the retrieval source, the rollover); nothing else restates the formulas.

**Decay.** The CR state of an entity at instant ``T`` (unix seconds) over its samples k
(time ``t_k``, vector ``v_k``)::

    S(T) = sum_k exp(-(T - t_k) / tau) * v_k                 # float64, [d]

- closed form at a cutoff (the published tables, samples with ``t_k <= T``):
  :func:`decay_weights` + :func:`segment_sum`, or :func:`decayed_snapshot` from raw samples
  (only ``t_k < T`` count there: a day's samples lie strictly before its cutoff); a
  previous state carries to a later cutoff by :func:`decay_factor`;
- point in time (the layer probe): :func:`point_in_time_states`, for every sample the
  state of its entity from the samples *strictly before* it.

**Normalisation** of a state into the published ``vector`` (:func:`normalise`): ``none``,
``l2`` (``s / max(|s|, L2_EPS)``) or ``layernorm`` without affine parameters
(``(s - mean) / sqrt(var + LN_EPS)``). The Spark SQL formulation in
:mod:`extract.aggregate_sql` uses the same constants.

**Codec.** A vector column is an Arrow ``list``/``fixed_size_list`` of floats (Delta
stores plain lists; the contract's Arrow type is ``fixed_size_list<float32, d>``):
:func:`to_numpy` (column -> ``[n, d]``), :func:`to_arrow` (``[n, d]`` -> column),
:func:`fixed_size` (list column -> fixed-size column), :func:`to_torch` / :func:`from_torch`.

Only numpy and pyarrow are imported here (scipy and torch lazily): Spark's Python workers
unpickle these functions by value (``extract.aggregate_arrow``) without the package.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TAU_SECONDS = 7 * 86400.0  # the decay time constant's default: 7 days
L2_EPS = 1e-12  # floor of the l2 norm a state is divided by
LN_EPS = 1e-5  # added to the variance of the layer norm
NORMALISATIONS = ("none", "l2", "layernorm")
MAX_SPAN_TAU = 700.0  # longest history (in tau) the point-in-time form keeps finite in float64


# --- decay -------------------------------------------------------------------------------
def decay_factor(elapsed: float, tau: float) -> float:
    """``exp(-elapsed / tau)``: what a state is multiplied by when carried ``elapsed`` seconds on."""
    return math.exp(-elapsed / tau)


def decay_weights(t: np.ndarray, cutoff: float, tau: float) -> np.ndarray:
    """``exp((t - cutoff) / tau)`` [N]: each sample's weight in the state at ``cutoff`` (t in seconds)."""
    return np.exp((t - cutoff) / tau)


def segment_sum(codes: np.ndarray, x: np.ndarray, k: int, w: np.ndarray | None = None) -> np.ndarray:
    """``out[c] = sum_{i: codes[i] = c} w[i] * x[i]`` in float64: [k, d] from codes [n],
    x [n, d], w [n] (default 1). One sparse product ``M @ x`` with ``M[codes[i], i] = w[i]``,
    built as CSC (one entry per column, so no sort); it replaced a weighted ``np.bincount``
    per dimension and took the 10M-row Spark/DuckDB ratio from 1.37x to about 1.05x
    (docs/tables.md)."""
    from scipy.sparse import csc_matrix

    n = len(codes)
    data = np.ones(n) if w is None else np.asarray(w, np.float64)
    m = csc_matrix((data, np.asarray(codes, np.int64), np.arange(n + 1, dtype=np.int64)), shape=(k, n))
    return np.asarray(m @ x, np.float64).reshape(k, x.shape[1])


def group_max(codes: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """``out[c] = max_{i: codes[i] = c} t[i]`` [k] (an integer dtype's minimum, or -inf, where empty)."""
    t = np.asarray(t)
    empty = np.iinfo(t.dtype).min if np.issubdtype(t.dtype, np.integer) else -np.inf
    out = np.full(k, empty, t.dtype)
    np.maximum.at(out, codes, t)
    return out


def decayed_snapshot(keys: np.ndarray, t: np.ndarray, v: np.ndarray, cutoff: float, tau: float):
    """Per-entity state at ``cutoff`` from samples ``keys [N]``, ``t [N]`` (seconds),
    ``v [N, d]`` (only rows with ``t < cutoff`` count). Returns (entities [E] sorted,
    decayed sum [E, d] float64, count [E], last event time [E] seconds)."""
    m = t < cutoff
    keys, t, v = keys[m], t[m], v[m]
    ents, inv = np.unique(keys, return_inverse=True)
    s = segment_sum(inv, v, len(ents), decay_weights(t, cutoff, tau))
    return ents, s, np.bincount(inv, minlength=len(ents)), group_max(inv, np.asarray(t, np.float64), len(ents))


def point_in_time_states(
    entity: np.ndarray, t: np.ndarray, x: np.ndarray, tau: float, keep: np.ndarray | None = None
) -> np.ndarray:
    """entity [N], t [N] seconds, x [N, d] -> S [N, d]: for each row k the decayed sum over
    the rows of the same entity strictly earlier than t_k (rows at the same instant excluded).
    ``keep`` [N] bool: only those rows are folded (the others still read their entity's state).

    Per entity, S(t_k) = exp(-(t_k - t_0)/tau) * sum_{j: t_j < t_k} exp((t_j - t_0)/tau) x_j,
    an exclusive cumulative sum (t_0: the entity's first time, so the weights stay finite
    while the entity's span is below ``MAX_SPAN_TAU`` tau; ValueError beyond).
    """
    if keep is not None and not keep.all():
        x = np.where(keep[:, None], x, 0.0)
    out = np.zeros(x.shape, dtype=np.float64)
    order = np.lexsort((t, entity))
    e_sorted = entity[order]
    starts = np.flatnonzero(np.r_[True, e_sorted[1:] != e_sorted[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        idx = order[a:b]
        ts = t[idx] - t[idx[0]]
        if ts[-1] / tau > MAX_SPAN_TAU:
            raise ValueError(f"entity {entity[idx[0]]!r}: history spans {ts[-1] / tau:.0f} tau (> {MAX_SPAN_TAU:.0f})")
        w = np.exp(ts / tau)
        cum = np.cumsum(w[:, None] * x[idx], axis=0)
        excl = np.vstack([np.zeros((1, x.shape[1])), cum[:-1]])
        # rows at the same instant see only what came strictly before the first of them
        first = np.r_[0, np.flatnonzero(ts[1:] != ts[:-1]) + 1]
        group_start = first[np.searchsorted(first, np.arange(len(ts)), side="right") - 1]
        out[idx] = excl[group_start] * np.exp(-ts / tau)[:, None]
    return out


# --- normalisation -----------------------------------------------------------------------
def normalise(s: np.ndarray, normalisation: str, *, l2_eps: float = L2_EPS) -> np.ndarray:
    """The published ``vector`` of the float64 states ``s`` [k, d] (each row on its own).
    ``l2_eps``: the norm's floor (the layer probe passes the smallest normal float, i.e.
    ``s / |s|`` with zero rows kept zero)."""
    if normalisation == "none":
        return s
    if normalisation == "l2":
        return s / np.maximum(np.sqrt((s * s).sum(axis=1, keepdims=True)), l2_eps)
    if normalisation == "layernorm":
        mean = s.mean(axis=1, keepdims=True)
        var = ((s - mean) ** 2).mean(axis=1, keepdims=True)
        return (s - mean) / np.sqrt(var + LN_EPS)
    raise ValueError(f"normalisation {normalisation!r}; expected one of {NORMALISATIONS}")


# --- codec -------------------------------------------------------------------------------
def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def bad_rows(col: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """bool [n]: rows whose vector is null or not of length ``dim``."""
    arr = _array(col)
    bad = arr.is_null().to_numpy(zero_copy_only=False)
    if not pa.types.is_fixed_size_list(arr.type) or arr.type.list_size != dim:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        bad = bad | (np.nan_to_num(lengths, nan=-1) != dim)
    return bad


def to_numpy(col: pa.Array | pa.ChunkedArray, dim: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """A ``list`` / ``large_list`` / ``fixed_size_list`` column of n non-null vectors ->
    C-contiguous ``[n, dim]`` array of ``dtype``. ``dim`` None: the fixed size, else the
    values per row (0 for an empty list column). ValueError when the values are not n x dim."""
    arr = _array(col)
    n = len(arr)
    if dim is None and pa.types.is_fixed_size_list(arr.type):
        dim = arr.type.list_size
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False)
    if dim is None:
        dim = flat.size // n if n else 0
    if flat.size != n * dim:
        raise ValueError(f"vector column holds {flat.size} values, expected {n} x {dim}")
    return np.ascontiguousarray(np.asarray(flat, dtype=dtype).reshape(n, dim))


def to_arrow(x: np.ndarray, dtype: Any = np.float32, *, fixed: bool = True) -> pa.Array:
    """``[n, d]`` -> ``fixed_size_list<dtype, d>`` (zero-copy from a contiguous array of
    ``dtype``); ``fixed=False``: a plain ``list<dtype>`` (what Spark maps to ``array<float>``)."""
    x = np.ascontiguousarray(x, dtype)
    values = pa.array(x.reshape(-1))
    if fixed:
        return pa.FixedSizeListArray.from_arrays(values, x.shape[1])
    return pa.ListArray.from_arrays(pa.array(np.arange(x.shape[0] + 1, dtype=np.int32) * x.shape[1]), values)


def fixed_size(col: pa.Array | pa.ChunkedArray, dim: int) -> pa.FixedSizeListArray:
    """A list column of vectors of length ``dim`` -> ``fixed_size_list<float32, dim>``
    (a fixed-size one is returned as it is)."""
    arr = _array(col)
    if pa.types.is_fixed_size_list(arr.type):
        return arr
    return pa.FixedSizeListArray.from_arrays(pc.list_flatten(arr).cast(pa.float32()), dim)


def to_torch(col: pa.Array | pa.ChunkedArray, dim: int | None = None, dtype: Any = np.float32):
    """A vector column -> ``torch.Tensor`` [n, dim] (sharing :func:`to_numpy`'s buffer when
    it is writable: Arrow's zero-copy buffers are not, and are copied)."""
    import torch

    x = to_numpy(col, dim, dtype)
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def from_torch(x) -> np.ndarray:
    """A tensor [n, d] on any device -> float32 numpy [n, d] (for :func:`to_arrow`)."""
    return x.detach().float().cpu().numpy()
