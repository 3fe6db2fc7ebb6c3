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
    query_table: str | None = Field(None, description="User table that pairs with this index (e.g. user_query).")
    query_model_version: str | None = Field(None, description="model_version of that table's rows (= model_version).")
    query_ds: str | None = Field(None, description="Its partition published with this version.")
    query_table_version: int | None = Field(None, description="Delta version of the query table holding query_ds.")
    quality: "RetrievalQuality | None" = Field(None, description="Retrieval quality and the promotion decision.")


class RetrievalQuality(StrictModel):
    """How well an index version *retrieves*: its query vectors against the held-out day's
    positives (recall@K, NDCG@K over users seen before), beside popularity and the live
    version, and what the promotion gate decided (docs/retrieval.md)."""

    held_out_day: str = Field(..., description="Day whose positives are the targets.")
    query_ds: str = Field(
        ..., description="Partition of the query table the evaluated vectors come from (< held_out_day)."
    )
    query_table_version: int | None = Field(None, description="Delta version of the query table read.")
    users: int = Field(..., ge=0, description="Users with a held-out positive and a query vector.")
    recall_at_k: dict[str, float] = Field(default_factory=dict)
    ndcg_at_k: dict[str, float] = Field(default_factory=dict)
    popularity_recall_at_k: dict[str, float] = Field(default_factory=dict)
    popularity_ndcg_at_k: dict[str, float] = Field(default_factory=dict)
    popularity_diff_se: float | None = Field(
        None, description="Standard error of the mean per-user recall@gate_k difference (version - popularity)."
    )
    live_version: str | None = None
    live_recall_at_k: dict[str, float] = Field(default_factory=dict, description="The live version on the same day.")
    gate_k: int = 50
    promoted: bool = False
    refused: str | None = Field(None, description="Why the gate refused promotion (None = promoted or not gated).")
    tower: dict[str, float | int | str] = Field(default_factory=dict, description="Query-tower facts (inputs, epochs).")


IndexManifest.model_rebuild()
