"""The days a study trains, validates and tests on (the one time split, :mod:`contracts.split`)."""

from __future__ import annotations

from pathlib import Path

from contracts import split_days


def study_days(
    log_path: str | Path,
    train_days: list[str] | None,
    valid_days: list[str] | None,
    test_days: list[str] | None,
) -> tuple[list[str], list[str], list[str]]:
    """``(train, valid, test)`` days: the three given (a run config's resolved split), else
    the log resolved by :class:`contracts.SplitConfig`'s defaults (the one split config)."""
    from datasources import log_days

    if train_days and valid_days and test_days:
        return train_days, valid_days, test_days
    split = split_days(log_days(log_path))
    return split["train"], split["valid"], split["test"]
