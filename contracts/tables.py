"""The published representation tables (Delta, partitioned by ``ds``).

Every ``ds`` partition is a full snapshot *as of the end of that UTC day*: each entity
ever seen, with its latest vector and when it was last updated. A consumer joining a
sample of day ``d`` reads the newest partition strictly before ``d`` (point in time).

Tables: ``user_ur`` (UR), ``item_ir`` (IR), ``user_cr`` (CR(u)), ``item_cr`` (CR(i)).
CR tables also carry ``decayed_sum``: the un-normalised time-decayed state, so the next
day can continue the aggregation incrementally.

``user_query`` (kind ``QUERY``, in :data:`QUERY_TABLES`, not in :data:`REPRESENTATION_TABLES`
because the extraction does not produce it): the query tower's output in the IR space of
the same model version, published by the retrieval step with the same contract (schema,
properties, one snapshot per ``ds``, idempotent replace). :data:`PUBLISHED_TABLES` holds
both registries.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field

from contracts.base import StrictModel

Normalisation = Literal["none", "l2", "layernorm"]


class TableProperties(StrictModel):
    """Recorded in the Delta table's configuration (``lfm4ads.*`` keys)."""

    dim: int = Field(..., ge=1)
    normalisation: Normalisation = "none"
    source_checkpoint: str
    config_hash: str
    tau_seconds: float | None = None

    def to_delta(self) -> dict[str, str]:
        return {f"lfm4ads.{k}": str(v) for k, v in self.model_dump().items() if v is not None}

    @classmethod
    def from_delta(cls, conf: dict[str, str]) -> "TableProperties":
        raw = {k.removeprefix("lfm4ads."): v for k, v in conf.items() if k.startswith("lfm4ads.")}
        return cls.model_validate(raw)


class RepresentationTable(StrictModel):
    """Schema of one representation table."""

    name: str
    entity: Literal["user", "item"]
    kind: Literal["UR", "IR", "CR", "QUERY"]

    @property
    def has_state(self) -> bool:
        return self.kind == "CR"

    def arrow_schema(self, dim: int) -> pa.Schema:
        vec = pa.list_(pa.float32(), dim)
        fields = [
            pa.field("entity_id", pa.string(), nullable=False),
            pa.field("ds", pa.string(), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("vector", vec, nullable=False),
            pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("sample_count", pa.int64(), nullable=False),
        ]
        if self.has_state:
            fields.append(pa.field("decayed_sum", vec, nullable=False))
        return pa.schema(fields)

    def schema_problems(self, schema: pa.Schema, dim: int) -> list[str]:
        """What keeps ``schema`` (as a Delta reader hands it back) from being this table's
        at ``dim``: missing/extra columns, incompatible types. Empty when it conforms."""
        want = self.arrow_schema(dim)
        out = [f"missing column {n}" for n in want.names if n not in schema.names]
        out += [f"unexpected column {n}" for n in schema.names if n not in want.names]
        for f in want:
            if f.name in schema.names and not _compatible(schema.field(f.name).type, f.type):
                out.append(f"column {f.name} is {schema.field(f.name).type}, the table contract says {f.type}")
        return out


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    """Types as Delta stores them: plain/large lists for fixed-size ones, any string
    layout, any timestamp unit."""
    if pa.types.is_fixed_size_list(want):
        return bool(
            (pa.types.is_list(have) or pa.types.is_large_list(have) or pa.types.is_fixed_size_list(have))
            and have.value_type == want.value_type
        )
    if pa.types.is_string(want):
        return bool(
            pa.types.is_string(have)
            or pa.types.is_large_string(have)
            or pa.types.is_string_view(have)
            or (pa.types.is_dictionary(have) and pa.types.is_string(have.value_type))
        )
    if pa.types.is_timestamp(want):
        return bool(pa.types.is_timestamp(have))
    return bool(have == want)


REPRESENTATION_TABLES: dict[str, RepresentationTable] = {
    t.name: t
    for t in (
        RepresentationTable(name="user_ur", entity="user", kind="UR"),
        RepresentationTable(name="item_ir", entity="item", kind="IR"),
        RepresentationTable(name="user_cr", entity="user", kind="CR"),
        RepresentationTable(name="item_cr", entity="item", kind="CR"),
    )
}

# Tables produced after extraction (the retrieval step's query tower); same contract.
QUERY_TABLES: dict[str, RepresentationTable] = {
    "user_query": RepresentationTable(name="user_query", entity="user", kind="QUERY"),
}
PUBLISHED_TABLES: dict[str, RepresentationTable] = {**REPRESENTATION_TABLES, **QUERY_TABLES}
