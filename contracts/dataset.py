"""The interaction-log contract: :class:`DatasetSpec`.

A user brings a log (Parquet/CSV) and a YAML DatasetSpec naming its columns. Ingest
validates the spec against the data and writes the *canonical* log: a Delta table
partitioned by ``ds`` (UTC day) whose columns are

==================  ===========================  ======================================
column              type                         meaning
==================  ===========================  ======================================
user_id, item_id    string                       entity ids
event_time          timestamp[us, UTC]           when the impression happened
ds                  string ``YYYY-MM-DD``        day of ``event_time`` in ``spec.timezone``
                                                 (UTC by default; the partition)
scenario            int32                        one of ``spec.scenarios``
sample_type         string ``ad`` | ``content``  which mix-tower branch scores it
<task>              float32, null = absent       one per task, values 0/1
<user feature>      string                       categorical user fields
<item feature>      string                       categorical item fields
hist_seq            list<string>                 the user's last ``max_len`` behaviour
                                                 items strictly before ``event_time``
==================  ===========================  ======================================
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from contracts.base import StrictModel

CANONICAL_USER_ID = "user_id"
CANONICAL_ITEM_ID = "item_id"
CANONICAL_TIME = "event_time"
CANONICAL_SCENARIO = "scenario"
CANONICAL_SAMPLE_TYPE = "sample_type"
CANONICAL_SEQUENCE = "hist_seq"
DS = "ds"
SAMPLE_TYPES = ("ad", "content")


class SequenceSpec(StrictModel):
    """Which item field forms the behaviour sequence, and how it is built."""

    item_field: str | None = Field(
        None,
        description="Item column whose values form the sequence (the item id column or an item feature); "
        "omitted = the spec's own item id column.",
    )
    max_len: int = Field(20, ge=1, le=1024, description="Most recent events kept per sample.")
    column: str | None = Field(
        None, description="Raw column already holding the sequence (list); None = build it at ingest."
    )
    positive_task: str | None = Field(
        None,
        description="Only events positive on this task enter the sequence; None = every event.",
    )


class CsvOptions(StrictModel):
    """How CSV files are read. Columns are typed from the spec, never inferred: ids and
    features stay strings exactly as written ('007' != '7', zip '02139' kept)."""

    header: bool = Field(True, description="False: the file has no header row; name its columns in `columns`.")
    columns: list[str] | None = Field(
        None, description="Column names in file order, for a header-less file (implies header: false)."
    )
    delimiter: str | None = Field(None, description="None = ',' (tab for .tsv files).")
    null_values: list[str] = Field(default_factory=lambda: [""], description="Cells read as null.")


class InputChecks(StrictModel):
    """Sanity checks run on the raw log before anything is written (``lfm4ads validate``)."""

    duplicates: Literal["drop", "fail", "keep"] = Field(
        "drop", description="Exact duplicate rows (every spec column equal): drop with a count, fail, or keep."
    )
    future_events: Literal["fail", "warn", "drop"] = Field(
        "fail", description="Events later than now + future_tolerance_hours."
    )
    future_tolerance_hours: float = Field(24.0, ge=0)
    min_time: date = Field(date(1990, 1, 1), description="Earliest plausible event day (also for unit detection).")
    max_time: date = Field(date(2100, 1, 1), description="Latest plausible event day (also for unit detection).")
    max_id_length: int = Field(256, ge=1, description="Longest id / feature value accepted (characters).")


class DatasetSpec(StrictModel):
    """Describes an interaction log as users bring it. Column names refer to the raw log."""

    name: str
    user_id: str = "user_id"
    item_id: str = "item_id"
    event_time: str = Field(
        "event_time",
        description="Timestamp column: a timestamp type, ISO-8601 strings, or integer epoch "
        "seconds/milliseconds/microseconds/nanoseconds (unit detected, or set event_time_unit).",
    )
    event_time_unit: Literal["auto", "s", "ms", "us", "ns"] = Field(
        "auto", description="Unit of integer timestamps; auto = the one unit that puts them in the plausible range."
    )
    timezone: str = Field(
        "UTC", description="IANA zone of the day boundaries (ds) and of timestamps written without an offset."
    )
    scenario: str = "scenario"
    scenarios: dict[int, str] = Field(..., min_length=1, description="Scenario id -> name.")
    sample_type: str | None = Field(
        None, description="Column with 'ad'/'content' per row; None = every row is an ad sample."
    )
    tasks: list[str] = Field(..., min_length=1, description="One 0/1 label column per task.")
    user_features: list[str] = Field(default_factory=list)
    item_features: list[str] = Field(default_factory=list)
    sequence: SequenceSpec = Field(default_factory=SequenceSpec)
    csv: CsvOptions = Field(default_factory=CsvOptions)
    checks: InputChecks = Field(default_factory=InputChecks)

    @model_validator(mode="before")
    @classmethod
    def _sequence_follows_item_id(cls, data: Any) -> Any:
        """``sequence.item_field`` omitted = this spec's item id column (not the literal 'item_id')."""
        if not isinstance(data, dict):
            return data
        item = data.get("item_id", "item_id")
        seq = data.get("sequence")
        if seq is None:
            return {**data, "sequence": {"item_field": item}}
        if isinstance(seq, dict) and seq.get("item_field") is None:
            return {**data, "sequence": {**seq, "item_field": item}}
        if isinstance(seq, SequenceSpec) and seq.item_field is None:
            return {**data, "sequence": seq.model_copy(update={"item_field": item})}
        return data

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as 'UTC' or 'Europe/Berlin')") from None
        return v

    @field_validator("tasks", "user_features", "item_features")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"duplicate column(s): {dup}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetSpec":
        if self.sequence.positive_task is not None and self.sequence.positive_task not in self.tasks:
            raise ValueError(f"sequence.positive_task {self.sequence.positive_task!r} is not one of tasks {self.tasks}")
        item_fields = {self.item_id, *self.item_features}
        if self.sequence.item_field not in item_fields:
            raise ValueError(
                f"sequence.item_field {self.sequence.item_field!r} must be the item id column {self.item_id!r} "
                f"or one of item_features {self.item_features}: set sequence.item_field to one of them "
                f"(or omit it to use the item id column)"
            )
        if not self.csv.header and self.csv.columns is None:
            raise ValueError("csv.header: false needs csv.columns (the column names in file order)")
        if self.csv.columns is not None:
            missing = [c for c in self.raw_required_columns() if c not in self.csv.columns]
            if missing:
                raise ValueError(f"csv.columns {self.csv.columns} lacks the spec's column(s) {missing}")
        return self

    # --- the canonical (stored) view -------------------------------------------------
    def canonical(self) -> "DatasetSpec":
        """The spec of the log after ingest: canonical column names, sequence built."""
        field = self.sequence.item_field
        canon_field = CANONICAL_ITEM_ID if field == self.item_id else field
        return DatasetSpec(
            name=self.name,
            scenarios=self.scenarios,
            sample_type=CANONICAL_SAMPLE_TYPE,
            tasks=self.tasks,
            user_features=self.user_features,
            item_features=self.item_features,
            timezone=self.timezone,
            sequence=SequenceSpec(
                item_field=canon_field,
                max_len=self.sequence.max_len,
                column=CANONICAL_SEQUENCE,
                positive_task=self.sequence.positive_task,
            ),
        )

    @property
    def categorical_columns(self) -> list[str]:
        """Columns that get a vocabulary (ids and features) in canonical naming."""
        c = self.canonical()
        return [CANONICAL_USER_ID, *c.user_features, CANONICAL_ITEM_ID, *c.item_features]

    def raw_required_columns(self) -> dict[str, str]:
        """Raw column -> the spec key that names it (for error messages)."""
        cols = {
            self.user_id: "user_id",
            self.item_id: "item_id",
            self.event_time: "event_time",
            self.scenario: "scenario",
        }
        if self.sample_type:
            cols[self.sample_type] = "sample_type"
        for t in self.tasks:
            cols[t] = "tasks"
        for f in self.user_features:
            cols[f] = "user_features"
        for f in self.item_features:
            cols[f] = "item_features"
        if self.sequence.column:
            cols[self.sequence.column] = "sequence.column"
        return cols


