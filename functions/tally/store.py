"""The Firestore store: document layout, reads, and atomic commits with preconditions.

Layout (Tally-owned unless noted):
- `users/{uid}`: the app's document; Tally writes only its `usage` map.
- `SessionUsage/{uid}/sessions/{sessionId}`: one session, with running `stats`.
- `SessionUsage/{uid}/steps/{operationId}`: one accepted step, never rewritten.
- `TallyUserMonths/{YYYY-MM}_{uid}`: a user's month totals (for top-user queries).
- `TallyPlatformMonths/{YYYY-MM}-s{NN}`: one shard of the platform's month: totals,
  by type, feature, provider and day, and the set of active users.

The write path reads nothing shared. Step documents are created with an
exists=false precondition (the idempotency check happens at commit), the session
document is written with an update-time precondition from a plain read, and every
aggregate is a blind server-side increment. A commit whose precondition fails is
rolled back whole and re-planned; a commit is never applied twice, because a
replay fails on the step documents it already created.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.bulk_writer import BulkWriteFailure
from google.cloud.firestore_v1.field_path import FieldPath
from google.rpc import code_pb2

from tally.models import Step
from tally.timeutil import day_key, month_key
from tally.usage import Counts, Limits, MonthDelta, aggregate, counts_by, total

USERS = "users"
SESSION_USAGE = "SessionUsage"
SESSIONS = "sessions"
STEPS = "steps"
USER_MONTHS = "TallyUserMonths"
PLATFORM_MONTHS = "TallyPlatformMonths"

_RETRYABLE = (
    gexc.AlreadyExists,
    gexc.Conflict,
    gexc.FailedPrecondition,
    gexc.NotFound,
    gexc.Aborted,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
)


class Contention(Exception):
    """A commit lost a race (or hit a transient fault) and was not applied."""


@dataclass(frozen=True)
class SessionState:
    """What the write path needs to know of a stored session."""

    status: str
    created_at: datetime
    first_step_at: datetime | None
    last_step_at: datetime | None
    version: Any  # the document's update time, for the commit's precondition


@dataclass(frozen=True)
class RecordingState:
    """A plain (lock-free) read of what a request touches."""

    session: SessionState | None
    existing_steps: Mapping[str, str | None]  # operationId -> requestId that wrote it


@dataclass(frozen=True)
class RecordingCommit:
    """Everything one request writes, applied in one atomic commit."""

    user_id: str
    request_id: str
    now: datetime
    steps: tuple[Step, ...]
    session_id: str | None = None
    session_feature: str | None = None
    session_base: SessionState | None = None  # None with a session_id: create it
    complete: bool = False


@dataclass(frozen=True)
class SessionRecord:
    """A stored session: its fields and the version a conditional write builds on."""

    user_id: str
    session_id: str
    data: Mapping[str, Any]
    version: Any


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


@dataclass(frozen=True)
class IdleSession:
    """One result of the idle-session query."""

    path: str
    owned: bool  # False: a collection named `sessions` that is not Tally's
    version: Any
    cursor: Any


def shard_of(user_id: str, shards: int) -> int:
    """Return the platform shard a user's writes go to (stable per user)."""
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def _increments(counts: Counts) -> dict[str, Any]:
    return {name: firestore.Increment(value) for name, value in counts.fields().items()}


def _increment_map(counters: Mapping[str, Counts]) -> dict[str, Any]:
    return {name: _increments(counts) for name, counts in counters.items()}


