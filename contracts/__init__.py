"""Contracts between stages: every schema and manifest one stage hands to another.

Each is a pydantic v2 model declared once here; stages import, never re-declare, them.

- :class:`DatasetSpec`: what an interaction log must look like (columns, tasks, features).
- :class:`CheckpointManifest`: what pretraining hands to extraction.
- :class:`RepresentationTable` / :data:`REPRESENTATION_TABLES`: the Delta tables of UR, IR, CR.
- :class:`IndexManifest`: what an index build hands to its readers.
- :class:`RunLayout`: where every artefact of one run root lives.
- :class:`SplitConfig` / :func:`split_days`: the one time split of a log's days.
- :func:`contracts.table_rules.row_rules`: the row rules of a published table (compiled
  to the Arrow and the Spark check in ``extract/table_checks.py``).
- :mod:`contracts.example_config`: writes ``configs/{pretrain,extract,downstream,retrieval}.yaml``
  from their models.
- :func:`load_config`: YAML -> pydantic with errors that name the bad key.
- :mod:`contracts.errors`: the errors every stage may raise, their exit codes, and
  :func:`~contracts.errors.run_entry` (a stage's ``python -m`` command ends an error in one line).
- :func:`contracts.lazy.lazy_exports`: a stage package's surface loaded on first use.
"""

from contracts.base import ConfigError, StrictModel, config_hash, load_config, validate_config
from contracts.checkpoint import CheckpointManifest, LayerInfo
from contracts.dataset import DatasetSpec, SequenceSpec
from contracts.errors import IndexPromotionRefused, InputError
from contracts.index import IndexManifest
from contracts.layout import RunLayout
from contracts.split import SplitConfig, SplitError, split_days
from contracts.tables import REPRESENTATION_TABLES, RepresentationTable, TableProperties

__all__ = [
    "CheckpointManifest",
    "ConfigError",
    "DatasetSpec",
    "IndexManifest",
    "IndexPromotionRefused",
    "InputError",
    "LayerInfo",
    "REPRESENTATION_TABLES",
    "RepresentationTable",
    "RunLayout",
    "SequenceSpec",
    "SplitConfig",
    "SplitError",
    "StrictModel",
    "TableProperties",
    "config_hash",
    "load_config",
    "split_days",
    "validate_config",
]
