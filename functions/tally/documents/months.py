"""A platform month: its shards (`TallyMonthlyUsageShards`) and its rollup (`TallyMonthlyUsage`).

Every recording adds its steps' counters to one shard of each month it touches; a rollup is
the sum of a month's shards, exact as of its `asOf`, and also keeps the month's ranking
(top users and free-tier candidates, as of the same instant), so answering analytics reads
no query whose cost could grow with users. A user's month document (`tally.documents.user_months`)
holds the same counters, for one user: `flat_month` reads any of them as flat counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tally import layout
from tally.documents import counters, limits
from tally.timeutil import MAX_AGE, month_end
from tally.usage import WARNING_PERCENT, Counts, MonthDelta
from tally.values import Document
from tally.writes import DELETE, CommitResult, Increment, Op, Replace, Write, merge_payload

MONTH = "month"  # queried: a month's documents of every kind
UNPRICED, BY_TYPE = counters.UNPRICED, counters.BY_TYPE
UNPRICED_MODELS = "unpricedModels"
FEATURES, PROVIDERS, DAYS, TEAMS = "features", "providers", "days", "teams"
# -> MonthDelta (teams: at most MAX_TEAMS, set_team's bound)
NAMED = {BY_TYPE: "by_type", FEATURES: "features", PROVIDERS: "providers", DAYS: "days", TEAMS: "teams"}
FEATURE_DAYS = "featureDays"  # (v3) featureDays.{feature}.{DD}: a feature's cost that day, nano-USD
ACTIVE_USERS = "activeUsers"  # a shard's count; a user's month has the flag `active`
ACTIVE = "active"
SESSIONS = "sessions"
AS_OF = "asOf"
Flat = Counter[tuple[str, ...]]  # a month's counters by field path

FINAL_AFTER = MAX_AGE + timedelta(days=1)  # no step is recorded into a month this long after it ended


def is_final(month: str, at: datetime) -> bool:
    """Return whether a rollup folded at `at` is final: only a repair or an import can change its month."""
    return at >= month_end(month) + FINAL_AFTER


COMPLETED, STEP_COUNT, DURATION = "completed", "stepCount", "durationMs"  # session counters (with ACTIVE)
SESSION_FIELDS = (ACTIVE, COMPLETED, STEP_COUNT, counters.COST, DURATION)
TOP_USERS_KEPT = 100  # the most `usage_analytics` may ask for
FREE_TIER_ROWS = 50  # with the top 100 and 12 months folded at 8 shards: 278 reads at most
FREE_TIER_PERCENT = WARNING_PERCENT
# The fields of a user's month a ranked row keeps (the top-users and free-tier rows need no more).
RANKED_FIELDS = ("userId", *counters.NAMES, *limits.NAMES, limits.LIMIT_PERCENT)


def _add(into: dict[str, Counts], named: Mapping[str, Any] | None) -> None:
    for name, fields in (named or {}).items():
        into.setdefault(name, Counts()).merge(counters.counts_of(fields))


def nested_counts(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """Return (provider, model) counts as a map of maps (names stay keys, never paths)."""
    nested: dict[str, dict[str, int]] = {}
    for (provider, model), value in counts.items():
        nested.setdefault(provider, {})[model] = value
    return nested


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
    teams: dict[str, Counts] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    feature_days: dict[str, dict[str, int]] = field(default_factory=dict)  # feature -> DD -> cost

    def add(self, doc: Mapping[str, Any]) -> None:
        """Add one stored shard (or rollup) document."""
        self.total.merge(counters.counts_of(doc))
        self.unpriced += int(doc.get(UNPRICED, 0))
        for provider, models in (doc.get(UNPRICED_MODELS) or {}).items():
            for model, steps in (models or {}).items():
                key = (provider, model)
                self.unpriced_models[key] = self.unpriced_models.get(key, 0) + int(steps)
        self.active_users += int(doc.get(ACTIVE_USERS, 0))
        _add(self.by_type, doc.get(BY_TYPE))
        _add(self.features, doc.get(FEATURES))
        _add(self.providers, doc.get(PROVIDERS))
        _add(self.days, doc.get(DAYS))
        _add(self.teams, doc.get(TEAMS))
        for feature, days in (doc.get(FEATURE_DAYS) or {}).items():
            into = self.feature_days.setdefault(feature, {})
            for day, cost in (days or {}).items():
                into[day] = into.get(day, 0) + int(cost)
        for key, value in (doc.get(SESSIONS) or {}).items():
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
            MONTH: month,
            AS_OF: as_of,
            "shards": shards,
            **counters.fields(self.total),
            UNPRICED: self.unpriced,
            UNPRICED_MODELS: nested_counts(self.unpriced_models),
            ACTIVE_USERS: self.active_users,
            BY_TYPE: counters.plain_map(self.by_type),
            FEATURES: counters.plain_map(self.features),
            PROVIDERS: counters.plain_map(self.providers),
            DAYS: counters.plain_map(self.days),
            TEAMS: counters.plain_map(self.teams),
            SESSIONS: dict(self.sessions),
            FEATURE_DAYS: {name: dict(days) for name, days in self.feature_days.items()},
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> MonthAggregate:
        """Read a rollup document back."""
        aggregate = cls()
        aggregate.add(doc)
        return aggregate


RANKING_FIELDS = ("topUsers", "freeTier", "latestAlerts")
# The month's latest alerts as usage_analytics lists them, kept with the ranking (no query per call).
ALERT_ROWS = 20
ALERT_FIELDS = (
    "alertId",
    "userId",
    "kind",
    "threshold",
    "used",
    "limit",
    "createdAt",
    "late",
    "deliveredAt",
    "scope",
    "window",
    "teamId",
)


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
        return dict(
            zip(RANKING_FIELDS, (list(self.top), list(self.free_tier), list(self.alerts)), strict=True)
        )

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


# Writes


def unpriced_models_change(delta: MonthDelta) -> dict[str, Any]:
    """Return the increments of the steps a month could not price, per provider and model."""
    return {
        provider: {model: Increment(count) for model, count in models.items()}
        for provider, models in nested_counts(delta.unpriced_models).items()
    }


def counters_change(delta: MonthDelta) -> dict[str, Any]:
    """Return the increments a month's steps add to a month document (totals and every breakdown)."""
    return {
        **counters.totals_change(delta),
        FEATURES: counters.increment_map(delta.features),
        PROVIDERS: counters.increment_map(delta.providers),
        DAYS: counters.increment_map(delta.days),
        TEAMS: counters.increment_map(delta.teams),
        UNPRICED_MODELS: unpriced_models_change(delta),
        FEATURE_DAYS: _feature_days(delta, Increment),
    }


