"""Pure builders of Tally's commits: which documents each operation writes, and how.

Every function here returns `Write`s and touches no database, so the subtle rules get
fast unit tests: merge payloads never carry empty maps, no document gets more than 500
field transforms in one commit, ids never start with the month, a user becomes active
in a month exactly once, and shared documents are picked per request.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tally import layout
from tally.documents import steps as step_doc
from tally.money import nanos_to_usd
from tally.names import OTHER, NameKey, NameKind
from tally.rollup import MonthAggregate, Ranking, is_final, nested_counts
from tally.timeutil import instant_or_none, month_key, months_back
from tally.usage import WARNING_PERCENT, Counts, Limits, MonthDelta, aggregate, limit_percent, total
from tally.values import (
    CompletedBy,
    CostSource,
    HoldState,
    HoldStatus,
    SessionRecord,
    SessionState,
    SessionStatus,
    Step,
    UserMonthState,
)
from tally.writes import DELETE, Increment, Maximum, Op, Replace, Write, merge_payload

USER_MONTHS_KEPT = 3  # users/{uid}.usage.months keeps this month and the two before it
FREE_TIER_STEP = 5.0  # percent: a free-tier entry is rewritten after the commit only past a step of this
SESSION_MAX_NAMES = 100  # names of one kind in one session's breakdown; more go to (other)
# On a session until its finalization counts it: reconcile finds a user's unfinalized sessions
# with one indexed equality (a boolean; no ever-increasing index range) instead of 16 shard queries.
OPEN = "tallyOpen"


class ShardPicker:
    """Hand out aggregate shards round-robin from a random start (thread-safe in CPython).

    Per request, not per user: a heavy user spreads over every shard, and within one
    instance the shards take exactly equal shares.
    """

    def __init__(self, seed: int | None = None) -> None:
        start = random.Random(seed).randrange(1 << 30)  # noqa: S311 - load spreading, not crypto
        self._counter = itertools.count(start)

    def next(self, shards: int) -> int:
        """Return the next shard in 0..shards-1."""
        return next(self._counter) % shards


def _increments(counts: Counts) -> dict[str, Any]:
    """Return increments of the three counters (also zeros: readers find every field, commits return them)."""
    return {name: Increment(value) for name, value in counts.fields().items()}


def _session_stats(counts: Counts) -> dict[str, int]:
    return {
        "stepCount": counts.api_calls,
        "costNanos": counts.cost_nanos,
        "billableRuns": counts.billable_runs,
    }


def _increment_map(named: Mapping[str, Counts]) -> dict[str, Any]:
    return {name: _increments(counts) for name, counts in named.items()}


def _plain_map(named: Mapping[str, Counts]) -> dict[str, Any]:
    return {name: counts.fields() for name, counts in named.items()}


def _month_counters(delta: MonthDelta) -> dict[str, Any]:
    counters: dict[str, Any] = {**_increments(delta.total), "byType": _increment_map(delta.by_type)}
    if delta.unpriced:
        counters["unpricedSteps"] = Increment(delta.unpriced)
    return counters


def _unpriced_models(delta: MonthDelta) -> dict[str, Any]:
    return {
        provider: {model: Increment(count) for model, count in models.items()}
        for provider, models in nested_counts(delta.unpriced_models).items()
    }


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
    return [Write(layout.rollup_path(month), Op.MERGE, {"asOf": DELETE}) for month in chosen]


def reopened(writes: list[Write], *, now: datetime) -> list[Write]:
    """Return a commit that also reopens the rollup of every final month whose shards it writes."""
    months = {
        str(w.data["month"])
        for w in writes
        if w.path.startswith(layout.PLATFORM_SHARDS + "/") and isinstance(w.data.get("month"), str)
    }
    return writes + reopen_writes(months, now=now)


# Recording


@dataclass(frozen=True)
class RecordingCommit:
    """Everything one `record_steps` attempt writes, applied in one atomic commit."""

    user_id: str
    request_id: str
    now: datetime
    steps: tuple[Step, ...]  # the new steps, with their counted names
    shard: int
    session_id: str | None = None
    session_feature: str | None = None
    session_base: SessionState | None = None  # None with a session_id: create it
    complete: bool = False
    user_months: Mapping[str, UserMonthState] = field(default_factory=dict)
    stale_months: tuple[str, ...] = ()  # usage.months keys to drop
    limits: Limits | None = None
    months_before: Mapping[str, Counts] = field(default_factory=dict)  # the user's totals as read
    step_session_id: str | None = None  # the session the steps belong to, when another write converts it
    settlements: tuple[tuple[HoldState, str], ...] = ()  # holds the steps settle, with the settling step

    def estimated_percent(self, month: str, delta: MonthDelta) -> float | None:
        """Return the share of their limits the user reaches in `month` with this commit, as read."""
        if self.limits is None:
            return None
        used = Counts()
        used.merge(self.months_before.get(month, Counts()))
        used.merge(delta.total)
        return limit_percent(used, self.limits)

    @property
    def session_created(self) -> bool:
        """Return whether this commit creates its session."""
        return self.session_id is not None and self.session_base is None

    @property
    def session_completed(self) -> bool:
        """Return whether this commit moves its session to completed."""
        if self.session_id is None or not self.complete:
            return False
        return self.session_base is None or self.session_base.status is SessionStatus.ACTIVE


@dataclass(frozen=True)
class SessionCounts:
    """A request's steps as a session's breakdown counts them (capped per session)."""

    features: dict[str, Counts]
    providers: dict[str, Counts]
    capped: tuple[tuple[str, NameKind], ...]  # (operationId, kind) counted under (other) by the cap


def session_counts(steps: Iterable[Step], base: SessionState | None) -> SessionCounts:
    """Count steps into a session's breakdown: at most SESSION_MAX_NAMES names a kind, then `(other)`."""
    known = {
        NameKind.FEATURE: set(base.feature_names if base else ()),
        NameKind.PROVIDER: set(base.provider_names if base else ()),
    }
    counted: dict[NameKind, dict[str, Counts]] = {NameKind.FEATURE: {}, NameKind.PROVIDER: {}}
    capped: list[tuple[str, NameKind]] = []
    for step in steps:
        for kind, name in (
            (NameKind.FEATURE, step.feature_bucket),
            (NameKind.PROVIDER, step.provider_bucket),
        ):
            names = known[kind]
            if name not in names and len(names) >= SESSION_MAX_NAMES and name != OTHER:
                capped.append((step.operation_id, kind))
                name = OTHER
            names.add(name)
            counted[kind].setdefault(name, Counts()).add(step)
    return SessionCounts(counted[NameKind.FEATURE], counted[NameKind.PROVIDER], tuple(capped))


