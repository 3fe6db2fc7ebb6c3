"""``ServiceConfig``: limits and timings of the retrieval HTTP service (``lfm4ads serve retrieval``)."""

from __future__ import annotations

from pydantic import Field

from contracts import StrictModel


class ServiceConfig(StrictModel):
    """Every bound the service enforces; each violation is one JSON error, never a hang or a crash."""

    max_k: int = Field(1000, ge=1, description="Largest k a request may ask for (also bounded by the index size).")
    max_body_bytes: int = Field(1 << 20, ge=64, description="Request bodies above this get 413 (before reading).")
    max_header_bytes: int = Field(16384, ge=1024, description="Requests whose headers add up to more get 431.")
    max_json_depth: int = Field(32, ge=2, description="Bodies nested deeper (arrays/objects) get 400 before parsing.")
    head_timeout_s: float = Field(
        10.0, gt=0, description="A connection must deliver a request's complete headers within this (else 408)."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="A request body must arrive completely within this (else 408)."
    )
    request_timeout_s: float = Field(10.0, gt=0, description="Answering one request may take this long (else 503).")
    idle_timeout_s: float = Field(5.0, gt=0, description="An idle keep-alive connection is closed after this.")
    poll_s: float = Field(0.5, gt=0, description="How often the watcher reads the index root's CURRENT.")
    tables_poll_s: float = Field(
        10.0, gt=0, description="How often the watcher checks the user table and the log for a new Delta version."
    )
    positive_task: str | None = Field(
        None, description="Task whose label 1 counts as a positive for the popularity fallback; None = the log's first."
    )
    use_gpu: bool = Field(True, description="Move the index to a GPU when FAISS sees one (falls back to CPU).")
    omp_threads: int | None = Field(
        1,
        ge=1,
        description="FAISS OpenMP threads per search; requests already run in parallel threads. None = FAISS default.",
    )
    graceful_shutdown_s: float = Field(5.0, gt=0, description="Time in-flight requests get to finish on shutdown.")
