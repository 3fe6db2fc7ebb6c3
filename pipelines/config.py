"""``RunConfig``: the root config of ``lfm4ads run`` (and of every ``lfm4ads stage``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from contracts import ConfigError, SplitConfig, StrictModel
from datasources import GeneratedSource, SourceConfig
from downstream import DownstreamConfig
from engines.storage import ObjectStoreConfig
from extract.config import AggregateConfig, ExtractConfig
from pipelines.gates import GateConfig
from pipelines.rollover import RolloverConfig
from pretrain import PretrainConfig
from retrieval.config import RetrievalConfig


class ReportConfig(StrictModel):
    """What the run report trusts enough to print as a figure."""

    min_positives: int = Field(
        30,
        ge=0,
        description="A test AUC or lift resting on fewer positives of a task (downstream test split) is "
        "replaced by a warning: with a handful of positives its sign is noise.",
    )
    min_rank_share: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Flag a published table whose effective rank is below this share of its "
        "dimension (representation collapse).",
    )
    rank_rows: int = Field(20000, ge=2, description="Rows of the latest snapshot the effective rank is computed on.")


class RunConfig(StrictModel):
    """Everything one run needs; every artefact lands under ``root`` (see RunLayout), except
    the tables and index versions when ``storage`` names an object store."""

    # a refused credential in storage.options must not be echoed back by a validation error
    model_config = {**StrictModel.model_config, "hide_input_in_errors": True}

    root: Path = Field(
        Path("runs/demo"),
        description="Run root: a local or shared path or a file:// URI (ledger, locks, samples, checkpoints); "
        "tables and indexes can go to an object store with storage.tables_uri / storage.index_uri.",
    )
    storage: ObjectStoreConfig = Field(
        default_factory=ObjectStoreConfig,
        description="Publish the tables / index versions to an object store (docs/pipelines.md 'Storage paths').",
    )
    source: SourceConfig = Field(default_factory=GeneratedSource)
    ds: str | None = Field(None, description="The day the run is for; None = the log's last day.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    publish_every: int = Field(
        1, ge=1, description="Publish representation snapshots every N days (and always on ds and the split edges)."
    )
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig)
    gates: GateConfig = Field(default_factory=GateConfig)
    rollover: RolloverConfig = Field(
        default_factory=RolloverConfig, description="Publish aligned vectors for a previous model version."
    )
    downstream: DownstreamConfig = Field(default_factory=DownstreamConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    ray_address: str | None = Field(None, description="Existing Ray cluster (e.g. 'auto'); None = local.")
    spark_master: str | None = Field(None, description="Existing Spark master URL; None = local[2].")

    @field_validator("root", mode="before")
    @classmethod
    def _local_root(cls, v):
        """``file:///abs/path`` -> the local path; any other scheme (s3://, gs://, abfss://)
        is refused by name: the run root also holds the SQLite ledger, the flock lock files
        and FAISS builds, which need a POSIX filesystem (a shared mount on a cluster)."""
        from urllib.parse import unquote, urlparse

        text = str(v)
        if "://" not in text:
            return v
        url = urlparse(text)
        if url.scheme == "file":
            if url.netloc not in ("", "localhost"):
                raise ValueError(f"{text}: a file:// URI must name a local path (file:///abs/path)")
            return Path(unquote(url.path))
        raise ValueError(
            f"{text}: the run root must be a local or mounted path or a file:// URI; {url.scheme}:// is not "
            "supported (the ledger, locks and index builds need a POSIX filesystem); to publish tables and "
            "indexes to an object store set storage.tables_uri / storage.index_uri (docs/pipelines.md)"
        )


# Keys that hold a local path: a relative one in a config file means relative to that file
# (so `lfm4ads run --config configs/x.yaml` works from any working directory).
PATH_KEYS = (
    "root",
    "source.path",
    "source.spec_path",
    "storage.cache",
    "pretrain.init_from",
    "rollover.previous_tables_root",
)


def resolve_relative_paths(raw: dict, base: Path) -> dict:
    """``raw`` (a config file's mapping) with each relative :data:`PATH_KEYS` value made
    absolute against ``base`` (the file's folder); URIs (``s3://``, ``file://``) are left alone."""
    out = dict(raw)
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            child = node.get(p)
            if not isinstance(child, dict):
                break
            node[p] = child = dict(child)
            node = child
        else:
            value = node.get(leaf)
            if isinstance(value, str) and value and "://" not in value and not Path(value).expanduser().is_absolute():
                node[leaf] = str((base / value).resolve())
    return out


def parse_set(pairs: list[str]) -> dict:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}`` (values parsed as YAML)."""
    import datetime

    import yaml

    out: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {pair!r}: expected key.path=value (e.g. pretrain.train.epochs=2)")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
            if isinstance(value, (datetime.date, datetime.datetime)):
                value = text.strip()  # ds=2026-01-03 is the string a config key holds, not a date
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: value {text!r} is not valid YAML ({e})".replace("\n", " ")) from None
        *parents, leaf = key.split(".")
        node = out
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parents[: i + 1])} is set to a value, not a mapping")
        node[leaf] = value
    return out


def load_run_config(path: str | Path | None, overrides: dict | None = None, sets: list[str] | None = None) -> RunConfig:
    """The RunConfig of ``path`` (None: the defaults), relative paths resolved against the
    file, then ``overrides`` (CLI flags, relative to the working directory) and ``--set``
    pairs merged over it; a bad key raises :class:`ConfigError` naming its dotted path."""
    from contracts import validate_config
    from contracts.base import deep_merge, read_yaml_mapping

    raw: dict = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        raw = resolve_relative_paths(read_yaml_mapping(path), path.resolve().parent)
    if overrides:
        raw = deep_merge(raw, overrides)
    if sets:
        try:
            raw = _merge_sets(raw, parse_set(sets))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return validate_config(raw, RunConfig, source + (" with --set " + " ".join(sets) if sets else ""))


def _merge_sets(raw: dict, sets: dict, prefix: str = "") -> dict:
    out = dict(raw)
    for k, v in sets.items():
        here = f"{prefix}{k}"
        if isinstance(v, dict):
            current = out.get(k)
            if current is None:
                current = {}
            if not isinstance(current, dict):
                raise ConfigError(f"--set {here}.{next(iter(v))}: {here} is {current!r} in the file, not a mapping")
            out[k] = _merge_sets(current, v, here + ".")
        else:
            out[k] = v
    return out