def _merge_payload(data: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty maps from a merge write: `set(merge=True)` would replace a stored map with `{}`."""
    payload: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            value = _merge_payload(value)
            if not value:
                continue
        payload[key] = value
    return payload


def _path(*parts: str) -> str:
    """Return a quoted field path: a dot inside a part is part of the name."""
    return FieldPath(*parts).to_api_repr()


def _flat_increments(prefix: tuple[str, ...], counters: Mapping[str, Counts]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for name, counts in counters.items():
        for field, value in counts.fields().items():
            updates[_path(*prefix, name, field)] = firestore.Increment(value)
    return updates


class FirestoreStore:
    """Tally's documents in one Firestore database."""

    def __init__(self, client: firestore.Client, *, shards: int) -> None:
        self._db = client
        self._shards = shards

    # References

    def user_ref(self, user_id: str) -> firestore.DocumentReference:
        """Return `users/{uid}`."""
        return self._db.collection(USERS).document(user_id)

    def session_ref(self, user_id: str, session_id: str) -> firestore.DocumentReference:
        """Return `SessionUsage/{uid}/sessions/{sessionId}`."""
        return self._db.collection(SESSION_USAGE, user_id, SESSIONS).document(session_id)

    def step_ref(self, user_id: str, operation_id: str) -> firestore.DocumentReference:
        """Return `SessionUsage/{uid}/steps/{operationId}`."""
        return self._db.collection(SESSION_USAGE, user_id, STEPS).document(operation_id)

    def user_month_ref(self, user_id: str, month: str) -> firestore.DocumentReference:
        """Return the user's month document."""
        return self._db.collection(USER_MONTHS).document(f"{month}_{user_id}")

    def platform_month_ref(self, month: str, shard: int) -> firestore.DocumentReference:
        """Return one shard of the platform's month."""
        return self._db.collection(PLATFORM_MONTHS).document(f"{month}-s{shard:02d}")

    # Recording

    def load_recording_state(
        self, *, user_id: str, session_id: str | None, operation_ids: Sequence[str]
    ) -> RecordingState:
        """Read the session and the step documents of a request in one round trip."""
        refs = [self.step_ref(user_id, op) for op in operation_ids]
        session_ref = self.session_ref(user_id, session_id) if session_id else None
        if session_ref is not None:
            refs.append(session_ref)
        existing: dict[str, str | None] = {}
        session: SessionState | None = None
        for snap in self._db.get_all(refs) if refs else []:
            if not snap.exists:
                continue
            data = snap.to_dict() or {}
            if session_ref is not None and snap.reference.path == session_ref.path:
                stats = data.get("stats") or {}
                session = SessionState(
                    status=data["status"],
                    created_at=data["createdAt"],
                    first_step_at=stats.get("firstStepAt"),
                    last_step_at=stats.get("lastStepAt"),
                    version=snap.update_time,
                )
            else:
                existing[snap.id] = data.get("requestId")
        return RecordingState(session=session, existing_steps=existing)

    def commit_recording(self, commit: RecordingCommit) -> None:
        """Apply one request atomically; raise Contention if a precondition failed."""
        batch = self._db.batch()
        for step in commit.steps:
            batch.create(self.step_ref(commit.user_id, step.operation_id), self._step_doc(commit, step))
        session_created = commit.session_id is not None and commit.session_base is None
        if commit.session_id is not None:
            self._write_session(batch, commit)
        months = aggregate(commit.steps)
        if session_created:
            months.setdefault(month_key(commit.now), MonthDelta())
        if commit.steps or session_created:
            self._write_user(batch, commit, months, session_created=session_created)
            self._write_platform(batch, commit, months, session_created=session_created)
        try:
            batch.commit()
        except _RETRYABLE as exc:
            raise Contention(type(exc).__name__) from exc

    def _step_doc(self, commit: RecordingCommit, step: Step) -> dict[str, Any]:
        return {
            "userId": commit.user_id,
            "sessionId": commit.session_id,
            "operationId": step.operation_id,
            "usageType": step.usage_type.value,
            "feature": step.feature,
            "provider": step.provider,
            "costNanos": step.cost_nanos,
            "isBillableRun": step.is_billable_run,
            "timestamp": step.timestamp,
            "month": month_key(step.timestamp),
            "day": day_key(step.timestamp),
            "metadata": step.metadata,
            "recordedAt": commit.now,
            "requestId": commit.request_id,
        }

    def _write_session(self, batch: firestore.WriteBatch, commit: RecordingCommit) -> None:
        assert commit.session_id is not None
        ref = self.session_ref(commit.user_id, commit.session_id)
        counts = total(commit.steps)
        features = counts_by(commit.steps, lambda s: s.feature)
        providers = counts_by(commit.steps, lambda s: s.provider)
        times = [s.timestamp for s in commit.steps]
        base = commit.session_base
        if base is None:
            batch.create(
                ref,
                {
                    "userId": commit.user_id,
                    "sessionId": commit.session_id,
                    "feature": commit.session_feature,
                    "status": "completed" if commit.complete else "active",
                    "createdAt": commit.now,
                    "lastUpdatedAt": commit.now,
                    "completedAt": commit.now if commit.complete else None,
                    "completedBy": "client" if commit.complete else None,
                    "finalizedAt": None,
                    "summary": None,
                    "stats": {
                        "stepCount": counts.api_calls,
                        "costNanos": counts.cost_nanos,
                        "billableRuns": counts.billable_runs,
                        "features": {name: c.fields() for name, c in features.items()},
                        "providers": {name: c.fields() for name, c in providers.items()},
                        "firstStepAt": min(times, default=None),
                        "lastStepAt": max(times, default=None),
                    },
                },
            )
            return
        updates: dict[str, Any] = {"lastUpdatedAt": commit.now}
        if commit.steps:
            updates.update(
                {
                    "stats.stepCount": firestore.Increment(counts.api_calls),
                    "stats.costNanos": firestore.Increment(counts.cost_nanos),
                    "stats.billableRuns": firestore.Increment(counts.billable_runs),
                    "stats.firstStepAt": min([*times, *_present(base.first_step_at)]),
                    "stats.lastStepAt": max([*times, *_present(base.last_step_at)]),
                }
            )
            updates.update(_flat_increments(("stats", "features"), features))
            updates.update(_flat_increments(("stats", "providers"), providers))
        if commit.complete:
            updates.update({"status": "completed", "completedAt": commit.now, "completedBy": "client"})
        batch.update(ref, updates, option=self._db.write_option(last_update_time=base.version))

    def _write_user(
        self,
        batch: firestore.WriteBatch,
        commit: RecordingCommit,
        months: Mapping[str, MonthDelta],
        *,
        session_created: bool,
    ) -> None:
        usage: dict[str, Any] = {
            "months": {
                month: {
                    **_increments(delta.total),
                    "byType": _increment_map(delta.by_type),
                    "features": _increment_map(delta.features),
                    "providers": _increment_map(delta.providers),
                }
                for month, delta in months.items()
            },
            "updatedAt": commit.now,
        }
        if commit.steps:
            usage["lifetime"] = _increments(total(commit.steps))
        if session_created:
            usage["sessions"] = {"active": firestore.Increment(1)}
        # merge=True writes only these leaves: every other field of users/{uid} is untouched.
        batch.set(self.user_ref(commit.user_id), _merge_payload({"usage": usage}), merge=True)
        for month, delta in months.items():
            batch.set(
                self.user_month_ref(commit.user_id, month),
                {
                    "userId": commit.user_id,
                    "month": month,
                    "updatedAt": commit.now,
                    **_increments(delta.total),
                },
                merge=True,
            )

    def _write_platform(
        self,
        batch: firestore.WriteBatch,
        commit: RecordingCommit,
        months: Mapping[str, MonthDelta],
        *,
        session_created: bool,
    ) -> None:
        shard = shard_of(commit.user_id, self._shards)
        created_month = month_key(commit.now)
        for month, delta in months.items():
            doc: dict[str, Any] = {
                "month": month,
                "shard": shard,
                "updatedAt": commit.now,
                **_increments(delta.total),
                "byType": _increment_map(delta.by_type),
                "features": _increment_map(delta.features),
                "providers": _increment_map(delta.providers),
                "days": _increment_map(delta.days),
            }
            if delta.total.api_calls:
                doc["users"] = {commit.user_id: True}
            if session_created and month == created_month:
                doc["sessions"] = {"active": firestore.Increment(1)}
            batch.set(self.platform_month_ref(month, shard), _merge_payload(doc), merge=True)

    def read_outcome(
        self, *, user_id: str, session_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Read the user's `usage` map and the session after a commit, in one round trip."""
        refs = [self.user_ref(user_id)]
        if session_id:
            refs.append(self.session_ref(user_id, session_id))
        usage: dict[str, Any] = {}
        session: dict[str, Any] | None = None
        for snap in self._db.get_all(refs):
            data = (snap.to_dict() or {}) if snap.exists else {}
            if snap.reference.path == refs[0].path:
                usage = data.get("usage") or {}
            elif snap.exists:
                session = data
        return usage, session

    # Limits and analytics

    def user_usage(self, *, user_id: str) -> dict[str, Any]:
        """Read a user's `usage` map (empty if none)."""
        snap = self.user_ref(user_id).get(field_paths=["usage"])
        usage: dict[str, Any] = ((snap.to_dict() or {}) if snap.exists else {}).get("usage") or {}
        return usage

    def write_limits(self, *, user_id: str, limits: Limits) -> None:
        """Store a user's limits in `usage.limits` (other fields untouched)."""
        self.user_ref(user_id).set({"usage": {"limits": _limits_fields(limits)}}, merge=True)

    def set_limit_percent(self, *, user_id: str, month: str, percent: float, limits: Limits) -> None:
        """Overwrite the share of their limits a user has used in a month (after a limits change)."""
        self.user_month_ref(user_id, month).set(
            {"userId": user_id, "month": month, "limitPercent": percent, **_limits_fields(limits)}, merge=True
        )

    def raise_limit_percent(self, *, user_id: str, month: str, percent: float, limits: Limits) -> None:
        """Raise the stored share of limits used; usage only grows, so the largest reading is the latest."""
        self.user_month_ref(user_id, month).set(
            {
                "userId": user_id,
                "month": month,
                "limitPercent": firestore.Maximum(percent),
                **_limits_fields(limits),
            },
            merge=True,
        )

    def platform_months(
        self, *, month: str, history: list[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        """Read every shard of `month` whole and of the `history` months' totals only.

        Shards are read by id, so the count read is fixed: months x shards (a
        missing document is billed as a read too, and counted here).
        """
        current_refs = [self.platform_month_ref(month, n) for n in range(self._shards)]
        history_refs = [self.platform_month_ref(m, n) for m in history for n in range(self._shards)]
        current = [snap.to_dict() or {} for snap in self._db.get_all(current_refs) if snap.exists]
        past = (
            [
                snap.to_dict() or {}
                for snap in self._db.get_all(history_refs, field_paths=["month", "costNanos", "apiCalls"])
                if snap.exists
            ]
            if history_refs
            else []
        )
        return current, past, len(current_refs) + len(history_refs)

    def top_users(self, *, month: str, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Return the month's biggest spenders (indexed query: month, costNanos desc)."""
        query = (
            self._db.collection(USER_MONTHS)
            .where(filter=FieldFilter("month", "==", month))
            .order_by("costNanos", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        docs = [snap.to_dict() or {} for snap in query.stream()]
        return docs, max(1, len(docs))

    def free_tier(self, *, month: str, min_percent: float, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Return users at or over `min_percent` of a limit (indexed: month, limitPercent desc)."""
        query = (
            self._db.collection(USER_MONTHS)
            .where(filter=FieldFilter("month", "==", month))
            .where(filter=FieldFilter("limitPercent", ">=", min_percent))
            .order_by("limitPercent", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        docs = [snap.to_dict() or {} for snap in query.stream()]
        return docs, max(1, len(docs))

    # Session lifecycle

    def read_session(self, *, user_id: str, session_id: str) -> SessionRecord | None:
        """Read a session document (plain read) with its version."""
        snap = self.session_ref(user_id, session_id).get()
        if not snap.exists:
            return None
        return SessionRecord(user_id, session_id, snap.to_dict() or {}, snap.update_time)

    def commit_finalization(self, *, record: SessionRecord, summary: SessionSummary, now: datetime) -> None:
        """Write the summary and count the session, only if the session is unchanged since read."""
        batch = self._db.batch()
        batch.update(
            self.session_ref(record.user_id, record.session_id),
            {"summary": summary.document(), "finalizedAt": now},
            option=self._db.write_option(last_update_time=record.version),
        )
        batch.set(
            self.user_ref(record.user_id),
            {"usage": {"sessions": {"active": firestore.Increment(-1), "completed": firestore.Increment(1)}}},
            merge=True,
        )
        shard = shard_of(record.user_id, self._shards)
        completed = {
            "completed": firestore.Increment(1),
            "stepCount": firestore.Increment(summary.step_count),
            "costNanos": firestore.Increment(summary.cost_nanos),
            "durationMs": firestore.Increment(summary.duration_ms),
        }
        per_month: dict[str, dict[str, Any]] = {summary.completed_month: completed}
        per_month.setdefault(summary.created_month, {})["active"] = firestore.Increment(-1)
        for month, sessions in per_month.items():
            batch.set(
                self.platform_month_ref(month, shard),
                {"month": month, "shard": shard, "sessions": sessions},
                merge=True,
            )
        try:
            batch.commit()
        except _RETRYABLE as exc:
            raise Contention(type(exc).__name__) from exc

    def idle_sessions(self, *, cutoff: datetime, limit: int, after: Any | None) -> list[IdleSession]:
        """Return one page of active sessions last updated before `cutoff`, oldest first."""
        query = (
            self._db.collection_group(SESSIONS)
            .where(filter=FieldFilter("status", "==", "active"))
            .where(filter=FieldFilter("lastUpdatedAt", "<", cutoff))
            .order_by("lastUpdatedAt")
            .limit(limit)
        )
        if after is not None:
            query = query.start_after(after)
        return [
            IdleSession(
                path=snap.reference.path,
                owned=_is_tally_session(snap.reference.path),
                version=snap.update_time,
                cursor=snap,
            )
            for snap in query.stream()
        ]

    def unfinalized_sessions(self) -> int:
        """Count completed Tally sessions the finalizer has not summarized yet."""
        query = (
            self._db.collection_group(SESSIONS)
            .where(filter=FieldFilter("status", "==", "completed"))
            .where(filter=FieldFilter("finalizedAt", "==", None))
        )
        return sum(1 for snap in query.stream() if _is_tally_session(snap.reference.path))

    def complete_sessions(self, sessions: list[IdleSession], *, now: datetime) -> int:
        """Complete sessions by timeout, each only if unchanged since read; return how many."""
        applied = 0
        lock = threading.Lock()

        def on_result(*_: Any) -> None:
            nonlocal applied
            with lock:
                applied += 1

        def on_error(failure: BulkWriteFailure, _: Any) -> bool:
            lost_race = failure.code in {code_pb2.FAILED_PRECONDITION, code_pb2.NOT_FOUND}
            return not lost_race and failure.attempts < 5

        writer = self._db.bulk_writer()
        writer.on_write_result(on_result)
        writer.on_write_error(on_error)
        for session in sessions:
            if not session.owned:
                continue
            writer.update(
                self._db.document(session.path),
                {"status": "completed", "completedAt": now, "completedBy": "timeout"},
                option=self._db.write_option(last_update_time=session.version),
            )
        writer.close()  # type: ignore[no-untyped-call]  # waits for every write
        return applied


def _limits_fields(limits: Limits) -> dict[str, int]:
    return {
        "monthlyCostLimitNanos": limits.monthly_cost_limit_nanos,
        "monthlyFreeRuns": limits.monthly_free_runs,
    }


def _is_tally_session(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == SESSION_USAGE and parts[2] == SESSIONS


def _present(value: datetime | None) -> list[datetime]:
    return [value] if value is not None else []
