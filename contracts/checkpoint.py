"""What pretraining hands to extraction: the checkpoint manifest."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from contracts.base import StrictModel
from contracts.dataset import DatasetSpec

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.pt"
VOCAB_FILE = "vocab.json"


class LayerInfo(StrictModel):
    """One addressable representation layer of the foundation model."""

    name: str = Field(..., description="Stable name, e.g. 'user_tower', 'ad.cross_1', 'ad.mlp_2'.")
    dim: int = Field(..., ge=1)
    kind: str = Field(..., description="'UR', 'IR' or 'CR'.")


PROBE_PLOT_FILE = "probe.png"
ADS_BRANCH_PREFIX = "ad."  # CR layers of the ad branch: the only ones the ads tables may publish


class ProbedLayer(StrictModel):
    """One ad-branch CR layer's linear-probe score on validation days."""

    layer: str
    valid_auc: float
    auc_se: float = Field(..., description="Hanley-McNeil standard error of valid_auc.")


class LayerProbe(StrictModel):
    """What ``lfm4ads extract probe`` chose, recorded in the manifest; the daily
    extraction and publishing use ``chosen`` (= ``default_cr_layer``) unless a config pins a layer."""

    chosen: str = Field(..., description="Best ad-branch CR layer on the validation days.")
    ranking: list[ProbedLayer] = Field(..., description="Ad-branch CR layers, best validation AUC first.")
    scenario: int | None = Field(None, description="Scenario probed; None = every scenario pooled.")
    task: str
    train_days: list[str]
    valid_days: list[str] = Field(..., description="Days the ranking is scored on (never test days).")
    plot: str = Field(PROBE_PLOT_FILE, description="The AUC-per-layer plot, beside the manifest.")
    probed_at: datetime


class CheckpointManifest(StrictModel):
    """Everything extraction needs to run a checkpoint on a log, and to refuse a wrong one.

    The weights (``model.pt``, loaded with ``weights_only=True``) and vocabularies
    (``vocab.json``: column -> list of known values, index 0 = out of vocabulary) sit
    beside this file.
    """

    model_version: str
    created_at: datetime
    dataset: DatasetSpec = Field(..., description="Canonical spec of the log it was trained on.")
    model_config_data: dict[str, Any] = Field(..., description="The model config it was built from.")
    config_hash: str
    data_version: str = Field(..., description="Log table version and the day range trained on.")
    train_days: list[str] = Field(
        default_factory=list,
        description="The days trained on; with config_hash, what a run matches to reuse this checkpoint "
        "(empty in manifests written before the field existed).",
    )
    valid_days: list[str] = Field(default_factory=list, description="The days early stopping was scored on.")
    vocab_sizes: dict[str, int]
    layers: list[LayerInfo]
    default_cr_layer: str = Field(..., description="CR layer the daily job extracts.")
    epochs_trained: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    layer_probe: LayerProbe | None = Field(
        None, description="The layer probe's choice and ranking (None = not probed: the LFM4Ads default layer)."
    )
    lineage: list[str] = Field(
        default_factory=list,
        description="Warm-start ancestry, oldest first: '<model_version> <data_version>' of every checkpoint "
        "this one was (transitively) warm-started from; empty = trained from scratch.",
    )

    @model_validator(mode="after")
    def _ads_default_is_an_ad_layer(self) -> "CheckpointManifest":
        # a content-branch layer can never become what the ads tables publish
        if self.default_cr_layer.startswith("content."):
            raise ValueError(f"default_cr_layer {self.default_cr_layer!r}: must be an ad-branch layer (ad.*)")
        if self.layer_probe is not None and self.layer_probe.chosen != self.default_cr_layer:
            raise ValueError(
                f"layer_probe.chosen {self.layer_probe.chosen!r} != default_cr_layer {self.default_cr_layer!r}"
            )
        return self

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        valid = ", ".join(l.name for l in self.layers)
        raise KeyError(f"layer {name!r} does not exist in model {self.model_version}; valid: {valid}")

    def check_compatible(self, spec: DatasetSpec, source: str = "log") -> None:
        """Raise ValueError if ``spec`` (canonical) is not the schema this model was trained on."""
        mine, theirs = self.dataset, spec
        problems = []
        for key in ("tasks", "user_features", "item_features"):
            if getattr(mine, key) != getattr(theirs, key):
                problems.append(f"{key}: model has {getattr(mine, key)}, {source} has {getattr(theirs, key)}")
        if mine.sequence.item_field != theirs.sequence.item_field:
            problems.append(
                f"sequence.item_field: model has {mine.sequence.item_field!r}, "
                f"{source} has {theirs.sequence.item_field!r}"
            )
        unknown = sorted(set(theirs.scenarios) - set(mine.scenarios))
        if unknown:
            problems.append(f"scenarios {unknown} unknown to the model (knows {sorted(mine.scenarios)})")
        if problems:
            raise ValueError(
                f"checkpoint {self.model_version} does not match the {source} schema: " + "; ".join(problems)
            )
