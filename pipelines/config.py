"""``RunConfig``: the root config of ``lfm4ads run`` (and of every ``lfm4ads stage``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from contracts import StrictModel
from datasources import GeneratedSource, SourceConfig
from downstream import DownstreamConfig
from engines.storage import ObjectStoreConfig
from extract.config import AggregateConfig, ExtractConfig
from pipelines.gates import GateConfig
from pipelines.rollover import RolloverConfig
from pretrain import PretrainConfig
from retrieval.config import RetrievalConfig


class SplitConfig(StrictModel):
    """The time split, shared by the foundation model and the downstream model.

    Explicit boundaries (``YYYY-MM-DD``) win; otherwise the log's last ``test_days``
    days are test, the ``valid_days`` before them validation, the rest training.
    The foundation model trains on the train days and early-stops on the validation days.
    """

    valid_start: str | None = Field(None, description="First validation day (train days are earlier).")
    test_start: str | None = Field(None, description="First test day.")
    valid_days: int = Field(1, ge=1)
    test_days: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "SplitConfig":
        if (self.valid_start is None) != (self.test_start is None):
            raise ValueError("give both valid_start and test_start, or neither")
        if self.valid_start and self.test_start and not self.valid_start < self.test_start:
            raise ValueError(f"valid_start {self.valid_start} must be before test_start {self.test_start}")
        return self

    def resolve(self, days: list[str]) -> dict[str, list[str]]:
        if self.valid_start:
            split = {
                "train": [d for d in days if d < self.valid_start],
                "valid": [d for d in days if self.valid_start <= d < self.test_start],
                "test": [d for d in days if d >= self.test_start],
            }
        else:
            n_hold = self.valid_days + self.test_days
            if len(days) <= n_hold:
                raise ValueError(f"split: the log has {len(days)} day(s), need more than {n_hold}")
            split = {
                "train": days[:-n_hold],
                "valid": days[-n_hold:-self.test_days],
                "test": days[-self.test_days:],
            }
        empty = [k for k, v in split.items() if not v]
        if empty:
            raise ValueError(f"split: no days for {empty} among {days[0]}..{days[-1]}")
        return split


class RunConfig(StrictModel):
    """Everything one run needs; every artefact lands under ``root`` (see RunLayout), except
    the tables and index versions when ``storage`` names an object store."""

    # a refused credential in storage.options must not be echoed back by a validation error
    model_config = {**StrictModel.model_config, "hide_input_in_errors": True}

    root: Path = Field(
        Path("runs/demo"),
        description="Run root: a local or shared path or a file:// URI (ledger, locks, samples, checkpoints); "
        "tables and indexes can go to an object store with storage.tables_uri / storage.index_uri.",
    )
    storage: ObjectStoreConfig = Field(
        default_factory=ObjectStoreConfig,
        description="Publish the tables / index versions to an object store (docs/pipelines.md 'Storage paths').",
    )
    source: SourceConfig = Field(default_factory=GeneratedSource)
    ds: str | None = Field(None, description="The day the run is for; None = the log's last day.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    publish_every: int = Field(
        1, ge=1, description="Publish representation snapshots every N days (and always on ds and the split edges)."
    )
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig)
    gates: GateConfig = Field(default_factory=GateConfig)
    rollover: RolloverConfig = Field(
        default_factory=RolloverConfig, description="Publish aligned vectors for a previous model version."
    )
    downstream: DownstreamConfig = Field(default_factory=DownstreamConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    ray_address: str | None = Field(None, description="Existing Ray cluster (e.g. 'auto'); None = local.")
    spark_master: str | None = Field(None, description="Existing Spark master URL; None = local[2].")

    @field_validator("root", mode="before")
    @classmethod
    def _local_root(cls, v):
        """``file:///abs/path`` -> the local path; any other scheme (s3://, gs://, abfss://)
        is refused by name: the run root also holds the SQLite ledger, the flock lock files
        and FAISS builds, which need a POSIX filesystem (a shared mount on a cluster)."""
        from urllib.parse import unquote, urlparse

        text = str(v)
        if "://" not in text:
            return v
        url = urlparse(text)
        if url.scheme == "file":
            if url.netloc not in ("", "localhost"):
                raise ValueError(f"{text}: a file:// URI must name a local path (file:///abs/path)")
            return Path(unquote(url.path))
        raise ValueError(
            f"{text}: the run root must be a local or mounted path or a file:// URI; {url.scheme}:// is not "
            "supported (the ledger, locks and index builds need a POSIX filesystem); to publish tables and "
            "indexes to an object store set storage.tables_uri / storage.index_uri (docs/pipelines.md)"
        )
