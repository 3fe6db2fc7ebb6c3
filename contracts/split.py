"""The one time split of a log's days, shared by every stage and study.

A split is either date-edged (``train < valid_start <= valid < test_start <= test``) or
counted from the end (the last ``test_days`` days test, the ``valid_days`` before them
validation, the rest training). Days are ``YYYY-MM-DD`` strings, so string order is time order.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from contracts.base import ConfigError, StrictModel

PARTS = ("train", "valid", "test")


class SplitError(ConfigError):
    """The log has too few days (or none in a part) for the configured split."""


class SplitConfig(StrictModel):
    """The time split, shared by the foundation model, the downstream models and the studies.

    Explicit boundaries (``YYYY-MM-DD``) win; otherwise the log's last ``test_days``
    days are test, the ``valid_days`` before them validation, the rest training.
    The foundation model trains on the train days and early-stops on the validation days.
    """

    valid_start: str | None = Field(None, description="First validation day (train days are earlier).")
    test_start: str | None = Field(None, description="First test day.")
    valid_days: int = Field(1, ge=1, description="Validation days before the test days (without dates).")
    test_days: int = Field(2, ge=1, description="The log's last days held out for test (without dates).")

    @model_validator(mode="after")
    def _ordered(self) -> SplitConfig:
        if (self.valid_start is None) != (self.test_start is None):
            raise ValueError("give both valid_start and test_start, or neither")
        if self.valid_start and self.test_start and not self.valid_start < self.test_start:
            raise ValueError(f"valid_start {self.valid_start} must be before test_start {self.test_start}")
        return self

    def resolve(self, days: list[str]) -> dict[str, list[str]]:
        """``{"train", "valid", "test"} -> sorted days``; :class:`SplitError` when a part is empty."""
        days = sorted(days)
        if self.valid_start and self.test_start:
            v, t = self.valid_start, self.test_start
            split = {
                "train": [d for d in days if d < v],
                "valid": [d for d in days if v <= d < t],
                "test": [d for d in days if d >= t],
            }
        else:
            n_hold = self.valid_days + self.test_days
            if len(days) <= n_hold:
                raise SplitError(
                    f"split: the log has {len(days)} day(s) up to {days[-1] if days else 'ds'}, "
                    f"need more than {n_hold} (split.valid_days + split.test_days)"
                )
            split = {
                "train": days[:-n_hold],
                "valid": days[-n_hold : -self.test_days],
                "test": days[-self.test_days :],
            }
        empty = [k for k in PARTS if not split[k]]
        if empty:
            span = f"{days[0]}..{days[-1]}" if days else "an empty log"
            raise SplitError(f"split: no days for {empty} among {span} (split.valid_start / split.test_start)")
        return split


def split_days(
    days: list[str],
    *,
    valid_start: str | None = None,
    test_start: str | None = None,
    valid_days: int = 1,
    test_days: int = 2,
) -> dict[str, list[str]]:
    """:meth:`SplitConfig.resolve` in one call (the arguments are :class:`SplitConfig`'s)."""
    return SplitConfig(
        valid_start=valid_start, test_start=test_start, valid_days=valid_days, test_days=test_days
    ).resolve(days)
