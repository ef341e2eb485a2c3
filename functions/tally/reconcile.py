"""Reconcile a month: recompute every aggregate from the step documents, report and repair differences.

Everything is read at one instant `T` (a consistent snapshot), so the stored aggregates
and the steps they should add up to are compared as of the same moment. A repair adds
the difference (`Increment(expected - stored)`) instead of overwriting, so a step
recorded while reconcile runs is never lost. Memory stays bounded: steps are read in
pages ordered by path, so each user's steps arrive together and are checked and
forgotten before the next user's; only the platform's month (bounded by the name
bounds) is kept whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from tally import alerts, folding, layout, plans
from tally.config import Settings
from tally.recording import limits_of
from tally.rollup import SESSION_FIELDS, MonthAggregate
from tally.timeutil import month_key, months_back
from tally.usage import WARNING_PERCENT, Counts, Limits, MonthDelta, limit_percent
from tally.values import CostSource, Document, Step, Units, UsageType
from tally.writes import CommitResult, Increment, Op, Write, batches

PAGE_SIZE = 500
REPAIR_SHARD = 0  # platform repairs are added to this shard (any shard would do: they are summed)
COUNTERS = ("costNanos", "apiCalls", "billableRuns")

SessionsBy = Literal["created", "completed"]


class ReconcileStore(Protocol):
    """The store operations reconcile needs (every read at one snapshot `read_time`)."""

    shards: int

    def read(self, paths: Sequence[str], *, read_time: datetime | None = None) -> dict[str, Document]: ...

    def commit(self, writes: Sequence[Write]) -> CommitResult: ...

    def commit_each(self, groups: Sequence[Sequence[Write]], *, workers: int = 8) -> list[bool]: ...

    def month_steps(
        self, *, month: str, read_time: datetime, limit: int, after: str | None
    ) -> list[Document]: ...

    def count_month_steps(self, *, month: str, read_time: datetime) -> int: ...

    def user_lifetime(self, *, user_id: str, read_time: datetime) -> Counts: ...

    def user_session_counts(self, *, user_id: str, read_time: datetime) -> dict[str, int]: ...

    def month_sessions(
        self, *, month: str, by: SessionsBy, shard: int, read_time: datetime, limit: int, after: str | None
    ) -> list[Document]: ...

    def user_holds(self, *, user_id: str, read_time: datetime | None) -> list[Document]: ...

    def shard_beyond(self, count: int) -> Document | None: ...


class ShardCountMismatch(ValueError):
    """Platform shards exist beyond the configured count: this is not the deployed configuration."""


@dataclass(frozen=True)
class Difference:
    """One field whose stored value is not what the steps add up to."""

    path: str
    field: str
    stored: Any
    expected: Any

    def line(self) -> str:
        """Return the report line."""
        return f"{self.path} {self.field}: stored {self.stored}, recomputed {self.expected}"


@dataclass
class Report:
    """What a reconcile run found (and repaired)."""

    month: str
    steps: int = 0
    users: int = 0
    differences: list[Difference] = field(default_factory=list)
    fixed: bool = False

    def summary(self) -> str:
        """Return the summary line."""
        line = f"reconcile: {len(self.differences)} differences"
        if self.differences and self.fixed:
            line += f", {len(self.differences)} repaired"
        return f"{line} ({self.month}: {self.steps} steps of {self.users} users)"


def step_of(data: Mapping[str, Any]) -> Step:
    """Return a stored step as a value (older steps, without counted names, count under their own)."""
    return Step(
        operation_id=str(data.get("operationId", "")),
        usage_type=UsageType(data.get("usageType", "API")),
        feature=str(data["feature"]),
        provider=str(data["provider"]),
        cost_nanos=int(data["costNanos"]),
        is_billable_run=bool(data.get("isBillableRun", False)),
        timestamp=data["timestamp"],
        feature_key=data.get("featureKey"),
        provider_key=data.get("providerKey"),
        cost_source=CostSource(data.get("costSource", CostSource.CLIENT.value)),
        units=Units(str(units["model"])) if isinstance(units := data.get("units"), Mapping) else None,
        model_key=data.get("modelKey"),
    )


class Repairs:
    """Differences found, and the writes that repair them (grouped per document)."""

    def __init__(self) -> None:
        self.differences: list[Difference] = []
        self.alerts: list[alerts.Alert] = []  # missing alerts, to create
        self._data: dict[str, dict[str, Any]] = {}

    def missing_alerts(
        self, store: ReconcileStore, wanted: Sequence[alerts.Alert], read_time: datetime
    ) -> None:
        """Note the alerts that should exist and do not."""
        if not wanted:
            return
        docs = store.read([layout.alert_path(a.alert_id) for a in wanted], read_time=read_time)
        for alert in wanted:
            path = layout.alert_path(alert.alert_id)
            if not docs[path].exists:
                self.differences.append(
                    Difference(path, "alert", None, f"{alert.kind.value} {alert.threshold}%")
                )
                self.alerts.append(alert)

    def _put(self, path: str, keys: Sequence[str], value: Any) -> None:
        node = self._data.setdefault(path, {})
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    def counter(self, path: str, keys: Sequence[str], stored: int, expected: int) -> None:
        """Compare one counter; repair it by adding the difference."""
        if stored != expected:
            self.differences.append(Difference(path, ".".join(keys), stored, expected))
            self._put(path, keys, Increment(expected - stored))

    def value(self, path: str, keys: Sequence[str], stored: Any, expected: Any) -> None:
        """Compare one plain value; repair it by setting it."""
        if stored != expected:
            self.differences.append(Difference(path, ".".join(keys), stored, expected))
            self._put(path, keys, expected)

    def counts(
        self, path: str, keys: Sequence[str], stored: Mapping[str, Any] | None, expected: Counts
    ) -> None:
        """Compare the three counters of one entry."""
        stored = stored or {}
        for name, value in expected.fields().items():
            self.counter(path, [*keys, name], int(stored.get(name, 0)), value)

    def named(
        self, path: str, keys: Sequence[str], stored: Mapping[str, Any] | None, expected: Mapping[str, Counts]
    ) -> None:
        """Compare a map of named counters (a name stored but not expected must come to zero)."""
        stored = stored or {}
        for name in sorted(set(stored) | set(expected)):
            self.counts(path, [*keys, name], stored.get(name), expected.get(name, Counts()))

    def writes(self, context: Mapping[str, Mapping[str, Any]]) -> list[Write]:
        """Return one merge write per document, with `context` fields (ids) for documents to recreate."""
        return [
            Write(path, Op.MERGE, {**context.get(path, {}), **data})
            for path, data in sorted(self._data.items())
        ]


def _pages(fetch: Callable[[str | None], list[Document]]) -> Iterator[list[Document]]:
    after: str | None = None
    while page := fetch(after):
        yield page
        if len(page) < PAGE_SIZE:
            return
        after = page[-1].path


def check_user(
    *,
    store: ReconcileStore,
    repairs: Repairs,
    user_id: str,
    month: str,
    delta: MonthDelta,
    settings: Settings,
    read_time: datetime,
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """Compare one user's documents with their recomputed month; return the fields repairs must carry."""
    user, user_month, copy = (
        layout.user_path(user_id),
        layout.user_month_path(user_id, month),
        layout.limits_path(user_id),
    )
    docs = store.read([user, user_month, copy], read_time=read_time)
    usage = docs[user].fields.get("usage") or {}
    stored_month = docs[user_month].fields
    kept = docs[copy].fields
    limits = (
        Limits(int(kept["monthlyCostLimitNanos"]), int(kept["monthlyFreeRuns"]))
        if "monthlyCostLimitNanos" in kept
        else limits_of(usage, settings)
    )
    # The user's month document: totals and breakdowns.
    repairs.counts(user_month, [], stored_month, delta.total)
    repairs.counter(user_month, ["unpricedSteps"], int(stored_month.get("unpricedSteps", 0)), delta.unpriced)
    repairs.named(user_month, ["byType"], stored_month.get("byType"), delta.by_type)
    repairs.named(user_month, ["features"], stored_month.get("features"), delta.features)
    repairs.named(user_month, ["providers"], stored_month.get("providers"), delta.providers)
    repairs.value(user_month, ["active"], stored_month.get("active"), True)
    percent = limit_percent(delta.total, limits)
    stored_percent = stored_month.get("limitPercent")
    if percent >= WARNING_PERCENT and (
        not isinstance(stored_percent, int | float) or abs(stored_percent - percent) >= plans.FREE_TIER_STEP
    ):
        repairs.value(user_month, ["limitPercent"], stored_percent, percent)
        for name, value in plans.limits_fields(limits).items():
            repairs.value(user_month, [name], stored_month.get(name), value)
    # users/{uid}.usage: the month (while the document keeps it), lifetime, sessions, limits.
    if month in months_back(month_key(now), plans.USER_MONTHS_KEPT):
        stored = (usage.get("months") or {}).get(month) or {}
        repairs.counts(user, ["usage", "months", month], stored, delta.total)
        repairs.named(user, ["usage", "months", month, "byType"], stored.get("byType"), delta.by_type)
        if delta.unpriced or stored.get("unpricedSteps"):
            repairs.counter(
                user,
                ["usage", "months", month, "unpricedSteps"],
                int(stored.get("unpricedSteps", 0)),
                delta.unpriced,
            )
    repairs.counts(
        user,
        ["usage", "lifetime"],
        usage.get("lifetime"),
        store.user_lifetime(user_id=user_id, read_time=read_time),
    )
    sessions = usage.get("sessions") or {}
    for key, value in store.user_session_counts(user_id=user_id, read_time=read_time).items():
        repairs.counter(user, ["usage", "sessions", key], int(sessions.get(key, 0)), value)
    if "monthlyCostLimitNanos" in kept:
        stored_limits = usage.get("limits") or {}
        for name, value in plans.limits_fields(limits).items():
            repairs.value(user, ["usage", "limits", name], stored_limits.get(name), value)
    holds = store.user_holds(user_id=user_id, read_time=read_time)
    for counter, status in (("held", "active"), ("pending", "pending")):
        stored_holds = usage.get(counter) or {}
        mine = [h.fields for h in holds if h.fields.get("status") == status]
        cost = sum(int(h.get("estimateNanos", 0)) for h in mine)
        runs = sum(int(h.get("runs", 0)) for h in mine)
        repairs.counter(user, ["usage", counter, "costNanos"], int(stored_holds.get("costNanos", 0)), cost)
        repairs.counter(user, ["usage", counter, "runs"], int(stored_holds.get("runs", 0)), runs)
    wanted = alerts.user_alerts(
        user_id=user_id,
        month=month,
        before=Counts(),
        after=delta.total,
        limits=limits,
        raised_by="reconcile",
        late=True,
    )
    repairs.missing_alerts(store, wanted, read_time)
    return {user_month: {"userId": user_id, "month": month}}


