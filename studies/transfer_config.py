"""What the transfer table compares: :class:`TransferExperimentConfig` and its rows.

The rows (:func:`method_specs`): vanilla; feature level (linear, gate, gate_linear with
UR+IR+CR; the gate with UR / UR+IR / UR+IR+CR; the crossed tokens); named gate variants;
model level; one row per CR layer and adapter; module level per k (LFM layers copied).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from contracts import StrictModel
from downstream.config import DownstreamConfig, RepName
from studies.cells import MethodSpec

ALL_REPS: list[str] = ["user_ur", "item_ir", "user_cr", "item_cr"]
REP_SETS: dict[str, list[str]] = {
    "UR": ["user_ur"],
    "UR+IR": ["user_ur", "item_ir"],
    "UR+IR+CR": ALL_REPS,
}


class TransferExperimentConfig(StrictModel):
    """Which methods the transfer table compares (training settings in ``downstream``)."""

    downstream: DownstreamConfig = Field(
        default_factory=lambda: DownstreamConfig(seeds=[0, 1, 2, 3, 4], epochs=10, patience=2),
        description="Training settings; its scenario/representations/adapter are ignored here. Default "
        "budget 10 epochs, patience 2 (the daily step keeps DownstreamConfig's 20 / 3): a table is a few "
        "hundred fits on 2 cores (docs/downstream.md, issue 15).",
    )
    scenarios: list[int] | None = Field(None, description="Scenario ids; None = every scenario of the log.")
    adapters: list[str] = Field(
        default_factory=lambda: ["linear", "gate", "gate_linear"], description="Feature-level, with UR+IR+CR."
    )
    cross_adapters: list[str] = Field(
        default_factory=lambda: ["gate"], description="Feature-level with UR+IR+CR plus the crossed tokens."
    )
    rep_set_adapter: str = Field("gate", description="Adapter of the UR / UR+IR / UR+IR+CR comparison.")
    rep_sets: list[Literal["UR", "UR+IR", "UR+IR+CR"]] = Field(
        default_factory=lambda: list(REP_SETS), description="Which rows of that comparison to run."
    )
    module_k: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Module level: LFM layers copied.")
    model_level: bool = True
    model_level_user: RepName = Field("user_ur", description="User side of <A(r_u), IR(i)>.")
    cr_layers: list[str] | None = Field(
        None,
        description="Per-CR-layer rows (linear and gate, UR+IR+CR with that layer's CR tables, published "
        "into ROOT/layers/<layer> by transfer.publish_layer_tables); None = only the daily tables' layer.",
    )
    cr_layer_adapters: list[str] = Field(
        default_factory=lambda: ["linear", "gate"], description="Adapters of the per-CR-layer rows."
    )
    gate_variants: dict[str, dict] = Field(
        default_factory=dict,
        description="Extra rows: row name -> DownstreamConfig overrides, with UR+IR+CR unless the overrides "
        "set `representations` ([] = a vanilla variant), e.g. {'gate[cross]': {gate_mode: cross}}.",
    )
    default_method: str = Field(
        "gate_linear:UR+IR+CR",
        description="The pre-registered row reported on every scenario without any selection: the daily run's "
        "adapter and representations (configs/*.yaml downstream.adapter); its numbers are null when the "
        "table has no such row.",
    )
    workers: int = Field(
        2,
        ge=1,
        description="Processes training cells in parallel (spawned, `downstream.threads` torch threads "
        "each; 2 = one per core of the 2-core reference machine); 1 = in this process. Does not change any number.",
    )

    @model_validator(mode="after")
    def _variants_valid(self) -> "TransferExperimentConfig":
        for name, over in self.gate_variants.items():
            try:
                DownstreamConfig.model_validate({**self.downstream.model_dump(), **over})
            except ValidationError as e:
                raise ValueError(f"gate_variants.{name}: {e}") from None
        return self


def method_specs(cfg: TransferExperimentConfig, layers: list[str], module: bool) -> list[MethodSpec]:
    """The rows of the table, vanilla first (see TransferExperimentConfig)."""
    dcfg = cfg.downstream
    specs = [MethodSpec("vanilla")]
    for a in cfg.adapters:
        specs.append(MethodSpec(f"{a}:UR+IR+CR", reps=tuple(ALL_REPS), adapter=a))
    for a in cfg.cross_adapters:
        specs.append(MethodSpec(f"{a}+cross:UR+IR+CR", reps=tuple(ALL_REPS), adapter=a, crossed=True))
    for name in cfg.rep_sets:
        row = f"{cfg.rep_set_adapter}:{name}"
        if row not in {s.name for s in specs}:
            specs.append(MethodSpec(row, reps=tuple(REP_SETS[name]), adapter=cfg.rep_set_adapter))
    for name, over in cfg.gate_variants.items():
        vcfg = DownstreamConfig.model_validate({**dcfg.model_dump(), **over})
        reps = tuple(vcfg.representations) if "representations" in over else tuple(ALL_REPS)
        specs.append(
            MethodSpec(
                name,
                reps=reps,
                adapter=vcfg.adapter if reps else "none",
                crossed=vcfg.crossed_token,
                overrides=json.dumps(over, sort_keys=True),
            )
        )
    if cfg.model_level:
        specs.append(MethodSpec("model:retrieval", kind="retrieval", user=cfg.model_level_user))
    for layer in layers:
        for a in cfg.cr_layer_adapters:
            specs.append(MethodSpec(f"{a}:UR+IR+CR@{layer}", data=f"layer:{layer}", reps=tuple(ALL_REPS), adapter=a))
    if module:
        for k in cfg.module_k:
            specs.append(MethodSpec(f"module:k={k}", kind="module", data="module", k=k))
    return specs