def _feature_days(delta: MonthDelta, wrap: Any = int) -> dict[str, dict[str, Any]]:
    """Return a month's feature costs per day as featureDays.{feature}.{DD} (values wrapped by `wrap`)."""
    nested: dict[str, dict[str, Any]] = {}
    for (feature, day), cost in sorted(delta.feature_days.items()):
        nested.setdefault(feature, {})[day] = wrap(cost)
    return nested


def committed_day(result: CommitResult, path: str, delta: MonthDelta, day: str) -> tuple[int, dict[str, int]]:
    """Return a month document's cost on `day` (YYYY-MM-DD) and its features' there, as a commit left them.

    Only what the commit incremented: the day's total if it has steps that day, and each of
    their features.
    """
    dd = day[-2:]
    features = {
        feature: result.value(path, FEATURE_DAYS, feature, dd) for feature, d in delta.feature_days if d == dd
    }
    total = result.value(path, DAYS, day, counters.COST) if day in delta.days else 0
    return total, features


def counters_of(delta: MonthDelta) -> dict[str, Any]:
    """Return the counters of a new month document holding a month's steps."""
    return {
        **counters.fields(delta.total),
        UNPRICED: delta.unpriced,
        BY_TYPE: counters.plain_map(delta.by_type),
        FEATURES: counters.plain_map(delta.features),
        PROVIDERS: counters.plain_map(delta.providers),
        DAYS: counters.plain_map(delta.days),
        TEAMS: counters.plain_map(delta.teams),
        UNPRICED_MODELS: nested_counts(delta.unpriced_models),
        FEATURE_DAYS: _feature_days(delta),
    }


def shard_write(
    month: str, shard: int, delta: MonthDelta, *, new_user: bool = False, new_session: bool = False
) -> Write:
    """Return a recording's increments of a shard (`new_user`: active for the first time in the month)."""
    doc: dict[str, Any] = {MONTH: month, "shard": shard, **counters_change(delta)}
    if new_user:
        doc[ACTIVE_USERS] = Increment(1)
    if new_session:
        doc[SESSIONS] = {ACTIVE: Increment(1)}
    return Write(layout.shard_path(month, shard), Op.MERGE, merge_payload(doc))


def sessions_write(month: str, shard: int, sessions: Mapping[str, int]) -> Write:
    """Return the increments of a month's session counters in one shard."""
    change = {key: Increment(value) for key, value in sessions.items()}
    return Write(layout.shard_path(month, shard), Op.MERGE, {MONTH: month, "shard": shard, SESSIONS: change})


