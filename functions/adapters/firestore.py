"""Firestore I/O: documents read by path, `Write` lists committed atomically, and Tally's queries.

Nothing here decides what to write: `plans` builds the commits as data, the services
decide. This module only turns them into Firestore calls and reports what happened:
a commit whose precondition failed (or that hit a transient fault) was not applied
and raises `Contention`; a successful commit returns the value every transform left
(Firestore's fetch-and-add, `WriteResult.transform_results`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from tally import layout
from tally.documents.sessions import OPEN
from tally.timeutil import month_end, month_start
from tally.usage import Counts, Held
from tally.values import Contention, Document, HoldStatus, IdleSession, Rejected, SessionStatus
from tally.writes import DELETE, CommitResult, Increment, Maximum, Op, Replace, Write, check_commit

_RETRYABLE = (
    gexc.AlreadyExists,
    gexc.Conflict,
    gexc.FailedPrecondition,
    gexc.NotFound,
    gexc.Aborted,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
)
_DOCUMENTS = "/documents/"
READ_CHUNK = 300  # documents per get_all round trip


def _firestore_value(value: Any) -> Any:
    """Turn Tally's transform markers into the client's sentinels, recursively."""
    if isinstance(value, Increment):
        return firestore.Increment(value.value)
    if isinstance(value, Maximum):
        return firestore.Maximum(value.value)
    if value is DELETE:
        return firestore.DELETE_FIELD
    if isinstance(value, Replace):
        return _firestore_value(dict(value.value))
    if isinstance(value, Mapping):
        return {key: _firestore_value(item) for key, item in value.items()}
    return value


def _flat_update(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return an update's leaves as quoted field paths (a dot in a name is part of the name)."""
    flat: dict[str, Any] = {}
    for path, value in _update_leaves(data, ()):
        flat[FieldPath(*path).to_api_repr()] = _firestore_value(value)
    return flat


