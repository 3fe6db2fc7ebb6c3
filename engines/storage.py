"""Object-store locations for the published Delta tables and index versions.

The run root stays a local or shared POSIX folder: the SQLite ledger, the ``flock``
locks, samples, checkpoints, index builds and caches need one. What consumers read (the
four representation tables, each index version and the ``CURRENT`` pointer) can live in
an object store instead: :class:`ObjectStoreConfig` (``storage:`` in a run config) names
``tables_uri`` / ``index_uri``, and :func:`mount_run` maps the run's ``root/tables`` and
``root/indexes`` folders onto them for this process. :mod:`engines.delta_io` and
:mod:`retrieval.store` resolve every path under a mounted folder with :func:`locate`, so
the stages keep passing ``RunLayout`` paths and never build URIs themselves.

Only ``s3://`` is tested (against a local moto S3 server); ``gs://`` and ``az://`` /
``abfss://`` are accepted because delta-rs supports them, untested here.

Credentials never go through this module: ``options`` refuses secret keys, and delta-rs
and ``pyarrow.fs`` take them from the standard provider chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` in the environment, a profile, an instance role), so they
are never hashed into the ledger, written into a report or logged.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, ValidationInfo, field_validator

from contracts import StrictModel

# scheme -> store kind (what delta-rs calls it); TESTED: what the test suite exercises
SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
TESTED = ("s3",)
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# option names that carry a secret: refused in config files (see the module docstring)
_SECRET = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|SAS_KEY|ACCOUNT_KEY|SERVICE_ACCOUNT_KEY|CLIENT_SECRET")


class StorageError(RuntimeError):
    """An object-store location cannot be used (missing bucket, unreachable endpoint)."""


def parse_uri(uri: str, key: str = "uri", what: str = "published tables/indexes") -> str:
    """The normalised ``scheme://bucket/prefix`` (no trailing slash); ValueError naming ``key``
    (and ``what`` the location is for, when the scheme is not an object store's)."""
    text = str(uri).strip()
    url = urlparse(text)
    if "://" not in text or url.scheme not in SCHEMES:
        raise ValueError(
            f"{key}: {text!r}: scheme {url.scheme + '://' if url.scheme else '(none)'} is not supported for "
            f"{what}; use s3:// (tested), gs:// or az:// (accepted by delta-rs and pyarrow.fs, untested here)"
        )
    if not url.netloc:
        raise ValueError(f"{key}: {text!r} names no bucket (expected {url.scheme}://bucket/prefix)")
    bucket = url.netloc.split("@")[-1]
    if SCHEMES[url.scheme] == "s3" and not _S3_BUCKET.match(bucket):
        raise ValueError(f"{key}: {text!r}: {bucket!r} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
    if url.query or url.fragment or url.params:
        raise ValueError(f"{key}: {text!r}: no query string or fragment; put settings in storage.options")
    if "//" in url.path or "/./" in url.path + "/" or "/../" in url.path + "/":
        raise ValueError(f"{key}: {text!r}: the prefix has an empty, '.' or '..' segment")
    return f"{url.scheme}://{url.netloc}{url.path.rstrip('/')}"


def is_uri(path: str | os.PathLike[str]) -> bool:
    s = str(path)
    return "://" in s and not s.startswith("file://")


class ObjectStoreConfig(StrictModel):
    """Where the published tables and index versions live (``None``: under the run root)."""

    # a refused secret must not be echoed back in the validation error
    model_config = {**StrictModel.model_config, "hide_input_in_errors": True}

    tables_uri: str | None = Field(None, description="e.g. s3://bucket/prefix/tables; None = root/tables.")
    index_uri: str | None = Field(None, description="e.g. s3://bucket/prefix/indexes; None = root/indexes.")
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Non-secret delta-rs storage options, e.g. AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP; "
        "credentials come from the environment or an instance role, never from here.",
    )
    cache: Path | None = Field(
        None, description="Local cache of store files Spark reads and indexes readers load; None = root/store-cache."
    )

    @field_validator("tables_uri", "index_uri")
    @classmethod
    def _uri(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else parse_uri(v, f"storage.{info.field_name}")

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out: dict[str, str] = {}
        for k, val in v.items():
            name = str(k).upper()
            if _SECRET.search(name):
                raise ValueError(
                    f"storage.options.{k}: credentials are not accepted in a config (configs are hashed into the "
                    "ledger and copied around); set them in the environment (AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY) or use an instance role / profile"
                )
            out[name] = str(val).lower() if isinstance(val, bool) else str(val)
        return out

    @property
    def enabled(self) -> bool:
        return self.tables_uri is not None or self.index_uri is not None


# --- mounts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    """``local`` (an absolute folder path, never created) stands for ``uri`` in this process."""

    local: Path | None  # None: a URI registered for readers (no local folder stands for it)
    uri: str
    options: dict[str, str]
    cache: Path


_MOUNTS: dict[Path, Mount] = {}


def _abs(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def _cache_or_default(cache: str | os.PathLike[str] | None) -> Path:
    """``cache`` made absolute, or the download cache used when none is configured."""
    return _abs(cache) if cache else _abs(tempfile.gettempdir()) / "lfm4ads-store"


def mount(local: str | Path, uri: str, options: dict[str, str] | None = None, cache: str | Path | None = None) -> Mount:
    """Resolve paths under ``local`` to ``uri`` from now on (replaces an earlier mount of it)."""
    local = _abs(local)
    uri = parse_uri(uri, "uri")
    m = Mount(local, uri, dict(options or {}), _cache_or_default(cache))
    _MOUNTS[local] = m
    return m


def unmount(local: str | Path) -> None:
    _MOUNTS.pop(_abs(local), None)


_REMOTES: dict[str, Mount] = {}


def register(uri: str, options: dict[str, str] | None = None, cache: str | Path | None = None) -> Mount:
    """Storage options (and a download cache) for paths under ``uri`` given as URIs, e.g. by
    a reader on another machine: ``register("s3://b/p", {"AWS_ENDPOINT_URL": ...})`` then
    ``read_asof("s3://b/p/tables/user_ur", ...)`` or ``load_current("s3://b/p/indexes")``."""
    uri = parse_uri(uri, "uri")
    m = Mount(None, uri, dict(options or {}), _cache_or_default(cache))
    _REMOTES[uri] = m
    return m


def unregister(uri: str) -> None:
    """Forget what :func:`register` recorded for ``uri`` (no-op if nothing was)."""
    _REMOTES.pop(parse_uri(uri, "uri"), None)


def mount_run(cfg: ObjectStoreConfig, root: str | Path, check: bool = True) -> list[Mount]:
    """Mount ``root/tables`` and ``root/indexes`` on the configured URIs (either may be unset);
    unmount what is not configured. ``check``: a missing bucket or unreachable endpoint is a
    :class:`StorageError` now, naming the config key, not a failure deep in a commit."""
    root = _abs(root)
    cache = cfg.cache or root / "store-cache"
    wanted = [("tables_uri", root / "tables", cfg.tables_uri), ("index_uri", root / "indexes", cfg.index_uri)]
    if check:  # every location first: a failed check mounts nothing
        for key, _, uri in wanted:
            if uri is not None:
                check_bucket(uri, cfg.options, f"storage.{key}")
    out = []
    for _, folder, uri in wanted:
        if uri is None:
            unmount(folder)
        else:
            out.append(mount(folder, uri, cfg.options, cache))
    return out


def mount_for(path: str | os.PathLike[str]) -> Mount | None:
    """The mount ``path`` lies under (or, for a URI, the mount whose URI prefixes it)."""
    if is_uri(path):
        s = str(path).rstrip("/")
        hits = [m for m in (*_REMOTES.values(), *_MOUNTS.values()) if s == m.uri or s.startswith(m.uri + "/")]
        return max(hits, key=lambda m: len(m.uri)) if hits else None  # the most specific prefix
    p = _abs(path)
    for m in _MOUNTS.values():
        if p == m.local or m.local in p.parents:
            return m
    return None


def locate(path: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """(the location delta-rs opens, its storage options) for a local path or a URI."""
    if is_uri(path):
        m = mount_for(path)
        return str(path).rstrip("/"), dict(m.options) if m else {}
    m = mount_for(path)
    if m is None:
        return os.fspath(path), {}
    assert m.local is not None  # _MOUNTS holds only mounts with a local folder
    rel = _abs(path).relative_to(m.local).as_posix()
    return (m.uri if rel == "." else f"{m.uri}/{rel}"), dict(m.options)


def is_remote(path: str | os.PathLike[str]) -> bool:
    return is_uri(path) or mount_for(path) is not None


def as_location(path: str | os.PathLike[str]) -> str | Path:
    """A ``Path`` for a local path, the URI string itself for a URI (``Path`` would mangle ``//``)."""
    return str(path).rstrip("/") if is_uri(path) else Path(path)


def join(base: str | os.PathLike[str], *parts: str) -> str | Path:
    """``base / parts`` for a Path or a URI string."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return Path(base).joinpath(*parts)


def cache_dir(path: str | os.PathLike[str]) -> Path:
    m = mount_for(path)
    return m.cache if m else _cache_or_default(None)


# --- object I/O (pyarrow.fs) -----------------------------------------------------------
def filesystem(uri: str, options: dict[str, str] | None = None) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for ``uri``, configured from delta-rs style options.

    S3 endpoint/region/scheme come from ``options`` (AWS_ENDPOINT_URL, AWS_REGION,
    AWS_ALLOW_HTTP); credentials from the AWS provider chain, as delta-rs does.
    """
    from pyarrow import fs

    url = urlparse(uri)
    opts = {k.upper(): v for k, v in (options or {}).items()}
    if SCHEMES.get(url.scheme) == "s3":
        kw: dict[str, str] = {}
        endpoint = opts.get("AWS_ENDPOINT_URL") or opts.get("AWS_ENDPOINT") or opts.get("ENDPOINT")
        if endpoint:
            ep = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            kw["endpoint_override"] = ep.netloc
            kw["scheme"] = ep.scheme
        region = opts.get("AWS_REGION") or opts.get("AWS_DEFAULT_REGION") or opts.get("REGION")
        if region:
            kw["region"] = region
        return fs.S3FileSystem(**kw), f"{url.netloc}{url.path}".rstrip("/")
    f, path = fs.FileSystem.from_uri(uri)
    return f, str(path)


def check_bucket(uri: str, options: dict[str, str] | None, key: str) -> None:
    """StorageError naming ``key`` unless the bucket of ``uri`` exists and is reachable."""
    from pyarrow import fs

    if SCHEMES.get(urlparse(uri).scheme) != "s3":
        return  # gs:// / az://: checked by the first delta-rs call (untested here)
    f, path = filesystem(uri, options)
    bucket = path.split("/")[0]
    try:
        info = f.get_file_info(bucket)
    except OSError as e:
        raise StorageError(f"{key}: {uri}: cannot reach the store: {_first_line(e)}") from None
    if info.type == fs.FileType.NotFound:
        raise StorageError(f"{key}: {uri}: bucket {bucket!r} does not exist (or is not visible with these credentials)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def upload(local: str | Path, uri: str, options: dict[str, str] | None = None) -> None:
    """PUT one local file at ``uri`` (a single-object PUT: readers see all of it or nothing)."""
    f, path = filesystem(uri, options)
    with open(local, "rb") as src, f.open_output_stream(path) as dst:
        shutil.copyfileobj(src, dst, 8 << 20)


def put_text(uri: str, text: str, options: dict[str, str] | None = None) -> None:
    f, path = filesystem(uri, options)
    with f.open_output_stream(path) as dst:
        dst.write(text.encode())


def get_text(uri: str, options: dict[str, str] | None = None) -> str | None:
    """The object's text, or None when it does not exist."""
    f, path = filesystem(uri, options)
    try:
        with f.open_input_stream(path) as src:
            return str(src.read().decode())
    except FileNotFoundError:
        return None


def download(uri: str, local: str | Path, options: dict[str, str] | None = None, size: int | None = None) -> Path:
    """Copy ``uri`` to ``local`` unless a file of ``size`` bytes is already there (objects
    downloaded here are immutable: Delta data files and index version files never change).
    Written to a temp name and renamed, so a killed download never leaves a partial file."""
    local = Path(local)
    if local.is_file() and (size is None or local.stat().st_size == size):
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".tmp-{uuid.uuid4().hex}-{local.name}")
    f, path = filesystem(uri, options)
    try:
        with f.open_input_stream(path) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    return local


def list_dirs(uri: str, options: dict[str, str] | None = None) -> list[str]:
    """Names of the immediate 'folders' under ``uri``."""
    from pyarrow import fs

    f, path = filesystem(uri, options)
    try:
        infos = f.get_file_info(fs.FileSelector(path, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(i.base_name for i in infos if i.type == fs.FileType.Directory)


def delete_dir(uri: str, options: dict[str, str] | None = None) -> None:
    f, path = filesystem(uri, options)
    try:
        f.delete_dir(path)
    except FileNotFoundError:
        pass
