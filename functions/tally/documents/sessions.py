"""A session, `SessionUsage/{uid}/sessions/{sessionId}`: running stats, completion, its summary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tally import layout
from tally.documents import counters
from tally.errors import FailedPrecondition
from tally.money import nanos_to_usd
from tally.names import OTHER, NameKind
from tally.timeutil import instant_or_none, month_key
from tally.usage import Counts, total
from tally.values import CompletedBy, Document, SessionRecord, SessionState, SessionStatus, Step
from tally.writes import DELETE, Increment, Replace

MAX_NAMES = 100  # names of one kind in one session's breakdown; more go to (other)
# On a session until its finalization counts it: reconcile finds a user's unfinalized sessions
# with one indexed equality (a boolean; no ever-increasing index range) instead of 16 shard queries.
OPEN = "tallyOpen"
SHARD = "tallyShard"  # the sweep's shard; only Tally's sessions have it
STATUS = "status"
LAST_UPDATED = "lastUpdatedAt"  # queried: idle sessions
FINALIZED = "finalizedAt"  # queried: completed sessions no finalizer summarized
CREATED, COMPLETED = "createdAt", "completedAt"  # queried: a month's sessions
STATS, SUMMARY = "stats", "summary"
STEP_COUNT = "stepCount"


@dataclass(frozen=True)
class SessionCounts:
    """Steps as a session's breakdown counts them (capped per session)."""

    features: dict[str, Counts]
    providers: dict[str, Counts]
    capped: tuple[tuple[str, NameKind], ...]  # (operationId, kind) counted under (other) by the cap


def session_counts(steps: Iterable[Step], base: SessionState | None) -> SessionCounts:
    """Count steps into a session's breakdown: at most MAX_NAMES names a kind, then `(other)`."""
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
            if name not in names and len(names) >= MAX_NAMES and name != OTHER:
                capped.append((step.operation_id, kind))
                name = OTHER
            names.add(name)
            counted[kind].setdefault(name, Counts()).add(step)
    return SessionCounts(counted[NameKind.FEATURE], counted[NameKind.PROVIDER], tuple(capped))


def _stat_counts(counts: Counts) -> dict[str, int]:
    return {
        STEP_COUNT: counts.api_calls,
        counters.COST: counts.cost_nanos,
        counters.RUNS: counts.billable_runs,
    }


def stats(steps: tuple[Step, ...], named: SessionCounts) -> dict[str, Any]:
    """Return a new session's stats for its steps."""
    times = [s.timestamp for s in steps]
    return {
        **_stat_counts(total(steps)),
        "features": counters.plain_map(named.features),
        "providers": counters.plain_map(named.providers),
        "firstStepAt": min(times, default=None),
        "lastStepAt": max(times, default=None),
    }


def stats_change(steps: tuple[Step, ...], named: SessionCounts, base: SessionState) -> dict[str, Any]:
    """Return what more steps add to a session's stats."""
    times = [s.timestamp for s in steps]
    known = [t for t in (base.first_step_at, base.last_step_at) if t is not None]
    return {
        **{name: Increment(value) for name, value in _stat_counts(total(steps)).items()},
        "features": counters.increment_map(named.features),
        "providers": counters.increment_map(named.providers),
        "firstStepAt": min([*times, *known]),
        "lastStepAt": max([*times, *known]),
    }


def completion(now: datetime, by: CompletedBy) -> dict[str, Any]:
    """Return the fields completing a session."""
    return {STATUS: SessionStatus.COMPLETED.value, COMPLETED: now, "completedBy": by.value}


def created(
    *, user_id: str, session_id: str, feature: str | None, now: datetime, stats: dict[str, Any]
) -> dict[str, Any]:
    """Return a new session's document (active; its first steps' stats)."""
    return {
        "userId": user_id,
        "sessionId": session_id,
        "feature": feature,
        STATUS: SessionStatus.ACTIVE.value,
        CREATED: now,
        LAST_UPDATED: now,
        COMPLETED: None,
        "completedBy": None,
        FINALIZED: None,
        OPEN: True,
        SUMMARY: None,
        SHARD: layout.sweep_shard(user_id, session_id),
        STATS: stats,
    }