def _session_write(commit: RecordingCommit) -> Write:
    assert commit.session_id is not None
    path = layout.session_path(commit.user_id, commit.session_id)
    counts = total(commit.steps)
    named = session_counts(commit.steps, commit.session_base)
    times = [s.timestamp for s in commit.steps]
    base = commit.session_base
    completion = (
        {
            "status": SessionStatus.COMPLETED.value,
            "completedAt": commit.now,
            "completedBy": CompletedBy.CLIENT.value,
        }
        if commit.session_completed
        else {}
    )
    if base is None:
        return Write(
            path,
            Op.CREATE,
            {
                "userId": commit.user_id,
                "sessionId": commit.session_id,
                "feature": commit.session_feature,
                "status": SessionStatus.ACTIVE.value,
                "createdAt": commit.now,
                "lastUpdatedAt": commit.now,
                "completedAt": None,
                "completedBy": None,
                "finalizedAt": None,
                OPEN: True,
                "summary": None,
                "tallyShard": layout.sweep_shard(commit.user_id, commit.session_id),
                "stats": {
                    **_session_stats(counts),
                    "features": _plain_map(named.features),
                    "providers": _plain_map(named.providers),
                    "firstStepAt": min(times, default=None),
                    "lastStepAt": max(times, default=None),
                },
                **completion,
            },
        )
    data: dict[str, Any] = {
        "lastUpdatedAt": commit.now,
        "tallyShard": layout.sweep_shard(commit.user_id, commit.session_id),  # also upgrades older sessions
        **completion,
    }
    if commit.steps:
        known_times = [t for t in (base.first_step_at, base.last_step_at) if t is not None]
        data["stats"] = {
            **{name: Increment(value) for name, value in _session_stats(counts).items()},
            "features": _increment_map(named.features),
            "providers": _increment_map(named.providers),
            "firstStepAt": min([*times, *known_times]),
            "lastStepAt": max([*times, *known_times]),
        }
    return Write(path, Op.UPDATE, data, version=base.version)


