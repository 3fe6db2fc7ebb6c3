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
        description="NLIR h <- h + (W_a x) * phi(W_b x), x = LN(h), phi this activation on one operand; "
        "'off' = plain GELU FFN.",
    )
    nlir_form: Literal["one_sided", "swiglu"] = Field(
        "one_sided",
        description="one_sided: the D->D multiplicative transform above (papers.md's reading); swiglu: the "
        "earlier gated FFN W_o((W_a x) * phi(W_b x)) with ffn_mult*D hidden units (an ablation).",
    )
    target_tokens: bool = Field(
        False,
        description="Append the target item's token to the user-tower stream; it reads every token, none "
        "reads it (UR stays target-free); its output is added to UR's slot of the mix-tower input only.",
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
    sfg: bool = Field(
        False,
        description="SFG: cross layers multiply by G_l = act(Linear(x0)) * gamma, generated from all "
        "mix-tower fields (UR, IR), instead of the raw x0.",
    )
    sfg_gamma: float = Field(1.0, gt=0, description="SFG output scale gamma.")
    sfg_act: Literal["relu", "sigmoid", "tanh", "identity"] = Field("relu", description="SFG generator activation.")

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
        65_536,
        ge=1,
        description="Rows per shuffle window: each worker's shard of an epoch is cut into windows of this many "
        "rows, each permuted by a (seed, epoch, window, rank)-seeded permutation; >= the shard's rows = one "
        "shuffle of the whole shard per epoch. Bounds each worker's memory.",
    )
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(
        1,
        ge=0,
        description="Stop at the patience-th epoch in a row without validation-AUC gain (0 behaves as 1); "
        "the rule pretrain and downstream share (pretrain.loop.should_stop).",
    )
    num_workers: int = Field(
        1, ge=1, description="Ray Train workers (gloo on CPU; one GPU each over NCCL with use_gpu)."
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    data_cpus: float = Field(
        0.0,
        ge=0,
        description="CPUs each vocabulary-count task (one per training file, pretrain.vocab) reserves; 0 = never "
        "wait for a CPU another job holds (at most one task per cluster CPU runs at once either way).",
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
    early_stop_task: str | None = Field(
        None, description="Task whose validation AUC drives early stopping; None = first."
    )
    resume: bool = Field(True, description="Resume an interrupted identical run from its last epoch checkpoint.")
    diagnostics: bool = Field(True, description="Save validation metrics, effective ranks and erank.png.")
    diagnostics_rows: int = Field(2000, ge=10, description="Validation rows used for effective ranks.")
    # --- device, numerics, reproducibility (pretrain.device) ---
    use_gpu: bool = Field(
        False, description="Train on CUDA (one GPU per Ray Train worker, NCCL). Fails clearly where no GPU is visible."
    )
    amp: Literal["off", "bf16"] = Field(
        "off", description="bf16 autocast for the forward pass (CUDA with bf16 support only; fails otherwise)."
    )
    grad_clip: float | None = Field(None, gt=0, description="Clip the global gradient L2 norm to this; None = off.")
    deterministic: bool = Field(
        True,
        description="Deterministic torch ops and fixed threads: the same config and log give the same weights "
        "on CPU (GPU: see docs/pretrain.md for what stays nondeterministic).",
    )

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
