"""Reconcile a month: recompute every aggregate from the step documents, report and repair differences.

Production Firestore serves a `read_time` for one hour only, and reading a month of 100,000
users can take longer, so no snapshot is held across the run:

1. **Users, a page of steps at a time.** The month's steps are read in pages ordered by path
   (a user's steps arrive together), each page at its own snapshot time `T`; the last user
   of a full page is read to its end at the same `T`. Each user's documents (the truth
   `TallyUsers/{uid}` and its mirror in `users/{uid}`, the user's month document, Tally's copy
   of their limits) are read at that `T` and compared with what the steps add up to. With
   `fix`, the user's repair is committed at once, conditional on every repaired document
   being unchanged since `T`: a concurrent request or `set_limits` makes it fail, and the
   user is checked again from a new read. So a repair never rolls back a concurrent write,
   and an interrupted run keeps what it repaired.
2. **The platform, at one new snapshot `T2`.** Every commit that counts a step in a user's
   month document counts it in one platform shard too, so the shards must add up to the
   users' month documents, breakdown by breakdown. Both are read at `T2` (one document per
   active user), plus the corrections found in step 1 that are not in the month documents
   yet; the session counters are compared with the session documents at `T2`. A platform
   repair adds the difference to shard 0 (`Increment`), which later commits do not change.

Memory stays bounded: a user's steps are forgotten once checked; the platform's month is
bounded by the name bounds, and the set of users seen by the number of users.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from tally import alerts, layout, mirror, plans, ports
from tally.config import Settings
from tally.documents import steps as step_doc
from tally.recording import limits_of
from tally.rollup import SESSION_FIELDS, MonthAggregate
from tally.timeutil import month_key, months_back
from tally.usage import WARNING_PERCENT, Counts, Limits, MonthDelta, limit_percent
from tally.values import Contention, Document, Rejected
from tally.writes import Increment, Op, Replace, Write, batches, leaves

PAGE_SIZE = 5000  # documents a query page reads (steps, month documents): few pages, bounded memory
REPAIR_SHARD = 0  # platform repairs are added to this shard (any shard would do: they are summed)
COUNTERS = ("costNanos", "apiCalls", "billableRuns")
NAMED = ("byType", "features", "providers", "days")
MAX_CHECKS = 8  # checks of one user whose documents keep changing before it is reported unrepaired

SessionsBy = Literal["created", "completed"]
Flat = Counter[tuple[str, ...]]  # a month's counters by field path


class ReconcileStore(ports.DocumentStore, Protocol):
    """The store operations reconcile needs (reads at a snapshot `read_time`; None: now)."""

    def month_steps(
        self, *, month: str, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]: ...

    def user_month_steps(
        self, *, user_id: str, month: str, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]: ...

    def count_month_steps(self, *, month: str, read_time: datetime | None) -> int: ...

    def month_users(
        self, *, month: str, limit: int, after: str | None, read_time: datetime | None = None
    ) -> list[Document]: ...

    def user_lifetime(self, *, user_id: str, read_time: datetime | None) -> Counts: ...

    def user_session_counts(self, *, user_id: str, read_time: datetime | None) -> dict[str, int]: ...

    def month_sessions(
        self,
        *,
        month: str,
        by: SessionsBy,
        shard: int,
        read_time: datetime | None,
        limit: int,
        after: str | None,
    ) -> list[Document]: ...

    def holding_reservations(
        self, *, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]: ...

    def unfinalized_between(
        self, *, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]: ...

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
    unrepaired: list[str] = field(default_factory=list)  # what a fix could not repair, and why

    def summary(self) -> str:
        """Return the summary line."""
        line = f"reconcile: {len(self.differences)} differences"
        if self.differences and self.fixed:
            line += f", {len(self.differences) - len(self.unrepaired)} repaired"
        if self.unrepaired:
            line += f", {len(self.unrepaired)} not repaired"
        return f"{line} ({self.month}: {self.steps} steps of {self.users} users)"


# A month as flat counters: what a user's month document and a platform shard have in common.


def flat_month(doc: Mapping[str, Any]) -> Flat:
    """Return the counters of a stored month (a user's month document, a shard, a rollup) by field path."""
    found: Flat = Counter()
    for name in (*COUNTERS, "unpricedSteps"):
        found[(name,)] += int(doc.get(name, 0))
    for key in NAMED:
        for name, counts in (doc.get(key) or {}).items():
            for counter in COUNTERS:
                found[(key, name, counter)] += int((counts or {}).get(counter, 0))
    for provider, models in (doc.get("unpricedModels") or {}).items():
        for model, steps in (models or {}).items():
            found[("unpricedModels", provider, model)] += int(steps)
    if "activeUsers" in doc:
        found[("activeUsers",)] += int(doc["activeUsers"])
    elif doc.get("active") is True:
        found[("activeUsers",)] += 1
    return found


def flat_delta(delta: MonthDelta) -> Flat:
    """Return what a user's steps of a month should leave in their month document, by field path."""
    return flat_month(
        {
            **delta.total.fields(),
            "unpricedSteps": delta.unpriced,
            **{key: {n: c.fields() for n, c in getattr(delta, _DELTA[key]).items()} for key in NAMED},
            "unpricedModels": {p: dict(m) for p, m in _nested(delta.unpriced_models).items()},
            "active": delta.total.api_calls > 0,
        }
    )


_DELTA = {"byType": "by_type", "features": "features", "providers": "providers", "days": "days"}


def _nested(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (provider, model), value in counts.items():
        nested.setdefault(provider, {})[model] = value
    return nested


def _minus(a: Flat, b: Flat) -> Flat:
    result: Flat = Counter()
    for key in set(a) | set(b):
        result[key] = a[key] - b[key]
    return result


# Repairs


class Repairs:
    """Differences found, and the changes that repair them (grouped per document).

    `absolute`: a counter is repaired by setting its recomputed value (for writes that are
    conditional on the document being unchanged since read: no field transform, so no
    limit of 500 per commit); otherwise by adding the difference (safe under concurrent
    increments).
    """

    def __init__(self, *, absolute: bool = False) -> None:
        self.absolute = absolute
        self.differences: list[Difference] = []
        self.alerts: list[alerts.Alert] = []  # missing alerts, to create
        self.data: dict[str, dict[str, Any]] = {}

    def missing_alerts(
        self, store: ReconcileStore, wanted: Sequence[alerts.Alert], read_time: datetime | None
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
        node = self.data.setdefault(path, {})
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    def counter(self, path: str, keys: Sequence[str], stored: int, expected: int) -> None:
        """Compare one counter; repair it by adding the difference."""
        if stored != expected:
            self.differences.append(Difference(path, ".".join(keys), stored, expected))
            self._put(path, keys, expected if self.absolute else Increment(expected - stored))

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

    def flat(self, path: str, stored: Flat, expected: Flat) -> None:
        """Compare flat counters (a key on either side: the other side counts 0)."""
        for key in sorted(set(stored) | set(expected)):
            self.counter(path, list(key), stored[key], expected[key])

    def writes(self, docs: Mapping[str, Document], context: Mapping[str, Mapping[str, Any]]) -> list[Write]:
        """Return one write per document, conditional on it being unchanged since `docs` was read."""
        writes = []
        for path, data in sorted(self.data.items()):
            doc = docs.get(path)
            if doc is None:
                writes.append(Write(path, Op.MERGE, {**context.get(path, {}), **data}))
            elif doc.exists:
                writes.append(Write(path, Op.UPDATE, data, version=doc.version))
            else:
                writes.append(Write(path, Op.CREATE, {**context.get(path, {}), **data}))
        return writes


def applied(stored: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Return a document's fields after a repair's changes (increments added, values set)."""
    result = dict(stored)
    for key, change in changes.items():
        current = result.get(key)
        if isinstance(change, Mapping) and not isinstance(change, Replace):
            result[key] = applied(current if isinstance(current, Mapping) else {}, change)
        elif isinstance(change, Increment):
            result[key] = (current if isinstance(current, int) else 0) + change.value
        else:
            result[key] = change
    return result


# One user


@dataclass
class UserCheck:
    """What checking one user at one snapshot found, and the commit that repairs it."""

    user_id: str
    repairs: Repairs
    docs: Mapping[str, Document]
    correction: Flat  # what the user's month document lacks (expected - stored), for the platform
    context: dict[str, dict[str, Any]] = field(default_factory=dict)
    mirror_rewrite: Mapping[str, Any] | None = None  # the usage the mirror must be set to
    suspect: bool = False  # the mirror disagrees with a total only a deep check recomputes

    def commit_writes(self, *, with_mirror: bool) -> list[Write]:
        """Return the repair's commit (the mirror's rewrite too, or the truth marked stale instead)."""
        writes = self.repairs.writes(self.docs, self.context)
        if self.mirror_rewrite is None:
            return writes
        truth = layout.usage_path(self.user_id)
        stale = {mirror.STALE: not with_mirror}
        if not any(w.path == truth for w in writes):
            doc = self.docs[truth]
            op = Op.UPDATE if doc.exists else Op.CREATE
            writes.append(Write(truth, op, {"userId": self.user_id, **stale}, version=doc.version))
        writes = [
            Write(w.path, w.op, {**w.data, **stale}, w.version) if w.path == truth else w for w in writes
        ]
        if with_mirror:
            user = layout.user_path(self.user_id)
            writes.append(Write(user, Op.MERGE, {"usage": Replace(self.mirror_rewrite)}))
        return writes


def _mirror_leaves(usage: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    return {path: value for path, value in leaves(usage) if path[-1] != "updatedAt"}


@dataclass(frozen=True)
class Seen:
    """What was read of some users at one snapshot: their documents, holds and unfinalized sessions."""

    docs: Mapping[str, Document]
    holds: Mapping[str, list[Mapping[str, Any]]]  # by user: reservations still counting
    unfinalized: Mapping[str, list[Mapping[str, Any]]]  # by user: sessions no finalizer counted yet


def user_paths(user_id: str, month: str) -> list[str]:
    """Return the documents of a user that a check compares."""
    return [
        layout.usage_path(user_id),
        layout.user_path(user_id),
        layout.user_month_path(user_id, month),
        layout.limits_path(user_id),
    ]


def read_users(
    store: ReconcileStore, user_ids: Sequence[str], month: str, read_time: datetime | None
) -> Seen:
    """Read what checking these users needs, at one snapshot: one batch of documents and two range queries."""
    own = [
        path for user_id in user_ids for path in user_paths(user_id, month) if not path.startswith("users/")
    ]
    docs = store.read(own, read_time=read_time)
    # The app's users/{uid}: only its `usage` map (the rest is the user's, up to 1 MiB each).
    docs.update(store.read([layout.user_path(u) for u in user_ids], read_time=read_time, fields=["usage"]))
    first, last = min(user_ids), max(user_ids)
    wanted = set(user_ids)
    holds: dict[str, list[Mapping[str, Any]]] = {}
    for doc in store.holding_reservations(first_user=first, last_user=last, read_time=read_time):
        ids = layout.reservation_ids(doc.path)
        if ids is not None and ids[0] in wanted:
            holds.setdefault(ids[0], []).append(doc.fields)
    unfinalized: dict[str, list[Mapping[str, Any]]] = {}
    for doc in store.unfinalized_between(first_user=first, last_user=last, read_time=read_time):
        session = layout.session_ids(doc.path)
        if session is not None and session[0] in wanted:
            unfinalized.setdefault(session[0], []).append(doc.fields)
    return Seen(docs, holds, unfinalized)


def active_sessions(unfinalized: Sequence[Mapping[str, Any]]) -> int:
    """Return how many sessions count as active: open ones, and ones completed outside Tally, unfinalized."""
    return sum(
        1 for data in unfinalized if data.get("status") == "active" or not plans.counted_at_completion(data)
    )


def check_user(
    *,
    store: ReconcileStore,
    user_id: str,
    month: str,
    delta: MonthDelta,
    seen: Seen,
    settings: Settings,
    read_time: datetime | None,
    now: datetime,
    deep: bool = False,
) -> UserCheck:
    """Compare one user's documents with their month's steps, both read at `read_time`.

    With `deep`, also the user's lifetime totals and completed sessions against all their
    steps and sessions (aggregation queries: a few reads per user, one query each).
    """
    truth, user, user_month, copy = user_paths(user_id, month)
    docs = seen.docs
    repairs = Repairs(absolute=True)  # committed conditional on every document's update time
    usage = docs[truth].fields.get("usage") or {}
    stored_month = docs[user_month].fields
    kept = docs[copy].fields
    limits = (
        Limits(int(kept["monthlyCostLimitNanos"]), int(kept["monthlyFreeRuns"]))
        if "monthlyCostLimitNanos" in kept
        else limits_of(usage, settings)
    )
    # The user's month document: totals and every breakdown, as its share of the platform.
    expected_month, stored_flat = flat_delta(delta), flat_month(stored_month)
    active = ("activeUsers",)  # the shards' counter; a user's month document has the flag `active`
    repairs.flat(
        user_month,
        Counter({k: v for k, v in stored_flat.items() if k != active}),
        Counter({k: v for k, v in expected_month.items() if k != active}),
    )
    repairs.value(user_month, ["active"], stored_month.get("active") is True, delta.total.api_calls > 0)
    percent = limit_percent(delta.total, limits)
    stored_percent = stored_month.get("limitPercent")
    if percent >= WARNING_PERCENT and (
        not isinstance(stored_percent, int | float) or abs(stored_percent - percent) >= plans.FREE_TIER_STEP
    ):
        repairs.value(user_month, ["limitPercent"], stored_percent, percent)
        for name, value in plans.limits_fields(limits).items():
            repairs.value(user_month, [name], stored_month.get(name), value)
    # The truth, TallyUsers/{uid}.usage: the month (while it keeps it), sessions, limits, holds.
    if month in months_back(month_key(now), plans.USER_MONTHS_KEPT):
        stored = (usage.get("months") or {}).get(month) or {}
        repairs.counts(truth, ["usage", "months", month], stored, delta.total)
        repairs.named(truth, ["usage", "months", month, "byType"], stored.get("byType"), delta.by_type)
        if delta.unpriced or stored.get("unpricedSteps"):
            repairs.counter(
                truth,
                ["usage", "months", month, "unpricedSteps"],
                int(stored.get("unpricedSteps", 0)),
                delta.unpriced,
            )
    sessions = usage.get("sessions") or {}
    unfinalized = seen.unfinalized.get(user_id, [])
    repairs.counter(
        truth, ["usage", "sessions", "active"], int(sessions.get("active", 0)), active_sessions(unfinalized)
    )
    if deep:
        lifetime = store.user_lifetime(user_id=user_id, read_time=read_time)
        repairs.counts(truth, ["usage", "lifetime"], usage.get("lifetime"), lifetime)
        completed = store.user_session_counts(user_id=user_id, read_time=read_time)["completed"]
        completed -= sum(  # completed outside Tally, not finalized yet: not counted yet
            1
            for data in unfinalized
            if data.get("status") != "active" and not plans.counted_at_completion(data)
        )
        repairs.counter(
            truth, ["usage", "sessions", "completed"], int(sessions.get("completed", 0)), completed
        )
    if "monthlyCostLimitNanos" in kept:
        stored_limits = usage.get("limits") or {}
        for name, value in plans.limits_fields(limits).items():
            repairs.value(truth, ["usage", "limits", name], stored_limits.get(name), value)
    holds = seen.holds.get(user_id, [])
    held = usage.get("held") or {}
    repairs.counter(
        truth,
        ["usage", "held", "costNanos"],
        int(held.get("costNanos", 0)),
        sum(int(h.get("estimateNanos", 0)) for h in holds),
    )
    repairs.counter(
        truth, ["usage", "held", "runs"], int(held.get("runs", 0)), sum(int(h.get("runs", 0)) for h in holds)
    )
    pending = usage.get("pending") or {}  # the counter of holds being decided before v3: now in `held`
    for name in ("costNanos", "runs"):
        if int(pending.get(name, 0)):
            repairs.counter(truth, ["usage", "pending", name], int(pending[name]), 0)
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
    # The mirror, users/{uid}.usage: the truth as repaired.
    expected_usage = applied(usage, (repairs.data.get(truth) or {}).get("usage") or {})
    found, should = _mirror_leaves(docs[user].fields.get("usage") or {}), _mirror_leaves(expected_usage)
    rewrite = mirror.MirrorState.of(docs[truth].fields).stale
    suspect = False
    for leaf in sorted(set(found) | set(should)):
        if found.get(leaf, 0) != should.get(leaf, 0):
            repairs.differences.append(
                Difference(user, ".".join(("usage", *leaf)), found.get(leaf, 0), should.get(leaf, 0))
            )
            rewrite = True
            suspect |= leaf[0] == "lifetime" or leaf[:2] == ("sessions", "completed")
    return UserCheck(
        user_id=user_id,
        repairs=repairs,
        docs={path: docs[path] for path in (truth, user, user_month, copy)},
        correction=_minus(expected_month, stored_flat),
        context={user_month: {"userId": user_id, "month": month}, truth: {"userId": user_id}},
        mirror_rewrite=expected_usage if rewrite else None,
        suspect=suspect and not deep,
    )


def server_time(store: ReconcileStore, month: str) -> datetime | None:
    """Return the server's time now (a read's own time), to run queries at one explicit snapshot.

    A query streamed without a `read_time` only promises that each result is unchanged up to
    the next one's read time; run at a time taken first, a page is one snapshot.
    """
    path = layout.rollup_path(month)
    return store.read([path])[path].read_at


def _user_steps(
    store: ReconcileStore, user_id: str, month: str, read_time: datetime | None, after: str | None
) -> tuple[list[Document], datetime | None]:
    """Return a user's steps of the month after `after`, at one snapshot (now, without one), and its time."""
    at = read_time or server_time(store, month)

    def fetch(cursor: str | None) -> list[Document]:
        return store.user_month_steps(
            user_id=user_id, month=month, read_time=at, limit=PAGE_SIZE, after=cursor
        )

    return list(ports.documents(fetch, size=PAGE_SIZE, start=after)), at


def _delta(docs: Sequence[Document]) -> MonthDelta:
    delta = MonthDelta()
    for doc in docs:
        delta.add(step_doc.step_of(doc.fields))
    return delta


# The run


@dataclass
class UserResult:
    """What checking (and repairing) one user came to."""

    differences: list[Difference]
    correction: Flat  # what the user's month document lacked when checked (expected - stored)
    repaired: bool = False  # the correction was committed
    unrepaired: list[str] = field(default_factory=list)


class _Run:
    """One reconcile run."""

    def __init__(
        self,
        *,
        store: ReconcileStore,
        month: str,
        settings: Settings,
        now: datetime,
        fix: bool,
        progress: Callable[[int, int], None] | None,
        workers: int,
        deep: bool,
    ) -> None:
        self.store, self.month, self.settings, self.now, self.fix = store, month, settings, now, fix
        self.deep = deep
        self.progress = progress
        self.workers = workers
        self.report = Report(month=month)
        self.seen: set[str] = set()
        self.pending: Flat = Counter()  # corrections not in the month documents (report only, or unrepaired)
        self.total = 0

    def check(
        self, user_id: str, steps: Sequence[Document], read_time: datetime | None, seen: Seen | None = None
    ) -> UserResult:
        """Check one user (and with `fix`, repair them), again from a fresh read while they keep changing."""
        for _ in range(MAX_CHECKS):
            read = seen or read_users(self.store, [user_id], self.month, read_time)

            def checked(
                deep: bool,
                read: Seen = read,
                steps: Sequence[Document] = steps,
                read_time: datetime | None = read_time,
            ) -> UserCheck:
                return check_user(
                    store=self.store,
                    user_id=user_id,
                    month=self.month,
                    delta=_delta(steps),
                    seen=read,
                    settings=self.settings,
                    read_time=read_time,
                    now=self.now,
                    deep=deep,
                )

            check = checked(self.deep)
            if check.suspect:  # which of the two is right? only the steps and sessions can say
                check = checked(True)
            if not self.fix or not (check.repairs.data or check.mirror_rewrite):
                return UserResult(check.repairs.differences, check.correction)
            committed = self._commit(check)
            if committed is not None:
                return UserResult(check.repairs.differences, check.correction, True, committed)
            steps, read_time = _user_steps(self.store, user_id, self.month, None, None)
            seen = None
        note = f"{user_id}: changed {MAX_CHECKS} times while reconcile ran; run it again"
        return UserResult(check.repairs.differences, check.correction, unrepaired=[note])

    def _commit(self, check: UserCheck) -> list[str] | None:
        """Commit a user's repair; return what it could not repair (None: a document changed meanwhile)."""
        unrepaired = []
        try:
            try:
                self.store.commit(check.commit_writes(with_mirror=True))
            except Rejected:
                self.store.commit(check.commit_writes(with_mirror=False))
                unrepaired.append(
                    f"{layout.user_path(check.user_id)}: the usage map does not fit in the document; "
                    "it is rewritten once it fits"
                )
        except Contention:
            return None
        alerts.create(self.store, check.repairs.alerts, self.now)
        return unrepaired

    def _check_all(
        self,
        users: Sequence[tuple[str, Sequence[Document], datetime | None]],
        *,
        seen: Seen | None = None,
        after_snapshot: bool = False,
    ) -> None:
        """Check users a few at a time (their documents are independent), keeping the report in order.

        `seen` holds what was read of them all at their (one) snapshot; without it each is read
        on its own. A correction not yet in the month documents the platform is compared with
        is kept for that comparison: one not committed, or one committed after its snapshot.
        """
        self.seen.update(user_id for user_id, _, _ in users)

        def one(user: tuple[str, Sequence[Document], datetime | None]) -> UserResult:
            return self.check(*user, seen=seen)

        if self.workers <= 1 or len(users) <= 1:
            results = [one(user) for user in users]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(users))) as pool:
                results = list(pool.map(one, users))
        for result in results:
            self.report.differences += result.differences
            self.report.unrepaired += result.unrepaired
            if after_snapshot or not result.repaired:
                self.pending.update(result.correction)

    def users(self) -> None:
        """Check every user with steps in the month, page by page, each at its page's snapshot."""
        store, month = self.store, self.month
        self.total = store.count_month_steps(month=month, read_time=None)
        after: str | None = None
        while page := store.month_steps(
            month=month, read_time=(read_time := server_time(store, month)), limit=PAGE_SIZE, after=after
        ):
            groups: dict[str, list[Document]] = {}
            for doc in page:
                owner = layout.step_owner(doc.path)
                if owner is not None:
                    groups.setdefault(owner, []).append(doc)
            after = page[-1].path
            last = layout.step_owner(after)
            if len(page) == PAGE_SIZE and last is not None:  # the last user may go on: read them to the end
                rest, _ = _user_steps(store, last, month, read_time, after)
                groups.setdefault(last, []).extend(rest)
                after = rest[-1].path if rest else after
            self.report.steps += sum(len(steps) for steps in groups.values())
            seen = read_users(store, list(groups), month, read_time) if groups else None
            self._check_all([(user_id, steps, read_time) for user_id, steps in groups.items()], seen=seen)
            if self.progress is not None:
                self.progress(self.report.steps, max(self.total, self.report.steps))
            if len(page) < PAGE_SIZE:
                break

    def platform(self) -> Repairs:
        """Compare the shards with the users' month documents (and the sessions), at one snapshot `T2`.

        A month document whose user had no step in the first pass (a first step recorded
        meanwhile, or a document with no step at all) is checked now, from a fresh read; its
        correction is not in the month documents read at `T2`, so it is added to them.
        """
        store, month = self.store, self.month
        expected: Flat = Counter()
        unseen: list[str] = []
        read_time = server_time(store, month)  # T2

        def fetch(after: str | None) -> list[Document]:
            return store.month_users(month=month, limit=PAGE_SIZE, after=after, read_time=read_time)

        for doc in ports.documents(fetch, size=PAGE_SIZE):
            expected.update(flat_month(doc.fields))
            user_id = str(doc.fields.get("userId") or doc.path.split("/", 1)[1].rsplit("_", 1)[0])
            if user_id not in self.seen:
                unseen.append(user_id)
        shards = store.read([layout.shard_path(month, n) for n in range(store.shards)], read_time=read_time)
        sessions = expected_sessions(store, month, read_time)
        late = []
        for user_id in unseen:
            steps, steps_time = _user_steps(store, user_id, month, None, None)
            self.report.steps += len(steps)
            late.append((user_id, steps, steps_time))
        self._check_all(late, after_snapshot=True)
        expected.update(self.pending)
        stored: Flat = Counter()
        for doc in shards.values():
            stored.update(flat_month(doc.fields))
        repairs = Repairs()
        repair_path = layout.shard_path(month, REPAIR_SHARD)
        repairs.flat(repair_path, stored, expected)
        folded = MonthAggregate.fold(doc.fields for doc in shards.values() if doc.exists)
        for key, value in sessions.items():
            repairs.counter(repair_path, ["sessions", key], folded.sessions.get(key, 0), value)
        if self.settings.platform_budget_nanos is not None:
            wanted = alerts.platform_alerts(
                month=month,
                total=expected[("costNanos",)],
                budget=self.settings.platform_budget_nanos,
                raised_by="reconcile",
                late=True,
            )
            repairs.missing_alerts(store, wanted, read_time)
        return repairs


