"""Checking one user: their documents against their month's steps, at one snapshot, and the repair."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tally import layout
from tally.config import Settings
from tally.documents import holds as hold_doc
from tally.documents import limits as limits_doc
from tally.documents import months as month_doc
from tally.documents import sessions as session_doc
from tally.documents import usage as usage_doc
from tally.documents import user_months
from tally.documents.months import Flat
from tally.documents.plan_catalog import PlanCatalog
from tally.services import alerts, mirror, pace
from tally.services.reconcile.reads import ReconcileStore
from tally.services.reconcile.report import Difference, Repairs, applied
from tally.usage import WARNING_PERCENT, Counts, Limits, MonthDelta, limit_percent
from tally.values import Document, HoldState
from tally.writes import Op, Replace, Write, leaves

MAX_CHECKS = 8  # checks of one user whose documents keep changing before it is reported unrepaired


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
            writes.append(Write(user, Op.MERGE, {usage_doc.USAGE: Replace(self.mirror_rewrite)}))
        return writes


def _mirror_leaves(usage: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    return {path: value for path, value in leaves(usage) if path[-1] != usage_doc.UPDATED}


@dataclass(frozen=True)
class Seen:
    """What was read of some users at one snapshot: their documents, holds and unfinalized sessions."""

    docs: Mapping[str, Document]
    holds: Mapping[str, list[HoldState]]  # by user: reservations still counting
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
    users = [layout.user_path(u) for u in user_ids]
    docs.update(store.read(users, read_time=read_time, fields=[usage_doc.USAGE]))
    first, last = min(user_ids), max(user_ids)
    wanted = set(user_ids)
    holds: dict[str, list[HoldState]] = {}
    for doc in store.holding_reservations(first_user=first, last_user=last, read_time=read_time):
        hold = hold_doc.hold_of(doc)
        if hold is not None and hold.user_id in wanted:
            holds.setdefault(hold.user_id, []).append(hold)
    unfinalized: dict[str, list[Mapping[str, Any]]] = {}
    for doc in store.unfinalized_between(first_user=first, last_user=last, read_time=read_time):
        session = layout.session_ids(doc.path)
        if session is not None and session[0] in wanted:
            unfinalized.setdefault(session[0], []).append(doc.fields)
    return Seen(docs, holds, unfinalized)


def active_sessions(unfinalized: Sequence[Mapping[str, Any]]) -> int:
    """Return how many sessions count as active: open ones, and ones completed outside Tally, unfinalized."""
    return sum(
        1
        for data in unfinalized
        if session_doc.is_active(data) or not session_doc.counted_at_completion(data)
    )


def _check_user_month(
    repairs: Repairs, path: str, stored: Mapping[str, Any], delta: MonthDelta, limits: Limits | None
) -> tuple[Flat, Flat]:
    """Compare a user's month document (totals, breakdowns, the flag, the free-tier entry) with the steps."""
    expected, found = month_doc.flat_delta(delta), month_doc.flat_month(stored)
    active = month_doc.ACTIVE_KEY  # the shards' counter; a user's month document has the flag `active`
    repairs.flat(
        path,
        Counter({k: v for k, v in found.items() if k != active}),
        Counter({k: v for k, v in expected.items() if k != active}),
    )
    repairs.value(path, [month_doc.ACTIVE], stored.get(month_doc.ACTIVE) is True, delta.total.api_calls > 0)
    if limits is None:  # not known here: the entry is left as the functions wrote it
        return expected, found
    percent = limit_percent(delta.total, limits)
    stored_percent = limits_doc.stored_percent(stored)
    if percent >= WARNING_PERCENT and (
        not isinstance(stored_percent, int | float)
        or abs(stored_percent - percent) >= user_months.FREE_TIER_STEP
    ):
        repairs.value(path, [limits_doc.LIMIT_PERCENT], stored_percent, percent)
        for name, value in limits_doc.fields(limits).items():
            repairs.value(path, [name], stored.get(name), value)
    return expected, found


def _check_truth(
    repairs: Repairs,
    *,
    store: ReconcileStore,
    truth: str,
    usage: Mapping[str, Any],
    user_id: str,
    month: str,
    delta: MonthDelta,
    seen: Seen,
    limits_kept: Mapping[str, Any] | None,
    read_time: datetime | None,
    now: datetime,
    deep: bool,
) -> None:
    """Compare the truth, TallyUsers/{uid}.usage: the month (while kept), sessions, limits, holds."""
    at = usage_doc.USAGE
    if month in usage_doc.kept_months(now):
        keys = [at, usage_doc.MONTHS, month]
        stored = usage_doc.months_of(usage).get(month) or {}
        unpriced = usage_doc.month_of(usage, month)[2]
        repairs.counts(truth, keys, stored, delta.total)
        repairs.named(truth, [*keys, month_doc.BY_TYPE], stored.get(month_doc.BY_TYPE), delta.by_type)
        if delta.unpriced or unpriced:
            repairs.counter(truth, [*keys, month_doc.UNPRICED], unpriced, delta.unpriced)
    active, completed = usage_doc.sessions_of(usage)
    unfinalized = seen.unfinalized.get(user_id, [])
    sessions = [at, usage_doc.SESSIONS]
    repairs.counter(truth, [*sessions, usage_doc.ACTIVE], active, active_sessions(unfinalized))
    if deep:
        lifetime = store.user_lifetime(user_id=user_id, read_time=read_time)
        repairs.counts(truth, [at, usage_doc.LIFETIME], usage.get(usage_doc.LIFETIME), lifetime)
        expected = store.user_session_counts(user_id=user_id, read_time=read_time)["completed"]
        expected -= sum(  # completed outside Tally, not finalized yet: not counted yet
            1
            for data in unfinalized
            if not session_doc.is_active(data) and not session_doc.counted_at_completion(data)
        )
        repairs.counter(truth, [*sessions, usage_doc.COMPLETED], completed, expected)
    if limits_kept is not None:  # Tally's copy of the settings wins over an erased or edited `usage.limits`
        stored_limits = dict(leaves(usage_doc.limit_settings(usage)))
        for path, value in leaves(limits_kept):
            repairs.value(truth, [at, usage_doc.LIMITS, *path], stored_limits.get(path), value)
    holds = seen.holds.get(user_id, [])
    held = usage_doc.stored_held(usage)
    keys = [at, usage_doc.HELD]
    repairs.counter(truth, [*keys, usage_doc.HELD_COST], held.cost_nanos, sum(h.cost_nanos for h in holds))
    repairs.counter(truth, [*keys, usage_doc.HELD_RUNS], held.runs, sum(h.runs for h in holds))
    pending = usage_doc.pending_of(usage)  # the counter of holds being decided before v3: now in `held`
    for name, value in ((usage_doc.HELD_COST, pending.cost_nanos), (usage_doc.HELD_RUNS, pending.runs)):
        if value:
            repairs.counter(truth, [at, usage_doc.PENDING, name], value, 0)


