"""Limits objects (plans, a user's overrides), the precedence rule, the gate's decision and scopes (pure).

A limits object leaves any field unset. A user's limits are resolved per field: their own
override, else their plan's value, else the `default` plan's; a field unset everywhere means
no limit in that dimension. The `default` plan always sets the two monthly fields (from the
`TALLY_DEFAULT_*` settings unless an admin set them), so every user has a monthly budget.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from tally.money import nanos_to_usd
from tally.usage import Counts, Held, Limits

DEFAULT_PLAN = "default"
MAX_FEATURES = 50  # per limits object
MAX_PLANS = 50  # every plan lives in one catalog document (see tally.documents.plan_catalog)

# Refusals, in the order the SPEC names them (the first that applies is the answer).
UNPRICED = "UNPRICED"
PLATFORM_BUDGET = "PLATFORM_BUDGET"
MONTHLY_COST_LIMIT = "MONTHLY_COST_LIMIT"
DAILY_COST_LIMIT = "DAILY_COST_LIMIT"
FREE_RUNS = "FREE_RUNS"
DAILY_RUNS = "DAILY_RUNS"
FEATURE_COST_LIMIT = "FEATURE_COST_LIMIT"
FEATURE_RUNS = "FEATURE_RUNS"


@dataclass(frozen=True)
class FeatureLimits:
    """One feature's limits for a user (runs count every step of the feature, billable or not)."""

    monthly_cost_nanos: int | None = None
    daily_cost_nanos: int | None = None
    monthly_runs: int | None = None
    daily_runs: int | None = None

    def overlay(self, under: FeatureLimits | None) -> FeatureLimits:
        """Return these limits, each unset field taken from `under`."""
        return _overlay(self, under)

    @property
    def empty(self) -> bool:
        """Return whether no field is set."""
        return all(getattr(self, f.name) is None for f in fields(self))


@dataclass(frozen=True)
class LimitSet:
    """A limits object: a plan's, a user's overrides, or a user's resolved limits."""

    monthly_cost_nanos: int | None = None
    monthly_free_runs: int | None = None
    daily_cost_nanos: int | None = None
    daily_free_runs: int | None = None
    features: Mapping[str, FeatureLimits] = field(default_factory=dict)

    def overlay(self, under: LimitSet | None) -> LimitSet:
        """Return these limits, each unset field (and each feature's) taken from `under`."""
        if under is None:
            return self
        names = list(self.features) + [name for name in under.features if name not in self.features]
        merged = {
            name: own.overlay(under.features.get(name))
            if (own := self.features.get(name))
            else under.features[name]
            for name in names
        }
        return replace(_overlay(self, under), features=merged)

    @property
    def month(self) -> Limits:
        """Return the monthly budget (the v2 limits); resolved limits always have it."""
        assert self.monthly_cost_nanos is not None
        assert self.monthly_free_runs is not None
        return Limits(self.monthly_cost_nanos, self.monthly_free_runs)


_L = TypeVar("_L", FeatureLimits, LimitSet)


def _overlay(own: _L, under: _L | None) -> _L:
    if under is None:
        return own
    changes = {
        f.name: getattr(under, f.name)
        for f in fields(own)
        if f.name != "features" and getattr(own, f.name) is None
    }
    return replace(own, **changes)


def default_plan(limits: Limits) -> LimitSet:
    """Return the `default` plan the settings give."""
    return LimitSet(
        monthly_cost_nanos=limits.monthly_cost_limit_nanos, monthly_free_runs=limits.monthly_free_runs
    )


def resolve(*, override: LimitSet, plan: LimitSet | None, default: LimitSet) -> LimitSet:
    """Return a user's limits: per field, their override, else their plan's, else the default plan's."""
    return override.overlay(plan).overlay(default)


@dataclass(frozen=True)
class Windows:
    """What the gate counts for one user now: the month and day, holds, and features by name.

    Feature counters count every step (`api_calls` are the runs) and holds count one run each.
    """

    month: Counts = field(default_factory=Counts)
    day: Counts = field(default_factory=Counts)
    held: Held = field(default_factory=Held)
    feature_month: Mapping[str, Counts] = field(default_factory=dict)
    feature_day: Mapping[str, Counts] = field(default_factory=dict)
    feature_held: Mapping[str, Held] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    """One limited scope: `<owner>.<window>.<measure>`, its figures, and the refusal it gives."""

    scope: str
    used: int
    held: int
    limit: int
    reason: str
    cost: bool  # nano-USD (else a count)

    @property
    def over(self) -> bool:
        """Return whether what is used and held passes the limit."""
        return self.used + self.held > self.limit

    def view(self) -> dict[str, Any]:
        """Return the SPEC's `{scope, used, held, limit, remaining}` (USD for costs)."""
        remaining = max(0, self.limit - self.used - self.held)
        if self.cost:
            return {
                "scope": self.scope,
                "used": nanos_to_usd(self.used),
                "held": nanos_to_usd(self.held),
                "limit": nanos_to_usd(self.limit),
                "remaining": nanos_to_usd(remaining),
            }
        return {
            "scope": self.scope,
            "used": self.used,
            "held": self.held,
            "limit": self.limit,
            "remaining": remaining,
        }


