"""Usage arithmetic: counters per month, type, feature, provider and day; limits status."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tally.money import nanos_to_usd
from tally.timeutil import day_key, month_key
from tally.values import Step

WARNING_FRACTION = (4, 5)  # 80 %
WARNING_PERCENT = 80.0


@dataclass
class Counts:
    """Cost in nano-USD, calls and billable runs."""

    cost_nanos: int = 0
    api_calls: int = 0
    billable_runs: int = 0

    def add(self, step: Step) -> None:
        """Count one step."""
        self.cost_nanos += step.cost_nanos
        self.api_calls += 1
        self.billable_runs += int(step.is_billable_run)

    def merge(self, other: Counts) -> None:
        """Add another counter into this one."""
        self.cost_nanos += other.cost_nanos
        self.api_calls += other.api_calls
        self.billable_runs += other.billable_runs

    def minus(self, other: Counts) -> Counts:
        """Return this counter less another."""
        return Counts(
            self.cost_nanos - other.cost_nanos,
            self.api_calls - other.api_calls,
            self.billable_runs - other.billable_runs,
        )

    def usd(self) -> dict[str, float | int]:
        """Return the response form (cost in USD)."""
        return {
            "cost": nanos_to_usd(self.cost_nanos),
            "apiCalls": self.api_calls,
            "billableRuns": self.billable_runs,
        }


def _counts_map() -> defaultdict[str, Counts]:
    return defaultdict(Counts)


@dataclass
class MonthDelta:
    """What a set of steps adds to one UTC month."""

    total: Counts = field(default_factory=Counts)
    unpriced: int = 0
    unpriced_models: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, model) -> steps
    by_type: defaultdict[str, Counts] = field(default_factory=_counts_map)
    features: defaultdict[str, Counts] = field(default_factory=_counts_map)
    providers: defaultdict[str, Counts] = field(default_factory=_counts_map)
    days: defaultdict[str, Counts] = field(default_factory=_counts_map)
    teams: defaultdict[str, Counts] = field(default_factory=_counts_map)
    feature_days: dict[tuple[str, str], int] = field(default_factory=dict)  # (feature, DD) -> cost

    def add(self, step: Step) -> None:
        """Count one step in every breakdown (under the names it is counted as)."""
        self.total.add(step)
        self.unpriced += int(step.unpriced)
        if (model := step.model_bucket) is not None:
            key = (step.provider_bucket, model)
            self.unpriced_models[key] = self.unpriced_models.get(key, 0) + 1
        self.by_type[step.usage_type.value].add(step)
        self.features[step.feature_bucket].add(step)
        self.providers[step.provider_bucket].add(step)
        self.days[day_key(step.timestamp)].add(step)
        if step.team_key is not None:
            self.teams[step.team_key].add(step)
        if step.cost_nanos:  # (v3) a feature's cost per day: what its anomalies are judged on
            key = (step.feature_bucket, day_key(step.timestamp)[-2:])
            self.feature_days[key] = self.feature_days.get(key, 0) + step.cost_nanos


def aggregate(steps: Iterable[Step]) -> dict[str, MonthDelta]:
    """Group steps by the UTC month of their own timestamps."""
    months: dict[str, MonthDelta] = {}
    for step in steps:
        months.setdefault(month_key(step.timestamp), MonthDelta()).add(step)
    return months


def counts_by(steps: Iterable[Step], key: Callable[[Step], str]) -> dict[str, Counts]:
    """Sum steps per name (`key` picks the feature or the provider)."""
    result: dict[str, Counts] = {}
    for step in steps:
        result.setdefault(key(step), Counts()).add(step)
    return result


def total(steps: Iterable[Step]) -> Counts:
    """Sum steps into one counter."""
    counts = Counts()
    for step in steps:
        counts.add(step)
    return counts


@dataclass(frozen=True)
class Limits:
    """A user's monthly budget."""

    monthly_cost_limit_nanos: int
    monthly_free_runs: int


@dataclass(frozen=True)
class Held:
    """A user's active reservations: cost and billable runs not yet recorded."""

    cost_nanos: int = 0
    runs: int = 0


def _at_least_warning(used: int, limit: int) -> bool:
    num, den = WARNING_FRACTION
    return used * den >= limit * num if limit > 0 else used > 0


def limits_status(used: Counts, limits: Limits, held: Held = Held()) -> dict[str, Any]:
    """Return the SPEC's `limits` object for one month's usage (remaining amounts net of holds)."""
    cost_limit, free_runs = limits.monthly_cost_limit_nanos, limits.monthly_free_runs
    return {
        "monthlyCostLimit": nanos_to_usd(cost_limit),
        "costRemaining": nanos_to_usd(max(0, cost_limit - used.cost_nanos - held.cost_nanos)),
        "monthlyFreeRuns": free_runs,
        "freeRunsRemaining": max(0, free_runs - used.billable_runs - held.runs),
        "exceeded": used.cost_nanos > cost_limit or used.billable_runs > free_runs,
        "warning": _at_least_warning(used.cost_nanos, cost_limit)
        or _at_least_warning(used.billable_runs, free_runs),
        "held": nanos_to_usd(held.cost_nanos),
        "heldRuns": held.runs,
    }


def limit_percent(used: Counts, limits: Limits) -> float:
    """Return the larger share of either limit used, in percent (0 limit: 0 or 100)."""

    def share(value: int, limit: int) -> float:
        if limit > 0:
            return 100.0 * value / limit
        return 100.0 if value > 0 else 0.0

    return max(
        share(used.cost_nanos, limits.monthly_cost_limit_nanos),
        share(used.billable_runs, limits.monthly_free_runs),
    )
