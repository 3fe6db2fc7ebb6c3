"""``RetrievalConfig``: the root config of ``lfm4ads retrieval`` (index build + evaluation)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from contracts import REPRESENTATION_TABLES, StrictModel


class RetrievalConfig(StrictModel):
    """How an index is built over one day of an item table and when it may go live.

    The recall target applies to *every* K in ``k_values`` (the minimum over K must reach it),
    measured on held-out queries against exact (brute-force) search.
    """

    source_table: str = Field("item_ir", description="Item table to index: item_ir (IR) or item_cr (CR(i)).")
    query_table: str | None = Field(
        "user_ur",
        description="User table whose vectors serve as evaluation queries when the caller passes none "
        "(user_ur or user_cr); None = sampled item vectors plus noise.",
    )
    metric: Literal["ip", "cosine"] = Field("ip", description="Inner product, or cosine (vectors L2-normalised).")
    factory: str | None = Field(None, description="FAISS index-factory string; None = chosen from the item count.")
    recall_target: float = Field(0.95, gt=0.0, le=1.0, description="Minimum recall@K (every K) to go live.")
    k_values: list[int] = Field(default_factory=lambda: [10, 100], description="K values evaluated.")
    tune_margin: float = Field(
        0.01, ge=0.0, lt=1.0, description="Tuning aims at recall_target + this on the tuning half, so the "
        "held-out half (which decides) is not lost to noise.",
    )
    keep_versions: int = Field(3, ge=1, description="Index versions kept on disk (the live one always is).")
    eval_queries: int = Field(1000, ge=20, description="Queries sampled for tuning + evaluation (split in halves).")
    query_noise: float = Field(
        0.1, ge=0.0, description="Noise std (relative to the vectors' std) added to sampled item queries."
    )
    flat_max_items: int = Field(50_000, ge=1, description="Catalogues up to this size get an exact Flat index.")
    train_sample: int = Field(
        100_000, ge=1000, description="At most this many vectors train the IVF quantizer and codec."
    )
    use_gpu: bool = Field(True, description="Use a GPU when FAISS sees one and the index type allows it.")
    hit_rate_days: int = Field(
        1, ge=0, description="run_retrieval: hit-rate@K over positives of the next N log days after ds "
        "(skipped when the log has none); 0 = off.",
    )
    hit_rate_task: str | None = Field(None, description="Label column whose positives count; None = first task.")
    seed: int = 0

    @field_validator("source_table")
    @classmethod
    def _item_table(cls, v: str) -> str:
        t = REPRESENTATION_TABLES.get(v)
        if t is None or t.entity != "item":
            items = sorted(n for n, t in REPRESENTATION_TABLES.items() if t.entity == "item")
            raise ValueError(f"{v!r} is not an item table; expected one of {items}")
        return v

    @field_validator("query_table")
    @classmethod
    def _user_table(cls, v: str | None) -> str | None:
        if v is None:
            return v
        t = REPRESENTATION_TABLES.get(v)
        if t is None or t.entity != "user":
            users = sorted(n for n, t in REPRESENTATION_TABLES.items() if t.entity == "user")
            raise ValueError(f"{v!r} is not a user table; expected one of {users}")
        return v

    @field_validator("k_values")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("k_values must be a non-empty list of positive integers")
        return sorted(set(v))

    @model_validator(mode="after")
    def _factory_not_blank(self) -> "RetrievalConfig":
        if self.factory is not None and not self.factory.strip():
            raise ValueError("factory must be a FAISS index-factory string or null")
        return self
