"""The ingest manifest (``_lfm4ads_ingest.json`` in the log folder): the fingerprint and
days of every source file ingested, each day's content fingerprint, the spec, and the
last run's report; what the next incremental ingest compares against."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from contracts import DatasetSpec
from contracts.dataset import IngestManifest
from datasources.log_store import SPEC_PROPERTY
from engines import delta_io

MANIFEST = "_lfm4ads_ingest.json"


def read_manifest(log_path: str | Path) -> IngestManifest | None:
    p = Path(log_path) / MANIFEST
    if not p.is_file() or not delta_io.exists(log_path):
        return None
    return IngestManifest.model_validate_json(p.read_text())


def write_manifest(log_path: Path, man: IngestManifest) -> None:
    tmp = log_path / f".{MANIFEST}.{uuid.uuid4().hex}"
    tmp.write_text(man.model_dump_json(indent=1))
    os.replace(tmp, log_path / MANIFEST)


def spec_changed(log: Path, canon: DatasetSpec) -> bool:
    conf = delta_io.table_configuration(log)
    if SPEC_PROPERTY not in conf:
        return True
    return DatasetSpec.model_validate(json.loads(conf[SPEC_PROPERTY])) != canon