def _user_write(commit: RecordingCommit, months: Mapping[str, MonthDelta]) -> Write:
    usage: dict[str, Any] = {
        "months": {
            **dict.fromkeys(commit.stale_months, DELETE),
            **{month: _month_counters(delta) for month, delta in months.items() if delta.total.api_calls},
        },
        "updatedAt": commit.now,
    }
    if commit.steps:
        usage["lifetime"] = _increments(total(commit.steps))
    sessions: dict[str, Any] = {}
    if commit.session_created or commit.session_completed:
        sessions["active"] = Increment(int(commit.session_created) - int(commit.session_completed))
    if commit.session_completed:
        sessions["completed"] = Increment(1)
    usage["sessions"] = sessions
    if commit.settlements:
        usage["held"] = {
            "costNanos": Increment(-sum(hold.cost_nanos for hold, _ in commit.settlements)),
            "runs": Increment(-sum(hold.runs for hold, _ in commit.settlements)),
        }
    # merge: only these leaves change (the mirror in users/{uid} gets the same, see `mirror`).
    return usage_write(commit.user_id, usage)


def usage_write(user_id: str, usage: Mapping[str, Any]) -> Write:
    """Return a merge into the user's true `usage` (TallyUsers/{uid}); `mirror` copies it into users/{uid}."""
    return Write(layout.usage_path(user_id), Op.MERGE, merge_payload({"userId": user_id, "usage": usage}))


def _free_tier_entry(
    commit: RecordingCommit, month: str, delta: MonthDelta, *, create: bool
) -> dict[str, Any]:
    """Return the free-tier fields a commit carries for a user at or over 80 % of a limit."""
    percent = commit.estimated_percent(month, delta)
    if percent is None or commit.limits is None or percent < WARNING_PERCENT:
        return {}
    return {"limitPercent": percent if create else Maximum(percent), **limits_fields(commit.limits)}


def _user_month_write(commit: RecordingCommit, month: str, delta: MonthDelta) -> Write:
    path = layout.user_month_path(commit.user_id, month)
    state = commit.user_months.get(month, UserMonthState(exists=False, active=False))
    if not state.exists:
        return Write(
            path,
            Op.CREATE,
            {
                "userId": commit.user_id,
                "month": month,
                "active": True,
                **delta.total.fields(),
                "unpricedSteps": delta.unpriced,
                "byType": _plain_map(delta.by_type),
                "features": _plain_map(delta.features),
                "providers": _plain_map(delta.providers),
                "days": _plain_map(delta.days),
                "unpricedModels": nested_counts(delta.unpriced_models),
                **_free_tier_entry(commit, month, delta, create=True),
            },
        )
    counters = {
        **_month_counters(delta),
        "features": _increment_map(delta.features),
        "providers": _increment_map(delta.providers),
        "days": _increment_map(delta.days),
        "unpricedModels": _unpriced_models(delta),
        **_free_tier_entry(commit, month, delta, create=False),
    }
    if not state.active:
        return Write(path, Op.UPDATE, {"active": True, **counters}, version=state.version)
    return Write(path, Op.MERGE, merge_payload({"userId": commit.user_id, "month": month, **counters}))


def _shard_write(commit: RecordingCommit, month: str, delta: MonthDelta) -> Write:
    doc: dict[str, Any] = {
        "month": month,
        "shard": commit.shard,
        **_month_counters(delta),
        "features": _increment_map(delta.features),
        "providers": _increment_map(delta.providers),
        "days": _increment_map(delta.days),
        "unpricedModels": _unpriced_models(delta),
    }
    if delta.total.api_calls and not commit.user_months.get(month, UserMonthState(False, False)).active:
        doc["activeUsers"] = Increment(1)
    if commit.session_created and month == month_key(commit.now):
        doc["sessions"] = {"active": Increment(1)}
    return Write(layout.shard_path(month, commit.shard), Op.MERGE, merge_payload(doc))


