"""extract/: run the frozen foundation model over a day's log (Ray Data) and publish
UR, IR and time-decayed CR(u)/CR(i) tables (Spark -> Delta).

Public surface:

- :class:`ExtractConfig`, :class:`AggregateConfig`, :class:`ExtractStageConfig`
- :func:`extract_day` (Ray Data, sample-level UR/IR/CR shards + ``_SUCCESS``)
- :func:`aggregate_day` (Spark, decayed CR(u)/CR(i) + latest UR/IR, published to Delta)
- :func:`publish` / :class:`PublishError` (the one validated write into a table)
- :func:`read_asof` (the one consumer read of published tables, point in time)
- :func:`representation_health` (row counts, coverage, NaN/inf, norms, effective rank)
"""

from extract.aggregate import aggregate_day
from extract.health import representation_health, table_health
from extract.job import ExtractResult, extract_day
from extract.maintenance import maintain_tables
from extract.config import AggregateConfig, ExtractConfig, ExtractStageConfig
from extract.publishing import PublishError, already_published, publish
from extract.published import read_asof

__all__ = [
    "AggregateConfig",
    "ExtractConfig",
    "ExtractStageConfig",
    "PublishError",
    "ExtractResult",
    "aggregate_day",
    "extract_day",
    "maintain_tables",
    "representation_health",
    "table_health",
    "already_published",
    "publish",
    "read_asof",
]