def _month_sessions(
    store: ReconcileStore, month: str, by: SessionsBy, read_time: datetime | None
) -> Iterator[Document]:
    for shard in range(layout.SWEEP_SHARDS):

        def fetch(after: str | None, shard: int = shard) -> list[Document]:
            return store.month_sessions(
                month=month, by=by, shard=shard, read_time=read_time, limit=PAGE_SIZE, after=after
            )

        yield from ports.documents(fetch, size=PAGE_SIZE)


def expected_sessions(store: ReconcileStore, month: str, read_time: datetime | None) -> dict[str, int]:
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
    workers: int = 8,
    deep: bool = False,
) -> Report:
    """Recompute a month's aggregates from its steps; with `fix`, repair what differs as it goes.

    With `deep`, each user's lifetime totals and completed sessions are recomputed too, from
    all their steps and sessions (a few aggregation queries per user).

    Refuses to run with fewer shards than the platform has (`ShardCountMismatch`): it would
    miss the others' counts and "repair" them into shard 0, counting them twice.
    """
    if (extra := store.shard_beyond(store.shards)) is not None:
        raise ShardCountMismatch(
            f"{extra.path} exists, but TALLY_AGGREGATE_SHARDS is {store.shards}: "
            "use the value the functions are deployed with"
        )
    run = _Run(
        store=store,
        month=month,
        settings=settings,
        now=now,
        fix=fix,
        progress=progress,
        workers=workers,
        deep=deep,
    )
    run.users()
    platform = run.platform()
    run.report.users = len(run.seen)
    run.report.differences += platform.differences
    if fix:
        context = {layout.shard_path(month, REPAIR_SHARD): {"month": month, "shard": REPAIR_SHARD}}
        for commit in batches(platform.writes({}, context)):
            store.commit(commit)
        alerts.create(store, platform.alerts, now)
        if run.report.differences:  # the next reader folds the month again, final or not
            store.commit(plans.reopen_writes([month], now=now, final_only=False))
        run.report.fixed = True
    return run.report