def _check_alerts(
    repairs: Repairs,
    store: ReconcileStore,
    user_id: str,
    month: str,
    delta: MonthDelta,
    usage: Mapping[str, Any],
    limits: Limits,
    month_doc_read: Document,
    read_time: datetime | None,
    now: datetime,
) -> None:
    """Note the user's missing threshold alerts (differences) and forecast and anomaly alerts (due)."""
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
    pace_of = pace.UserPace(
        user_id,
        {day: counts.cost_nanos for day, counts in delta.days.items()},
        usage_doc.previous_costs(usage, month),
        limits.monthly_cost_limit_nanos,
        previous_days=lambda: pace.previous_days(store, user_id, now),
    )
    judged = pace.late_user_alerts(pace_of, month=month, state=user_months.state_of(month_doc_read), now=now)
    repairs.missing_alerts(store, judged, read_time, judged=True)


def check_user(
    *,
    store: ReconcileStore,
    user_id: str,
    month: str,
    delta: MonthDelta,
    seen: Seen,
    settings: Settings,
    read_time: datetime | None,
    catalog: PlanCatalog,
    now: datetime,
    claimed: str | None = None,
    claim_known: bool = True,
    deep: bool = False,
) -> UserCheck:
    """Compare one user's documents with their month's steps, both read at `read_time`.

    With `deep`, also the user's lifetime totals and completed sessions against all their
    steps and sessions (aggregation queries: a few reads per user, one query each).

    `claimed`: the plan the user's custom claim names (TALLY_PLAN_CLAIM). When it is not
    known (`claim_known`: Auth could not say) and no plan is assigned, what depends on their
    limits (the free-tier entry, threshold and pace alerts) is not checked, rather than
    measured against limits they may not have.
    """
    truth, user, user_month, copy = user_paths(user_id, month)
    docs = seen.docs
    repairs = Repairs(absolute=True)  # committed conditional on every document's update time
    usage = usage_doc.usage_of(docs[truth].fields)
    kept = limits_doc.copy_settings(docs[copy])
    own = kept if kept is not None else usage_doc.limit_settings(usage)
    repairs.unmeasured = not claim_known and limits_doc.assigned_plan(own) is None
    limits = None if repairs.unmeasured else catalog.limits_of(own, settings, claimed=claimed).month
    expected_month, stored_flat = _check_user_month(
        repairs, user_month, docs[user_month].fields, delta, limits
    )
    _check_truth(
        repairs,
        store=store,
        truth=truth,
        usage=usage,
        user_id=user_id,
        month=month,
        delta=delta,
        seen=seen,
        limits_kept=kept,
        read_time=read_time,
        now=now,
        deep=deep,
    )
    if limits is not None:
        _check_alerts(repairs, store, user_id, month, delta, usage, limits, docs[user_month], read_time, now)
    # The mirror, users/{uid}.usage: the truth as repaired.
    expected_usage = applied(usage, (repairs.data.get(truth) or {}).get(usage_doc.USAGE) or {})
    found = _mirror_leaves(usage_doc.usage_of(docs[user].fields))
    should = _mirror_leaves(expected_usage)
    rewrite = mirror.MirrorState.of(docs[truth].fields).stale
    suspect = False
    for leaf in sorted(set(found) | set(should)):
        if found.get(leaf, 0) != should.get(leaf, 0):
            repairs.differences.append(
                Difference(user, ".".join((usage_doc.USAGE, *leaf)), found.get(leaf, 0), should.get(leaf, 0))
            )
            rewrite = True
            suspect |= leaf[0] == usage_doc.LIFETIME or leaf[:2] == (usage_doc.SESSIONS, usage_doc.COMPLETED)
    return UserCheck(
        user_id=user_id,
        repairs=repairs,
        docs={path: docs[path] for path in (truth, user, user_month, copy)},
        correction=_minus(expected_month, stored_flat),
        context={user_month: {"userId": user_id, "month": month}, truth: {"userId": user_id}},
        mirror_rewrite=expected_usage if rewrite else None,
        suspect=suspect and not deep,
    )


def _minus(a: Flat, b: Flat) -> Flat:
    result: Flat = Counter()
    for key in set(a) | set(b):
        result[key] = a[key] - b[key]
    return result
