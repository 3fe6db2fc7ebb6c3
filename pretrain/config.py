"""Configs of the pretrain stage. :class:`PretrainConfig` is the root of ``lfm4ads pretrain``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from contracts import StrictModel


class ModelConfig(StrictModel):
    """Shape of the three-tower foundation model (defaults: a small model that trains on
    ~100k rows in about a minute on 2 CPU cores)."""

    embed_dim: int = Field(16, ge=1, description="Width of every categorical embedding table.")
    # --- user tower (TokenFormer-style) ---
    d_model: int = Field(32, ge=4, description="Token width inside the user tower.")
    num_heads: int = Field(2, ge=1, description="Attention heads per user-tower layer.")
    user_layers: int = Field(2, ge=1, description="TokenFormer layers in the user tower.")
    use_sequence: bool = Field(True, description="False = ablation: no behaviour-sequence tokens.")
    bfts_full_layers: int = Field(
        1, ge=0, description="Split point: the lowest layers use full attention; layers above slide."
    )
    bfts_window: int = Field(
        8, ge=1, description="Window (max |i-j| between token positions) of the first sliding layer."
    )
    bfts_shrink: float = Field(0.5, gt=0, le=1, description="Each further sliding layer multiplies the window by this.")
    bfts_min_window: int = Field(1, ge=1, description="Windows never shrink below this.")
    bfts_global_fields: bool = Field(
        True, description="Field tokens stay visible to (and see) every token inside sliding layers."
    )
    nlir: Literal["silu", "sigmoid", "gelu", "off"] = Field(
        "silu",
        description="NLIR h <- h + W_o((W_a h) * phi(W_b h)) with phi this activation; 'off' = plain GELU FFN.",
    )
    ffn_mult: int = Field(2, ge=1, description="Hidden width multiplier of NLIR / FFN.")
    dropout: float = Field(0.0, ge=0, lt=1)
    ur_dim: int = Field(32, ge=1, description="Dimension of UR (user tower output).")
    # --- item tower ---
    ir_dim: int = Field(32, ge=1, description="Dimension of IR (item tower output).")
    item_hidden: int = Field(64, ge=1, description="Hidden width of the item-tower MLP.")
    # --- mix tower (one copy per branch: ad, content) ---
    cross_layers: int = Field(2, ge=0, description="DCNv2 cross layers per branch.")
    mlp_dims: list[int] = Field([64, 32], min_length=1, description="MLP widths after the cross layers.")
    sfg: bool = Field(False, description="SFG: cross layers multiply by a generated embedding instead of x0.")
    sfg_gamma: float = Field(1.0, gt=0, description="SFG output scale gamma.")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by num_heads {self.num_heads}")
        return self


class TrainConfig(StrictModel):
    """How the foundation model is trained (Ray Train, CPU workers)."""

    epochs: int = Field(3, ge=1, description="Maximum epochs (early stopping may end sooner).")
    batch_size: int = Field(512, ge=1, description="Global batch size (split across workers).")
    shuffle_window: int = Field(
        65_536, ge=1,
        description="Rows per shuffle window: the training stream (Ray Data) is cut into windows of this many "
        "rows, each permuted by a (seed, epoch, window)-seeded permutation; >= the training rows = one global "
        "shuffle per epoch. Bounds each worker's memory.",
    )
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(1, ge=0, description="Epochs without validation-AUC gain before stopping.")
    num_workers: int = Field(1, ge=1, description="Ray Train CPU workers (gloo).")
    cpus_per_worker: float = Field(1.0, gt=0)
    data_cpus: float = Field(
        0.0, ge=0,
        description="CPUs each Ray Data read/encode task reserves; 0 = never wait for a CPU the workers hold "
        "(a reservation on a machine the workers fill would hang the stream).",
    )
    torch_threads: int | None = Field(None, ge=1, description="torch threads per worker; None = cpus_per_worker.")
    seed: int = 0
    min_count: int = Field(1, ge=1, description="Vocabulary: keep values seen at least this often.")
    max_vocab: int | None = Field(200_000, ge=1, description="Vocabulary cap per column (most frequent).")
    pairwise_alpha: dict[str, float] = Field(
        default_factory=dict,
        description="task -> alpha for alpha*BCE + (1-alpha)*pairwise; tasks not listed use plain BCE.",
    )
    task_weights: dict[str, float] = Field(default_factory=dict, description="task -> loss weight (default 1).")
    early_stop_task: str | None = Field(None, description="Task whose validation AUC drives early stopping; None = first.")
    resume: bool = Field(True, description="Resume an interrupted identical run from its last epoch checkpoint.")
    diagnostics: bool = Field(True, description="Save validation metrics, effective ranks and erank.png.")
    diagnostics_rows: int = Field(2000, ge=10, description="Validation rows used for effective ranks.")

    @model_validator(mode="after")
    def _alphas(self) -> "TrainConfig":
        bad = {k: v for k, v in self.pairwise_alpha.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"pairwise_alpha values must be in [0, 1]: {bad}")
        return self


class PretrainConfig(StrictModel):
    """Root config of ``lfm4ads pretrain``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    init_from: str | None = Field(
        None, description="Checkpoint folder to warm-start from (incremental training on new days)."
    )
    model_version: str | None = Field(None, description="Checkpoint folder name; None = derived (time + hash).")
