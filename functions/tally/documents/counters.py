"""The counter triple stored in steps' aggregates: cost in nano-USD, calls, billable runs.

Every aggregate Tally keeps (a user's months and lifetime, a user's month, a shard, a
rollup, a session's stats, their breakdowns by name) stores a `Counts` as these three
fields; this module is the one place that spells them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tally.usage import Counts, MonthDelta
from tally.writes import CommitResult, Increment

COST = "costNanos"
CALLS = "apiCalls"
RUNS = "billableRuns"
NAMES = (COST, CALLS, RUNS)
BY_TYPE, UNPRICED = "byType", "unpricedSteps"  # a month's totals also keep these


def fields(counts: Counts) -> dict[str, int]:
    """Return the stored form of a counter."""
    return {COST: counts.cost_nanos, CALLS: counts.api_calls, RUNS: counts.billable_runs}


def counts_of(data: Mapping[str, Any] | None) -> Counts:
    """Read a stored counter; absent means zero."""
    data = data or {}
    return Counts(int(data.get(COST, 0)), int(data.get(CALLS, 0)), int(data.get(RUNS, 0)))


def increments(counts: Counts) -> dict[str, Increment]:
    """Return increments of the three fields (zeros too: readers find every field, commits return them)."""
    return {name: Increment(value) for name, value in fields(counts).items()}


def plain_map(named: Mapping[str, Counts]) -> dict[str, dict[str, int]]:
    """Return a breakdown by name in its stored form."""
    return {name: fields(counts) for name, counts in named.items()}


def increment_map(named: Mapping[str, Counts]) -> dict[str, dict[str, Increment]]:
    """Return a breakdown by name as increments."""
    return {name: increments(counts) for name, counts in named.items()}


def named_counts(data: Mapping[str, Any] | None) -> dict[str, Counts]:
    """Read a stored breakdown by name."""
    return {name: counts_of(value) for name, value in (data or {}).items()}


def committed(result: CommitResult, path: str, *at: str) -> Counts:
    """Return a counter as a commit's increments left it (`at`: the map holding it)."""
    return Counts(*(result.value(path, *at, name) for name in NAMES))


def totals_change(delta: MonthDelta) -> dict[str, Any]:
    """Return the increments of a month's totals, by type, and unpriced steps (`usage.months` keeps these)."""
    change: dict[str, Any] = increments(delta.total)
    change[BY_TYPE] = increment_map(delta.by_type)
    if delta.unpriced:
        change[UNPRICED] = Increment(delta.unpriced)
    return change


def totals_of(stored: Mapping[str, Any] | None) -> tuple[Counts, dict[str, Counts], int]:
    """Read a month's totals, its totals by type, and its unpriced steps."""
    stored = stored or {}
    return counts_of(stored), named_counts(stored.get(BY_TYPE)), int(stored.get(UNPRICED, 0))
