"""The interaction-log contract: :class:`DatasetSpec`.

A user brings a log (Parquet/CSV) and a YAML DatasetSpec naming its columns. Ingest
validates the spec against the data and writes the *canonical* log: a Delta table
partitioned by ``ds`` (UTC day) whose columns are

==================  ===========================  ======================================
column              type                         meaning
==================  ===========================  ======================================
user_id, item_id    string                       entity ids
event_time          timestamp[us, UTC]           when the impression happened
ds                  string ``YYYY-MM-DD``        UTC day of ``event_time`` (partition)
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

    item_field: str = Field(
        "item_id", description="Item column whose values form the sequence (item id or an item feature)."
    )
    max_len: int = Field(20, ge=1, le=1024, description="Most recent events kept per sample.")
    column: str | None = Field(
        None, description="Raw column already holding the sequence (list); None = build it at ingest."
    )
    positive_task: str | None = Field(
        None,
        description="Only events positive on this task enter the sequence; None = every event.",
    )


class DatasetSpec(StrictModel):
    """Describes an interaction log as users bring it. Column names refer to the raw log."""

    name: str
    user_id: str = "user_id"
    item_id: str = "item_id"
    event_time: str = Field("event_time", description="Timestamp column, or integer unix seconds.")
    scenario: str = "scenario"
    scenarios: dict[int, str] = Field(..., min_length=1, description="Scenario id -> name.")
    sample_type: str | None = Field(
        None, description="Column with 'ad'/'content' per row; None = every row is an ad sample."
    )
    tasks: list[str] = Field(..., min_length=1, description="One 0/1 label column per task.")
    user_features: list[str] = Field(default_factory=list)
    item_features: list[str] = Field(default_factory=list)
    sequence: SequenceSpec = Field(default_factory=SequenceSpec)

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
            raise ValueError(
                f"sequence.positive_task {self.sequence.positive_task!r} is not one of tasks {self.tasks}"
            )
        item_fields = {self.item_id, *self.item_features}
        if self.sequence.item_field not in item_fields:
            raise ValueError(
                f"sequence.item_field {self.sequence.item_field!r} must be the item id or an item feature"
            )
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
