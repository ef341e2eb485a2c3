"""The answers of the write path, built from what was read and what the commit returned (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tally import names
from tally.documents import sessions as session_doc
from tally.documents import usage as usage_doc
from tally.documents import windows as window_doc
from tally.limits import LimitSet, Scope, Windows, scopes
from tally.money import nanos_to_usd
from tally.names import NameKey, NameKind, Refusal
from tally.services import planning
from tally.timeutil import month_key
from tally.usage import Counts, Held, limits_status
from tally.values import RecordingState, RecordRequest, SessionStatus, Step
from tally.writes import CommitResult


def usage_body(
    *, now: datetime, limits: LimitSet, windows: Windows, first: Sequence[Scope] = ()
) -> dict[str, Any]:
    """Return the `usage` object of the HTTPS endpoints: the user's current month, limits and scopes.

    `first`: scopes that come before the user's (a team's, where the gate read them).
    """
    current = windows.month
    status = limits_status(current, limits.month, windows.held)
    status["scopes"] = [scope.view() for scope in (*first, *scopes(limits, windows))]
    return {
        "month": month_key(now),
        "totalCost": nanos_to_usd(current.cost_nanos),
        "apiCalls": current.api_calls,
        "billableRuns": current.billable_runs,
        "limits": status,
    }


def respond(
    *,
    request: RecordRequest,
    steps: tuple[Step, ...],
    plan: planning.Plan,
    state: RecordingState,
    result: CommitResult | None,
    used: Counts,
    refused: Mapping[NameKey, Refusal],
    user_id: str,
    limits: LimitSet,
    now: datetime,
    first: Sequence[Scope] = (),
) -> dict[str, Any]:
    """Build the response from what was read and what the commit returned (pure).

    The month and holds are as the commit left them; the day's and features' windows are as
    read plus this request's own steps.
    """
    held = usage_doc.held_of(state.usage)
    commit = plan.commit if result is not None else None
    if result is not None and commit is not None and commit.settlements:
        held = usage_doc.committed_held(result, user_id)
    view = window_doc.windows_of(state.truth, now, month=used, held=held)
    if commit is not None:
        released: dict[str, Held] = {}
        for hold, _ in commit.settlements:
            if hold.feature_held and hold.feature is not None:
                back = released.get(hold.feature, Held())
                released[hold.feature] = Held(back.cost_nanos + hold.cost_nanos, back.runs + 1)
        view = window_doc.with_steps(view, commit.steps, now, released=released)
    return {
        "recorded": plan.recorded,
        "duplicates": plan.duplicates,
        "session": _session_view(request, plan, state, result, user_id),
        "usage": usage_body(now=now, limits=limits, windows=view, first=first),
        "warnings": [w.body() for w in _warnings(steps, plan, state, refused)],
    }


def _session_view(
    request: RecordRequest,
    plan: planning.Plan,
    state: RecordingState,
    result: CommitResult | None,
    user_id: str,
) -> dict[str, Any] | None:
    if request.session is None:
        return None
    session_id = request.session.session_id
    base = state.session
    commit = plan.commit
    status = base.status if base else SessionStatus.ACTIVE
    step_count, cost = (base.step_count, base.cost_nanos) if base else (0, 0)
    if commit is not None:
        if result is not None and base is not None and commit.steps:
            # exact: the values the increments left
            step_count, cost = session_doc.committed_stats(result, user_id, session_id)
        else:
            step_count += len(commit.steps)
            cost += sum(s.cost_nanos for s in commit.steps)
        if commit.session_completed:
            status = SessionStatus.COMPLETED
    return {
        "id": session_id,
        "status": status.value,
        "stepCount": step_count,
        "totalCost": nanos_to_usd(cost),
    }


def _warnings(
    steps: tuple[Step, ...], plan: planning.Plan, state: RecordingState, refused: Mapping[NameKey, Refusal]
) -> list[names.Warning]:
    new = {s.operation_id for s in plan.commit.steps} if plan.commit else set()
    capped = set(plan.commit.session_named.capped) if plan.commit else set()
    result: list[names.Warning] = []
    for index, step in enumerate(steps):
        stored = state.existing_steps.get(step.operation_id)
        for kind in NameKind:
            real = names.name_of(step, kind)
            if real is None:
                continue
            counted = {NameKind.FEATURE: step.feature_bucket, NameKind.PROVIDER: step.provider_bucket}.get(
                kind, step.model_bucket
            )
            if stored is not None and step.operation_id not in new:
                counted = stored.key(kind) or real
            if counted == names.OTHER:
                key = NameKey(kind, month_key(step.timestamp), real)
                result.append(names.warning(index, kind, refused.get(key, Refusal.MONTH_FULL)))
            elif (step.operation_id, kind) in capped:
                result.append(names.warning(index, kind, Refusal.SESSION_FULL))
    return result