def touched(*, user_id: str, session_id: str, now: datetime) -> dict[str, Any]:
    """Return the fields every write of a session's steps sets (the shard also upgrades older sessions)."""
    return {LAST_UPDATED: now, SHARD: layout.sweep_shard(user_id, session_id)}


def state_of(doc: Document) -> SessionState:
    """Return what the write path needs of a stored session (an earlier system's must be imported first)."""
    data = doc.fields
    if "steps" in data and STATS not in data:
        raise FailedPrecondition(
            f"session {doc.path.rsplit('/', 1)[-1]} was written by an earlier system; "
            "import it with `python -m entrypoints.cli import-legacy` first"
        )
    found = data.get(STATS) or {}
    return SessionState(
        status=SessionStatus(data[STATUS]),
        created_at=data[CREATED],
        first_step_at=found.get("firstStepAt"),
        last_step_at=found.get("lastStepAt"),
        version=doc.version,
        step_count=int(found.get(STEP_COUNT, 0)),
        cost_nanos=int(found.get(counters.COST, 0)),
        feature_names=frozenset(found.get("features") or {}),
        provider_names=frozenset(found.get("providers") or {}),
    )


def committed_stats(result: Any, user_id: str, session_id: str) -> tuple[int, int]:
    """Return a session's (step count, cost) as a commit's increments left them."""
    path = layout.session_path(user_id, session_id)
    return result.value(path, STATS, STEP_COUNT), result.value(path, STATS, counters.COST)


def is_tally_session(data: Mapping[str, Any]) -> bool:
    """Return whether a document at a session path is Tally's (a legacy system's is not, until imported)."""
    return SHARD in data


def is_active(data: Mapping[str, Any]) -> bool:
    """Return whether a session is active (as written)."""
    return data.get(STATUS) == SessionStatus.ACTIVE.value


def is_completed(data: Mapping[str, Any]) -> bool:
    """Return whether a session is completed (as written)."""
    return data.get(STATUS) == SessionStatus.COMPLETED.value


def is_finalized(data: Mapping[str, Any]) -> bool:
    """Return whether a finalizer has counted a session."""
    return data.get(FINALIZED) is not None


def is_completion(data: Mapping[str, Any]) -> bool:
    """Return whether a session document, as written, still waits for its finalization."""
    return is_tally_session(data) and is_completed(data) and not is_finalized(data)


def counted_at_completion(data: Mapping[str, Any]) -> bool:
    """Return whether a session's completion already counted it in the user's sessions (Tally did)."""
    return data.get("completedBy") in {by.value for by in CompletedBy}


def completed_at_missing(data: Mapping[str, Any]) -> bool:
    """Return whether a session lacks a `completedAt` Timestamp (a writer that is not Tally completed it)."""
    return not isinstance(data.get(COMPLETED), datetime)


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
            STEP_COUNT: self.step_count,
            "totalCostNanos": self.cost_nanos,
            "totalCost": round(self.cost_nanos / 10**9, 9),
            counters.RUNS: self.billable_runs,
            "durationSeconds": self.duration_ms / 1000,
            "features": dict(self.features),
            "providers": dict(self.providers),
        }


@dataclass(frozen=True)
class Summarized:
    """What a stored summary counts in the platform's session counters."""

    step_count: int
    cost_nanos: int
    duration_ms: int


def summarized(data: Mapping[str, Any]) -> Summarized | None:
    """Return a finalized session's stored summary (None: not finalized, or no summary)."""
    summary = data.get(SUMMARY) or {}
    if not is_finalized(data) or not summary:
        return None
    return Summarized(
        int(summary.get(STEP_COUNT, 0)),
        int(summary.get("totalCostNanos", 0)),
        round(float(summary.get("durationSeconds", 0)) * 1000),
    )


