"""``RetrievalConfig``: the root config of ``lfm4ads retrieval`` (index build + evaluation)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from contracts import REPRESENTATION_TABLES, StrictModel
from contracts.tables import PUBLISHED_TABLES


class QueryTowerConfig(StrictModel):
    """The query tower (retrieval/query_tower.py): user tables -> IR space, trained on the
    split's train days, its epoch chosen on the valid days (docs/retrieval.md)."""

    inputs: list[str] = Field(
        default_factory=lambda: ["user_ur", "user_cr"],
        description="User tables concatenated as the tower's input (chosen by benchmarks.retrieval_quality).",
    )
    hidden: int = Field(64, ge=0, description="Width of the one ReLU layer; 0 = linear map.")
    epochs: int = Field(20, ge=1, description="Maximum epochs; the best on validation recall@gate.k is kept.")
    patience: int = Field(2, ge=1, description="Stop after this many epochs without a better validation recall.")
    batch_size: int = Field(512, ge=2, description="Positives per batch (= in-batch negatives + 1).")
    lr: float = Field(3e-3, gt=0)
    temperature: float = Field(
        0.2, gt=0, description="Softmax temperature of <q, IR> logits (benchmarks.retrieval_quality chooses it)."
    )
    random_negatives: int = Field(0, ge=0, description="Uniform catalogue negatives added to each batch.")
    logq: bool | float = Field(
        True,
        description="Subtract log sampling probability from every logit (Yi et al. 2019); a number in [0, 1] "
        "weights the correction (true = 1, false = 0).",
    )
    task: str | None = Field(None, description="Label column whose positives train and evaluate; None = first task.")
    popularity_column: bool = Field(
        True,
        description="Append log share of positives to IR (index and training): an item-bias coordinate "
        "the tower's query can weight; user_query then has IR dim + 1.",
    )
    popularity_half_life_days: float | None = Field(
        None,
        gt=0,
        description="None: the popularity column is the all-time log share of positives. A number: a "
        "time-decayed share with this half-life (retrieval.query_features.recent_popularity), as of the end of the "
        "indexed day for the index, as of each training pair's time for training.",
    )
    popularity_prior_weight: float | None = Field(
        None,
        description="None: the query's weight on the popularity column is learned per user. A number beta: "
        "fixed, every score is <q, IR_i> + beta log p_i (popularity as a prior the tower adds to).",
    )
    history: int = Field(
        0,
        ge=0,
        description="> 0: append the mean IR of the user's last N positives (the behaviour sequence in the IR "
        "space, point in time) to the tower's input; 0 = off.",
    )
    item_adapter: Literal["none", "linear", "mlp"] = Field(
        "none", description="Residual map of IR on the item side (IR + W IR), published in the index."
    )
    item_bias: bool = Field(
        False, description="A learned per-item bias, published as one more index coordinate (query side: 1)."
    )
    exclude_seen: bool = Field(
        True, description="Items the user interacted with before are neither retrieved nor counted as targets."
    )
    seed: int = 0

    @field_validator("logq")
    @classmethod
    def _logq(cls, v: bool | float) -> bool | float:
        if not isinstance(v, bool) and not 0.0 <= v <= 1.0:
            raise ValueError(f"logq must be true, false or a weight in [0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _prior_needs_column(self) -> "QueryTowerConfig":
        if self.popularity_prior_weight is not None and not self.popularity_column:
            raise ValueError("popularity_prior_weight needs popularity_column: true")
        return self

    @field_validator("inputs")
    @classmethod
    def _user_inputs(cls, v: list[str]) -> list[str]:
        users = sorted(n for n, t in REPRESENTATION_TABLES.items() if t.entity == "user")
        bad = [n for n in v if n not in users]
        if not v or bad:
            raise ValueError(f"inputs {bad or v}: expected a non-empty list of {users}")
        return list(dict.fromkeys(v))


class PromotionGateConfig(StrictModel):
    """When a new index version may replace the live one (besides the ANN-recall gate)."""

    k: int = Field(50, ge=1, description="recall@k on the held-out day decides.")
    max_drop: float = Field(
        0.1, ge=0.0, le=1.0, description="Refuse when recall@k < (1 - max_drop) x the live version's on the same day."
    )
    beat_popularity: bool = Field(
        True, description="Refuse when recall@k is below popularity's by more than popularity_z standard errors."
    )
    popularity_z: float = Field(
        2.0,
        ge=0.0,
        description="Standard errors (of the paired per-user recall@k difference) by which the version "
        "may trail popularity and still pass: below that the loss is noise of the held-out day. 0 = must beat it.",
    )
    popularity_tolerance: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Also let a relative shortfall up to this pass (0 = none).",
    )
    min_users: int = Field(
        500,
        ge=1,
        description="Fewer evaluated users than this: the quality is recorded but does not decide. "
        "Below ~500 users one day's recall@50 has a standard error of 0.02 or more, and the tower is trained on "
        "too few pairs to be judged (the 300-user logs of the pipeline tests land here).",
    )


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
        0.01,
        ge=0.0,
        lt=1.0,
        description="Tuning aims at recall_target + this on the tuning half, so the "
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
        1,
        ge=0,
        description="run_retrieval: hit-rate@K over positives of the next N log days after ds "
        "(skipped when the log has none); 0 = off.",
    )
    hit_rate_task: str | None = Field(None, description="Label column whose positives count; None = first task.")
    query_tower: QueryTowerConfig | None = Field(
        default_factory=QueryTowerConfig,
        description="Train the query tower, publish user_query and index item_ir for it (the daily run); "
        "None = index source_table evaluated with query_table vectors only (no quality gate).",
    )
    promotion: PromotionGateConfig = Field(default_factory=PromotionGateConfig)
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
        t = PUBLISHED_TABLES.get(v)
        if t is None or t.entity != "user":
            users = sorted(n for n, t in PUBLISHED_TABLES.items() if t.entity == "user")
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