def _month_sessions(
    store: ReconcileStore, month: str, by: SessionsBy, read_time: datetime
) -> Iterator[Document]:
    for shard in range(layout.SWEEP_SHARDS):

        def fetch(after: str | None, shard: int = shard) -> list[Document]:
            return store.month_sessions(
                month=month, by=by, shard=shard, read_time=read_time, limit=PAGE_SIZE, after=after
            )

        for page in _pages(fetch):
            yield from page


def expected_sessions(store: ReconcileStore, month: str, read_time: datetime) -> dict[str, int]:
    """Return the platform's session counters for a month, from the session documents.

    `active` counts the sessions created in the month that no finalizer has counted yet;
    the others add up the summaries of the sessions completed in the month and finalized.
    """
    expected = dict.fromkeys(SESSION_FIELDS, 0)
    expected["active"] = sum(
        1
        for doc in _month_sessions(store, month, "created", read_time)
        if doc.fields.get("finalizedAt") is None
    )
    for doc in _month_sessions(store, month, "completed", read_time):
        summary = doc.fields.get("summary") or {}
        if doc.fields.get("finalizedAt") is None or not summary:
            continue
        expected["completed"] += 1
        expected["stepCount"] += int(summary.get("stepCount", 0))
        expected["costNanos"] += int(summary.get("totalCostNanos", 0))
        expected["durationMs"] += round(float(summary.get("durationSeconds", 0)) * 1000)
    return expected


