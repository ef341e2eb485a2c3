"""A user's limits as stored, and the free-tier entry measured against them.

A user's limit settings (their assigned plan and their own overrides, a limits object) live in
the user's `usage.limits` and in Tally's own copy (`TallyUserLimits/{uid}`); plans keep theirs
in the plan catalog (`tally.documents.plan_catalog`);
a free-tier entry (the share of the limits used, `limitPercent`, with the limits it was
measured against) is kept in the user's month document and copied into a rollup's ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tally.config import Settings
from tally.limits import FeatureLimits, LimitSet
from tally.usage import Limits
from tally.values import Document
from tally.writes import DELETE, Maximum

COST_LIMIT, FREE_RUNS = "monthlyCostLimitNanos", "monthlyFreeRuns"
LIMIT_PERCENT = "limitPercent"  # queried: a month's free-tier candidates
NAMES = (COST_LIMIT, FREE_RUNS)


def fields(limits: Limits) -> dict[str, int]:
    """Return the stored form of a user's limits."""
    return {COST_LIMIT: limits.monthly_cost_limit_nanos, FREE_RUNS: limits.monthly_free_runs}


def stored(data: Mapping[str, Any]) -> Limits | None:
    """Return the limits stored in a map, if both are set."""
    if COST_LIMIT not in data or FREE_RUNS not in data:
        return None
    return Limits(int(data[COST_LIMIT]), int(data[FREE_RUNS]))


def limits_in(data: Mapping[str, Any], settings: Settings) -> Limits:
    """Return the limits stored in a map, each missing one the default."""
    return Limits(
        int(data.get(COST_LIMIT, settings.default_monthly_cost_limit_nanos)),
        int(data.get(FREE_RUNS, settings.default_monthly_free_runs)),
    )


def stored_percent(data: Mapping[str, Any]) -> Any:
    """Return a free-tier entry's share as stored (possibly missing, or not a number)."""
    return data.get(LIMIT_PERCENT)


def percent_of(data: Mapping[str, Any]) -> float | None:
    """Return a free-tier entry's share, if it holds a number."""
    found = data.get(LIMIT_PERCENT)
    return float(found) if isinstance(found, int | float) else None


def entry(percent: float, limits: Limits, *, exact: bool) -> dict[str, Any]:
    """Return a free-tier entry: the share set (`exact`), or raised to it, with the limits."""
    return {LIMIT_PERCENT: percent if exact else Maximum(percent), **fields(limits)}


# The v3 limits object (a plan's, or a user's overrides with their assigned plan)

PLAN = "plan"  # a user's assigned plan (in their stored limits)
TEAM = "teamId"  # the user's team (in their stored limits)
DAILY_COST, DAILY_RUNS, FEATURES = "dailyCostLimitNanos", "dailyFreeRuns", "features"
F_MONTHLY_COST, F_DAILY_COST, F_MONTHLY_RUNS, F_DAILY_RUNS = (
    "monthlyCostLimitNanos",
    "dailyCostLimitNanos",
    "monthlyRuns",
    "dailyRuns",
)
_SET_FIELDS = {
    "monthly_cost_nanos": COST_LIMIT,
    "monthly_free_runs": FREE_RUNS,
    "daily_cost_nanos": DAILY_COST,
    "daily_free_runs": DAILY_RUNS,
}
_FEATURE_FIELDS = {
    "monthly_cost_nanos": F_MONTHLY_COST,
    "daily_cost_nanos": F_DAILY_COST,
    "monthly_runs": F_MONTHLY_RUNS,
    "daily_runs": F_DAILY_RUNS,
}


def set_fields(limits: LimitSet) -> dict[str, Any]:
    """Return the stored form of a limits object (unset fields absent)."""
    stored: dict[str, Any] = {
        name: value for attr, name in _SET_FIELDS.items() if (value := getattr(limits, attr)) is not None
    }
    if limits.features:
        stored[FEATURES] = {name: feature_fields(own) for name, own in limits.features.items()}
    return stored


def feature_fields(limits: FeatureLimits) -> dict[str, int]:
    """Return the stored form of one feature's limits (unset fields absent)."""
    return {
        name: value for attr, name in _FEATURE_FIELDS.items() if (value := getattr(limits, attr)) is not None
    }


def _int_or_none(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def limit_set(data: Mapping[str, Any] | None) -> LimitSet:
    """Read a stored limits object (anything else in the map is ignored)."""
    data = data or {}
    features = data.get(FEATURES)
    return LimitSet(
        **{attr: _int_or_none(data, name) for attr, name in _SET_FIELDS.items()},
        features={
            str(name): FeatureLimits(
                **{attr: _int_or_none(own, key) for attr, key in _FEATURE_FIELDS.items()}
            )
            for name, own in (features.items() if isinstance(features, Mapping) else ())
            if isinstance(own, Mapping)
        },
    )


def team_of(data: Mapping[str, Any] | None) -> str | None:
    """Return the team in a user's stored limits (None: none)."""
    found = (data or {}).get(TEAM)
    return found if isinstance(found, str) and found else None


def assigned_plan(data: Mapping[str, Any] | None) -> str | None:
    """Return the plan assigned in a user's stored limits (None: none)."""
    found = (data or {}).get(PLAN)
    return found if isinstance(found, str) and found else None


def settings_change(
    *,
    plan: tuple[str | None] | None,
    overrides: Mapping[str, int | None],
    team: tuple[str | None] | None = None,
    features: Mapping[str, Mapping[str, int | None] | None],
) -> dict[str, Any]:
    """Return the merge of a `set_limits` change into a user's stored limits (None removes a field).

    `plan`: `(name,)` assigns a plan, `(None,)` removes the assignment, None leaves it;
    `overrides` and `features` name fields by the attributes of `LimitSet`/`FeatureLimits`.
    """
    change: dict[str, Any] = {
        _SET_FIELDS[attr]: DELETE if value is None else value for attr, value in overrides.items()
    }
    if plan is not None:
        change[PLAN] = DELETE if plan[0] is None else plan[0]
    if team is not None:
        change[TEAM] = DELETE if team[0] is None else team[0]
    if features:
        change[FEATURES] = {
            name: DELETE
            if own is None
            else {_FEATURE_FIELDS[attr]: DELETE if value is None else value for attr, value in own.items()}
            for name, own in features.items()
        }
    return change


def copy_settings(doc: Document) -> dict[str, Any] | None:
    """Return the settings kept in Tally's copy of a user's limits (None: no copy)."""
    if not doc.exists:
        return None
    return {key: value for key, value in doc.fields.items() if key != "userId"}
