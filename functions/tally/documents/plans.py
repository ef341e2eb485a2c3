"""Tally's commits, composed from the documents' own builders (pure): which documents each operation writes.

Every function here returns `Write`s and touches no database, so the subtle rules get
fast unit tests: merge payloads never carry empty maps, no document gets more than 500
field transforms in one commit, ids never start with the month, a user becomes active
in a month exactly once, and shared documents are picked per request. The fields of each
document are spelled by its module in `tally.documents`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from tally import layout
from tally.documents import holds as hold_doc
from tally.documents import months as month_doc
from tally.documents import platform_holds, user_months
from tally.documents import sessions as session_doc
from tally.documents import steps as step_doc
from tally.documents import teams as team_doc
from tally.documents import usage as usage_doc
from tally.documents import windows as window_doc
from tally.timeutil import month_key
from tally.usage import Counts, Held, Limits, MonthDelta, aggregate, limit_percent, total
from tally.values import (
    CompletedBy,
    HoldState,
    HoldStatus,
    SessionRecord,
    SessionState,
    SessionStatus,
    Step,
    UserMonthState,
)
from tally.writes import Op, Write, merged


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
    stale_windows: Mapping[str, Any] = field(
        default_factory=dict
    )  # windows keys to drop (windows.stale_keys)
    team_id: str | None = None  # the user's team now: its slices count the steps
    team_slice: int = 0  # the slice that counts steps settling no hold of that team

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

    @cached_property
    def session_named(self) -> session_doc.SessionCounts:
        """Return the steps as the session's breakdown counts them (which names its cap sent to `(other)`)."""
        return session_doc.session_counts(self.steps, self.session_base)

    @cached_property
    def months(self) -> dict[str, MonthDelta]:
        """Return what the steps add to each month (now's month too, for a session created)."""
        found = aggregate(self.steps)
        if self.session_created:
            found.setdefault(month_key(self.now), MonthDelta())
        return found


def _session_write(commit: RecordingCommit) -> Write:
    assert commit.session_id is not None
    path = layout.session_path(commit.user_id, commit.session_id)
    base = commit.session_base
    completion = session_doc.completion(commit.now, CompletedBy.CLIENT) if commit.session_completed else {}
    if base is None:
        data = session_doc.created(
            user_id=commit.user_id,
            session_id=commit.session_id,
            feature=commit.session_feature,
            now=commit.now,
            stats=session_doc.stats(commit.steps, commit.session_named),
        )
        return Write(path, Op.CREATE, {**data, **completion})
    data = {
        **session_doc.touched(user_id=commit.user_id, session_id=commit.session_id, now=commit.now),
        **completion,
    }
    if commit.steps:
        data[session_doc.STATS] = session_doc.stats_change(commit.steps, commit.session_named, base)
    return Write(path, Op.UPDATE, data, version=base.version)


def _user_write(commit: RecordingCommit) -> Write:
    created, completed = commit.session_created, commit.session_completed
    settled = [hold for hold, _ in commit.settlements]
    released: dict[tuple[str, str], Held] = {}
    for hold in settled:
        if hold.feature_held and hold.feature is not None and hold.month is not None:
            before = released.get((hold.month, hold.feature), Held())
            released[(hold.month, hold.feature)] = Held(before.cost_nanos + hold.cost_nanos, before.runs + 1)
    change = window_doc.recording_change(commit.steps, commit.now, released=released)
    windows = window_doc.write(commit.user_id, {**change, **_stale(commit.stale_windows, change)})
    usage = usage_doc.recording_write(
        user_id=commit.user_id,
        now=commit.now,
        deltas=commit.months,
        stale=commit.stale_months,
        lifetime=total(commit.steps) if commit.steps else None,
        sessions=usage_doc.sessions_change(
            active=int(created) - int(completed) if created or completed else None,
            completed=1 if completed else None,
        ),
        settled=Held(sum(h.cost_nanos for h in settled), sum(h.runs for h in settled)) if settled else None,
    )
    return merged([usage, windows])[0]


