"""Recording steps: authorization, name admission, idempotent planning, the commit, the response."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from tally import alerts, layout, mirror, names, plans, ports, pricing
from tally.access import resolve_user
from tally.config import Settings
from tally.documents import steps as step_doc
from tally.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tally.money import nanos_to_usd
from tally.names import NameKey, NameKind, NameReads, Refusal
from tally.timeutil import month_key
from tally.usage import Counts, Held, Limits, aggregate, limits_status
from tally.values import (
    Caller,
    Contention,
    Document,
    HoldState,
    HoldStatus,
    RecordingState,
    RecordRequest,
    SessionState,
    SessionStatus,
    Step,
    UserMonthState,
)
from tally.writes import CommitResult

MAX_ATTEMPTS = 12
log = logging.getLogger("tally.recording")

SHARDS = plans.ShardPicker()
ADMITTED = names.AdmittedNames()


class RecordingStore(ports.DocumentStore, Protocol):
    """The store operations recording needs: the port's, nothing more."""


@dataclass(frozen=True)
class RecordOutcome:
    """The response body and how many commit attempts it took."""

    body: dict[str, Any]
    attempts: int


# Reading what a request touches


def _session_state(doc: Document) -> SessionState:
    data = doc.fields
    if "steps" in data and "stats" not in data:  # an earlier system's session, not imported yet
        raise FailedPrecondition(
            f"session {doc.path.rsplit('/', 1)[-1]} was written by an earlier system; "
            "import it with `python -m entrypoints.cli import-legacy` first"
        )
    stats = data.get("stats") or {}
    return SessionState(
        status=SessionStatus(data["status"]),
        created_at=data["createdAt"],
        first_step_at=stats.get("firstStepAt"),
        last_step_at=stats.get("lastStepAt"),
        version=doc.version,
        step_count=int(stats.get("stepCount", 0)),
        cost_nanos=int(stats.get("costNanos", 0)),
        feature_names=frozenset(stats.get("features") or {}),
        provider_names=frozenset(stats.get("providers") or {}),
    )


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
        session = _session_state(doc)
    user_months = {}
    for month in months:
        doc = docs[layout.user_month_path(user_id, month)]
        stored = doc.fields.get("limitPercent")
        user_months[month] = UserMonthState(
            doc.exists,
            doc.fields.get("active") is True,
            doc.version,
            float(stored) if isinstance(stored, int | float) else None,
        )
    truth = docs[layout.usage_path(user_id)].fields
    usage = truth.get("usage") or {}
    holds = {}
    for reservation in reservations:
        doc = docs[layout.reservation_path(user_id, reservation)]
        if doc.exists:
            data = doc.fields
            holds[reservation] = HoldState(
                user_id,
                reservation,
                HoldStatus(data["status"]),
                int(data.get("estimateNanos", 0)),
                int(data.get("runs", 0)),
                doc.version,
            )
    return RecordingState(
        session=session,
        existing_steps=existing,
        usage=usage,
        truth=truth,
        user_months=user_months,
        holds=holds,
    )


