"""retrieval/: FAISS indexes over the published item tables, evaluated and swapped atomically.

- :class:`RetrievalConfig`: root config of ``lfm4ads retrieval``.
- :func:`build_index`: one ``ds`` of an item table -> a new versioned index folder, made live
  (``CURRENT``) only when it reaches the recall target; :func:`run_retrieval` does the same
  with the paths of a run root.
- :func:`load_current` -> :class:`LoadedIndex`; :func:`search` (ids, scores).
- :func:`hit_rate_at_k`, :func:`recall_at_k`: evaluation helpers.
- :func:`serve`: the HTTP query service (``lfm4ads serve retrieval``).
- Errors: :class:`SourceError` (bad table / queries), :class:`RecallBelowTarget`,
  :class:`IndexLoadError` (missing or corrupted index).
"""

from retrieval.build import RecallBelowTarget, build_index
from retrieval.config import RetrievalConfig
from retrieval.evaluate import hit_rate_at_k, recall_at_k
from retrieval.run import run_retrieval
from retrieval.source import SourceError
from retrieval.store import IndexLoadError, LoadedIndex, load_current, search


def serve(*args, **kwargs):
    """See :func:`retrieval.service.serve` (imported lazily: http.server is not needed to build)."""
    from retrieval.service import serve as _serve

    return _serve(*args, **kwargs)


__all__ = [
    "IndexLoadError",
    "LoadedIndex",
    "RecallBelowTarget",
    "RetrievalConfig",
    "SourceError",
    "build_index",
    "hit_rate_at_k",
    "load_current",
    "recall_at_k",
    "run_retrieval",
    "search",
    "serve",
]
