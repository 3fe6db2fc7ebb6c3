"""pipelines/: the CLI (``lfm4ads``) and the chain that ties the stages together.

Public surface: :class:`RunConfig`, :func:`run_pipeline`, :data:`STEPS`.
"""

from pipelines.config import RunConfig, SplitConfig
from pipelines.run import STEPS, RunState, run_pipeline

__all__ = ["RunConfig", "RunState", "STEPS", "SplitConfig", "run_pipeline"]
