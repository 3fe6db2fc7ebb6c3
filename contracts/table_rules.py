"""The row rules of a published table, declared once.

:func:`row_rules` lists what every row of a ``ds`` snapshot must satisfy, in the order the
rules are checked (the first one broken is the one reported). ``extract/table_checks.py``
compiles the list twice: to a pyarrow check (a ``pa.Table`` publish) and to one Spark
aggregation (a DataFrame publish), so both inputs are refused for the same reasons with
the same message. The columns and their types are :meth:`RepresentationTable.arrow_schema`'s.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import ConfigDict

from contracts.base import StrictModel

VECTOR_COLUMNS = ("vector", "decayed_sum")  # the float-list columns (decayed_sum: CR tables only)
REQUIRED_COLUMNS = ("model_version", "layer", "ds", "updated_at", "sample_count")
UNIQUE_KEY = "entity_id"  # one row per entity in a snapshot
DUPLICATE_PROBLEM = f"share a duplicated {UNIQUE_KEY}"

RuleKind = Literal["not_null", "length", "finite", "equals", "before"]


class RowRule(StrictModel):
    """One rule a row must satisfy; ``problem`` completes "N row(s) ..." for the rows that break it.

    ``not_null``: ``column`` is set. ``length``: the list in ``column`` has ``value`` items.
    ``finite``: no NaN, inf or null item in the list. ``equals``: ``column == value``.
    ``before``: ``column < value`` (a UTC instant).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    kind: RuleKind
    problem: str
    value: int | str | datetime | None = None


def day_cutoff(ds: str) -> datetime:
    """End of UTC day ``ds`` (exclusive): the instant every ``ds`` snapshot describes."""
    return datetime.strptime(ds, "%Y-%m-%d").replace(tzinfo=timezone.utc) + timedelta(days=1)


def row_rules(columns: list[str], *, dim: int, model_version: str, ds: str) -> list[RowRule]:
    """The rules for partition ``ds`` of a table with ``columns`` (its schema's names) at
    ``dim``, written by ``model_version``; uniqueness of :data:`UNIQUE_KEY` is checked after them."""
    rules = [RowRule(column=UNIQUE_KEY, kind="not_null", problem=f"have a null {UNIQUE_KEY}")]
    for col in (c for c in VECTOR_COLUMNS if c in columns):
        rules += [
            RowRule(column=col, kind="not_null", problem=f"have a null {col}"),
            RowRule(column=col, kind="length", value=dim, problem=f"have a {col} whose length is not {dim}"),
            RowRule(column=col, kind="finite", problem=f"have NaN/inf in {col}"),
        ]
    rules += [RowRule(column=col, kind="not_null", problem=f"have a null {col}") for col in REQUIRED_COLUMNS]
    rules += [
        RowRule(
            column="model_version",
            kind="equals",
            value=model_version,
            problem=f"have a model_version other than the table's {model_version!r}",
        ),
        RowRule(column="ds", kind="equals", value=ds, problem=f"have a ds other than {ds!r}"),
        RowRule(
            column="updated_at",
            kind="before",
            value=day_cutoff(ds),
            problem=f"have updated_at at or after the end of {ds} (UTC)",
        ),
    ]
    return rules