class IngestWarning(StrictModel):
    """A sanity check that found rows a user may want to know about but ingest proceeded."""

    check: str = Field(..., description="e.g. duplicates, future_events")
    count: int = Field(..., ge=0, description="Rows concerned (dropped or kept, per the message).")
    message: str


class IngestReport(StrictModel):
    """What :func:`datasources.validate_source` checked / :func:`datasources.materialize` ingested."""

    source: str
    files: int = Field(0, description="Source files read.")
    rows: int = Field(0, description="Rows read from the source (before dropping duplicates/future rows).")
    days: list[str] = Field(default_factory=list, description="Days (ds) present in what was read.")
    warnings: list[IngestWarning] = Field(default_factory=list)
    ingested_days: list[str] = Field(default_factory=list, description="Days committed by this call.")
    reused_days: list[str] = Field(default_factory=list, description="Days already in the log, unchanged.")
    rows_written: int = 0
    log_version: int | None = Field(None, description="Delta version of the log after this call.")


class IngestedFile(StrictModel):
    fingerprint: str = Field(..., description="size:mtime_ns of the file when it was read.")
    days: list[str] = Field(default_factory=list, description="Days (ds) it held.")


class IngestManifest(StrictModel):
    """What the canonical log holds from its source (``<log>/_lfm4ads_ingest.json``).

    Written after each ingest commit: a run killed between the commit and this file
    re-ingests those days next time (a partition replace is idempotent), never skips them."""

    source: str
    spec: str = Field(..., description="The canonical spec (JSON) the log was written with.")
    files: dict[str, IngestedFile] = Field(default_factory=dict)
    days: dict[str, str] = Field(default_factory=dict, description="ds -> content fingerprint of the source rows.")
    log_version: int
    last: IngestReport | None = None
