"""Where a run's log comes from: generated, MovieLens-100K, or a user's file + spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from contracts import DatasetSpec, StrictModel
from datasources.generator import GeneratorConfig


class GeneratedSource(StrictModel):
    kind: Literal["generated"] = "generated"
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)


class MovieLensSource(StrictModel):
    kind: Literal["movielens"]
    path: Path = Field(..., description="Folder with the original u.data, u.user, u.item files.")


class FileSource(StrictModel):
    kind: Literal["file"]
    path: Path | str = Field(
        ...,
        description="A Parquet/CSV file (it may grow), a folder of them, or a day-partitioned folder "
        "(ds=YYYY-MM-DD/), local or in an object store (s3://bucket/prefix; gs://, az:// untested); "
        "ingested incrementally (docs/ingest.md).",
    )
    spec: DatasetSpec | None = Field(None, description="Inline DatasetSpec ...")
    spec_path: Path | None = Field(None, description="... or a YAML file holding it.")

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, v: object) -> object:
        """A local path stays a ``Path``; an object-store URI stays the normalised URI string
        (``Path`` would fold its ``//``); ``file:///abs/path`` is the local path."""
        if isinstance(v, str) and "://" in v:
            from datasources.sources import parse_source_uri

            return parse_source_uri(v)
        return Path(v) if isinstance(v, str) else v


SourceConfig = Annotated[Union[GeneratedSource, MovieLensSource, FileSource], Field(discriminator="kind")]