def _named_counts(found: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    result = {}
    for name, stored in (found.get(key) or {}).items():
        counts = counters.counts_of(stored)
        result[name] = {
            counters.COST: counts.cost_nanos,
            "cost": nanos_to_usd(counts.cost_nanos),
            "calls": counts.api_calls,
            counters.RUNS: counts.billable_runs,
        }
    return result


def summarize(record: SessionRecord) -> SessionSummary:
    """Build a completed session's summary from its running stats.

    Duration runs from the first step to the last, by the steps' own timestamps (server
    time for steps sent without one): steps recorded in one batch after the fact keep
    the session's real duration, and idle time before a timeout is not counted.
    """
    data = record.data
    found = data.get(STATS) or {}
    # Times as Tally wrote them; a writer that is not Tally may have left strings or numbers.
    last_update = instant_or_none(data.get(LAST_UPDATED))
    created_at = instant_or_none(data.get(CREATED)) or last_update or datetime(1970, 1, 1, tzinfo=UTC)
    first, last = instant_or_none(found.get("firstStepAt")), instant_or_none(found.get("lastStepAt"))
    duration_ms = max(0, round((last - first) / timedelta(milliseconds=1))) if first and last else 0
    completed_at = instant_or_none(data.get(COMPLETED)) or last_update or created_at
    return SessionSummary(
        step_count=int(found.get(STEP_COUNT, 0)),
        cost_nanos=int(found.get(counters.COST, 0)),
        billable_runs=int(found.get(counters.RUNS, 0)),
        duration_ms=duration_ms,
        features=_named_counts(found, "features"),
        providers=_named_counts(found, "providers"),
        created_month=month_key(created_at),
        completed_month=month_key(completed_at),
        completed_at=completed_at,
    )


def finalization(summary: SessionSummary, now: datetime, *, completed_at_missing: bool) -> dict[str, Any]:
    """Return the fields the finalizer writes: the summary; the completion instant where it was missing."""
    fields: dict[str, Any] = {SUMMARY: Replace(summary.document()), FINALIZED: now, OPEN: DELETE}
    if completed_at_missing and summary.completed_at is not None:
        fields[COMPLETED] = summary.completed_at
    return fields


def imported(
    *,
    user_id: str,
    session_id: str,
    feature: str | None,
    created_at: datetime,
    last_at: datetime,
    completed_at: datetime | None,
    stats: dict[str, Any],
    summary: SessionSummary | None,
    source: str,
    now: datetime,
) -> dict[str, Any]:
    """Return the update converting an earlier system's session into Tally's (its old fields removed)."""
    completed = completed_at is not None
    return {
        "userId": user_id,
        "sessionId": session_id,
        "feature": feature,
        STATUS: (SessionStatus.COMPLETED if completed else SessionStatus.ACTIVE).value,
        CREATED: created_at,
        LAST_UPDATED: last_at,
        COMPLETED: completed_at,
        "completedBy": CompletedBy.CLIENT.value if completed else None,
        FINALIZED: now if completed else None,
        OPEN: DELETE if completed else True,
        SUMMARY: Replace(summary.document()) if summary else None,
        SHARD: layout.sweep_shard(user_id, session_id),
        STATS: Replace(stats),
        "importedFrom": source,
        "steps": DELETE,
        "totalCost": DELETE,
        "totalRuns": DELETE,
    }


def is_imported(data: Mapping[str, Any]) -> bool:
    """Return whether a session was converted from an earlier system's."""
    return bool(data.get("importedFrom"))


def step_times(data: Mapping[str, Any]) -> tuple[datetime, ...]:
    """Return the first and last step's instants a session's stats hold (those that are instants)."""
    found = data.get(STATS) or {}
    return tuple(at for at in (found.get("firstStepAt"), found.get("lastStepAt")) if isinstance(at, datetime))
