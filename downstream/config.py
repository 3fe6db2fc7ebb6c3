"""``DownstreamConfig``: the root config of ``lfm4ads downstream`` (and the experiments)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from contracts import REPRESENTATION_TABLES, StrictModel

RepName = Literal["user_ur", "item_ir", "user_cr", "item_cr"]


class DownstreamConfig(StrictModel):
    """One downstream scenario model, trained vanilla and with transferred representations.

    Days are not set here: the caller passes them (a run, its ``split``'s days) or a
    :class:`contracts.SplitConfig` (the one split config) to resolve on the log.
    """

    scenario: int | None = Field(
        None, description="Scenario id to train on; None = the scenario with the fewest training rows."
    )
    sample_type: Literal["ad", "content", "all"] = Field(
        "all", description="Which samples of the scenario to train and test on."
    )
    representations: list[RepName] = Field(
        default_factory=lambda: ["user_ur", "item_ir", "user_cr", "item_cr"],
        description="Published tables joined in for the transfer model: UR, IR, CR(u), CR(i).",
    )
    adapter: Literal["linear", "gate", "gate_linear"] = Field(
        "gate",
        description="linear: concat W r to the embeddings; gate: E' = E * sigmoid(W r + b); gate_linear: both.",
    )
    gate_mode: Literal["all", "cross", "own"] = Field(
        "all",
        description="Which vectors drive which gates: all = every field by every vector; cross = user-side "
        "fields by IR/CR(i) and item-side fields by UR/CR(u); own = each side by its own.",
    )
    gate_bias: float = Field(2.0, description="Initial gate bias b (sigmoid(2) = 0.88: starts near vanilla).")
    gate_zero_init: bool = Field(False, description="Start the gate's W at 0 (every gate = sigmoid(b) at first).")
    crossed_token: bool = Field(
        False,
        description="Also feed Proj(z_u * z_i) for (user_ur, item_ir) and (user_cr, item_cr) when both are joined.",
    )
    rep_norm: bool = Field(
        True, description="LayerNorm (no affine) each vector first: tables differ in scale by layer."
    )
    emb_dim: int = Field(16, ge=1, description="Embedding width per categorical field.")
    emb_init_std: float = Field(
        0.05, gt=0, description="Std of the embeddings' normal init (a gate can only rescale what E carries)."
    )
    hidden: list[int] = Field(default_factory=lambda: [128, 64], description="Shared MLP widths.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    use_sequence: bool = Field(True, description="Mean-pooled hist_seq embedding as one more field.")
    epochs: int = Field(20, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(512, ge=1)
    patience: int = Field(
        3,
        ge=1,
        description="Stop at the patience-th epoch in a row without a better validation AUC "
        "(the rule pretraining shares: pretrain.loop.should_stop).",
    )
    pairwise_alpha: dict[str, float] = Field(
        default_factory=dict,
        description="task -> alpha: that task's loss is alpha*BCE + (1-alpha)*pairwise ranking loss (the "
        "combined-pair loss of papers.md section 6); tasks not listed use plain masked BCE.",
    )
    grad_clip: float | None = Field(None, gt=0, description="Clip the global gradient L2 norm; None = off.")
    use_gpu: bool = Field(False, description="Train on CUDA; fails clearly where no GPU is visible.")
    amp: Literal["off", "bf16"] = Field("off", description="bf16 autocast (with use_gpu only).")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    min_count: int = Field(1, ge=1, description="Vocabulary threshold (pretrain.FeatureEncoder).")
    max_vocab: int | None = Field(None, ge=1)
    threads: int = Field(1, ge=1, description="torch CPU threads while training; 1 is fastest for these small models.")
    expect_model_version: str | None = Field(
        None, description="Refuse tables written by another foundation model version."
    )
    expect_dims: dict[RepName, int] | None = Field(
        None, description="Refuse tables whose vector dim differs (table name -> dim)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_split_keys(cls, data: Any) -> Any:
        # the day counts used to live here too, with other defaults than the run's split
        moved = sorted({"valid_days", "test_days"} & set(data)) if isinstance(data, dict) else []
        if moved:
            raise ValueError(
                f"{'/'.join(moved)}: the time split is declared once, in `split` (contracts.SplitConfig: "
                "split.valid_days, split.test_days, split.valid_start, split.test_start)"
            )
        return data

    @field_validator("representations")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate representation(s) in {v}")
        for name in v:
            assert name in REPRESENTATION_TABLES
        return v

    @field_validator("pairwise_alpha")
    @classmethod
    def _alphas(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: a for k, a in v.items() if not 0.0 <= a <= 1.0}
        if bad:
            raise ValueError(f"pairwise_alpha values must be in [0, 1]: {bad}")
        return v

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError(f"hidden widths must be >= 1, got {v}")
        return v
