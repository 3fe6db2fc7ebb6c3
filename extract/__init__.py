"""extract/: run the frozen foundation model over a day's log (Ray Data) and publish
UR, IR and time-decayed CR(u)/CR(i) tables (Spark -> Delta).

Public surface:

- :class:`ExtractConfig`, :class:`AggregateConfig`, :class:`ExtractStageConfig`
- :func:`extract_days` / :func:`extract_day` (ONE Ray Data job for many days; sample-level
  UR/IR/CR shards + ``_SUCCESS``)
- :func:`aggregate_day` (Spark, decayed CR(u)/CR(i) + latest UR/IR, published to Delta)
- :func:`publish` / :class:`PublishError` (the one validated write into a table)
- :func:`probe_layers` / :class:`ProbeConfig` (linear probe of every candidate layer; records the best)
- :func:`read_asof` (the one consumer read of published tables, point in time)
- :func:`read_table_spark` (a table's snapshot as a Spark DataFrame, without the Delta jars)
- :func:`representation_health` (row counts, coverage, NaN/inf, norms, effective rank)
"""

from extract.aggregate import aggregate_day
from extract.config import AggregateConfig, ExtractConfig, ExtractStageConfig, ProbeConfig
from extract.health import representation_health, table_health
from extract.job import ExtractResult, extract_day, extract_days
from extract.maintenance import maintain_tables
from extract.probe import probe_layers
from extract.published import read_asof
from extract.publishing import already_published, publish
from extract.read_spark import read_table_spark
from extract.table_checks import PublishError

__all__ = [
    "AggregateConfig",
    "ExtractConfig",
    "ExtractStageConfig",
    "ProbeConfig",
    "PublishError",
    "ExtractResult",
    "aggregate_day",
    "extract_day",
    "extract_days",
    "maintain_tables",
    "probe_layers",
    "representation_health",
    "table_health",
    "already_published",
    "publish",
    "read_asof",
    "read_table_spark",
]
