"""Choosing a transfer method per scenario on *validation* AUC, and the headline numbers.

Each method's summary (:func:`downstream.evaluate.summarise`) holds, over seeds, the mean
and std of the validation AUC (the early-stopping metric: first task) and of each task's
test AUC. Rules (issue 15):

- **pick** of a scenario: the non-vanilla method with the best mean validation AUC
  (ties: the name first in the table). Its *test* AUC is what the headline reports.
- **improved**: the pick's mean test AUC exceeds vanilla's by more than one pooled std
  ``sqrt((s_pick^2 + s_vanilla^2) / 2)`` of the per-seed test AUCs.
- **default method**: one method fixed before the run (the daily run's adapter and
  representations), reported on every scenario: no selection at all.
- **valid-best method across scenarios**: among the rows the daily run can deploy
  (feature level on the daily tables), the one with the highest mean over scenarios of its
  mean validation AUC; the rule that picks the daily default adapter and representations.
- **best on test**: the method with the best *test* AUC, an optimistic upper bound
  only (choosing on test inflates the lift); labelled as such wherever shown.
"""

from __future__ import annotations

import math

VANILLA = "vanilla"


def _low(x: float | None) -> float:
    return -math.inf if x is None or math.isnan(x) else x


def pick_on_valid(methods: dict[str, dict]) -> str | None:
    """Name of the non-vanilla method with the best mean validation AUC (None if none)."""
    names = [m for m in methods if m != VANILLA]
    return max(names, key=lambda m: _low(methods[m]["valid_auc"]), default=None)


def best_on_test(methods: dict[str, dict], task: str) -> str | None:
    """Upper bound only: the non-vanilla method with the best mean test AUC of ``task``."""
    names = [m for m in methods if m != VANILLA]
    return max(names, key=lambda m: _low(methods[m]["test_auc"][task]), default=None)


def pooled_std(a: dict, b: dict, task: str) -> float:
    return math.sqrt((a["test_auc_std"][task] ** 2 + b["test_auc_std"][task] ** 2) / 2)


def improves(methods: dict[str, dict], name: str | None, task: str) -> bool:
    """``name``'s mean test AUC is above vanilla's by more than one pooled std."""
    if name is None or name not in methods:
        return False
    m, v = methods[name], methods[VANILLA]
    return m["test_auc"][task] - v["test_auc"][task] > pooled_std(m, v, task)


def valid_best_across(rows: dict[str, dict], candidates: list[str] | None = None) -> str | None:
    """The non-vanilla method with the highest mean over scenarios of its mean validation
    AUC, among methods measured in every scenario of ``rows`` (scenario -> methods) and in
    ``candidates`` (None = all)."""
    if not rows:
        return None
    common = set.intersection(*(set(r) for r in rows.values())) - {VANILLA}
    if candidates is not None:
        common &= set(candidates)
    order = [m for m in next(iter(rows.values())) if m in common]

    def mean_valid(m: str) -> float:
        return sum(_low(r[m]["valid_auc"]) for r in rows.values()) / len(rows)

    return max(order, key=mean_valid, default=None)


def headline(
    rows: dict[str, dict], task: str, small: str | None, default_method: str | None, deployable: list[str] | None = None
) -> dict:
    """Headline numbers over ``rows`` (scenario -> {method -> summary}); ``small``: the
    scenario whose lift is reported; ``deployable``: the rows the daily run could use
    (feature level on the daily tables), among which ``valid_best_method`` is chosen.
    Annotates nothing; returns plain numbers::

        {"picked_on": "valid", "picks": {scenario: method}, "scenarios_improved",
         "lift", "picked_method", "picked_test_auc", "vanilla_auc",
         "mean_picked_test_auc", "mean_vanilla_test_auc",
         "default_method", "default_scenarios_improved", "default_lift", "mean_default_test_auc",
         "valid_best_method", "upper_bound_best_on_test": {...}}
    """
    picks = {s: pick_on_valid(m) for s, m in rows.items()}
    tests = {s: best_on_test(m, task) for s, m in rows.items()}

    def mean_of(name_of) -> float | None:
        vals = [rows[s][name_of(s)]["test_auc"][task] for s in rows if name_of(s) in rows[s]]
        return sum(vals) / len(vals) if vals and len(vals) == len(rows) else None

    def lift(name: str | None) -> float | None:
        if small not in rows or name not in rows[small]:
            return None
        return rows[small][name]["test_auc"][task] - rows[small][VANILLA]["test_auc"][task]

    has_default = bool(rows) and default_method is not None and all(default_method in m for m in rows.values())
    sp = picks.get(small) if small is not None else None
    return {
        "picked_on": "valid",
        "picks": picks,
        "scenarios_improved": sum(improves(rows[s], picks[s], task) for s in rows),
        "lift": lift(sp),
        "picked_method": sp,
        "picked_test_auc": None if sp is None else rows[small][sp]["test_auc"][task],
        "vanilla_auc": rows[small][VANILLA]["test_auc"][task] if small in rows else None,
        "mean_picked_test_auc": mean_of(lambda s: picks[s]),
        "mean_vanilla_test_auc": mean_of(lambda s: VANILLA),
        "default_method": default_method,
        "default_scenarios_improved": sum(improves(rows[s], default_method, task) for s in rows)
        if has_default
        else None,
        "default_lift": lift(default_method) if has_default else None,
        "mean_default_test_auc": mean_of(lambda s: default_method) if has_default else None,
        "valid_best_method": valid_best_across(rows, deployable),
        "upper_bound_best_on_test": {
            "note": "chosen on test AUC: an optimistic upper bound, not a claim",
            "picks": tests,
            "scenarios_improved": sum(improves(rows[s], tests[s], task) for s in rows),
            "lift": lift(tests.get(small)) if small is not None else None,
            "mean_test_auc": mean_of(lambda s: tests[s]),
        },
    }
