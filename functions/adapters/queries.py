"""Tally's Firestore queries, by concern; every field they name is spelled by its document's module.

Each class is a part of `FirestoreStore` (`adapters.firestore`), over the same client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from adapters.documents import documents
from tally import layout
from tally.documents import counters
from tally.documents import holds as hold_doc
from tally.documents import limits as limits_doc
from tally.documents import months as month_doc
from tally.documents import sessions as session_doc
from tally.documents import steps as step_doc
from tally.services import alerts, prices
from tally.timeutil import month_end, month_start
from tally.usage import Counts, Held
from tally.values import Document, HoldStatus, IdleSession, SessionStatus

NAME = "__name__"
HOLDING = [HoldStatus.PENDING.value, HoldStatus.ACTIVE.value]


def count(query: Any, read_time: datetime | None) -> int:
    """Count what a query matches (an aggregation: one read per 1,000 index entries)."""
    return int(query.count(alias="n").get(read_time=read_time)[0][0].value)


def _eq(field: str, value: Any) -> FieldFilter:
    return FieldFilter(field, "==", value)


class _Queries:
    """The client the queries run on."""

    _db: firestore.Client

    def _after(self, query: Any, after: str | None) -> Any:
        """Return a query ordered by path, resumed after the document at path `after`."""
        return query.start_after({NAME: self._db.document(after)}) if after is not None else query

    def _between_users(
        self, query: Any, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]:
        """Run a collection-group query over the documents under `SessionUsage/{uid}` for uids in a range."""
        ranged = (
            query.order_by(NAME)
            .start_at({NAME: self._db.document(layout.SESSION_USAGE, first_user)})
            .end_before({NAME: self._db.document(layout.SESSION_USAGE, last_user + "\uf8ff")})
        )
        return documents(ranged, read_time)


class MonthQueries(_Queries):
    """A month's documents: users' months (ranked, paged), steps, shards; the earlier systems' collections."""

    def top_users(self, *, month: str, limit: int, read_time: datetime | None = None) -> list[Document]:
        """Return the month's biggest spenders (indexed: month, costNanos desc)."""
        query = (
            self._db.collection(layout.USER_MONTHS)
            .where(filter=_eq(month_doc.MONTH, month))
            .order_by(counters.COST, direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return documents(query, read_time)

    def free_tier(
        self, *, month: str, min_percent: float, limit: int, read_time: datetime | None = None
    ) -> list[Document]:
        """Return users at or over `min_percent` of a limit (indexed: month, limitPercent desc)."""
        query = (
            self._db.collection(layout.USER_MONTHS)
            .where(filter=_eq(month_doc.MONTH, month))
            .where(filter=FieldFilter(limits_doc.LIMIT_PERCENT, ">=", min_percent))
            .order_by(limits_doc.LIMIT_PERCENT, direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return documents(query, read_time)

    def free_tier_page(self, *, month: str, limit: int, after: str | None) -> list[Document]:
        """Return one page of a month's free-tier entries (users at or over 80 %), by path."""
        query = (
            self._db.collection(layout.USER_MONTHS)
            .where(filter=_eq(month_doc.MONTH, month))
            .where(filter=FieldFilter(limits_doc.LIMIT_PERCENT, ">=", 80.0))
            .order_by(limits_doc.LIMIT_PERCENT)
            .order_by(NAME)
            .limit(limit)
        )
        if after is not None:
            query = query.start_after(self._db.document(after).get())
        return documents(query, None)

    def month_users(
        self, *, month: str, limit: int, after: str | None, read_time: datetime | None = None
    ) -> list[Document]:
        """Return one page of the users' month documents of a month, by path (exports, reconcile)."""
        return self._month_page(self._db.collection(layout.USER_MONTHS), month, read_time, limit, after)

    def month_steps(
        self, *, month: str, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]:
        """Return one page of the month's steps (every `steps` collection), ordered by path."""
        return self._month_page(self._db.collection_group(layout.STEPS), month, read_time, limit, after)

    def user_month_steps(
        self, *, user_id: str, month: str, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]:
        """Return one page of a user's steps of a month, ordered by path."""
        steps = self._db.collection(layout.SESSION_USAGE, user_id, layout.STEPS)
        return self._month_page(steps, month, read_time, limit, after)

    def _month_page(
        self, source: Any, month: str, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]:
        """Return one page of `source`'s documents of a month, ordered by path, after the path `after`."""
        query = source.where(filter=_eq(step_doc.MONTH, month)).order_by(NAME).limit(limit)
        return documents(self._after(query, after), read_time)

    def count_month_steps(self, *, month: str, read_time: datetime | None) -> int:
        """Count the month's steps (every `steps` collection; for progress)."""
        return count(
            self._db.collection_group(layout.STEPS).where(filter=_eq(step_doc.MONTH, month)), read_time
        )

    def user_lifetime(self, *, user_id: str, read_time: datetime | None) -> Counts:
        """Add up every step of a user (aggregation queries: no step is read)."""
        steps: Any = self._db.collection(layout.SESSION_USAGE, user_id, layout.STEPS)  # aggregations: untyped
        totals = steps.sum(step_doc.COST, alias="cost").count(alias="calls").get(read_time=read_time)[0]
        found = {result.alias: result.value for result in totals}
        billable = steps.where(filter=_eq(step_doc.BILLABLE, True))
        return Counts(int(found["cost"] or 0), int(found["calls"]), count(billable, read_time))

    def shard_beyond(self, count: int) -> Document | None:
        """Return a platform shard numbered `count` or more, of any month, if one exists."""
        query = (
            self._db.collection(layout.PLATFORM_SHARDS)
            .where(filter=FieldFilter("shard", ">=", count))
            .limit(1)
        )
        found = documents(query, None)
        return found[0] if found else None

    def collection_group(self, *, group: str, limit: int, after: str | None) -> list[Document]:
        """Return one page of every collection named `group`, ordered by path."""
        return documents(
            self._after(self._db.collection_group(group).order_by(NAME).limit(limit), after), None
        )

    def price_log(self, *, limit: int) -> list[Document]:
        """Return the latest prices set, newest first."""
        query = (
            self._db.collection(layout.PRICE_LOG)
            .order_by(prices.SET_AT, direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return documents(query, None)


class SessionQueries(_Queries):
    """Sessions: idle and unfinalized ones (a sweep shard's range each, never one hot range), a month's."""

    def idle_sessions(
        self, *, shard: int, cutoff: datetime, limit: int, after: Any | None
    ) -> list[IdleSession]:
        """Return one page of Tally's active sessions last updated before `cutoff`, oldest first."""
        query = (
            self._db.collection_group(layout.SESSIONS)
            .where(filter=_eq(session_doc.SHARD, shard))
            .where(filter=_eq(session_doc.STATUS, SessionStatus.ACTIVE.value))
            .where(filter=FieldFilter(session_doc.LAST_UPDATED, "<", cutoff))
            .order_by(session_doc.LAST_UPDATED)
            .limit(limit)
        )
        return self._sessions(query, after)

    def unfinalized_sessions(self, *, shard: int, limit: int, after: Any | None) -> list[IdleSession]:
        """Return one page of Tally's completed sessions that no finalizer summarized."""
        query = (
            self._db.collection_group(layout.SESSIONS)
            .where(filter=_eq(session_doc.SHARD, shard))
            .where(filter=_eq(session_doc.STATUS, SessionStatus.COMPLETED.value))
            .where(filter=_eq(session_doc.FINALIZED, None))
            .limit(limit)
        )
        return self._sessions(query, after)

    def _sessions(self, query: Any, after: Any | None) -> list[IdleSession]:
        if after is not None:
            query = query.start_after(after)
        page: list[IdleSession] = []
        for snap in query.stream():
            ids = layout.session_ids(snap.reference.path)
            if ids is not None:  # a `sessions` collection of the app is never Tally's
                page.append(IdleSession(ids[0], ids[1], snap.update_time, snap))
        return page

    def user_session_counts(self, *, user_id: str, read_time: datetime | None) -> dict[str, int]:
        """Count a user's Tally sessions by status (aggregations; a legacy system's are not counted)."""
        sessions = self._db.collection(layout.SESSION_USAGE, user_id, layout.SESSIONS).where(
            filter=FieldFilter(session_doc.SHARD, "in", list(range(layout.SWEEP_SHARDS)))
        )
        return {
            status.value: count(sessions.where(filter=_eq(session_doc.STATUS, status.value)), read_time)
            for status in SessionStatus
        }

    def month_sessions(
        self, *, month: str, by: str, shard: int, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]:
        """Return one page of Tally's sessions created (or completed) in a month, in one sweep shard."""
        start, end = month_start(month), month_end(month)
        field = session_doc.CREATED if by == "created" else session_doc.COMPLETED
        query = (
            self._db.collection_group(layout.SESSIONS)
            .where(filter=_eq(session_doc.SHARD, shard))
            .where(filter=FieldFilter(field, ">=", start))
            .where(filter=FieldFilter(field, "<", end))
            .order_by(field)
            .order_by(NAME)
            .limit(limit)
        )
        if after is not None:
            snap = self._db.document(after).get(read_time=read_time)
            query = query.start_after(snap)
        return [doc for doc in documents(query, read_time) if layout.session_ids(doc.path) is not None]

    def unfinalized_between(
        self, *, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]:
        """Return the Tally sessions not finalized yet of the users from `first_user` to `last_user`."""
        query = self._db.collection_group(layout.SESSIONS).where(
            filter=_eq(session_doc.OPEN, True)  # the single-field index of `tallyOpen`
        )
        found = self._between_users(query, first_user, last_user, read_time)
        return [doc for doc in found if layout.session_ids(doc.path) is not None]


class HoldQueries(_Queries):
    """Reservations that still count: expired ones (the sweep), a user's, a range of users'."""

    def expired_holds(self, *, shard: int, now: datetime, limit: int, after: Any | None) -> list[IdleSession]:
        """Return one page of holds past their expiry that still count (pending or active)."""
        query = (
            self._db.collection_group(layout.RESERVATIONS)
            .where(filter=_eq(hold_doc.SHARD, shard))
            .where(filter=FieldFilter(hold_doc.STATUS, "in", HOLDING))
            .where(filter=FieldFilter(hold_doc.EXPIRES, "<", now))
            .order_by(hold_doc.EXPIRES)
            .limit(limit)
        )
        if after is not None:
            query = query.start_after(after)
        page = []
        for snap in query.stream():
            ids = layout.reservation_ids(snap.reference.path)
            if ids is not None:
                page.append(IdleSession(ids[0], ids[1], snap.update_time, snap))
        return page

    def user_holds(self, *, user_id: str, read_time: datetime | None) -> list[Document]:
        """Return a user's holds that still count (for reconcile)."""
        query = self._db.collection(layout.SESSION_USAGE, user_id, layout.RESERVATIONS).where(
            filter=FieldFilter(hold_doc.STATUS, "in", HOLDING)
        )
        return documents(query, read_time)

    def active_holds(self, *, user_id: str) -> Held:
        """Sum a user's allowed holds (one aggregation query: no reservation is read)."""
        holds: Any = self._db.collection(layout.SESSION_USAGE, user_id, layout.RESERVATIONS).where(
            filter=_eq(hold_doc.STATUS, HoldStatus.ACTIVE.value)
        )  # aggregations are untyped
        sums = holds.sum(hold_doc.ESTIMATE, alias="cost").sum(hold_doc.RUNS, alias="runs").get()[0]
        found = {r.alias: r.value for r in sums}
        return Held(int(found["cost"] or 0), int(found["runs"] or 0))

    def holding_reservations(
        self, *, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]:
        """Return the holds that still count (pending or active) of the users `first_user` to `last_user`."""
        found: list[Document] = []
        for status in (HoldStatus.PENDING, HoldStatus.ACTIVE):  # indexed: (tallyShard, status)
            query = (
                self._db.collection_group(layout.RESERVATIONS)
                .where(filter=FieldFilter(hold_doc.SHARD, "in", list(range(layout.SWEEP_SHARDS))))
                .where(filter=_eq(hold_doc.STATUS, status.value))
            )
            found += self._between_users(query, first_user, last_user, read_time)
        return [doc for doc in found if layout.reservation_ids(doc.path) is not None]


class AlertQueries(_Queries):
    """Alerts: a month's latest, and those whose delivery is due."""

    def month_alerts(self, *, month: str, limit: int) -> list[Document]:
        """Return a month's latest alerts, newest first (indexed: month, createdAt desc)."""
        query = (
            self._db.collection(layout.ALERTS)
            .where(filter=_eq(alerts.MONTH, month))
            .order_by(alerts.CREATED, direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return documents(query, None)

    def undelivered_alerts(self, *, shard: int, now: datetime, limit: int) -> list[Document]:
        """Return alerts not delivered yet whose next attempt is due (indexed per sweep shard)."""
        query = (
            self._db.collection(layout.ALERTS)
            .where(filter=_eq(alerts.SHARD, shard))
            .where(filter=_eq(alerts.DELIVERED, None))
            .where(filter=FieldFilter(alerts.NEXT_ATTEMPT, "<=", now))
            .order_by(alerts.NEXT_ATTEMPT)
            .limit(limit)
        )
        return documents(query, None)
