"""The sample-level extraction output of one day: Parquet shards plus a ``_SUCCESS`` marker.

``samples/ds=<d>/`` holds ``part-<unit>.parquet`` shards with columns

=============  ===============================  ===================================
column         type                             meaning
=============  ===============================  ===================================
user_id        string
item_id        string
event_time     timestamp[us, UTC]
scenario       int32
sample_type    string
ur             fixed_size_list<float32, d_ur>   user tower output
ir             fixed_size_list<float32, d_ir>   item tower output
cr             fixed_size_list<float32, d_cr>   first requested CR layer
cr__<layer>    fixed_size_list<float32, d>      further requested layers (dots -> ``_``)
layer          string                           name of the layer in ``cr``
=============  ===============================  ===================================

``_SUCCESS`` (JSON, :class:`SamplesMarker`) is written last: a folder without it is
not a finished extraction and is never read downstream. Files starting with ``_`` are
ignored by Spark and pyarrow readers.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from contracts import StrictModel

MARKER = "_SUCCESS"
HEALTH = "_health.json"


def layer_column(layer: str, first: bool) -> str:
    return "cr" if first else "cr__" + layer.replace(".", "_")


class SamplesMarker(StrictModel):
    """What a finished extraction of one day holds."""

    ds: str
    rows: int = Field(..., ge=0)
    model_version: str
    log_version: int
    layers: dict[str, str] = Field(..., description="CR layer name -> its column.")
    dims: dict[str, int] = Field(..., description="Column -> vector length (ur, ir, cr, ...).")
    shards: list[str]
    fingerprint: str = Field(..., description="Hash of the inputs and settings that produced the shards.")

    def write(self, folder: Path) -> None:
        tmp = folder / (MARKER + ".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(folder / MARKER)


def read_marker(samples_dir: str | Path) -> SamplesMarker:
    """The marker of a finished day; FileNotFoundError naming the folder when absent."""
    path = Path(samples_dir) / MARKER
    if not path.is_file():
        raise FileNotFoundError(f"{samples_dir}: no {MARKER} marker: extraction of this day did not finish")
    return SamplesMarker.model_validate(json.loads(path.read_text()))
