"""The names of the studies that run on a run root (light: the command lines import it)."""

from __future__ import annotations

from enum import Enum


class Study(str, Enum):
    """A study on a run root: ``python -m studies <name>``, ``lfm4ads experiment <name>``."""

    transfer = "transfer"  # the LFM4Ads transfer table
    rankup = "rankup"  # RankMixer vs RankUp components
