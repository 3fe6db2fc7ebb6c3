"""FAISS specifics: pick a factory string, build, set search parameters, move to a GPU.

Search parameters live in the manifest's ``params`` and are applied after
``faiss.read_index`` (``nprobe`` of an IVF, ``k_factor`` of a re-ranking ``RFlat`` wrapper,
``efSearch`` of an HNSW), so the saved file stays a plain FAISS index.
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

log = logging.getLogger(__name__)

SEARCH_PARAMS = ("nprobe", "k_factor", "efSearch")
# Steps of about 1.5x: fine enough to stop near the recall target, few enough to sweep fast.
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation, (n, d) float32 -> (n, d) float32 (a copy)."""
    x = np.array(x, dtype=np.float32, copy=True, order="C")
    faiss.normalize_L2(x)
    return x


def auto_factory(n: int, dim: int, flat_max_items: int) -> str:
    """Exact ``Flat`` up to ``flat_max_items``; above, an IVF with about sqrt(n) lists,
    8-bit scalar-quantised codes (4x smaller than float32, and enough to rank the
    candidates) and exact re-ranking of ``k_factor * k`` candidates (``RFlat``)."""
    if n <= flat_max_items:
        return "Flat"
    nlist = 2 ** round(math.log2(math.sqrt(n)))
    nlist = int(min(max(nlist, 16), 65536, max(16, n // 39)))
    return f"IVF{nlist},SQ8,RFlat"


def build(factory: str, vectors: np.ndarray, train_sample: int, seed: int, use_gpu: bool) -> faiss.Index:
    """Train (on at most ``train_sample`` rows) and fill an index; vectors (n, d) float32."""
    n, d = vectors.shape
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"invalid FAISS factory string {factory!r} for dim {d}: {_faiss_msg(e)}") from None
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors if n <= train_sample else vectors[np.sort(rng.choice(n, train_sample, replace=False))]
        ivf = _ivf(index)
        if ivf is not None and sample.shape[0] < ivf.nlist:
            raise ValueError(f"factory {factory!r}: {ivf.nlist} IVF lists need at least as many vectors, got {n}")
        try:
            _train(index, sample, use_gpu)
        except RuntimeError as e:
            raise ValueError(
                f"factory {factory!r}: training on {sample.shape[0]} vectors failed: {_faiss_msg(e)}"
            ) from None
    index.add(vectors)
    return index


def _faiss_msg(e: Exception) -> str:
    """The useful last line of a FAISS C++ error."""
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _train(index: faiss.Index, sample: np.ndarray, use_gpu: bool) -> None:
    ivf = _ivf(index)
    if use_gpu and ivf is not None and gpu_count() > 0:
        # The coarse k-means dominates training; run it on the GPU, keep the index on CPU.
        try:
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))
        except Exception as e:  # noqa: BLE001 - any GPU trouble falls back to CPU training
            log.warning("GPU clustering unavailable (%s); training on CPU", e)
    index.train(sample)


def gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def maybe_gpu(index: faiss.Index, use_gpu: bool) -> faiss.Index:
    """A GPU copy when FAISS sees a GPU and supports the index type; else ``index`` itself."""
    if not use_gpu or gpu_count() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except Exception as e:  # noqa: BLE001 - unsupported types (RFlat, HNSW) stay on CPU
        log.info("index stays on CPU (%s)", e)
        return index


def tunable(index: faiss.Index) -> dict[str, list[int]]:
    """The search-parameter grid of this index type (empty for exact Flat)."""
    grid: dict[str, list[int]] = {}
    ivf = _ivf(index)
    if ivf is not None:
        grid["nprobe"] = [p for p in NPROBES if p <= ivf.nlist]
    if isinstance(faiss.downcast_index(index), faiss.IndexRefine):
        grid["k_factor"] = [1, 2, 4, 8]
    if _hnsw(index) is not None:
        grid["efSearch"] = [16, 32, 64, 128, 256, 512]
    return grid


def _hnsw(index: faiss.Index):
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexRefine):
        idx = faiss.downcast_index(idx.base_index)
    return getattr(idx, "hnsw", None)


def set_params(index: faiss.Index, params: dict) -> None:
    """Apply the search parameters found in ``params`` (others are ignored)."""
    if "nprobe" in params:
        ivf = _ivf(index)
        if ivf is None:
            raise ValueError("params set nprobe but the index has no IVF")
        ivf.nprobe = int(params["nprobe"])
    if "k_factor" in params:
        ref = faiss.downcast_index(index)
        if not isinstance(ref, faiss.IndexRefine):
            raise ValueError("params set k_factor but the index has no re-ranking stage")
        ref.k_factor = float(params["k_factor"])
    if "efSearch" in params:
        h = _hnsw(index)
        if h is None:
            raise ValueError("params set efSearch but the index is not HNSW")
        h.efSearch = int(params["efSearch"])
