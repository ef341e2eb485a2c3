"""A platform month as counters: shards add up into one, and one reads back from a document (pure).

A rollup also keeps the month's ranking (top users and free-tier candidates, as of the
same instant), so answering analytics reads no query whose cost could grow with users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tally.timeutil import MAX_AGE, month_end
from tally.usage import WARNING_PERCENT, Counts

FINAL_AFTER = MAX_AGE + timedelta(days=1)  # no step is recorded into a month this long after it ended


def is_final(month: str, at: datetime) -> bool:
    """Return whether a rollup folded at `at` is final: only a repair or an import can change its month."""
    return at >= month_end(month) + FINAL_AFTER


SESSION_FIELDS = ("active", "completed", "stepCount", "costNanos", "durationMs")
TOP_USERS_KEPT = 100  # the most `usage_analytics` may ask for
FREE_TIER_ROWS = 50  # with the top 100 and 12 months folded at 8 shards: 278 reads at most
FREE_TIER_PERCENT = WARNING_PERCENT
# The fields of a user's month a ranked row keeps (the top-users and free-tier rows need no more).
RANKED_FIELDS = (
    "userId",
    "costNanos",
    "apiCalls",
    "billableRuns",
    "monthlyCostLimitNanos",
    "monthlyFreeRuns",
    "limitPercent",
)


def _add(into: dict[str, Counts], named: Mapping[str, Any] | None) -> None:
    for name, fields in (named or {}).items():
        into.setdefault(name, Counts()).merge(Counts.from_fields(fields))


def nested_counts(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """Return (provider, model) counts as a map of maps (names stay keys, never paths)."""
    nested: dict[str, dict[str, int]] = {}
    for (provider, model), value in counts.items():
        nested.setdefault(provider, {})[model] = value
    return nested


def _fields(named: Mapping[str, Counts]) -> dict[str, dict[str, int]]:
    return {name: counts.fields() for name, counts in named.items()}


@dataclass
class MonthAggregate:
    """The platform's counters for one month (a shard, or the sum of all shards)."""

    total: Counts = field(default_factory=Counts)
    unpriced: int = 0
    unpriced_models: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, model) -> steps
    active_users: int = 0
    by_type: dict[str, Counts] = field(default_factory=dict)
    features: dict[str, Counts] = field(default_factory=dict)
    providers: dict[str, Counts] = field(default_factory=dict)
    days: dict[str, Counts] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)

    def add(self, doc: Mapping[str, Any]) -> None:
        """Add one stored shard (or rollup) document."""
        self.total.merge(Counts.from_fields(doc))
        self.unpriced += int(doc.get("unpricedSteps", 0))
        for provider, models in (doc.get("unpricedModels") or {}).items():
            for model, steps in (models or {}).items():
                key = (provider, model)
                self.unpriced_models[key] = self.unpriced_models.get(key, 0) + int(steps)
        self.active_users += int(doc.get("activeUsers", 0))
        _add(self.by_type, doc.get("byType"))
        _add(self.features, doc.get("features"))
        _add(self.providers, doc.get("providers"))
        _add(self.days, doc.get("days"))
        for key, value in (doc.get("sessions") or {}).items():
            if key in SESSION_FIELDS:
                self.sessions[key] = self.sessions.get(key, 0) + int(value)

    @classmethod
    def fold(cls, docs: Iterable[Mapping[str, Any]]) -> MonthAggregate:
        """Add up the shards of one month."""
        merged = cls()
        for doc in docs:
            merged.add(doc)
        return merged

    def document(self, *, month: str, as_of: datetime, shards: int) -> dict[str, Any]:
        """Return the rollup document holding this aggregate, exact as of `as_of`."""
        return {
            "month": month,
            "asOf": as_of,
            "shards": shards,
            **self.total.fields(),
            "unpricedSteps": self.unpriced,
            "unpricedModels": nested_counts(self.unpriced_models),
            "activeUsers": self.active_users,
            "byType": _fields(self.by_type),
            "features": _fields(self.features),
            "providers": _fields(self.providers),
            "days": _fields(self.days),
            "sessions": dict(self.sessions),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> MonthAggregate:
        """Read a rollup document back."""
        aggregate = cls()
        aggregate.add(doc)
        return aggregate


# The month's latest alerts as usage_analytics lists them, kept with the ranking (no query per call).
ALERT_ROWS = 20
ALERT_FIELDS = ("alertId", "userId", "kind", "threshold", "used", "limit", "createdAt", "late", "deliveredAt")


def _kept(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {key: doc[key] for key in RANKED_FIELDS if key in doc}


@dataclass(frozen=True)
class Ranking:
    """A month's top users (cost descending), free-tier candidates (percent descending) and latest alerts."""

    top: tuple[dict[str, Any], ...] = ()
    free_tier: tuple[dict[str, Any], ...] = ()
    alerts: tuple[dict[str, Any], ...] = ()  # newest first

    @classmethod
    def of(
        cls,
        top: Iterable[Mapping[str, Any]],
        free_tier: Iterable[Mapping[str, Any]],
        alerts: Iterable[Mapping[str, Any]] = (),
    ) -> Ranking:
        """Keep only the fields the rows need, of at most the kept number of users (and alerts) each."""
        return cls(
            tuple(_kept(doc) for doc in top)[:TOP_USERS_KEPT],
            tuple(_kept(doc) for doc in free_tier)[:FREE_TIER_ROWS],
            tuple({key: doc[key] for key in ALERT_FIELDS if key in doc} for doc in alerts)[:ALERT_ROWS],
        )

    def reads(self) -> int:
        """Return the documents its three queries read (a query that finds nothing costs one)."""
        return max(1, len(self.top)) + max(1, len(self.free_tier)) + max(1, len(self.alerts))

    def fields(self) -> dict[str, Any]:
        """Return the rollup fields that hold this ranking."""
        return {
            "topUsers": list(self.top),
            "freeTier": list(self.free_tier),
            "latestAlerts": list(self.alerts),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Ranking | None:
        """Read a stored ranking back (None when the rollup was folded without one)."""
        if "topUsers" not in doc:
            return None
        return cls.of(doc.get("topUsers") or (), doc.get("freeTier") or (), doc.get("latestAlerts") or ())


@dataclass(frozen=True)
class Rollup:
    """A stored rollup: the aggregate, the instant it is exact as of, its version and ranking."""

    month: str
    aggregate: MonthAggregate
    as_of: datetime | None
    version: Any
    ranking: Ranking | None = None

    @classmethod
    def missing(cls, month: str) -> Rollup:
        """Return the rollup of a month never folded."""
        return cls(month, MonthAggregate(), None, None)