def _update_leaves(data: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and not isinstance(value, Replace):
            yield from _update_leaves(value, path)
        else:
            yield path, value


def _merge_fields(data: Mapping[str, Any]) -> bool | list[FieldPath]:
    """Return what a merge sets: every leaf (`True`), or the leaf paths when a `Replace` must land whole.

    `set(merge=True)` merges nested maps leaf by leaf, so a replaced map would keep the stored
    keys it no longer has; naming the field paths makes each `Replace` overwrite its field.
    """
    leaves = list(_update_leaves(data, ()))
    if not any(isinstance(value, Replace) for _, value in leaves):
        return True
    return [FieldPath(*path) for path, _ in leaves]


def _instant(value: Any) -> datetime | None:
    """Return a snapshot's read time as an aware datetime (queries give a protobuf Timestamp)."""
    if value is None or isinstance(value, datetime):
        return value
    converted: datetime = value.ToDatetime(tzinfo=UTC)
    return converted


def _count(query: Any, read_time: datetime | None) -> int:
    """Count what a query matches (an aggregation: one read per 1,000 index entries)."""
    return int(query.count(alias="n").get(read_time=read_time)[0][0].value)


def _relative(name: str) -> str:
    return name.split(_DOCUMENTS, 1)[1]


class FirestoreStore:
    """Tally's documents in one Firestore database."""

    def __init__(
        self,
        client: firestore.Client,
        *,
        shards: int,
        on_commit: Callable[[Sequence[Write]], None] | None = None,
    ) -> None:
        self._db = client
        self.shards = shards
        self._on_commit = on_commit

    @property
    def client(self) -> firestore.Client:
        """Return the Firestore client (for tools that need raw access)."""
        return self._db

    # Documents

    def read(
        self, paths: Sequence[str], *, read_time: datetime | None = None, fields: Sequence[str] | None = None
    ) -> dict[str, Document]:
        """Read documents by path in as few round trips as possible (missing ones have data None).

        With `fields`, only those top-level fields are read (the app's `users/{uid}` may weigh 1 MiB).
        """
        unique = list(dict.fromkeys(paths))
        found: dict[str, Document] = {}
        for start in range(0, len(unique), READ_CHUNK):
            refs = [self._db.document(path) for path in unique[start : start + READ_CHUNK]]
            mask = list(fields) if fields is not None else None
            for snap in self._db.get_all(refs, field_paths=mask, read_time=read_time):
                path = snap.reference.path
                data = (snap.to_dict() or {}) if snap.exists else None
                found[path] = Document(
                    path, data, snap.update_time if snap.exists else None, _instant(snap.read_time)
                )
        return {path: found.get(path, Document(path, None)) for path in unique}

    def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Apply writes in one atomic commit; raise Contention if it was not applied."""
        check_commit(writes)
        batch = self._db.batch()
        for write in writes:
            ref = self._db.document(write.path)
            if write.op is Op.CREATE:
                batch.create(ref, _firestore_value(write.data))
            elif write.op is Op.MERGE:
                batch.set(ref, _firestore_value(write.data), merge=_merge_fields(write.data))
            elif write.op is Op.DELETE:
                batch.delete(ref)
            else:
                option = self._db.write_option(last_update_time=write.version) if write.version else None
                batch.update(ref, _flat_update(write.data), option=option)
        pbs = list(batch._write_pbs)  # the protobufs name each transform's field, in result order
        try:
            results = batch.commit()
        except _RETRYABLE as exc:
            raise Contention(type(exc).__name__) from exc
        except gexc.InvalidArgument as exc:  # e.g. a document over 1 MiB: nothing was applied
            raise Rejected(str(exc.message)) from exc
        if self._on_commit is not None:
            self._on_commit(writes)  # a commit that was applied (the write census counts these)
        values: dict[str, dict[tuple[str, ...], int | float]] = {}
        versions: dict[str, Any] = {}
        for pb, result in zip(pbs, results, strict=True):
            name = pb.update.name or pb.delete
            if name and result.update_time is not None:
                versions[_relative(name)] = result.update_time
            transforms = list(pb.update_transforms)
            if not transforms:
                continue
            doc = values.setdefault(_relative(pb.update.name), {})
            for transform, value in zip(transforms, result.transform_results, strict=True):
                decoded = _helpers.decode_value(value, self._db)
                assert isinstance(decoded, int | float)
                doc[tuple(FieldPath.from_api_repr(transform.field_path).parts)] = decoded
        return CommitResult(values, versions)

    def commit_each(self, groups: Sequence[Sequence[Write]], *, workers: int = 8) -> list[bool]:
        """Commit each group on its own (a few at a time); return which were applied (not: lost, rejected)."""

        def one(group: Sequence[Write]) -> bool:
            try:
                self.commit(group)
            except (Contention, Rejected):
                return False
            return True

        if not groups:
            return []
        with ThreadPoolExecutor(max_workers=min(workers, len(groups))) as pool:
            return list(pool.map(one, groups))

    # Analytics queries

    def top_users(self, *, month: str, limit: int, read_time: datetime | None = None) -> list[Document]:
        """Return the month's biggest spenders (indexed: month, costNanos desc)."""
        query = (
            self._db.collection(layout.USER_MONTHS)
            .where(filter=FieldFilter("month", "==", month))
            .order_by("costNanos", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return self._documents(query, read_time)

    def free_tier(
        self, *, month: str, min_percent: float, limit: int, read_time: datetime | None = None
    ) -> list[Document]:
        """Return users at or over `min_percent` of a limit (indexed: month, limitPercent desc)."""
        query = (
            self._db.collection(layout.USER_MONTHS)
            .where(filter=FieldFilter("month", "==", month))
            .where(filter=FieldFilter("limitPercent", ">=", min_percent))
            .order_by("limitPercent", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return self._documents(query, read_time)

    # Session lifecycle queries (each sweep shard's range of the index, never one hot range)

    def idle_sessions(
        self, *, shard: int, cutoff: datetime, limit: int, after: Any | None
    ) -> list[IdleSession]:
        """Return one page of Tally's active sessions last updated before `cutoff`, oldest first."""
        query = (
            self._db.collection_group(layout.SESSIONS)
            .where(filter=FieldFilter("tallyShard", "==", shard))
            .where(filter=FieldFilter("status", "==", SessionStatus.ACTIVE.value))
            .where(filter=FieldFilter("lastUpdatedAt", "<", cutoff))
            .order_by("lastUpdatedAt")
            .limit(limit)
        )
        return self._sessions(query, after)

    def unfinalized_sessions(self, *, shard: int, limit: int, after: Any | None) -> list[IdleSession]:
        """Return one page of Tally's completed sessions that no finalizer summarized."""
        query = (
            self._db.collection_group(layout.SESSIONS)
            .where(filter=FieldFilter("tallyShard", "==", shard))
            .where(filter=FieldFilter("status", "==", SessionStatus.COMPLETED.value))
            .where(filter=FieldFilter("finalizedAt", "==", None))
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

    # Reconcile: the month's steps and sessions, at one snapshot

    def _documents(self, query: Any, read_time: datetime | None) -> list[Document]:
        return [
            Document(snap.reference.path, snap.to_dict() or {}, snap.update_time, _instant(snap.read_time))
            for snap in query.stream(read_time=read_time)
        ]

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
        query = source.where(filter=FieldFilter("month", "==", month)).order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after({"__name__": self._db.document(after)})
        return self._documents(query, read_time)

    def count_month_steps(self, *, month: str, read_time: datetime | None) -> int:
        """Count the month's steps (every `steps` collection; for progress)."""
        return _count(
            self._db.collection_group(layout.STEPS).where(filter=FieldFilter("month", "==", month)), read_time
        )

    def user_lifetime(self, *, user_id: str, read_time: datetime | None) -> Counts:
        """Add up every step of a user (aggregation queries: no step is read)."""
        steps: Any = self._db.collection(
            layout.SESSION_USAGE, user_id, layout.STEPS
        )  # aggregations are untyped
        totals = steps.sum("costNanos", alias="cost").count(alias="calls").get(read_time=read_time)[0]
        found = {result.alias: result.value for result in totals}
        billable = steps.where(filter=FieldFilter("isBillableRun", "==", True))
        return Counts(int(found["cost"] or 0), int(found["calls"]), _count(billable, read_time))

    def user_session_counts(self, *, user_id: str, read_time: datetime | None) -> dict[str, int]:
        """Count a user's Tally sessions by status (aggregations; a legacy system's are not counted)."""
        sessions = self._db.collection(layout.SESSION_USAGE, user_id, layout.SESSIONS).where(
            filter=FieldFilter("tallyShard", "in", list(range(layout.SWEEP_SHARDS)))
        )
        return {
            status.value: _count(sessions.where(filter=FieldFilter("status", "==", status.value)), read_time)
            for status in SessionStatus
        }

    def month_sessions(
        self, *, month: str, by: str, shard: int, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]:
        """Return one page of Tally's sessions created (or completed) in a month, in one sweep shard."""
        start, end = month_start(month), month_end(month)
        field = "createdAt" if by == "created" else "completedAt"
        query = (
            self._db.collection_group(layout.SESSIONS)
            .where(filter=FieldFilter("tallyShard", "==", shard))
            .where(filter=FieldFilter(field, ">=", start))
            .where(filter=FieldFilter(field, "<", end))
            .order_by(field)
            .order_by("__name__")
            .limit(limit)
        )
        if after is not None:
            snap = self._db.document(after).get(read_time=read_time)
            query = query.start_after(snap)
        return [doc for doc in self._documents(query, read_time) if layout.session_ids(doc.path) is not None]

    # The import of the earlier systems' documents

    def collection_group(self, *, group: str, limit: int, after: str | None) -> list[Document]:
        """Return one page of every collection named `group`, ordered by path."""
        query = self._db.collection_group(group).order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after({"__name__": self._db.document(after)})
        return self._documents(query, None)

    # The price catalog

    def price_log(self, *, limit: int) -> list[Document]:
        """Return the latest prices set, newest first."""
        query = (
            self._db.collection(layout.PRICE_LOG)
            .order_by("setAt", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return self._documents(query, None)

    # Reservations and alerts

    def expired_holds(self, *, shard: int, now: datetime, limit: int, after: Any | None) -> list[IdleSession]:
        """Return one page of holds past their expiry that still count (pending or active)."""
        query = (
            self._db.collection_group(layout.RESERVATIONS)
            .where(filter=FieldFilter("tallyShard", "==", shard))
            .where(filter=FieldFilter("status", "in", [HoldStatus.PENDING.value, HoldStatus.ACTIVE.value]))
            .where(filter=FieldFilter("expiresAt", "<", now))
            .order_by("expiresAt")
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

    def month_alerts(self, *, month: str, limit: int) -> list[Document]:
        """Return a month's latest alerts, newest first (indexed: month, createdAt desc)."""
        query = (
            self._db.collection(layout.ALERTS)
            .where(filter=FieldFilter("month", "==", month))
            .order_by("createdAt", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return self._documents(query, None)

    def undelivered_alerts(self, *, shard: int, now: datetime, limit: int) -> list[Document]:
        """Return alerts not delivered yet whose next attempt is due (indexed per sweep shard)."""
        query = (
            self._db.collection(layout.ALERTS)
            .where(filter=FieldFilter("tallyShard", "==", shard))
            .where(filter=FieldFilter("deliveredAt", "==", None))
            .where(filter=FieldFilter("nextAttemptAt", "<=", now))
            .order_by("nextAttemptAt")
            .limit(limit)
        )
        return self._documents(query, None)

    def free_tier_page(self, *, month: str, limit: int, after: str | None) -> list[Document]:
        """Return one page of a month's free-tier entries (users at or over 80 %), by path."""
        query = (
            self._db.collection(layout.USER_MONTHS)
            .where(filter=FieldFilter("month", "==", month))
            .where(filter=FieldFilter("limitPercent", ">=", 80.0))
            .order_by("limitPercent")
            .order_by("__name__")
            .limit(limit)
        )
        if after is not None:
            query = query.start_after(self._db.document(after).get())
        return self._documents(query, None)

    def user_holds(self, *, user_id: str, read_time: datetime | None) -> list[Document]:
        """Return a user's holds that still count (for reconcile)."""
        query = self._db.collection(layout.SESSION_USAGE, user_id, layout.RESERVATIONS).where(
            filter=FieldFilter("status", "in", [HoldStatus.PENDING.value, HoldStatus.ACTIVE.value])
        )
        return self._documents(query, read_time)

    def active_holds(self, *, user_id: str) -> Held:
        """Sum a user's allowed holds (one aggregation query: no reservation is read)."""
        holds: Any = self._db.collection(layout.SESSION_USAGE, user_id, layout.RESERVATIONS).where(
            filter=FieldFilter("status", "==", HoldStatus.ACTIVE.value)
        )  # aggregations are untyped
        found = {
            r.alias: r.value
            for r in holds.sum("estimateNanos", alias="cost").sum("runs", alias="runs").get()[0]
        }
        return Held(int(found["cost"] or 0), int(found["runs"] or 0))

    def _between_users(
        self, query: Any, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]:
        """Run a collection-group query over the documents under `SessionUsage/{uid}` for uids in a range."""
        ranged = (
            query.order_by("__name__")
            .start_at({"__name__": self._db.document(layout.SESSION_USAGE, first_user)})
            .end_before({"__name__": self._db.document(layout.SESSION_USAGE, last_user + "\uf8ff")})
        )
        return self._documents(ranged, read_time)

    def holding_reservations(
        self, *, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]:
        """Return the holds that still count (pending or active) of the users `first_user` to `last_user`."""
        found: list[Document] = []
        for status in (HoldStatus.PENDING, HoldStatus.ACTIVE):  # indexed: (tallyShard, status)
            query = (
                self._db.collection_group(layout.RESERVATIONS)
                .where(filter=FieldFilter("tallyShard", "in", list(range(layout.SWEEP_SHARDS))))
                .where(filter=FieldFilter("status", "==", status.value))
            )
            found += self._between_users(query, first_user, last_user, read_time)
        return [doc for doc in found if layout.reservation_ids(doc.path) is not None]

    def unfinalized_between(
        self, *, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]:
        """Return the Tally sessions not finalized yet of the users from `first_user` to `last_user`."""
        query = self._db.collection_group(layout.SESSIONS).where(
            filter=FieldFilter(OPEN, "==", True)  # the single-field index of `tallyOpen`
        )
        found = self._between_users(query, first_user, last_user, read_time)
        return [doc for doc in found if layout.session_ids(doc.path) is not None]

    def month_users(
        self, *, month: str, limit: int, after: str | None, read_time: datetime | None = None
    ) -> list[Document]:
        """Return one page of the users' month documents of a month, by path (exports, reconcile)."""
        return self._month_page(self._db.collection(layout.USER_MONTHS), month, read_time, limit, after)

    def shard_beyond(self, count: int) -> Document | None:
        """Return a platform shard numbered `count` or more, of any month, if one exists."""
        query = (
            self._db.collection(layout.PLATFORM_SHARDS)
            .where(filter=FieldFilter("shard", ">=", count))
            .limit(1)
        )
        found = self._documents(query, None)
        return found[0] if found else None
