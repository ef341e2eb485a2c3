"""Recording steps: authorization, idempotent planning, commit with retry, the response."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tally.config import Settings
from tally.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from tally.models import RecordRequest
from tally.money import nanos_to_usd
from tally.store import Contention, RecordingCommit, RecordingState
from tally.timeutil import month_key
from tally.usage import WARNING_PERCENT, Counts, Limits, limit_percent, limits_status

MAX_ATTEMPTS = 12


@dataclass(frozen=True)
class Caller:
    """Who is calling, from a verified ID token's claims."""

    uid: str
    admin: bool = False
    recorder: bool = False


class RecordingStore(Protocol):
    """The store operations recording needs."""

    def load_recording_state(
        self, *, user_id: str, session_id: str | None, operation_ids: Sequence[str]
    ) -> RecordingState: ...

    def commit_recording(self, commit: RecordingCommit) -> None: ...

    def read_outcome(
        self, *, user_id: str, session_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]: ...

    def raise_limit_percent(self, *, user_id: str, month: str, percent: float, limits: Limits) -> None: ...


@dataclass(frozen=True)
class RecordOutcome:
    """The response body and how many commit attempts it took."""

    body: dict[str, Any]
    attempts: int


def resolve_user(caller: Caller, requested: str | None) -> str:
    """Return whose usage is recorded; only recorders and admins may name another user."""
    if requested is None or requested == caller.uid:
        return caller.uid
    if caller.admin or caller.recorder:
        return requested
    raise PermissionDenied("userId: only recorder or admin callers may record for another user")


@dataclass(frozen=True)
class Plan:
    """One attempt's commit (None: nothing to write) and the request's counts."""

    commit: RecordingCommit | None
    recorded: int
    duplicates: int


def plan_recording(
    *, request: RecordRequest, user_id: str, state: RecordingState, now: datetime, request_id: str
) -> Plan:
    """Decide what one attempt writes, from a plain read of the current state."""
    existing = state.existing_steps
    new = tuple(s for s in request.steps if s.operation_id not in existing)
    ours = sum(1 for s in request.steps if existing.get(s.operation_id) == request_id)
    recorded = len(new) + ours
    duplicates = len(request.steps) - recorded
    session = request.session
    if session is None:
        commit = RecordingCommit(user_id=user_id, request_id=request_id, now=now, steps=new) if new else None
        return Plan(commit=commit, recorded=recorded, duplicates=duplicates)
    base = state.session
    if base is None:
        if not request.steps:
            raise NotFound(f"session {session.session_id} does not exist")
    elif base.status == "completed":
        if new:
            raise FailedPrecondition(f"session {session.session_id} is completed; it accepts no new steps")
        return Plan(commit=None, recorded=recorded, duplicates=duplicates)
    elif not new and not session.complete:
        return Plan(commit=None, recorded=recorded, duplicates=duplicates)
    commit = RecordingCommit(
        user_id=user_id,
        request_id=request_id,
        now=now,
        steps=new,
        session_id=session.session_id,
        session_feature=session.feature,
        session_base=base,
        complete=session.complete,
    )
    return Plan(commit=commit, recorded=recorded, duplicates=duplicates)


def limits_of(usage: Mapping[str, Any], settings: Settings) -> Limits:
    """Return a user's limits, or the defaults where none are set."""
    stored = usage.get("limits") or {}
    return Limits(
        monthly_cost_limit_nanos=int(
            stored.get("monthlyCostLimitNanos", settings.default_monthly_cost_limit_nanos)
        ),
        monthly_free_runs=int(stored.get("monthlyFreeRuns", settings.default_monthly_free_runs)),
    )


def month_usage(usage: Mapping[str, Any], month: str) -> Counts:
    """Return one month's totals from a user's `usage` map."""
    return Counts.from_fields((usage.get("months") or {}).get(month))


def record_steps(
    *,
    store: RecordingStore,
    caller: Caller,
    request: RecordRequest,
    settings: Settings,
    now: datetime,
    request_id: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RecordOutcome:
    """Record a request's steps exactly once and return the SPEC's response body."""
    user_id = resolve_user(caller, request.user_id)
    request_id = request_id or uuid.uuid4().hex
    session_id = request.session.session_id if request.session else None
    operation_ids = [s.operation_id for s in request.steps]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        state = store.load_recording_state(
            user_id=user_id, session_id=session_id, operation_ids=operation_ids
        )
        plan = plan_recording(request=request, user_id=user_id, state=state, now=now, request_id=request_id)
        if plan.commit is None:
            break
        try:
            store.commit_recording(plan.commit)
            break
        except Contention:
            if attempt == MAX_ATTEMPTS:
                raise Unavailable("too much contention on this session; retry the request") from None
            sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))  # noqa: S311 - jitter, not crypto
    usage, session = store.read_outcome(user_id=user_id, session_id=session_id)
    limits = limits_of(usage, settings)
    # Keep the free-tier table's entry current (also on a retry, which repairs a lost write).
    for touched in sorted({month_key(s.timestamp) for s in request.steps}):
        percent = limit_percent(month_usage(usage, touched), limits)
        if percent >= WARNING_PERCENT:
            store.raise_limit_percent(user_id=user_id, month=touched, percent=percent, limits=limits)
    month = month_key(now)
    used = month_usage(usage, month)
    body = {
        "recorded": plan.recorded,
        "duplicates": plan.duplicates,
        "session": _session_view(session_id, session),
        "usage": {
            "month": month,
            "totalCost": nanos_to_usd(used.cost_nanos),
            "apiCalls": used.api_calls,
            "billableRuns": used.billable_runs,
            "limits": limits_status(used, limits),
        },
    }
    return RecordOutcome(body=body, attempts=attempt)


def _session_view(session_id: str | None, doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if session_id is None or doc is None:
        return None
    stats = doc.get("stats") or {}
    return {
        "id": session_id,
        "status": doc.get("status"),
        "stepCount": int(stats.get("stepCount", 0)),
        "totalCost": nanos_to_usd(int(stats.get("costNanos", 0))),
    }
