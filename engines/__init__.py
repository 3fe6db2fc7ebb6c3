"""The engines every stage runs on, configured once for this project.

- :func:`ensure_ray`: a Ray cluster (local or ``address=``), started once per process.
- :func:`get_spark`: a Spark session (local or a master URL), with the settings that
  keep Spark-written Parquet readable by delta-rs.
- :mod:`engines.delta_io`: Delta tables through delta-rs (``deltalake``), including the
  commit of Parquet files written elsewhere (e.g. by Spark executors).
"""

from engines.ray_cluster import ensure_ray
from engines.spark_session import get_spark, spark_has_delta

__all__ = ["ensure_ray", "get_spark", "spark_has_delta"]
