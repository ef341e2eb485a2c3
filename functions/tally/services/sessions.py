"""Session lifecycle: finalize a completed session exactly once; sweep idle and unfinalized sessions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from tally import layout, ports
from tally.documents import plans
from tally.documents import sessions as session_doc
from tally.services import mirror
from tally.values import Contention, IdleSession, SessionRecord

MAX_ATTEMPTS = 12
log = logging.getLogger("tally.sessions")
SWEEP_PAGE_SIZE = 200
SHARDS = plans.ShardPicker()
SWEEP_MARGIN_SECONDS = 30.0


class Finalized(StrEnum):
    """What a finalization attempt found and did."""

    FINALIZED = "finalized"
    ALREADY_FINALIZED = "already-finalized"
    NOT_COMPLETED = "not-completed"
    NOT_TALLYS = "not-tallys"  # a legacy system's document at a session path
    MISSING = "missing"


class SessionStore(ports.DocumentStore, Protocol):
    """The store operations the session lifecycle needs."""

    def idle_sessions(
        self, *, shard: int, cutoff: datetime, limit: int, after: Any | None
    ) -> list[IdleSession]: ...

    def unfinalized_sessions(self, *, shard: int, limit: int, after: Any | None) -> list[IdleSession]: ...


def finalize_session(
    *,
    store: SessionStore,
    user_id: str,
    session_id: str,
    now: datetime,
    shards: plans.ShardPicker | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Finalized:
    """Write a completed session's summary and count it, once, however often this runs.

    The commit carries an update-time precondition on the session document: of two
    concurrent finalizations (a repeated trigger delivery, a retry, the sweep), one
    commits and the others re-read and find `finalizedAt` set.
    """
    picker = shards or SHARDS
    path = layout.session_path(user_id, session_id)

    def attempt() -> Finalized:
        doc = store.read([path])[path]
        if not doc.exists:
            return Finalized.MISSING
        record = SessionRecord(user_id, session_id, doc.fields, doc.version)
        if not session_doc.is_tally_session(record.data):
            return Finalized.NOT_TALLYS
        if not session_doc.is_completed(record.data):
            return Finalized.NOT_COMPLETED
        if session_doc.is_finalized(record.data):
            return Finalized.ALREADY_FINALIZED
        writes = plans.finalization_writes(
            user_id=user_id,
            session_id=session_id,
            version=record.version,
            summary=session_doc.summarize(record),
            now=now,
            shard=picker.next(store.shards),
            count_user=not session_doc.counted_at_completion(record.data),
            completed_at_missing=session_doc.completed_at_missing(record.data),
        )
        mirror.commit(store, writes)  # lost: another finalization (or a write) came first: read again
        return Finalized.FINALIZED

    return ports.retrying(
        attempt,
        attempts=MAX_ATTEMPTS,
        sleep=sleep or (lambda _: None),
        exhausted=lambda: Contention(f"could not finalize session {session_id}"),
    )


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    completed: int  # idle sessions completed by timeout
    finalized: int  # completed sessions no finalizer had summarized
    examined: int
    pages: int
    finished: bool  # False: stopped for time; the next run continues


class _Clock:
    def __init__(self, seconds_left: Callable[[], float] | None) -> None:
        self._seconds_left = seconds_left

    def out_of_time(self) -> bool:
        return self._seconds_left is not None and self._seconds_left() < SWEEP_MARGIN_SECONDS


def sweep_sessions(
    *,
    store: SessionStore,
    now: datetime,
    idle_minutes: int,
    page_size: int = SWEEP_PAGE_SIZE,
    seconds_left: Callable[[], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SweepResult:
    """Complete sessions idle over `idle_minutes`, then finalize completed sessions left unfinalized.

    Each completion is conditional on the session being unchanged since its page was
    read, so a session the client completes or extends meanwhile is left alone. Each
    sweep shard is walked in pages; the sweep stops early (finished=False) when
    `seconds_left()` drops under a safety margin, and the next run continues.
    """
    clock = _Clock(seconds_left)
    cutoff = now - timedelta(minutes=idle_minutes)
    completed = finalized = examined = pages = 0
    for shard in range(layout.SWEEP_SHARDS):

        def idle(after: Any, shard: int = shard) -> list[IdleSession]:
            return store.idle_sessions(shard=shard, cutoff=cutoff, limit=page_size, after=after)

        for page in ports.pages(idle, cursor=_cursor, size=page_size):
            pages += 1
            examined += len(page)
            groups = [
                plans.timeout_writes(user_id=s.user_id, session_id=s.session_id, version=s.version, now=now)
                for s in page
            ]
            completed += sum(mirror.commit_each(store, groups))
            if clock.out_of_time():
                return SweepResult(completed, finalized, examined, pages, finished=False)
    for shard in range(layout.SWEEP_SHARDS):

        def unfinalized(after: Any, shard: int = shard) -> list[IdleSession]:
            return store.unfinalized_sessions(shard=shard, limit=page_size, after=after)

        for page in ports.pages(unfinalized, cursor=_cursor, size=page_size):
            pages += 1
            examined += len(page)
            for session in page:
                try:
                    outcome = finalize_session(
                        store=store,
                        user_id=session.user_id,
                        session_id=session.session_id,
                        now=now,
                        sleep=sleep,
                    )
                except Exception:  # one session that cannot be finalized must not stop the sweep
                    log.exception("could not finalize %s/%s", session.user_id, session.session_id)
                    continue
                finalized += outcome is Finalized.FINALIZED
            if clock.out_of_time():
                return SweepResult(completed, finalized, examined, pages, finished=False)
    return SweepResult(completed, finalized, examined, pages, finished=True)


def _cursor(found: IdleSession) -> Any:
    return found.cursor
