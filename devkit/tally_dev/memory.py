"""An in-memory store with Firestore's commit semantics for Tally's `Write` model (unit tests).

Preconditions (create: absent; update: present and, with a version, unchanged), atomic
commits, fetch-and-add results and merge rules behave as Firestore's do, so services
can be tested without the emulator; `fail` injects lost races and faults.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tally import layout, names
from tally.config import Settings
from tally.documents import plans
from tally.documents import sessions as session_doc
from tally.requests import parse_record_request
from tally.services.recording import RecordOutcome, record_steps
from tally.timeutil import month_key
from tally.usage import Counts, Held
from tally.values import (
    Caller,
    Contention,
    Document,
    IdleSession,
    RecordRequest,
    Rejected,
    SessionRequest,
    Step,
    UsageType,
)
from tally.writes import DELETE, CommitResult, Increment, Maximum, Op, Replace, Write, check_commit
from tally_dev.sizing import MAX_DOCUMENT_BYTES, document_size


def _apply_leaf(
    target: dict[str, Any], path: tuple[str, ...], value: Any, results: dict[tuple[str, ...], Any]
) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    key = path[-1]
    if value is DELETE:
        node.pop(key, None)
    elif isinstance(value, Increment):
        current = node.get(key)
        node[key] = (current if isinstance(current, int | float) else 0) + value.value
        results[path] = node[key]
    elif isinstance(value, Maximum):
        current = node.get(key)
        node[key] = max(current, value.value) if isinstance(current, int | float) else value.value
        results[path] = node[key]
    elif isinstance(value, Replace):
        node[key] = copy.deepcopy(dict(value.value))
    else:
        node[key] = copy.deepcopy(value)


def _leaves(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = []
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and not isinstance(value, Replace):
            found += _leaves(value, path) if value else [(path, {})]
        else:
            found.append((path, value))
    return found


HISTORY = 256  # versions of each document kept for read_as_of


class MemoryStore:
    """Documents in a dict; commits all-or-nothing under a lock."""

    def __init__(self, *, shards: int = 4) -> None:
        self.shards = shards
        self.docs: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        self.history: dict[str, list[tuple[int, dict[str, Any] | None]]] = {}  # for read_as_of
        self.commits: list[list[Write]] = []
        self._clock = itertools.count(1)
        self._lock = threading.Lock()
        # Called with each commit before it applies; raise Contention to make it lose a race.
        self.before_commit: Callable[[Sequence[Write]], None] | None = None

    def put(self, path: str, data: Mapping[str, Any]) -> None:
        """Store a document as if an earlier commit had written it."""
        with self._lock:
            self.docs[path] = copy.deepcopy(dict(data))
            self.versions[path] = next(self._clock)
            self.history.setdefault(path, []).append((self.versions[path], copy.deepcopy(dict(data))))

    def read(
        self, paths: Sequence[str], *, read_time: datetime | None = None, fields: Sequence[str] | None = None
    ) -> dict[str, Document]:
        with self._lock:
            return {
                path: Document(
                    path,
                    copy.deepcopy(
                        self.docs[path]
                        if fields is None
                        else {k: v for k, v in self.docs[path].items() if k in fields}
                    ),
                    self.versions[path],
                )
                if path in self.docs
                else Document(path, None)
                for path in paths
            }

    def read_as_of(self, paths: Sequence[str], version: Any) -> dict[str, Document]:
        """Read documents as they were right after the commit that gave `version` (a consistent snapshot)."""
        with self._lock:
            found: dict[str, Document] = {}
            for path in paths:
                past = [(v, doc) for v, doc in self.history.get(path, []) if v <= version]
                if past and past[-1][1] is not None:
                    found[path] = Document(path, copy.deepcopy(past[-1][1]), past[-1][0])
                elif not past and path in self.docs and self.versions[path] <= version:
                    found[path] = Document(path, copy.deepcopy(self.docs[path]), self.versions[path])
                else:
                    found[path] = Document(path, None)
            return found

    def commit(self, writes: Sequence[Write]) -> CommitResult:
        check_commit(writes)
        if self.before_commit is not None:
            self.before_commit(writes)
        with self._lock:
            staged = {w.path: copy.deepcopy(self.docs[w.path]) for w in writes if w.path in self.docs}
            for write in writes:
                exists = write.path in staged
                if write.op is Op.CREATE and exists:
                    raise Contention("AlreadyExists")
                if write.op is Op.UPDATE and (
                    not exists
                    or (write.version is not None and self.versions.get(write.path) != write.version)
                ):
                    raise Contention("FailedPrecondition")
            values: dict[str, dict[tuple[str, ...], Any]] = {}  # per document: field path -> value
            deleted = {write.path for write in writes if write.op is Op.DELETE}
            for write in writes:
                if write.op is Op.DELETE:
                    continue
                doc = staged.setdefault(write.path, {})
                results = values.setdefault(write.path, {})
                for field, value in _leaves(write.data):
                    if write.op is Op.CREATE and value is DELETE:
                        raise ValueError("DELETE in a create")
                    _apply_leaf(doc, field, value, results)
            for path, staged_doc in staged.items():
                if path not in deleted and document_size(path, staged_doc) > MAX_DOCUMENT_BYTES:
                    raise Rejected(
                        f"{path}: the document would be over 1 MiB"
                    )  # as Firestore: nothing applied
            version = next(self._clock)  # one commit, one instant
            for path, staged_doc in staged.items():
                kept = self.history.setdefault(path, [])
                kept.append((version, None if path in deleted else copy.deepcopy(staged_doc)))
                del kept[:-HISTORY]
                if path in deleted:
                    self.docs.pop(path, None)
                    self.versions.pop(path, None)
                    continue
                self.docs[path] = staged_doc
                self.versions[path] = version
            self.commits.append(list(writes))
            return CommitResult(
                {path: found for path, found in values.items() if found},
                {path: self.versions[path] for path in staged if path in self.versions},
            )

    def commit_each(self, groups: Sequence[Sequence[Write]], *, workers: int = 8) -> list[bool]:
        applied = []
        for group in groups:
            try:
                self.commit(group)
                applied.append(True)
            except (Contention, Rejected):
                applied.append(False)
        return applied

    # Queries (scans; the real store uses indexes)

    def _collection(self, name: str) -> list[Document]:
        with self._lock:
            return [
                Document(path, copy.deepcopy(doc), self.versions[path])
                for path, doc in sorted(self.docs.items())
                if path.startswith(name + "/") and path.count("/") == 1
            ]

    def top_users(self, *, month: str, limit: int, read_time: datetime | None = None) -> list[Document]:
        docs = [d for d in self._collection(layout.USER_MONTHS) if d.fields.get("month") == month]
        return sorted(docs, key=lambda d: -int(d.fields.get("costNanos", 0)))[:limit]

    def free_tier(
        self, *, month: str, min_percent: float, limit: int, read_time: datetime | None = None
    ) -> list[Document]:
        docs = [
            d
            for d in self._collection(layout.USER_MONTHS)
            if d.fields.get("month") == month and float(d.fields.get("limitPercent", -1)) >= min_percent
        ]
        return sorted(docs, key=lambda d: -float(d.fields["limitPercent"]))[:limit]

    def _sessions(self, shard: int, keep: Callable[[Mapping[str, Any]], bool]) -> list[IdleSession]:
        found = []
        with self._lock:
            for path, doc in sorted(self.docs.items()):
                ids = layout.session_ids(path)
                if ids and doc.get("tallyShard") == shard and keep(doc):
                    found.append(IdleSession(ids[0], ids[1], self.versions[path], path))
        return found

    @staticmethod
    def _page(found: list[IdleSession], limit: int, after: Any | None) -> list[IdleSession]:
        return [s for s in found if after is None or s.cursor > after][:limit]

    def idle_sessions(
        self, *, shard: int, cutoff: datetime, limit: int, after: Any | None
    ) -> list[IdleSession]:
        found = self._sessions(shard, lambda d: d.get("status") == "active" and d["lastUpdatedAt"] < cutoff)
        return self._page(found, limit, after)

    def unfinalized_sessions(self, *, shard: int, limit: int, after: Any | None) -> list[IdleSession]:
        found = self._sessions(
            shard, lambda d: d.get("status") == "completed" and d.get("finalizedAt") is None
        )
        return self._page(found, limit, after)

    # Reconcile's queries

    def month_steps(
        self, *, month: str, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]:
        with self._lock:
            found = [
                Document(path, copy.deepcopy(doc), self.versions[path])
                for path, doc in sorted(self.docs.items())
                if path.split("/")[-2:-1] == [layout.STEPS] and doc.get("month") == month
            ]
        return [doc for doc in found if after is None or doc.path > after][:limit]

    def user_month_steps(
        self, *, user_id: str, month: str, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]:
        found = self.month_steps(month=month, read_time=read_time, limit=10**9, after=after)
        return [doc for doc in found if layout.step_owner(doc.path) == user_id][:limit]

    def count_month_steps(self, *, month: str, read_time: datetime | None) -> int:
        return len(self.month_steps(month=month, read_time=read_time, limit=10**9, after=None))

    def user_lifetime(self, *, user_id: str, read_time: datetime | None) -> Counts:
        counts = Counts()
        with self._lock:
            for path, doc in self.docs.items():
                if layout.step_owner(path) == user_id:
                    counts.cost_nanos += int(doc["costNanos"])
                    counts.api_calls += 1
                    counts.billable_runs += int(bool(doc.get("isBillableRun")))
        return counts

    def user_session_counts(self, *, user_id: str, read_time: datetime | None) -> dict[str, int]:
        counts = {"active": 0, "completed": 0}
        with self._lock:
            for path, doc in self.docs.items():
                ids = layout.session_ids(path)
                if ids and ids[0] == user_id and doc.get("status") in counts and "tallyShard" in doc:
                    counts[doc["status"]] += 1
        return counts

    def month_sessions(
        self, *, month: str, by: str, shard: int, read_time: datetime | None, limit: int, after: str | None
    ) -> list[Document]:
        field = "createdAt" if by == "created" else "completedAt"
        with self._lock:
            found = [
                Document(path, copy.deepcopy(doc), self.versions[path])
                for path, doc in sorted(self.docs.items())
                if layout.session_ids(path)
                and doc.get("tallyShard") == shard
                and doc.get(field) is not None
                and month_key(doc[field]) == month
            ]
        return [doc for doc in found if after is None or doc.path > after][:limit]

    def collection_group(self, *, group: str, limit: int, after: str | None) -> list[Document]:
        with self._lock:
            found = [
                Document(path, copy.deepcopy(doc), self.versions[path])
                for path, doc in sorted(self.docs.items())
                if path.split("/")[-2] == group
            ]
        return [doc for doc in found if after is None or doc.path > after][:limit]

    def price_log(self, *, limit: int) -> list[Document]:
        entries = self._collection(layout.PRICE_LOG)
        return sorted(entries, key=lambda doc: doc.fields["setAt"], reverse=True)[:limit]

    def expired_holds(self, *, shard: int, now: datetime, limit: int, after: Any | None) -> list[IdleSession]:
        found = []
        with self._lock:
            for path, doc in sorted(self.docs.items()):
                ids = layout.reservation_ids(path)
                if (
                    ids
                    and doc.get("tallyShard") == shard
                    and doc.get("status") in ("pending", "active")
                    and doc["expiresAt"] < now
                ):
                    found.append(IdleSession(ids[0], ids[1], self.versions[path], path))
        return self._page(found, limit, after)

    def month_alerts(self, *, month: str, limit: int) -> list[Document]:
        alerts = [d for d in self._collection(layout.ALERTS) if d.fields.get("month") == month]
        return sorted(alerts, key=lambda d: d.fields["createdAt"], reverse=True)[:limit]

    def undelivered_alerts(self, *, shard: int, now: datetime, limit: int) -> list[Document]:
        alerts = [
            d
            for d in self._collection(layout.ALERTS)
            if d.fields.get("tallyShard") == shard
            and d.fields.get("deliveredAt") is None
            and d.fields["nextAttemptAt"] <= now
        ]
        return sorted(alerts, key=lambda d: d.fields["nextAttemptAt"])[:limit]

    def free_tier_page(self, *, month: str, limit: int, after: str | None) -> list[Document]:
        docs = self.free_tier(month=month, min_percent=80.0, limit=10**9)
        docs.sort(key=lambda d: d.path)
        return [d for d in docs if after is None or d.path > after][:limit]

    def user_holds(self, *, user_id: str, read_time: datetime | None) -> list[Document]:
        return [
            d
            for d in self.collection_group(group=layout.RESERVATIONS, limit=10**9, after=None)
            if layout.reservation_ids(d.path) is not None
            and d.path.split("/")[1] == user_id
            and d.fields.get("status") in ("pending", "active")
        ]

    def active_holds(self, *, user_id: str) -> Held:
        holds = [d.fields for d in self.user_holds(user_id=user_id, read_time=None)]
        active = [h for h in holds if h.get("status") == "active"]
        return Held(
            sum(int(h.get("estimateNanos", 0)) for h in active), sum(int(h.get("runs", 0)) for h in active)
        )

    def _under_users(
        self, first_user: str, last_user: str, keep: Callable[[str, Mapping[str, Any]], bool]
    ) -> list[Document]:
        with self._lock:
            return [
                Document(path, copy.deepcopy(doc), self.versions[path])
                for path, doc in sorted(self.docs.items())
                if path.startswith(layout.SESSION_USAGE + "/")
                and first_user <= path.split("/")[1] <= last_user
                and keep(path, doc)
            ]

    def holding_reservations(
        self, *, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]:
        return self._under_users(
            first_user,
            last_user,
            lambda path, doc: (
                layout.reservation_ids(path) is not None
                and "tallyShard" in doc
                and doc.get("status") in ("pending", "active")
            ),
        )

    def unfinalized_between(
        self, *, first_user: str, last_user: str, read_time: datetime | None
    ) -> list[Document]:
        return self._under_users(
            first_user,
            last_user,
            lambda path, doc: (
                layout.session_ids(path) is not None
                and "tallyShard" in doc
                and doc.get(session_doc.OPEN) is True
            ),
        )

    def month_users(
        self, *, month: str, limit: int, after: str | None, read_time: datetime | None = None
    ) -> list[Document]:
        docs = sorted(
            (d for d in self._collection(layout.USER_MONTHS) if d.fields.get("month") == month),
            key=lambda d: d.path,
        )
        return [d for d in docs if after is None or d.path > after][:limit]

    def shard_beyond(self, count: int) -> Document | None:
        found = [
            d for d in self._collection(layout.PLATFORM_SHARDS) if int(d.fields.get("shard", 0)) >= count
        ]
        return found[0] if found else None


def record_one(
    store: MemoryStore,
    user: str,
    cost_nanos: int,
    *,
    when: datetime,
    now: datetime,
    feature: str = "f",
    billable: bool = True,
) -> None:
    """Record one AI step of `user` at `when` in a completed session of its own (a recorder calls)."""
    step = Step(
        f"{user}-{cost_nanos}-{int(when.timestamp())}", UsageType.AI, feature, "p", cost_nanos, billable, when
    )
    record_steps(
        store=store,
        caller=Caller("svc", recorder=True),
        request=RecordRequest(user, SessionRequest(f"s-{step.operation_id}", None, True), (step,)),
        settings=Settings(),
        now=now,
        admitted_cache=names.AdmittedNames(),
        shards=plans.ShardPicker(seed=1),
    )


def record_body(
    store: MemoryStore,
    body: Mapping[str, Any],
    *,
    caller: Caller,
    now: datetime,
    settings: Settings | None = None,
) -> RecordOutcome:
    """Record a request body (as a client sends it) through record_steps, as of `now`."""
    return record_steps(
        store=store,
        caller=caller,
        request=parse_record_request(dict(body), now=now),
        settings=settings or Settings(),
        now=now,
        admitted_cache=names.AdmittedNames(),
        shards=plans.ShardPicker(seed=1),
    )
