"""(v3) Where each month is heading: the `forecast` of my_usage and usage_analytics, from what they read.

A user's projection comes from their month document's daily breakdown and the month totals
their own document keeps (this month and the two before); the platform's from the rollup's
daily breakdown and its twelve months of history; a team's from its slices, which `my_usage`
reads for the team anyway. A top user's or team's month-end is their run rate so far (the
rollup's ranking keeps their month totals, not their days): no projection reads a document
the figures it accompanies do not already read. A past month's forecast is its actual total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import takewhile
from typing import Any

from tally.forecast import Forecast, actual, forecast
from tally.money import nanos_to_usd
from tally.timeutil import days_of, month_key
from tally.usage import Counts


def view(found: Forecast) -> dict[str, Any]:
    """Return a forecast as the SPEC writes it (USD, the crossing day as YYYY-MM-DD)."""
    return {
        "monthEnd": nanos_to_usd(found.month_end_nanos),
        "low": nanos_to_usd(found.low_nanos),
        "high": nanos_to_usd(found.high_nanos),
        "exceedsOn": found.exceeds_on.isoformat() if found.exceeds_on is not None else None,
        "basis": found.basis,
    }


def _daily(days: Mapping[str, Counts], month: str, count: int) -> list[int]:
    return [days.get(day, Counts()).cost_nanos for day in days_of(month)[:count]]


def project(
    *,
    month: str,
    days: Mapping[str, Counts],
    now: datetime,
    previous_months_nanos: Sequence[int] = (),
    limit_nanos: int | None = None,
) -> Forecast:
    """Return a month's forecast from its daily costs (projected for the current month, else its total).

    `previous_months_nanos` (most recent first) counts only back to the first month without
    cost: a user or a platform new this month, or back after a pause, is not blended with $0.
    """
    current = month_key(now)
    if month < current:
        return actual(
            daily_nanos=_daily(days, month, len(days_of(month))), limit_nanos=limit_nanos, month=month
        )
    if month > current:
        return actual(daily_nanos=[], limit_nanos=limit_nanos, month=month)
    clock = now.astimezone(UTC)
    return forecast(
        month=month,
        daily_nanos=_daily(days, month, now.day),
        today=now.day,
        previous_months_nanos=list(takewhile(lambda cost: cost > 0, previous_months_nanos)),
        limit_nanos=limit_nanos,
        day_fraction=(clock.hour * 3600 + clock.minute * 60 + clock.second) / 86400,
    )


def run_rate_month_end(cost_nanos: int, *, month: str, now: datetime) -> float:
    """Return a month-end in USD from the month's total so far (its actual total for a past month)."""
    if month != month_key(now):
        return nanos_to_usd(cost_nanos)
    length = len(days_of(month))
    elapsed = (now.day - 1) + (now.hour * 3600 + now.minute * 60 + now.second) / 86400
    return nanos_to_usd(round(cost_nanos * length / max(elapsed, 1.0)))
