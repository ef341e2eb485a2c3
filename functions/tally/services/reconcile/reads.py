"""What reconcile reads: the store it needs, snapshots, a user's steps of a month, the month's sessions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Literal, Protocol

from tally import layout, ports
from tally.documents import months as month_doc
from tally.documents import sessions as session_doc
from tally.documents import steps as step_doc
from tally.usage import Counts, MonthDelta
from tally.values import Document

PAGE_SIZE = 5000  # documents a query page reads (steps, month documents): few pages, bounded memory


SessionsBy = Literal["created", "completed"]


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


def server_time(store: ReconcileStore, month: str) -> datetime | None:
    """Return the server's time now (a read's own time), to run queries at one explicit snapshot.

    A query streamed without a `read_time` only promises that each result is unchanged up to
    the next one's read time; run at a time taken first, a page is one snapshot.
    """
    path = layout.rollup_path(month)
    return store.read([path])[path].read_at


def user_steps(
    store: ReconcileStore, user_id: str, month: str, read_time: datetime | None, after: str | None
) -> tuple[list[Document], datetime | None]:
    """Return a user's steps of the month after `after`, at one snapshot (now, without one), and its time."""
    at = read_time or server_time(store, month)

    def fetch(cursor: str | None) -> list[Document]:
        return store.user_month_steps(
            user_id=user_id, month=month, read_time=at, limit=PAGE_SIZE, after=cursor
        )

    return list(ports.documents(fetch, size=PAGE_SIZE, start=after)), at


def delta_of(docs: Sequence[Document]) -> MonthDelta:
    """Return what stored steps add to their month."""
    delta = MonthDelta()
    for doc in docs:
        delta.add(step_doc.step_of(doc.fields))
    return delta


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
    expected = dict.fromkeys(month_doc.SESSION_FIELDS, 0)
    expected[month_doc.ACTIVE] = sum(
        1
        for doc in _month_sessions(store, month, "created", read_time)
        if not session_doc.is_finalized(doc.fields)
    )
    for doc in _month_sessions(store, month, "completed", read_time):
        summary = session_doc.summarized(doc.fields)
        if summary is None:
            continue
        counted = month_doc.completed_session(
            steps=summary.step_count, cost_nanos=summary.cost_nanos, duration_ms=summary.duration_ms
        )
        for key, value in counted.items():
            expected[key] += value
    return expected
