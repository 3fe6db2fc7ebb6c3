"""Configs of the extract-stage commands: ``lfm4ads extract``, ``lfm4ads aggregate`` and
``lfm4ads extract probe``.

Both are root models (one per command, loaded with :func:`contracts.load_config`);
:class:`ExtractStageConfig` bundles them for ``configs/extract.yaml``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from contracts import StrictModel
from contracts.tables import Normalisation
from extract.vectors import TAU_SECONDS


class ExtractConfig(StrictModel):
    """How the frozen model runs over one day of the log (Ray Data actor pool)."""

    batch_size: int = Field(4096, ge=1, description="Rows per forward pass inside an actor.")
    actor_pool_size: int = Field(
        1, ge=1, description="Actors (model copies). On 2 CPUs keep 1, or 2 with num_cpus=0.5 (Ray Data hang)."
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per actor; also its torch thread count (>= 1).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor; > 0 runs the model on CUDA.")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per actor; None = max(1, round(num_cpus))."
    )
    rows_per_unit: int = Field(
        65536, ge=1, description="Largest work unit (rows of one input row group range) sent to one actor."
    )
    layers: list[str] | None = Field(
        None, description="CR layers to extract (manifest names); None = manifest.default_cr_layer."
    )
    force: bool = Field(False, description="Recompute a day even when its _SUCCESS marker exists.")
    ray_address: str | None = Field(None, description="Join this Ray cluster; None = start a local one.")

    @model_validator(mode="after")
    def _layers_nonempty(self) -> "ExtractConfig":
        if self.layers is not None and not self.layers:
            raise ValueError("layers: give at least one layer name, or null for the manifest default")
        return self


class AggregateConfig(StrictModel):
    """How sample-level CR(u,i) fold into published CR(u)/CR(i) (and UR/IR latest) tables."""

    tau_seconds: float = Field(
        TAU_SECONDS,
        gt=0,
        description="Decay time constant: a sample's weight at the day's cutoff is exp(-(cutoff - t)/tau) "
        "(default extract.vectors.TAU_SECONDS, 7 days).",
    )
    normalisation: Normalisation = Field(
        "l2", description="Applied to the decayed CR state to give the published `vector` (UR/IR stay raw)."
    )
    spark_master: str | None = Field(None, description="Spark master URL; None = local (LFM4ADS_SPARK_MASTER).")
    write_path: str = Field(
        "auto",
        pattern="^(auto|parquet_commit|spark_delta|arrow)$",
        description=(
            "auto: Spark's format('delta') when the session has the connector, else Spark writes Parquet "
            "and delta-rs commits it. 'arrow' collects to the driver (small data, debugging only)."
        ),
    )
    force: bool = Field(
        False, description="Republish a ds even if its app transaction (ds + model version) is already committed."
    )
    vacuum_retention_hours: int | None = Field(
        168,
        ge=0,
        description=(
            "After each publish, delete the files a commit removed (a republished ds's old files) more than this "
            "many hours ago; None = only `maintain_tables`. Shorter means plain Parquet readers stop double-counting "
            "sooner, but time travel (read_asof(version=...)) to versions older than this stops working and a "
            "reader still scanning an older snapshot fails; 0 = at once. See docs/tables.md."
        ),
    )
    layer: str | None = Field(None, description="CR layer to aggregate; None = the only one in the samples.")
    cr_samples: Literal["ad", "all"] = Field(
        "ad",
        description="Samples folded into CR(u)/CR(i): 'ad' = ad samples only (LFM4Ads uses the ad branch's "
        "representations of ad samples for ads; content samples still feed UR/IR); 'all' = every sample.",
    )
    formulation: str = Field(
        "arrow",
        pattern="^(arrow|columns)$",
        description=(
            "CR state on Spark: 'arrow' (numpy partial sums per Parquet fragment in mapInArrow, shuffled by entity) "
            "or 'columns' (Spark SQL per-dimension sums). Same rows to 1e-5; see docs/extract.md."
        ),
    )


class ProbeConfig(StrictModel):
    """``lfm4ads extract probe``: score every candidate layer with a linear probe."""

    extract: ExtractConfig = Field(
        default_factory=ExtractConfig, description="How the candidates are extracted (its `layers` is ignored)."
    )
    tau_seconds: float = Field(
        TAU_SECONDS,
        gt=0,
        description="Decay time constant of the CR(u)/CR(i) fed to the probe (default TAU_SECONDS, 7 days).",
    )
    task: str | None = Field(None, description="Label column to probe; None = the first task labelled in the scenario.")
    l2: float = Field(1e-3, ge=0, description="L2 penalty of the logistic regression (on standardised features).")
    max_iter: int = Field(200, ge=1, description="L-BFGS iterations of the logistic regression.")
    record: bool = Field(
        True, description="Write the chosen ad layer, the ranking and the plot into the checkpoint (manifest)."
    )
    sample_type: Literal["ad", "all"] = Field(
        "ad", description="Samples the CR states fold and the probe scores (as AggregateConfig.cr_samples)."
    )


class ExtractStageConfig(StrictModel):
    """``configs/extract.yaml``: both commands' settings in one file."""

    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
