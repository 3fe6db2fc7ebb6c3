"""pipelines/: the CLI (``lfm4ads``) and the chain that ties the stages together.

Public surface: :class:`RunConfig`, :func:`run_pipeline`, :data:`STEPS`.
"""

from pipelines.config import RunConfig, SplitConfig
from pipelines.run import run_pipeline
from pipelines.state import RunState
from pipelines.steps import STEPS

__all__ = ["RunConfig", "RunState", "STEPS", "SplitConfig", "run_pipeline"]