def recording_writes(commit: RecordingCommit) -> list[Write]:
    """Return one request's commit: steps, session, the user's documents and one platform shard."""
    writes = [
        Write(
            layout.step_path(commit.user_id, step.operation_id),
            Op.CREATE,
            step_doc.document(
                step,
                user_id=commit.user_id,
                session_id=commit.session_id or commit.step_session_id,
                now=commit.now,
                request_id=commit.request_id,
            ),
        )
        for step in commit.steps
    ]
    if commit.session_id is not None:
        writes.append(_session_write(commit))
    months = aggregate(commit.steps)
    if commit.session_created:
        months.setdefault(month_key(commit.now), MonthDelta())
    writes.append(_user_write(commit, months))
    writes += [_end_hold(hold, HoldStatus.SETTLED, commit.now, by=op) for hold, op in commit.settlements]
    for month, delta in sorted(months.items()):
        if delta.total.api_calls:
            writes.append(_user_month_write(commit, month, delta))
        writes.append(_shard_write(commit, month, delta))
    return writes


def stale_months(usage: Mapping[str, Any], now: datetime) -> tuple[str, ...]:
    """Return the months in `usage.months` older than the ones users/{uid} keeps."""
    kept = set(months_back(month_key(now), USER_MONTHS_KEPT))
    oldest = min(kept)
    return tuple(sorted(m for m in (usage.get("months") or {}) if m < oldest))


# Session lifecycle


@dataclass(frozen=True)
class SessionSummary:
    """The finalizer's summary of one completed session."""

    step_count: int
    cost_nanos: int
    billable_runs: int
    duration_ms: int
    features: Mapping[str, Mapping[str, Any]]
    providers: Mapping[str, Mapping[str, Any]]
    created_month: str
    completed_month: str
    completed_at: datetime | None = None  # when it was completed (as far as the session says)

    def document(self) -> dict[str, Any]:
        """Return the stored `summary` map (`*Nanos` authoritative, USD for display)."""
        return {
            "stepCount": self.step_count,
            "totalCostNanos": self.cost_nanos,
            "totalCost": round(self.cost_nanos / 10**9, 9),
            "billableRuns": self.billable_runs,
            "durationSeconds": self.duration_ms / 1000,
            "features": dict(self.features),
            "providers": dict(self.providers),
        }