def reconcile(
    *,
    store: ReconcileStore,
    month: str,
    settings: Settings,
    now: datetime,
    fix: bool,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Recompute a month's aggregates from its steps, as of `now`; with `fix`, repair what differs.

    Refuses to run with fewer shards than the platform has (`ShardCountMismatch`): it would
    miss the others' counts and "repair" them into shard 0, counting them twice.
    """
    if (extra := store.shard_beyond(store.shards)) is not None:
        raise ShardCountMismatch(
            f"{extra.path} exists, but TALLY_AGGREGATE_SHARDS is {store.shards}: "
            "use the value the functions are deployed with"
        )
    read_time = now
    report = Report(month=month)
    repairs = Repairs()
    context: dict[str, dict[str, Any]] = {}
    total = store.count_month_steps(month=month, read_time=read_time)
    platform = MonthDelta()
    users = 0
    current: str | None = None
    delta = MonthDelta()

    def flush() -> None:
        if current is not None:
            context.update(
                check_user(
                    store=store,
                    repairs=repairs,
                    user_id=current,
                    month=month,
                    delta=delta,
                    settings=settings,
                    read_time=read_time,
                    now=now,
                )
            )

    for page in _pages(
        lambda after: store.month_steps(month=month, read_time=read_time, limit=PAGE_SIZE, after=after)
    ):
        for doc in page:
            owner = layout.step_owner(doc.path)
            if owner is None:
                continue
            if owner != current:
                flush()
                current, delta, users = owner, MonthDelta(), users + 1
            step = step_of(doc.fields)
            delta.add(step)
            platform.add(step)
            report.steps += 1
        if progress is not None:
            progress(report.steps, total)
    flush()
    report.users = users
    # The platform's month: the sum of its shards, as of the same instant.
    shards = store.read([layout.shard_path(month, n) for n in range(store.shards)], read_time=read_time)
    stored = MonthAggregate.fold(doc.fields for doc in shards.values() if doc.exists)
    repair_path = layout.shard_path(month, REPAIR_SHARD)
    repairs.counts(repair_path, [], stored.total.fields(), platform.total)
    repairs.counter(repair_path, ["unpricedSteps"], stored.unpriced, platform.unpriced)
    repairs.counter(repair_path, ["activeUsers"], stored.active_users, users)
    for provider, model in sorted(set(stored.unpriced_models) | set(platform.unpriced_models)):
        repairs.counter(
            repair_path,
            ["unpricedModels", provider, model],
            stored.unpriced_models.get((provider, model), 0),
            platform.unpriced_models.get((provider, model), 0),
        )
    pairs = {
        "byType": (stored.by_type, platform.by_type),
        "features": (stored.features, platform.features),
        "providers": (stored.providers, platform.providers),
        "days": (stored.days, platform.days),
    }
    for key, (found, expected) in pairs.items():
        repairs.named(repair_path, [key], {name: counts.fields() for name, counts in found.items()}, expected)
    for key, value in expected_sessions(store, month, read_time).items():
        repairs.counter(repair_path, ["sessions", key], stored.sessions.get(key, 0), value)
    context[repair_path] = {"month": month, "shard": REPAIR_SHARD}
    if settings.platform_budget_nanos is not None:
        wanted = alerts.platform_alerts(
            month=month,
            total=platform.total.cost_nanos,
            budget=settings.platform_budget_nanos,
            raised_by="reconcile",
            late=True,
        )
        repairs.missing_alerts(store, wanted, read_time)
    report.differences = repairs.differences
    if fix:
        for commit in batches(repairs.writes(context)):
            store.commit(commit)
        alerts.create(store, repairs.alerts, now)
        folding.fold(store, month, now=now)
        report.fixed = True
    return report
