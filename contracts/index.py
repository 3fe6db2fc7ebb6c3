"""What an index build hands to its readers: the index manifest."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from contracts.base import StrictModel

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
INDEX_MANIFEST_FILE = "manifest.json"


class IndexManifest(StrictModel):
    """Beside ``index.faiss`` (plain ``faiss.read_index``) and ``ids.parquet`` (row -> item id)."""

    version: str
    created_at: datetime
    source_table: str
    source_table_version: int
    ds: str
    model_version: str
    vector_column: str = "vector"
    metric: Literal["ip", "cosine"]
    factory: str = Field(..., description="FAISS index-factory string actually built.")
    params: dict[str, float | int | str] = Field(default_factory=dict)
    num_items: int
    dim: int
    recall_at_k: dict[str, float] = Field(default_factory=dict, description="'10' -> recall@10.")
    hit_rate_at_k: dict[str, float] = Field(
        default_factory=dict, description="'10' -> share of users with a later-interacted item in their top-10."
    )