def completed_session(*, steps: int, cost_nanos: int, duration_ms: int) -> dict[str, int]:
    """Return what a finalized session adds to its completion month's session counters."""
    return {COMPLETED: 1, STEP_COUNT: steps, counters.COST: cost_nanos, DURATION: duration_ms}


def shard_cost(result: Any, month: str, shard: int) -> int:
    """Return a shard's cost as a commit's increments left it."""
    return int(result.value(layout.shard_path(month, shard), counters.COST))


def reopen_writes(months: Iterable[str], *, now: datetime, final_only: bool = True) -> list[Write]:
    """Return the writes reopening the rollups of months (those already final, by default).

    A month's rollup becomes final 36 days after the month ends (no step can be recorded
    into it any more) and is never folded again. A writer that changes such a month anyway
    (an import of old usage, a repair, a late finalization) deletes its `asOf`, so the next
    reader folds it again: the month is never frozen. An import or a repair does it once, at
    the end of its run (one write, not one per commit: the rollup is one document); a fold
    made in between is superseded.
    """
    chosen = sorted({month for month in months if not final_only or is_final(month, now)})
    return [Write(layout.rollup_path(month), Op.MERGE, {AS_OF: DELETE}) for month in chosen]


def reopened(writes: list[Write], *, now: datetime) -> list[Write]:
    """Return a commit that also reopens the rollup of every final month whose shards it writes."""
    months = {
        str(w.data[MONTH])
        for w in writes
        if w.path.startswith(layout.PLATFORM_SHARDS + "/") and isinstance(w.data.get(MONTH), str)
    }
    return writes + reopen_writes(months, now=now)


def rollup_write(
    *,
    month: str,
    aggregate: MonthAggregate,
    as_of: datetime,
    shards: int,
    version: Any,
    ranking: Ranking | None = None,
) -> Write:
    """Return the write of a month's rollup: created, or replaced only if unchanged since read.

    A rollup folded without a ranking drops the one it had: a ranking is only ever as of
    its own rollup's `asOf`.
    """
    document = aggregate.document(month=month, as_of=as_of, shards=shards)
    if version is None:
        if ranking is not None:
            document.update(ranking.fields())
        return Write(layout.rollup_path(month), Op.CREATE, document)
    document.update(ranking.fields() if ranking is not None else dict.fromkeys(RANKING_FIELDS, DELETE))
    replaced = {
        key: Replace(value) if isinstance(value, Mapping) else value for key, value in document.items()
    }
    return Write(layout.rollup_path(month), Op.UPDATE, replaced, version=version)


def rollup_of(month: str, doc: Document) -> Rollup:
    """Read a stored rollup (or the empty one of a month never folded)."""
    if not doc.exists:
        return Rollup.missing(month)
    fields = doc.fields
    return Rollup(
        month,
        MonthAggregate.from_document(fields),
        fields.get(AS_OF),
        doc.version,
        Ranking.from_document(fields),
    )


# A month as flat counters: what a user's month document and a platform shard have in common.


def flat_month(doc: Mapping[str, Any]) -> Flat:
    """Return the counters of a stored month (a user's month document, a shard, a rollup) by field path."""
    found: Flat = Counter()
    for name in (*counters.NAMES, UNPRICED):
        found[(name,)] += int(doc.get(name, 0))
    for key in NAMED:
        for name, stored in (doc.get(key) or {}).items():
            for counter in counters.NAMES:
                found[(key, name, counter)] += int((stored or {}).get(counter, 0))
    for provider, models in (doc.get(UNPRICED_MODELS) or {}).items():
        for model, steps in (models or {}).items():
            found[(UNPRICED_MODELS, provider, model)] += int(steps)
    for feature, days in (doc.get(FEATURE_DAYS) or {}).items():
        for day, cost in (days or {}).items():
            found[(FEATURE_DAYS, feature, day)] += int(cost)
    if ACTIVE_USERS in doc:
        found[(ACTIVE_USERS,)] += int(doc[ACTIVE_USERS])
    elif doc.get(ACTIVE) is True:
        found[(ACTIVE_USERS,)] += 1
    return found


def flat_delta(delta: MonthDelta) -> Flat:
    """Return what a user's steps of a month should leave in their month document, by field path."""
    return flat_month({**counters_of(delta), ACTIVE: delta.total.api_calls > 0})


ACTIVE_KEY = (ACTIVE_USERS,)  # the flat key of the users a month counts active
