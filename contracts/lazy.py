"""A stage package's public surface, loaded on first use (PEP 562).

Importing a stage for one light name (a config class for the run config, a study's name for
``lfm4ads --help``) must not import what the rest of its surface needs (torch costs seconds
per process, and a fresh Ray worker pays it for every task).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``exports`` maps each public name to the
    module that defines it; a name is imported on first access and then kept on the package."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