def _named_counts(stats: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    result = {}
    for name, counts in (stats.get(key) or {}).items():
        cost = int(counts.get("costNanos", 0))
        result[name] = {
            "costNanos": cost,
            "cost": nanos_to_usd(cost),
            "calls": int(counts.get("apiCalls", 0)),
            "billableRuns": int(counts.get("billableRuns", 0)),
        }
    return result


def summarize(record: SessionRecord) -> SessionSummary:
    """Build a completed session's summary from its running stats.

    Duration runs from the first step to the last, by the steps' own timestamps (server
    time for steps sent without one): steps recorded in one batch after the fact keep
    the session's real duration, and idle time before a timeout is not counted.
    """
    data = record.data
    stats = data.get("stats") or {}
    # Times as Tally wrote them; a writer that is not Tally may have left strings or numbers.
    last_update = instant_or_none(data.get("lastUpdatedAt"))
    created = instant_or_none(data.get("createdAt")) or last_update or datetime(1970, 1, 1, tzinfo=UTC)
    first, last = instant_or_none(stats.get("firstStepAt")), instant_or_none(stats.get("lastStepAt"))
    duration_ms = max(0, round((last - first) / timedelta(milliseconds=1))) if first and last else 0
    completed_at = instant_or_none(data.get("completedAt")) or last_update or created
    return SessionSummary(
        step_count=int(stats.get("stepCount", 0)),
        cost_nanos=int(stats.get("costNanos", 0)),
        billable_runs=int(stats.get("billableRuns", 0)),
        duration_ms=duration_ms,
        features=_named_counts(stats, "features"),
        providers=_named_counts(stats, "providers"),
        created_month=month_key(created),
        completed_month=month_key(completed_at),
        completed_at=completed_at,
    )


def counted_at_completion(data: Mapping[str, Any]) -> bool:
    """Return whether a session's completion already counted it in the user's sessions (Tally did)."""
    return data.get("completedBy") in {by.value for by in CompletedBy}


def finalization_writes(
    *,
    user_id: str,
    session_id: str,
    version: Any,
    summary: SessionSummary,
    now: datetime,
    shard: int,
    count_user: bool = False,
    completed_at_missing: bool = False,
) -> list[Write]:
    """Return the finalizer's commit: the summary (if the session is unchanged), the platform's counters.

    With `count_user`, also the user's session counters: a session completed by a writer
    that is not Tally (the console, an app's tool) was not counted when it was completed,
    so it is counted here, once, with its finalization. Such a writer may also leave no
    `completedAt`, or one that is not a Timestamp: the instant the summary counts it at is
    then written there, as a Timestamp.
    """
    fields: dict[str, Any] = {"summary": Replace(summary.document()), "finalizedAt": now, OPEN: DELETE}
    if completed_at_missing and summary.completed_at is not None:
        fields["completedAt"] = summary.completed_at
    writes = [Write(layout.session_path(user_id, session_id), Op.UPDATE, fields, version=version)]
    if count_user:
        writes.append(
            usage_write(user_id, {"sessions": {"active": Increment(-1), "completed": Increment(1)}})
        )
    per_month: dict[str, dict[str, Any]] = {
        summary.completed_month: {
            "completed": Increment(1),
            "stepCount": Increment(summary.step_count),
            "costNanos": Increment(summary.cost_nanos),
            "durationMs": Increment(summary.duration_ms),
        }
    }
    per_month.setdefault(summary.created_month, {})["active"] = Increment(-1)
    for month, sessions in sorted(per_month.items()):
        writes.append(
            Write(
                layout.shard_path(month, shard),
                Op.MERGE,
                {"month": month, "shard": shard, "sessions": sessions},
            )
        )
    return reopened(writes, now=now)


def timeout_writes(*, user_id: str, session_id: str, version: Any, now: datetime) -> list[Write]:
    """Return the sweep's completion of an idle session (only if unchanged since read)."""
    return [
        Write(
            layout.session_path(user_id, session_id),
            Op.UPDATE,
            {
                "status": SessionStatus.COMPLETED.value,
                "completedAt": now,
                "completedBy": CompletedBy.TIMEOUT.value,
            },
            version=version,
        ),
        usage_write(user_id, {"sessions": {"active": Increment(-1), "completed": Increment(1)}}),
    ]


@dataclass(frozen=True)
class ImportedSession:
    """A session of an earlier system, becoming a Tally session at the same path."""

    user_id: str
    session_id: str
    version: Any  # the legacy document's update time: it is converted only if unchanged
    feature: str | None
    created_at: datetime
    last_at: datetime
    completed_at: datetime | None  # None: still active (the sweep completes it when idle)
    steps: tuple[Step, ...]
    source: str


def imported_session_writes(session: ImportedSession, *, now: datetime, shard: int) -> list[Write]:
    """Return the writes converting a legacy session: the Tally document, and the session counters.

    A completed session is written finalized (its summary and the platform's counters in
    the same commit), so the trigger never counts it again; an active one is counted
    active, and the sweep completes it.
    """
    counts = total(session.steps)
    named = session_counts(session.steps, None)
    times = [s.timestamp for s in session.steps]
    first, last = min(times, default=None), max(times, default=None)
    stats = {
        **_session_stats(counts),
        "features": _plain_map(named.features),
        "providers": _plain_map(named.providers),
        "firstStepAt": first,
        "lastStepAt": last,
    }
    completed = session.completed_at is not None
    data = {"createdAt": session.created_at, "completedAt": session.completed_at, "stats": stats}
    summary = summarize(SessionRecord(session.user_id, session.session_id, data, None)) if completed else None
    document: dict[str, Any] = {
        "userId": session.user_id,
        "sessionId": session.session_id,
        "feature": session.feature,
        "status": (SessionStatus.COMPLETED if completed else SessionStatus.ACTIVE).value,
        "createdAt": session.created_at,
        "lastUpdatedAt": session.last_at,
        "completedAt": session.completed_at,
        "completedBy": CompletedBy.CLIENT.value if completed else None,
        "finalizedAt": now if completed else None,
        OPEN: DELETE if completed else True,
        "summary": Replace(summary.document()) if summary else None,
        "tallyShard": layout.sweep_shard(session.user_id, session.session_id),
        "stats": Replace(stats),
        "importedFrom": session.source,
        "steps": DELETE,
        "totalCost": DELETE,
        "totalRuns": DELETE,
    }
    path = layout.session_path(session.user_id, session.session_id)
    writes = [Write(path, Op.UPDATE, document, version=session.version)]
    sessions = {"completed": Increment(1), "active": Increment(0)} if completed else {"active": Increment(1)}
    writes.append(usage_write(session.user_id, {"sessions": sessions}))
    if summary is not None:
        month, platform = (
            summary.completed_month,
            {
                "completed": Increment(1),
                "stepCount": Increment(summary.step_count),
                "costNanos": Increment(summary.cost_nanos),
                "durationMs": Increment(summary.duration_ms),
            },
        )
    else:
        month, platform = month_key(session.created_at), {"active": Increment(1)}
    writes.append(
        Write(
            layout.shard_path(month, shard), Op.MERGE, {"month": month, "shard": shard, "sessions": platform}
        )
    )
    return writes


# Reservations


def hold_document(
    *,
    user_id: str,
    reservation_id: str,
    cost_nanos: int,
    runs: int,
    source: CostSource,
    month: str,
    now: datetime,
    expires_at: datetime,
    feature: str | None = None,
) -> dict[str, Any]:
    """Return a new reservation's document (`pending` until its decision is stored)."""
    return {
        "userId": user_id,
        "reservationId": reservation_id,
        "feature": feature,
        "status": HoldStatus.PENDING.value,
        "estimateNanos": cost_nanos,
        "runs": runs,
        "month": month,
        "costSource": source.value,
        "createdAt": now,
        "expiresAt": expires_at,
        "reason": None,
        "tallyShard": int(layout.digest(user_id, reservation_id)[:8], 16) % layout.SWEEP_SHARDS,
    }


def hold_writes(hold: Mapping[str, Any]) -> list[Write]:
    """Return the fetch-and-add of a new hold: the pending reservation, `usage.held`, the month's totals.

    The estimate is added to `held` at once (a hold being decided counts, so no interleaving
    admits past a limit); adding 0 to the month's recorded totals makes the commit return
    them too, in one atomic step. An allowed hold then writes only its own document, so a
    gated call writes the user's documents once here and once when it is recorded.
    """
    user_id, month = str(hold["userId"]), str(hold["month"])
    return [
        Write(layout.reservation_path(user_id, str(hold["reservationId"])), Op.CREATE, dict(hold)),
        usage_write(
            user_id,
            {
                "held": {
                    "costNanos": Increment(int(hold["estimateNanos"])),
                    "runs": Increment(int(hold["runs"])),
                },
                "months": {month: {name: Increment(0) for name in ("costNanos", "apiCalls", "billableRuns")}},
            },
        ),
    ]


def refusal_writes(hold: Mapping[str, Any]) -> list[Write]:
    """Return the write of a reservation refused before anything was held (its estimate cannot be priced)."""
    return [
        Write(layout.reservation_path(str(hold["userId"]), str(hold["reservationId"])), Op.CREATE, dict(hold))
    ]


def _release_held(hold: HoldState) -> Write:
    """Take a hold out of `usage.held`: it stops counting."""
    return usage_write(
        hold.user_id, {"held": {"costNanos": Increment(-hold.cost_nanos), "runs": Increment(-hold.runs)}}
    )


def _end_hold(hold: HoldState, status: HoldStatus, now: datetime, *, by: str | None = None) -> Write:
    data: dict[str, Any] = {"status": status.value, "endedAt": now}
    if by is not None:
        data["settledBy"] = by
    return Write(
        layout.reservation_path(hold.user_id, hold.reservation_id), Op.UPDATE, data, version=hold.version
    )


def decision_writes(hold: HoldState, *, reason: str | None, now: datetime) -> list[Write]:
    """Return the writes storing a pending reservation's decision (a refusal takes its hold back)."""
    status = HoldStatus.ACTIVE if reason is None else HoldStatus.DENIED
    decided = Write(
        layout.reservation_path(hold.user_id, hold.reservation_id),
        Op.UPDATE,
        {"status": status.value, "reason": reason, "decidedAt": now},
        version=hold.version,
    )
    return [decided] if reason is None else [decided, _release_held(hold)]


def end_hold_writes(hold: HoldState, *, status: HoldStatus, now: datetime) -> list[Write]:
    """Return the writes ending a hold (released or expired): it stops counting."""
    return [_end_hold(hold, status, now), _release_held(hold)]


# Limits and the free-tier table


def limits_fields(limits: Limits) -> dict[str, int]:
    """Return the stored form of a user's limits."""
    return {
        "monthlyCostLimitNanos": limits.monthly_cost_limit_nanos,
        "monthlyFreeRuns": limits.monthly_free_runs,
    }


def free_tier_write(*, user_id: str, month: str, percent: float, limits: Limits, exact: bool) -> Write:
    """Return the write of a user's free-tier entry: raised to `percent`, or set to it when `exact`."""
    value: Any = percent if exact else Maximum(percent)
    return Write(
        layout.user_month_path(user_id, month),
        Op.MERGE,
        {"userId": user_id, "month": month, "limitPercent": value, **limits_fields(limits)},
    )


def free_tier_fixups(
    *, user_id: str, used: Mapping[str, Counts], known: Mapping[str, float | None], limits: Limits
) -> list[Write]:
    """Return the entries to raise after a commit: where the exact share passed a step beyond what is stored.

    The commit already raised each entry to its estimate (from a plain read); only a
    concurrent request can make the exact share higher, so this is rarely needed.
    """
    writes = []
    for month, counts in sorted(used.items()):
        exact = limit_percent(counts, limits)
        stored = known.get(month)
        if exact >= WARNING_PERCENT and (
            stored is None or exact // FREE_TIER_STEP > stored // FREE_TIER_STEP
        ):
            writes.append(
                free_tier_write(user_id=user_id, month=month, percent=exact, limits=limits, exact=False)
            )
    return writes


def limits_writes(*, user_id: str, limits: Limits) -> list[Write]:
    """Return the writes of a user's limits: `usage.limits` (nothing else touched) and Tally's own copy."""
    fields = limits_fields(limits)
    return [
        usage_write(user_id, {"limits": fields}),
        Write(layout.limits_path(user_id), Op.MERGE, {"userId": user_id, **fields}),
    ]


# Names


def quota_writes(caller: str, batches: Mapping[tuple[NameKind, str], int]) -> list[Write]:
    """Return the fetch-and-add of the new names a caller introduces, per kind and month."""
    per_month: dict[str, dict[str, Any]] = {}
    for (kind, month), count in sorted(batches.items()):
        per_month.setdefault(month, {"userId": caller, "month": month})[kind.value] = Increment(count)
    return [Write(layout.name_quota_path(caller, month), Op.MERGE, data) for month, data in per_month.items()]


def name_count_writes(batches: Mapping[tuple[NameKind, str], int]) -> list[Write]:
    """Return the fetch-and-add of a month's admitted-name slots, per kind."""
    return [
        Write(
            layout.name_count_path(kind.value, month),
            Op.MERGE,
            {"kind": kind.value, "month": month, "count": Increment(count)},
        )
        for (kind, month), count in sorted(batches.items())
    ]


def registry_writes(keys: Iterable[NameKey], *, by: str, now: datetime) -> list[Write]:
    """Return the registry entries of newly admitted names (idempotent)."""
    return [
        Write(
            layout.name_path(key.kind.value, key.month, key.name),
            Op.MERGE,
            {"kind": key.kind.value, "month": key.month, "name": key.name, "admittedAt": now, "by": by},
        )
        for key in sorted(keys)
    ]


# Rollups


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
    document.update(
        ranking.fields()
        if ranking is not None
        else {"topUsers": DELETE, "freeTier": DELETE, "latestAlerts": DELETE}
    )
    replaced = {
        key: Replace(value) if isinstance(value, Mapping) else value for key, value in document.items()
    }
    return Write(layout.rollup_path(month), Op.UPDATE, replaced, version=version)