def _state_paths(
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


def _name_paths(caller: Caller, unknown: set[NameKey]) -> list[str]:
    paths = [layout.name_path(key.kind.value, key.month, key.name) for key in sorted(unknown)]
    groups = sorted({(key.kind, key.month) for key in unknown})
    paths += [layout.name_count_path(kind.value, month) for kind, month in groups]
    if not caller.trusted:
        paths += [layout.name_quota_path(caller.uid, month) for month in sorted({m for _, m in groups})]
    return paths


def name_reads(docs: Mapping[str, Document], caller: Caller, unknown: set[NameKey]) -> NameReads:
    """Interpret the registry entries and counters read for a request's unknown names."""
    admitted = frozenset(
        key for key in unknown if docs[layout.name_path(key.kind.value, key.month, key.name)].exists
    )
    counts = {
        (kind, month): int(docs[layout.name_count_path(kind.value, month)].fields.get("count", 0))
        for kind, month in {(key.kind, key.month) for key in unknown}
    }
    quota = (
        {}
        if caller.trusted
        else {
            (kind, month): int(docs[layout.name_quota_path(caller.uid, month)].fields.get(kind.value, 0))
            for kind, month in {(key.kind, key.month) for key in unknown}
        }
    )
    return NameReads(admitted, counts, quota)


# Names


@dataclass(frozen=True)
class Admission:
    """Which of a request's names are admitted, and why the others are not."""

    admitted: frozenset[NameKey]
    refused: Mapping[NameKey, Refusal]


def admit_names(
    *,
    store: RecordingStore,
    caller: Caller,
    reads: NameReads,
    wanted: set[NameKey],
    limits: names.NameLimits,
    now: datetime,
) -> Admission:
    """Admit what names still fit, with fetch-and-add: first the caller's quota, then the month's slots.

    Each counter is incremented by the number of names tried and returns its new value,
    so concurrent requests get disjoint slots and no interleaving admits more than the
    bounds. A crash between steps only leaves slots unused.
    """
    found = names.candidates(wanted, reads, trusted=caller.trusted, limits=limits)
    refused = dict(found.refused)
    trying = dict(found.to_try)
    if trying and not caller.trusted:
        quota = {group: len(keys) for group, keys in trying.items()}
        result = store.commit(plans.quota_writes(caller.uid, quota))
        passed: dict[tuple[NameKind, str], tuple[NameKey, ...]] = {}
        for (kind, month), batch in trying.items():
            after = result.value(layout.name_quota_path(caller.uid, month), kind.value)
            fit = names.within(batch, after, limits.max_new_per_user)
            if fit:
                passed[(kind, month)] = batch[:fit]
            refused.update(dict.fromkeys(batch[fit:], Refusal.CALLER_QUOTA))
        trying = passed
    admitted = set(reads.admitted)
    if trying:
        result = store.commit(plans.name_count_writes({group: len(keys) for group, keys in trying.items()}))
        new: list[NameKey] = []
        for (kind, month), batch in trying.items():
            after = result.value(layout.name_count_path(kind.value, month), "count")
            fit = names.within(batch, after, limits.max_names)
            new += batch[:fit]
            refused.update(dict.fromkeys(batch[fit:], Refusal.MONTH_FULL))
        if new:
            store.commit(plans.registry_writes(new, by=caller.uid, now=now))
            admitted.update(new)
    return Admission(frozenset(admitted & wanted), refused)


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


def unknown_names(steps: Sequence[Step], admitted_cache: names.AdmittedNames) -> set[NameKey]:
    """Return the names of `steps` not known to be admitted in their months."""
    wanted = names.keys_of(steps)
    return wanted - admitted_cache.known(wanted)


def counted(
    *,
    store: RecordingStore,
    caller: Caller,
    steps: Sequence[Step],
    settings: Settings,
    now: datetime,
    admitted_cache: names.AdmittedNames = ADMITTED,
    docs: Mapping[str, Document] | None = None,
    admit: Sequence[Step] | None = None,
) -> tuple[tuple[Step, ...], Mapping[NameKey, Refusal]]:
    """Return the steps with the names they count under (admitting what still fits), and why others are not.

    `docs` may already hold the registry entries and counters of the unknown names. With
    `admit`, only those steps' names may be admitted (the others are already recorded).
    """
    wanted = names.keys_of(steps)
    admitted = set(admitted_cache.known(wanted))
    unknown = wanted - admitted
    trying = unknown & names.keys_of(admit) if admit is not None else unknown
    refused: dict[NameKey, Refusal] = {}
    if unknown:
        paths = _name_paths(caller, unknown)
        if docs is None or any(path not in docs for path in paths):
            docs = store.read(paths)
        reads = name_reads(docs, caller, unknown)
        admitted |= reads.admitted
        # Names only already-recorded steps carry are not admitted; say why they would not be (no write).
        found = names.candidates(unknown - trying, reads, trusted=caller.trusted, limits=settings.name_limits)
        refused.update(found.refused)
        if trying:
            admission = admit_names(
                store=store,
                caller=caller,
                reads=reads,
                wanted=trying,
                limits=settings.name_limits,
                now=now,
            )
            admitted_cache.add(admission.admitted)
            admitted |= admission.admitted
            refused.update(admission.refused)
    return names.count_under(steps, admitted), refused


# Planning


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
        stale_months=plans.stale_months(state.usage, now),
        limits=limits,
        months_before={month: month_usage(state.usage, month) for month in state.user_months},
        settlements=tuple((state.holds[r], op) for r, op in sorted(settling.items())),
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


# Limits


def limits_of(usage: Mapping[str, Any], settings: Settings) -> Limits:
    """Return a user's limits, or the defaults where none are set."""
    stored = usage.get("limits") or {}
    return Limits(
        monthly_cost_limit_nanos=int(
            stored.get("monthlyCostLimitNanos", settings.default_monthly_cost_limit_nanos)
        ),
        monthly_free_runs=int(stored.get("monthlyFreeRuns", settings.default_monthly_free_runs)),
    )


def held_of(usage: Mapping[str, Any], *, pending: bool = False) -> Held:
    """Return a user's active reservations (with `pending`: also those not decided yet)."""
    counters = [usage.get("held") or {}] + ([usage.get("pending") or {}] if pending else [])
    return Held(
        cost_nanos=max(0, sum(int(c.get("costNanos", 0)) for c in counters)),
        runs=max(0, sum(int(c.get("runs", 0)) for c in counters)),
    )


def month_usage(usage: Mapping[str, Any], month: str) -> Counts:
    """Return one month's totals from a user's `usage` map."""
    return Counts.from_fields((usage.get("months") or {}).get(month))


def _committed_month(result: CommitResult, user_id: str, month: str) -> Counts:
    path = layout.usage_path(user_id)
    return Counts(
        cost_nanos=result.value(path, "usage", "months", month, "costNanos"),
        api_calls=result.value(path, "usage", "months", month, "apiCalls"),
        billable_runs=result.value(path, "usage", "months", month, "billableRuns"),
    )


# The service


def record_steps(
    *,
    store: RecordingStore,
    caller: Caller,
    request: RecordRequest,
    settings: Settings,
    now: datetime,
    request_id: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    admitted_cache: names.AdmittedNames = ADMITTED,
    shards: plans.ShardPicker = SHARDS,
) -> RecordOutcome:
    """Record a request's steps exactly once and return the SPEC's response body."""
    user_id = resolve_user(caller, request.user_id)
    request_id = request_id or uuid.uuid4().hex
    session_id = request.session.session_id if request.session else None
    operation_ids = [s.operation_id for s in request.steps]
    months = sorted({month_key(s.timestamp) for s in request.steps})
    reservations = sorted({s.reservation_id for s in request.steps if s.reservation_id})
    unknown = unknown_names(request.steps, admitted_cache)
    paths = _state_paths(user_id, session_id, operation_ids, months, reservations)
    books = book_paths(request.steps)
    docs = store.read(paths + _name_paths(caller, unknown) + books)  # one round trip: state, names, prices

    def state_of(found: Mapping[str, Document]) -> RecordingState:
        return recording_state(
            found,
            user_id=user_id,
            session_id=session_id,
            operation_ids=operation_ids,
            months=months,
            reservations=reservations,
        )

    def plan_of(steps: tuple[Step, ...], state: RecordingState, shard: int) -> Plan:
        return plan_recording(
            request=request,
            steps=steps,
            user_id=user_id,
            state=state,
            now=now,
            request_id=request_id,
            shard=shard,
            limits=limits_of(state.usage, settings),
        )

    priced = price_steps(request.steps, docs)
    state = state_of(docs)
    # Refusals come first: a refused request (404, 409) admits no name and uses no quota.
    new = plan_of(priced, state, shard=0).commit
    try:
        steps, refused = counted(
            store=store,
            caller=caller,
            steps=priced,
            settings=settings,
            now=now,
            admitted_cache=admitted_cache,
            docs=docs,
            admit=() if new is None else new.steps,
        )
    except Contention:
        raise Unavailable("too much contention admitting new names; retry the request") from None
    attempts = 0

    def attempt() -> tuple[RecordingState, Plan, mirror.Committed | None]:
        nonlocal attempts
        attempts += 1
        current = state if attempts == 1 else state_of(store.read(paths))  # each retry reads anew
        plan = plan_of(steps, current, shards.next(store.shards))
        if plan.commit is None:
            return current, plan, None
        stale = mirror.MirrorState.of(current.truth).stale
        return current, plan, mirror.commit(store, plans.recording_writes(plan.commit), stale=stale)

    state, plan, committed = ports.retrying(
        attempt,
        attempts=MAX_ATTEMPTS,
        sleep=sleep,
        exhausted=lambda: Unavailable("too much contention on this session; retry the request"),
    )
    result = committed.result if committed is not None else None
    mirrored = committed.mirrored if committed is not None else True
    if not mirrored:  # the app's users/{uid} is at a limit: try to rewrite its usage map from the truth
        try:
            mirrored = mirror.repair(store, user_id, now=now)
        except Exception:  # the steps are recorded: a failed rewrite is retried by the next request
            log.exception("rewriting the usage map of %s failed", user_id)
    used = _used(steps=steps, plan=plan, state=state, result=result, user_id=user_id, now=now)
    try:
        after_commit(
            store=store,
            plan=plan,
            state=state,
            result=result,
            used={m: used[m] for m in {month_key(s.timestamp) for s in steps}},
            user_id=user_id,
            settings=settings,
            now=now,
        )
    except Exception:
        log.exception("the work after the commit failed for %s (the steps are recorded)", user_id)
    body = respond(
        request=request,
        steps=steps,
        plan=plan,
        state=state,
        result=result,
        used=used[month_key(now)],
        refused=refused,
        user_id=user_id,
        settings=settings,
        now=now,
    )
    if not mirrored:
        body["warnings"].append(mirror.warning(user_id))
    return RecordOutcome(body=body, attempts=attempts)


def _used(
    *,
    steps: tuple[Step, ...],
    plan: Plan,
    state: RecordingState,
    result: CommitResult | None,
    user_id: str,
    now: datetime,
) -> dict[str, Counts]:
    """Return the user's totals of the months touched and now's: as the commit left them, else as read."""
    committed = {month_key(s.timestamp) for s in plan.commit.steps} if plan.commit else set()
    return {
        month: _committed_month(result, user_id, month)
        if result is not None and month in committed
        else month_usage(state.usage, month)
        for month in {month_key(s.timestamp) for s in steps} | {month_key(now)}
    }


def usage_body(
    usage: Mapping[str, Any],
    *,
    settings: Settings,
    now: datetime,
    used: Counts | None = None,
    held: Held | None = None,
) -> dict[str, Any]:
    """Return the `usage` object of the HTTPS endpoints: the user's current month and limits."""
    month = month_key(now)
    current = used if used is not None else month_usage(usage, month)
    return {
        "month": month,
        "totalCost": nanos_to_usd(current.cost_nanos),
        "apiCalls": current.api_calls,
        "billableRuns": current.billable_runs,
        "limits": limits_status(
            current, limits_of(usage, settings), held if held is not None else held_of(usage)
        ),
    }


def after_commit(
    *,
    store: RecordingStore,
    plan: Plan,
    state: RecordingState,
    result: CommitResult | None,
    used: Mapping[str, Counts],
    user_id: str,
    settings: Settings,
    now: datetime,
) -> None:
    """Keep the free-tier entries and raise the alerts the request crossed (a retry repairs what failed).

    The commit already raised each free-tier entry to its estimate, and its fetch-and-add
    says exactly which thresholds it crossed; only what it could not know is written here.
    """
    settings.faults.check("after-commit", user_id)
    limits = limits_of(state.usage, settings)
    commit = plan.commit if result is not None else None
    deltas = aggregate(commit.steps) if commit is not None else {}
    known: dict[str, float | None] = {}
    for month in used:
        stored = state.user_months[month].limit_percent if month in state.user_months else None
        estimate = (
            commit.estimated_percent(month, deltas[month]) if commit is not None and month in deltas else None
        )
        values = [v for v in (stored, estimate) if v is not None]
        known[month] = max(values) if values else None
    fixups = plans.free_tier_fixups(user_id=user_id, used=dict(used), known=known, limits=limits)
    if fixups:
        store.commit(fixups)
    raised: list[alerts.Alert] = []
    for month, after in used.items():
        if month in deltas:
            before = after.minus(deltas[month].total)
            raised += alerts.user_alerts(
                user_id=user_id,
                month=month,
                before=before,
                after=after,
                limits=limits,
                raised_by="record_steps",
            )
        else:  # nothing committed (a retry): raise late what an earlier attempt may have left undone
            alerts.ensure_user(
                store=store,
                user_id=user_id,
                month=month,
                used=after,
                limits=limits,
                raised_by="retry",
                now=now,
            )
    alerts.create(store, raised, now)
    budget = settings.platform_budget_nanos
    if budget is not None and commit is not None and result is not None:
        for month, delta in deltas.items():
            after_shard = result.value(layout.shard_path(month, commit.shard), "costNanos")
            if alerts.shard_marks_crossed(
                after_shard - delta.total.cost_nanos, after_shard, budget, store.shards
            ):
                alerts.check_platform(store, month, settings, now, raised_by="record_steps")


def respond(
    *,
    request: RecordRequest,
    steps: tuple[Step, ...],
    plan: Plan,
    state: RecordingState,
    result: CommitResult | None,
    used: Counts,
    refused: Mapping[NameKey, Refusal],
    user_id: str,
    settings: Settings,
    now: datetime,
) -> dict[str, Any]:
    """Build the response from what was read and what the commit returned (pure)."""
    held = None
    if result is not None and plan.commit is not None and plan.commit.settlements:
        user = layout.usage_path(user_id)
        held = Held(
            result.value(user, "usage", "held", "costNanos"), result.value(user, "usage", "held", "runs")
        )
    return {
        "recorded": plan.recorded,
        "duplicates": plan.duplicates,
        "session": _session_view(request, plan, state, result, user_id),
        "usage": usage_body(state.usage, settings=settings, now=now, used=used, held=held),
        "warnings": [w.body() for w in _warnings(steps, plan, state, refused)],
    }


def _session_view(
    request: RecordRequest, plan: Plan, state: RecordingState, result: CommitResult | None, user_id: str
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
            path = layout.session_path(user_id, session_id)  # exact: the values the increments left
            step_count = result.value(path, "stats", "stepCount")
            cost = result.value(path, "stats", "costNanos")
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
    steps: tuple[Step, ...], plan: Plan, state: RecordingState, refused: Mapping[NameKey, Refusal]
) -> list[names.Warning]:
    new = {s.operation_id for s in plan.commit.steps} if plan.commit else set()
    capped = (
        set(plans.session_counts(plan.commit.steps, plan.commit.session_base).capped)
        if plan.commit
        else set()
    )
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
