"""Session lifecycle: finalize a completed session exactly once; sweep idle sessions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from tally.money import nanos_to_usd
from tally.store import Contention, IdleSession, SessionRecord, SessionSummary
from tally.timeutil import month_key

MAX_ATTEMPTS = 12
SWEEP_PAGE_SIZE = 200
SWEEP_MARGIN_SECONDS = 30.0


class Finalized(StrEnum):
    """What a finalization attempt found and did."""

    FINALIZED = "finalized"
    ALREADY_FINALIZED = "already-finalized"
    NOT_COMPLETED = "not-completed"
    MISSING = "missing"


class SessionStore(Protocol):
    """The store operations the session lifecycle needs."""

    def read_session(self, *, user_id: str, session_id: str) -> SessionRecord | None: ...

    def commit_finalization(
        self, *, record: SessionRecord, summary: SessionSummary, now: datetime
    ) -> None: ...

    def idle_sessions(self, *, cutoff: datetime, limit: int, after: Any | None) -> list[IdleSession]: ...

    def complete_sessions(self, sessions: list[IdleSession], *, now: datetime) -> int: ...


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

    Duration runs from creation to the last activity (`lastUpdatedAt`): a client's
    completion is activity, a timeout is not, so idle time is not counted.
    """
    data = record.data
    stats = data.get("stats") or {}
    created: datetime = data["createdAt"]
    last_activity: datetime = data.get("lastUpdatedAt") or created
    duration_ms = max(0, round((last_activity - created) / timedelta(milliseconds=1)))
    cost = int(stats.get("costNanos", 0))
    completed_at: datetime = data.get("completedAt") or last_activity
    return SessionSummary(
        step_count=int(stats.get("stepCount", 0)),
        cost_nanos=cost,
        billable_runs=int(stats.get("billableRuns", 0)),
        duration_ms=duration_ms,
        features=_named_counts(stats, "features"),
        providers=_named_counts(stats, "providers"),
        created_month=month_key(created),
        completed_month=month_key(completed_at),
    )


def finalize_session(
    *,
    store: SessionStore,
    user_id: str,
    session_id: str,
    now: datetime,
    sleep: Callable[[float], None] | None = None,
) -> Finalized:
    """Write a completed session's summary and count it, once, however often this runs.

    The commit carries an update-time precondition on the session document: of two
    concurrent finalizations (a repeated trigger delivery, or a delivery racing a
    manual run), one commits and the other re-reads and finds `finalizedAt` set.
    """
    for _ in range(MAX_ATTEMPTS):
        record = store.read_session(user_id=user_id, session_id=session_id)
        if record is None:
            return Finalized.MISSING
        if record.data.get("status") != "completed":
            return Finalized.NOT_COMPLETED
        if record.data.get("finalizedAt") is not None:
            return Finalized.ALREADY_FINALIZED
        try:
            store.commit_finalization(record=record, summary=summarize(record), now=now)
            return Finalized.FINALIZED
        except Contention:
            if sleep is not None:
                sleep(0.05)
    raise Contention(f"could not finalize session {session_id}")


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    completed: int
    examined: int
    pages: int
    finished: bool  # False: stopped for time; the next run continues


def sweep_idle_sessions(
    *,
    store: SessionStore,
    now: datetime,
    idle_minutes: int,
    page_size: int = SWEEP_PAGE_SIZE,
    seconds_left: Callable[[], float] | None = None,
) -> SweepResult:
    """Complete active sessions idle longer than `idle_minutes`, page by page.

    Each completion is conditional on the session being unchanged since the page was
    read, so a session the client completes or extends meanwhile is left alone.
    Stops early (finished=False) when `seconds_left()` drops under a safety margin.
    """
    cutoff = now - timedelta(minutes=idle_minutes)
    completed = examined = pages = 0
    cursor: Any | None = None
    while True:
        page = store.idle_sessions(cutoff=cutoff, limit=page_size, after=cursor)
        if not page:
            return SweepResult(completed, examined, pages, finished=True)
        pages += 1
        examined += len(page)
        completed += store.complete_sessions(page, now=now)
        cursor = page[-1].cursor
        if len(page) < page_size:
            return SweepResult(completed, examined, pages, finished=True)
        if seconds_left is not None and seconds_left() < SWEEP_MARGIN_SECONDS:
            return SweepResult(completed, examined, pages, finished=False)