def _stale(stale: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """Return the deletions of old windows, merged beside a change (which never touches old windows)."""
    return {key: {**dict(value), **dict(change.get(key) or {})} for key, value in stale.items()}


def _user_month_write(commit: RecordingCommit, month: str, delta: MonthDelta) -> Write:
    state = commit.user_months.get(month, UserMonthState(exists=False, active=False))
    return user_months.write(
        user_id=commit.user_id,
        month=month,
        delta=delta,
        state=state,
        free_tier=user_months.entry(
            commit.estimated_percent(month, delta), commit.limits, exact=not state.exists
        ),
    )


def _team_writes(commit: RecordingCommit) -> list[Write]:
    """Return the team slices' part of a recording: each step where its hold was held, holds taken back.

    A step settling a hold of the user's team counts in that hold's slice, so the usage a
    slice admitted is charged to the slice that admitted it; other steps count in one slice
    picked for the request. A hold of a team the user has left is only taken back.
    """
    by_op = {op: hold for hold, op in commit.settlements}
    counted: dict[int, list[tuple[datetime, int, int]]] = {}
    team = commit.team_id
    if team is not None:
        for step in commit.steps:
            hold = by_op.get(step.operation_id)
            k = commit.team_slice
            if hold is not None and hold.team_id == team and hold.team_slice is not None:
                k = hold.team_slice
            counted.setdefault(k, []).append((step.timestamp, step.cost_nanos, int(step.is_billable_run)))
    writes = [
        team_doc.usage_change(team, k, found, commit.now) for k, found in sorted(counted.items()) if team
    ]
    writes += [w for hold, _ in commit.settlements for w in _release_slice(hold)]
    return merged(writes)


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
    writes.append(_user_write(commit))
    writes += [_end_hold(hold, HoldStatus.SETTLED, commit.now, by=op) for hold, op in commit.settlements]
    writes += _team_writes(commit)
    for month, delta in sorted(commit.months.items()):
        if delta.total.api_calls:
            writes.append(_user_month_write(commit, month, delta))
        state = commit.user_months.get(month, UserMonthState(False, False))
        writes.append(
            month_doc.shard_write(
                month,
                commit.shard,
                delta,
                new_user=bool(delta.total.api_calls) and not state.active,
                new_session=commit.session_created and month == month_key(commit.now),
            )
        )
    return writes


# Session lifecycle


def finalization_writes(
    *,
    user_id: str,
    session_id: str,
    version: Any,
    summary: session_doc.SessionSummary,
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
    fields = session_doc.finalization(summary, now, completed_at_missing=completed_at_missing)
    writes = [Write(layout.session_path(user_id, session_id), Op.UPDATE, fields, version=version)]
    if count_user:
        writes.append(usage_doc.write(user_id, usage_doc.sessions_change(active=-1, completed=1)))
    per_month: dict[str, dict[str, int]] = {summary.completed_month: _completed(summary)}
    per_month.setdefault(summary.created_month, {})[month_doc.ACTIVE] = -1
    writes += [month_doc.sessions_write(month, shard, counts) for month, counts in sorted(per_month.items())]
    return month_doc.reopened(writes, now=now)


def _completed(summary: session_doc.SessionSummary) -> dict[str, int]:
    return month_doc.completed_session(
        steps=summary.step_count, cost_nanos=summary.cost_nanos, duration_ms=summary.duration_ms
    )


def timeout_writes(*, user_id: str, session_id: str, version: Any, now: datetime) -> list[Write]:
    """Return the sweep's completion of an idle session (only if unchanged since read)."""
    return [
        Write(
            layout.session_path(user_id, session_id),
            Op.UPDATE,
            session_doc.completion(now, CompletedBy.TIMEOUT),
            version=version,
        ),
        usage_doc.write(user_id, usage_doc.sessions_change(active=-1, completed=1)),
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
    stats = session_doc.stats(session.steps, session_doc.session_counts(session.steps, None))
    completed = session.completed_at is not None
    summary = None
    if completed:
        data = {
            session_doc.CREATED: session.created_at,
            session_doc.COMPLETED: session.completed_at,
            session_doc.STATS: stats,
        }
        summary = session_doc.summarize(SessionRecord(session.user_id, session.session_id, data, None))
    document = session_doc.imported(
        user_id=session.user_id,
        session_id=session.session_id,
        feature=session.feature,
        created_at=session.created_at,
        last_at=session.last_at,
        completed_at=session.completed_at,
        stats=stats,
        summary=summary,
        source=session.source,
        now=now,
    )
    path = layout.session_path(session.user_id, session.session_id)
    writes = [Write(path, Op.UPDATE, document, version=session.version)]
    sessions = (
        usage_doc.sessions_change(completed=1, active=0) if completed else usage_doc.sessions_change(active=1)
    )
    writes.append(usage_doc.write(session.user_id, sessions))
    if summary is not None:
        writes.append(month_doc.sessions_write(summary.completed_month, shard, _completed(summary)))
    else:
        writes.append(month_doc.sessions_write(month_key(session.created_at), shard, {month_doc.ACTIVE: 1}))
    return writes


# Reservations


def hold_writes(
    hold: Mapping[str, Any], *, now: datetime, stale: Mapping[str, Any] | None = None
) -> list[Write]:
    """Return the fetch-and-add of a new hold: the pending reservation, `usage.held`, the month's totals.

    The estimate is added to `held` at once (a hold being decided counts, so no interleaving
    admits past a limit); adding 0 to the month's recorded totals makes the commit return
    them too, in one atomic step; so does adding 0 to today's totals and to the estimate's
    feature (and its estimate to the feature's holds, when the user has a limit for it). An
    allowed hold then writes only its own document, so a gated call writes the user's
    documents once here and once when it is recorded. `stale`: old windows to drop.
    """
    user_id, month = str(hold["userId"]), str(hold[hold_doc.MONTH])
    held = Held(int(hold[hold_doc.ESTIMATE]), int(hold[hold_doc.RUNS]))
    feature = hold.get(hold_doc.FEATURE)
    feature_held = Held(held.cost_nanos, 1) if hold.get(hold_doc.FEATURE_HELD) is True else None
    # a feature's counters come back only when the user has a limit for it: an estimate's feature is
    # caller input, and an unlimited one would only add keys to the user's document
    limited = feature if feature_held is not None else None
    windows = window_doc.hold_change(now, feature=limited, held=feature_held)
    user = merged(
        [
            usage_doc.hold_write(user_id, month, held),
            window_doc.write(user_id, {**windows, **_stale(stale or {}, windows)}),
        ]
    )
    team, k = hold.get(hold_doc.TEAM), hold.get(hold_doc.TEAM_SLICE)
    slices = (
        [team_doc.hold_change(team, k, held, now)] if isinstance(team, str) and isinstance(k, int) else []
    )
    platform = hold.get(hold_doc.PLATFORM_SHARD)
    if isinstance(platform, int):
        slices.append(platform_holds.hold_write(month, platform, held.cost_nanos))
    return [
        Write(layout.reservation_path(user_id, str(hold["reservationId"])), Op.CREATE, dict(hold)),
        *user,
        *slices,
    ]


def refusal_writes(hold: Mapping[str, Any]) -> list[Write]:
    """Return the write of a reservation refused before anything was held (its estimate cannot be priced)."""
    return [
        Write(layout.reservation_path(str(hold["userId"]), str(hold["reservationId"])), Op.CREATE, dict(hold))
    ]


def _release_held(hold: HoldState) -> list[Write]:
    """Take a hold out of `usage.held` (and its feature's holds, and its team slice's): it stops counting."""
    usage = usage_doc.write(hold.user_id, usage_doc.held_change(Held(-hold.cost_nanos, -hold.runs)))
    if hold.feature_held and hold.feature is not None and hold.month is not None:
        release = window_doc.release_change(hold.month, hold.feature, Held(hold.cost_nanos, 1))
        usage = merged([usage, window_doc.write(hold.user_id, release)])[0]
    return [usage, *_release_slice(hold)]


def _release_slice(hold: HoldState) -> list[Write]:
    """Take a hold back out of its team's slice and the platform's hold shard, where it counts."""
    found = []
    if hold.team_id is not None and hold.team_slice is not None:
        found.append(team_doc.release_change(hold.team_id, hold.team_slice, Held(hold.cost_nanos, hold.runs)))
    if hold.platform_shard is not None and hold.month is not None:
        found.append(platform_holds.hold_write(hold.month, hold.platform_shard, -hold.cost_nanos))
    return found


def _end_hold(hold: HoldState, status: HoldStatus, now: datetime, *, by: str | None = None) -> Write:
    path = layout.reservation_path(hold.user_id, hold.reservation_id)
    return Write(path, Op.UPDATE, hold_doc.ending(status, now, by=by), version=hold.version)


def decision_writes(hold: HoldState, *, reason: str | None, now: datetime) -> list[Write]:
    """Return the writes storing a pending reservation's decision (a refusal takes its hold back)."""
    status = HoldStatus.ACTIVE if reason is None else HoldStatus.DENIED
    decided = Write(
        layout.reservation_path(hold.user_id, hold.reservation_id),
        Op.UPDATE,
        hold_doc.decision(status, reason, now),
        version=hold.version,
    )
    return [decided] if reason is None else [decided, *_release_held(hold)]


def end_hold_writes(hold: HoldState, *, status: HoldStatus, now: datetime) -> list[Write]:
    """Return the writes ending a hold (released or expired): it stops counting."""
    return [_end_hold(hold, status, now), *_release_held(hold)]
