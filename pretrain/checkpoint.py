"""Checkpoint folders ``<root>/<model_version>/{model.pt, vocab.json, manifest.json}``.

Written atomically: everything goes into a hidden temp folder that is renamed into place
last, so a crash never leaves a folder that looks like a complete version.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from contracts import CheckpointManifest, DatasetSpec
from contracts.checkpoint import MANIFEST_FILE, VOCAB_FILE, WEIGHTS_FILE
from pretrain.config import ModelConfig
from pretrain.features import FeatureEncoder
from pretrain.model import FoundationModel


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupt or from another schema."""


@dataclass
class LoadedModel:
    """A loaded checkpoint: ``model`` in eval mode, its ``encoder`` and ``manifest``."""

    model: FoundationModel
    encoder: FeatureEncoder
    manifest: CheckpointManifest
    path: Path


def save_checkpoint(
    root: str | Path,
    model: FoundationModel,
    encoder: FeatureEncoder,
    manifest: CheckpointManifest,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write ``<root>/<manifest.model_version>/`` atomically; returns the folder.

    ``extra_files`` (name -> bytes, e.g. diagnostics, plots) land in the same folder.
    Refuses to overwrite an existing version.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / manifest.model_version
    if final.exists():
        raise FileExistsError(f"checkpoint {final} already exists; pick another model_version")
    tmp = root / f".tmp-{manifest.model_version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        torch.save(model.state_dict(), tmp / WEIGHTS_FILE)
        (tmp / VOCAB_FILE).write_text(encoder.to_json())
        for name, blob in (extra_files or {}).items():
            (tmp / name).write_bytes(blob)
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
        _fsync_dir(tmp)
        os.rename(tmp, final)  # atomic on one filesystem: the version appears complete or not at all
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_checkpoint(path: str | Path, expect_spec: DatasetSpec | None = None) -> LoadedModel:
    """Load a checkpoint folder (weights with ``weights_only=True``).

    ``expect_spec`` (canonical): refuse a checkpoint trained on a different schema.
    Raises :class:`CheckpointError` naming the file on anything missing or corrupt.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint folder not found")
    files = {n: path / n for n in (MANIFEST_FILE, VOCAB_FILE, WEIGHTS_FILE)}
    for name, f in files.items():
        if not f.is_file():
            raise CheckpointError(f"{f}: missing ({name} is required in a checkpoint folder)")
    try:
        manifest = CheckpointManifest.model_validate_json(files[MANIFEST_FILE].read_text())
    except Exception as e:  # pydantic ValidationError, UnicodeDecodeError, ...
        raise CheckpointError(f"{files[MANIFEST_FILE]}: not a valid checkpoint manifest: {e}") from e
    try:
        encoder = FeatureEncoder.from_json(files[VOCAB_FILE].read_text())
    except Exception as e:
        raise CheckpointError(f"{files[VOCAB_FILE]}: not a valid vocabulary file: {e}") from e
    if encoder.vocab_sizes != manifest.vocab_sizes:
        raise CheckpointError(
            f"{files[VOCAB_FILE]}: vocabulary sizes {encoder.vocab_sizes} differ from the manifest's "
            f"{manifest.vocab_sizes}"
        )
    if expect_spec is not None:
        try:
            manifest.check_compatible(expect_spec.canonical())
        except ValueError as e:
            raise CheckpointError(f"{files[MANIFEST_FILE]}: {e}") from e
    try:
        cfg = ModelConfig.model_validate(manifest.model_config_data)
    except Exception as e:
        raise CheckpointError(f"{files[MANIFEST_FILE]}: model_config_data is not a valid ModelConfig: {e}") from e
    model = FoundationModel(cfg, manifest.dataset, manifest.vocab_sizes)
    try:
        state = torch.load(files[WEIGHTS_FILE], map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{files[WEIGHTS_FILE]}: cannot read weights: {e}") from e
    try:
        model.load_state_dict(state)
    except Exception as e:
        raise CheckpointError(f"{files[WEIGHTS_FILE]}: weights do not fit the manifest's model: {e}") from e
    model.eval()
    return LoadedModel(model=model, encoder=encoder, manifest=manifest, path=path)


def latest_checkpoint(checkpoint_root: str | Path) -> Path | None:
    """The complete version folder with the newest manifest ``created_at`` (None if none).

    Temp folders (``.tmp-*``) and folders without a readable manifest are ignored.
    """
    root = Path(checkpoint_root)
    if not root.is_dir():
        return None
    best: tuple[str, str] | None = None
    best_path: Path | None = None
    for d in root.iterdir():
        if d.name.startswith(".") or not (d / MANIFEST_FILE).is_file():
            continue
        try:
            created = json.loads((d / MANIFEST_FILE).read_text())["created_at"]
        except (ValueError, KeyError, OSError):
            continue
        key = (str(created), d.name)
        if best is None or key > best:
            best, best_path = key, d
    return best_path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