def scopes(limits: LimitSet, windows: Windows, *, feature: str | None = None) -> Iterator[Scope]:
    """Yield every limited scope in the gate's order (with `feature`: only that feature's)."""
    held = windows.held
    month, day = windows.month, windows.day
    if limits.monthly_cost_nanos is not None:
        yield Scope(
            "user.month.cost",
            month.cost_nanos,
            held.cost_nanos,
            limits.monthly_cost_nanos,
            MONTHLY_COST_LIMIT,
            True,
        )
    if limits.daily_cost_nanos is not None:
        yield Scope(
            "user.day.cost", day.cost_nanos, held.cost_nanos, limits.daily_cost_nanos, DAILY_COST_LIMIT, True
        )
    if limits.monthly_free_runs is not None:
        yield Scope(
            "user.month.runs", month.billable_runs, held.runs, limits.monthly_free_runs, FREE_RUNS, False
        )
    if limits.daily_free_runs is not None:
        yield Scope("user.day.runs", day.billable_runs, held.runs, limits.daily_free_runs, DAILY_RUNS, False)
    named = sorted(limits.features.items()) if feature is None else [(feature, limits.features.get(feature))]
    found = [(name, own) for name, own in named if own is not None]
    for measure in ("cost", "runs"):  # every feature's costs come before any feature's runs
        for name, own in found:
            yield from _feature_scopes(name, own, windows, measure)


def _feature_scopes(name: str, own: FeatureLimits, windows: Windows, measure: str) -> Iterator[Scope]:
    held = windows.feature_held.get(name, Held())
    for window, used, cost_limit, runs_limit in (
        ("month", windows.feature_month.get(name, Counts()), own.monthly_cost_nanos, own.monthly_runs),
        ("day", windows.feature_day.get(name, Counts()), own.daily_cost_nanos, own.daily_runs),
    ):
        scope = f"feature:{name}.{window}.{measure}"
        if measure == "cost" and cost_limit is not None:
            yield Scope(scope, used.cost_nanos, held.cost_nanos, cost_limit, FEATURE_COST_LIMIT, True)
        if measure == "runs" and runs_limit is not None:
            yield Scope(scope, used.api_calls, held.runs, runs_limit, FEATURE_RUNS, False)


RUN_REASONS = frozenset({FREE_RUNS, DAILY_RUNS})


def refusal(limits: LimitSet, windows: Windows, *, billable: bool, feature: str | None) -> str | None:
    """Return why a reservation is refused (None: allowed), its own hold already counted in `windows`.

    A user's run limits count billable runs, so they bind only a billable reservation; a
    feature's runs count every step, so its limits bind every reservation naming it.
    """
    for scope in (
        scopes(limits, windows, feature=feature) if feature is not None else _user_scopes(limits, windows)
    ):
        if scope.over and (billable or scope.reason not in RUN_REASONS):
            return scope.reason
    return None


def _user_scopes(limits: LimitSet, windows: Windows) -> Iterator[Scope]:
    return (scope for scope in scopes(limits, windows) if not scope.scope.startswith("feature:"))


def limits_view(limits: LimitSet) -> dict[str, Any]:
    """Return a limits object as the SPEC writes it (USD; unset fields left out)."""
    view: dict[str, Any] = {}
    for key, value, cost in (
        ("monthlyCostLimit", limits.monthly_cost_nanos, True),
        ("monthlyFreeRuns", limits.monthly_free_runs, False),
        ("dailyCostLimit", limits.daily_cost_nanos, True),
        ("dailyFreeRuns", limits.daily_free_runs, False),
    ):
        if value is not None:
            view[key] = nanos_to_usd(value) if cost else value
    features = {}
    for name, own in sorted(limits.features.items()):
        entry = {
            key: nanos_to_usd(value) if cost else value
            for key, value, cost in (
                ("monthlyCostLimit", own.monthly_cost_nanos, True),
                ("dailyCostLimit", own.daily_cost_nanos, True),
                ("monthlyRuns", own.monthly_runs, False),
                ("dailyRuns", own.daily_runs, False),
            )
            if value is not None
        }
        if entry:
            features[name] = entry
    if features:
        view["features"] = features
    return view


@dataclass(frozen=True)
class TeamLimits:
    """A team's limits (None: no limit in that dimension)."""

    monthly_cost_nanos: int | None = None
    monthly_runs: int | None = None
    daily_cost_nanos: int | None = None
    daily_runs: int | None = None

    def limit(self, *, monthly: bool, cost: bool) -> int | None:
        """Return the limit of the month or the day, of cost or of billable runs."""
        if cost:
            return self.monthly_cost_nanos if monthly else self.daily_cost_nanos
        return self.monthly_runs if monthly else self.daily_runs


def team_limits_view(limits: TeamLimits) -> dict[str, Any]:
    """Return a team's limits as the SPEC writes them (USD; unset ones left out)."""
    shown = {
        "monthlyCostLimit": None
        if limits.monthly_cost_nanos is None
        else nanos_to_usd(limits.monthly_cost_nanos),
        "monthlyFreeRuns": limits.monthly_runs,
        "dailyCostLimit": None if limits.daily_cost_nanos is None else nanos_to_usd(limits.daily_cost_nanos),
        "dailyFreeRuns": limits.daily_runs,
    }
    return {key: value for key, value in shown.items() if value is not None}
