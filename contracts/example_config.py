"""The example configs in ``configs/`` written from the pydantic models, never by hand.

``python -m contracts.example_config`` rewrites every file of :data:`EXAMPLES` with each
key's default and, above it, its description (and the allowed values of a ``Literal``);
``--check`` exits 1 naming the files that differ (``tests/contracts/test_example_config.py``
holds them equal, so a default changed in a model cannot drift from its file).

The models are named by import path (``"pretrain:PretrainConfig"``) and imported only when a
file is written: contracts is the first stage and imports no later one.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from contracts.base import StrictModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
INDENT = "  "
WIDTH = 100  # comment lines wrap here


class Example(StrictModel):
    """One generated file: the model it shows and the command that loads it."""

    model: str  # "module:Class"
    loaded_by: str


EXAMPLES: dict[str, Example] = {
    "pretrain.yaml": Example(
        model="pretrain:PretrainConfig",
        loaded_by="lfm4ads validate --kind pretrain --config configs/pretrain.yaml "
        "(the `pretrain:` section of a run config); which days train and validate is the run's `split`",
    ),
    "extract.yaml": Example(
        model="extract.config:ExtractStageConfig",
        loaded_by="lfm4ads extract probe --config configs/extract.yaml (its `probe:` section); "
        "lfm4ads validate --kind extract --config configs/extract.yaml",
    ),
    "downstream.yaml": Example(
        model="downstream:DownstreamConfig",
        loaded_by="lfm4ads validate --kind downstream --config configs/downstream.yaml "
        "(the `downstream:` section of a run config); the days are the run's `split`",
    ),
    "retrieval.yaml": Example(
        model="retrieval.config:RetrievalConfig",
        loaded_by="lfm4ads validate --kind retrieval --config configs/retrieval.yaml "
        "(the `retrieval:` section of a run config)",
    ),
}


def model_class(path: str) -> type[BaseModel]:
    """``"module:Class"`` -> the class."""
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, BaseModel), path
    return cls


def _flow(value: Any) -> str:
    """``value`` (JSON-able) as one line of YAML."""
    text = str(yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False))
    return text.removesuffix("\n...\n").strip()


def _choices(annotation: Any) -> list[Any]:
    """The values of a ``Literal`` (or ``Literal | None``) annotation; [] for any other."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in _choices(arg)]
    return []


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(" ".join(text.split()), WIDTH - len(indent) - 2)]


def _lines(instance: BaseModel, indent: str = "") -> list[str]:
    out: list[str] = []
    dumped = instance.model_dump(mode="json")
    for name, field in type(instance).model_fields.items():
        value = getattr(instance, name)
        about = field.description or ""
        if isinstance(value, BaseModel) and not about:
            about = (type(value).__doc__ or "").strip().split("\n\n")[0]
        choices = _choices(field.annotation)
        if choices:
            about = f"{about} One of: {' | '.join(_flow(c) for c in choices)}.".strip()
        out += _comment(about, indent) if about else []
        if isinstance(value, BaseModel):
            out.append(f"{indent}{name}:")
            out += _lines(value, indent + INDENT)
        else:
            out.append(f"{indent}{name}: {_flow(dumped[name])}")
    return out


def example_yaml(model: type[BaseModel], loaded_by: str) -> str:
    """The example file of ``model``: every key at its default, described."""
    head = (
        f"{model.__module__}.{model.__name__}: every key with its default (every key is optional). "
        "Generated from the model by `python -m contracts.example_config`; do not edit by hand."
    )
    head_lines = [*_comment(head, ""), *_comment(f"Loaded by: {loaded_by}.", "")]
    return "\n".join([*head_lines, "", *_lines(model())]) + "\n"


def render(name: str) -> str:
    """The text ``configs/<name>`` should hold."""
    ex = EXAMPLES[name]
    return example_yaml(model_class(ex.model), ex.loaded_by)


def main(argv: list[str] | None = None) -> int:
    """Write every example (``--check``: only report the stale ones, exit 1 if any)."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for name in EXAMPLES:
        path, text = CONFIGS / name, render(name)
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text)
    verb = "differ from their models" if check else "written"
    print(f"{len(stale)} example config(s) {verb}: {', '.join(stale) or '-'}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
