"""Planning a recording: what its documents say, the prices its steps need, what one attempt writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from tally import layout, pricing
from tally.documents import holds as hold_doc
from tally.documents import plans
from tally.documents import sessions as session_doc
from tally.documents import steps as step_doc
from tally.documents import usage as usage_doc
from tally.documents import user_months as user_month_doc
from tally.documents import windows as window_doc
from tally.errors import FailedPrecondition, InvalidArgument, NotFound
from tally.usage import Limits
from tally.values import Document, RecordingState, RecordRequest, SessionStatus, Step


def recording_state(
    docs: Mapping[str, Document],
    *,
    user_id: str,
    session_id: str | None,
    operation_ids: Sequence[str],
    months: Sequence[str],
    reservations: Sequence[str] = (),
) -> RecordingState:
    """Interpret the documents read for a request."""
    existing = {}
    for op in operation_ids:
        doc = docs[layout.step_path(user_id, op)]
        if doc.exists:
            existing[op] = step_doc.stored(doc.fields)
    session = None
    if session_id is not None and (doc := docs[layout.session_path(user_id, session_id)]).exists:
        session = session_doc.state_of(doc)
    user_months = {
        month: user_month_doc.state_of(docs[layout.user_month_path(user_id, month)]) for month in months
    }
    truth = docs[layout.usage_path(user_id)].fields
    holds = {
        hold.reservation_id: hold
        for reservation in reservations
        if (hold := hold_doc.hold_of(docs[layout.reservation_path(user_id, reservation)])) is not None
    }
    return RecordingState(
        session=session,
        existing_steps=existing,
        usage=usage_doc.usage_of(truth),
        truth=truth,
        user_months=user_months,
        holds=holds,
    )


def state_paths(
    user_id: str,
    session_id: str | None,
    operation_ids: Sequence[str],
    months: Sequence[str],
    reservations: Sequence[str] = (),
) -> list[str]:
    paths = [layout.step_path(user_id, op) for op in operation_ids]
    paths += [layout.reservation_path(user_id, r) for r in reservations]
    if session_id is not None:
        paths.append(layout.session_path(user_id, session_id))
    paths.append(layout.usage_path(user_id))
    paths += [layout.user_month_path(user_id, month) for month in months]
    return paths


def book_paths(steps: Sequence[Step]) -> list[str]:
    """Return the price books the steps Tally must price need."""
    return sorted(
        {
            path
            for s in steps
            if s.needs_price and s.units is not None
            for path in pricing.book_paths(s.provider, s.units.model)
        }
    )


def price_steps(steps: Sequence[Step], docs: Mapping[str, Document]) -> tuple[Step, ...]:
    """Price the steps that give units without a cost (catalog, else genai-prices, else unpriced)."""
    priced: list[Step] = []
    for index, step in enumerate(steps):
        if not step.needs_price or step.units is None:
            priced.append(step)
            continue
        try:
            found = pricing.price(provider=step.provider, units=step.units, at=step.timestamp, books=docs)
        except pricing.PriceTooHigh as exc:
            raise InvalidArgument.field(f"steps[{index}].units", str(exc)) from None
        priced.append(replace(step, cost_nanos=found.cost_nanos, cost_source=found.source, price=found.price))
    return tuple(priced)


@dataclass(frozen=True)
class Plan:
    """One attempt's commit (None: nothing to write) and the request's counts."""

    commit: plans.RecordingCommit | None
    recorded: int
    duplicates: int


def plan_recording(
    *,
    request: RecordRequest,
    steps: tuple[Step, ...],
    user_id: str,
    state: RecordingState,
    now: datetime,
    request_id: str,
    shard: int,
    limits: Limits | None = None,
    team: tuple[str, int] | None = None,
) -> Plan:
    """Decide what one attempt writes, from a plain read of the current state."""
    existing = state.existing_steps
    new = tuple(s for s in steps if s.operation_id not in existing)
    ours = sum(
        1 for s in steps if (stored := existing.get(s.operation_id)) and stored.request_id == request_id
    )
    recorded = len(new) + ours
    duplicates = len(steps) - recorded
    settling: dict[str, str] = {}
    for s in new:
        if s.reservation_id and (hold := state.holds.get(s.reservation_id)) and hold.status.holding:
            settling.setdefault(s.reservation_id, s.operation_id)
    commit = plans.RecordingCommit(
        user_id=user_id,
        request_id=request_id,
        now=now,
        steps=new,
        shard=shard,
        user_months=state.user_months,
        stale_months=usage_doc.stale_months(state.usage, now),
        limits=limits,
        months_before={month: usage_doc.month_usage(state.usage, month) for month in state.user_months},
        settlements=tuple((state.holds[r], op) for r, op in sorted(settling.items())),
        stale_windows=window_doc.stale_keys(state.truth, now),
        team_id=team[0] if team else None,
        team_slice=team[1] if team else 0,
    )
    session = request.session
    if session is None:
        return Plan(commit=commit if new else None, recorded=recorded, duplicates=duplicates)
    base = state.session
    if base is None:
        if not steps:
            raise NotFound(f"session {session.session_id} does not exist")
    elif base.status is SessionStatus.COMPLETED:
        if new:
            raise FailedPrecondition(f"session {session.session_id} is completed; it accepts no new steps")
        return Plan(commit=None, recorded=recorded, duplicates=duplicates)
    elif not new and not session.complete:
        return Plan(commit=None, recorded=recorded, duplicates=duplicates)
    commit = replace(
        commit,
        session_id=session.session_id,
        session_feature=session.feature,
        session_base=base,
        complete=session.complete,
    )
    return Plan(commit=commit, recorded=recorded, duplicates=duplicates)
