"""retrieval/: FAISS indexes over the published item tables, evaluated and swapped atomically.

- :class:`RetrievalConfig`: root config of ``lfm4ads retrieval``.
- :func:`build_index`: one ``ds`` of an item table -> a new versioned index folder, made live
  (``CURRENT``) only when it reaches the recall target; :func:`run_retrieval` does the same
  with the paths of a run root.
- :func:`load_current` -> :class:`LoadedIndex`; :func:`search` (ids, scores).
- :func:`hit_rate_at_k`, :func:`recall_at_k`: evaluation helpers.
- :func:`serve`, :func:`make_server`, :class:`ServiceConfig`: the HTTP query service
  (``lfm4ads serve retrieval``; FastAPI on uvicorn): by user id (query vector from the user
  table, popularity fallback for unknown users) or by raw vector.
- Errors: :class:`SourceError` (bad table / queries), :class:`RecallBelowTarget`,
  :class:`IndexLoadError` (missing or corrupted index).
"""

from retrieval.build import RecallBelowTarget, build_index
from retrieval.config import RetrievalConfig
from retrieval.evaluate import hit_rate_at_k, recall_at_k
from retrieval.http_config import ServiceConfig
from retrieval.run import run_retrieval
from retrieval.source import SourceError
from retrieval.store import IndexLoadError, LoadedIndex, load_current, search


def serve(*args, **kwargs):
    """See :func:`retrieval.service.serve` (imported lazily: FastAPI/uvicorn are not needed to build)."""
    from retrieval.service import serve as _serve

    return _serve(*args, **kwargs)


def make_server(*args, **kwargs):
    """See :func:`retrieval.service.make_server` (imported lazily, as :func:`serve`)."""
    from retrieval.service import make_server as _make_server

    return _make_server(*args, **kwargs)


__all__ = [
    "IndexLoadError",
    "LoadedIndex",
    "RecallBelowTarget",
    "RetrievalConfig",
    "ServiceConfig",
    "SourceError",
    "build_index",
    "hit_rate_at_k",
    "load_current",
    "make_server",
    "recall_at_k",
    "run_retrieval",
    "search",
    "serve",
]
