"""A user's limits as stored, and the free-tier entry measured against them.

The limits live in the user's `usage.limits` and in Tally's own copy (`TallyUserLimits/{uid}`);
a free-tier entry (the share of the limits used, `limitPercent`, with the limits it was
measured against) is kept in the user's month document and copied into a rollup's ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tally.config import Settings
from tally.usage import Limits
from tally.writes import Maximum

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
