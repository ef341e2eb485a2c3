"""Recording steps: read, admit names, plan and commit (retried on contention), the work after, the answer."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from tally import layout, names, ports
from tally.access import resolve_user
from tally.config import Settings
from tally.documents import limits as limits_doc
from tally.documents import months as month_doc
from tally.documents import names as name_doc
from tally.documents import plans, user_months
from tally.documents import usage as usage_doc
from tally.documents.plan_catalog import catalog_of
from tally.documents.teams import SliceView, Team
from tally.errors import Unavailable
from tally.limits import LimitSet
from tally.services import admission, alerts, answers, mirror, pace, planning, scope_alerts, teams
from tally.timeutil import month_key
from tally.usage import Counts, Limits, MonthDelta, aggregate
from tally.values import Caller, Contention, Document, RecordingState, RecordRequest, Step
from tally.writes import CommitResult

MAX_ATTEMPTS = 12
log = logging.getLogger("tally.recording")

SHARDS = plans.ShardPicker()


class RecordingStore(ports.DocumentStore, Protocol):
    """The store operations recording needs: the port's, nothing more."""


@dataclass(frozen=True)
class RecordOutcome:
    """The response body and how many commit attempts it took."""

    body: dict[str, Any]
    attempts: int


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
    admitted_cache: names.AdmittedNames = admission.ADMITTED,
    shards: plans.ShardPicker = SHARDS,
    claimed_plan: Callable[[str], str | None] = lambda _user_id: None,
) -> RecordOutcome:
    """Record a request's steps exactly once and return the SPEC's response body."""
    user_id = resolve_user(caller, request.user_id)
    claimed = claimed_plan(user_id)
    request_id = request_id or uuid.uuid4().hex
    session_id = request.session.session_id if request.session else None
    operation_ids = [s.operation_id for s in request.steps]
    months = sorted({month_key(s.timestamp) for s in request.steps})
    reservations = sorted({s.reservation_id for s in request.steps if s.reservation_id})
    unknown = admission.unknown_names(request.steps, admitted_cache)
    paths = planning.state_paths(user_id, session_id, operation_ids, months, reservations)
    books = planning.book_paths(request.steps)
    catalog = layout.plan_catalog_path()
    # one round trip: state, names, prices, plans
    docs = store.read(paths + name_doc.paths(caller, unknown) + books + [catalog])
    plan_catalog = catalog_of(docs[catalog])

    def state_of(found: Mapping[str, Document]) -> RecordingState:
        return planning.recording_state(
            found,
            user_id=user_id,
            session_id=session_id,
            operation_ids=operation_ids,
            months=months,
            reservations=reservations,
        )

    def plan_of(steps: tuple[Step, ...], state: RecordingState, shard: int) -> planning.Plan:
        return planning.plan_recording(
            request=request,
            steps=steps,
            user_id=user_id,
            state=state,
            now=now,
            request_id=request_id,
            shard=shard,
            limits=limits_of(state).month,
            team=member,
        )

    def limits_of(state: RecordingState) -> LimitSet:
        return plan_catalog.limits_of(usage_doc.limit_settings(state.usage), settings, claimed=claimed)

    priced = planning.price_steps(request.steps, docs)
    state = state_of(docs)
    team = teams.read_team(store, limits_doc.team_of(usage_doc.limit_settings(state.usage)))  # members only
    member = (team.team_id, teams.pick_slice(team, recording=True)) if team is not None else None
    # Refusals come first: a refused request (404, 409) admits no name and uses no quota.
    new = plan_of(priced, state, shard=0).commit
    try:
        steps, refused = admission.counted(
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
    if team is not None:  # the team the user is in now counts these steps (SPEC: "while members")
        steps = tuple(replace(s, team_key=team.team_id) for s in steps)
    attempts = 0

    def attempt() -> tuple[RecordingState, planning.Plan, mirror.Committed | None]:
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
    team_views = None
    if team is not None:  # read once: for the team's alerts and its scopes in the answer
        try:
            team_views = teams.read_slices(store, team, now)
        except Exception:
            log.exception("reading the slices of team %s failed (the steps are recorded)", team.team_id)
    try:
        after_commit(
            store=store,
            plan=plan,
            state=state,
            result=result,
            used={m: used[m] for m in {month_key(s.timestamp) for s in steps}},
            user_id=user_id,
            settings=settings,
            limits=limits_of(state),
            team=team,
            team_views=team_views,
            now=now,
        )
    except Exception:
        log.exception("the work after the commit failed for %s (the steps are recorded)", user_id)
    body = answers.respond(
        request=request,
        steps=steps,
        plan=plan,
        state=state,
        result=result,
        used=used[month_key(now)],
        refused=refused,
        user_id=user_id,
        limits=limits_of(state),
        now=now,
        first=list(teams.team_scopes(team, team_views))
        if team is not None and team_views is not None
        else [],
    )
    if not mirrored:
        body["warnings"].append(mirror.warning(user_id))
    return RecordOutcome(body=body, attempts=attempts)


def _used(
    *,
    steps: tuple[Step, ...],
    plan: planning.Plan,
    state: RecordingState,
    result: CommitResult | None,
    user_id: str,
    now: datetime,
) -> dict[str, Counts]:
    """Return the user's totals of the months touched and now's: as the commit left them, else as read."""
    committed = {month_key(s.timestamp) for s in plan.commit.steps} if plan.commit else set()
    return {
        month: usage_doc.committed_month(result, user_id, month)
        if result is not None and month in committed
        else usage_doc.month_usage(state.usage, month)
        for month in {month_key(s.timestamp) for s in steps} | {month_key(now)}
    }


def after_commit(
    *,
    store: RecordingStore,
    plan: planning.Plan,
    state: RecordingState,
    result: CommitResult | None,
    used: Mapping[str, Counts],
    user_id: str,
    settings: Settings,
    limits: LimitSet,
    now: datetime,
    team: Team | None = None,
    team_views: list[SliceView] | None = None,
) -> None:
    """Keep the free-tier entries and raise the alerts the request crossed (a retry repairs what failed).

    The commit already raised each free-tier entry to its estimate, and its fetch-and-add
    says exactly which thresholds it crossed; only what it could not know is written here.
    """
    settings.faults.check("after-commit", user_id)
    every, limits_now = limits, limits.month
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
    fixups = user_months.free_tier_fixups(user_id=user_id, used=dict(used), known=known, limits=limits_now)
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
                limits=limits_now,
                raised_by="record_steps",
            )
        else:  # nothing committed (a retry): raise late what an earlier attempt may have left undone
            alerts.ensure_user(
                store=store,
                user_id=user_id,
                month=month,
                used=after,
                limits=limits_now,
                raised_by="retry",
                now=now,
            )
    if commit is not None and result is not None:
        raised += scope_alerts.user_scope_alerts(
            user_id=user_id,
            limits=every,
            steps=commit.steps,
            result=result,
            now=now,
            raised_by="record_steps",
        )
    alerts.create(store, raised, now)
    if team is not None and commit is not None and commit.steps:
        scope_alerts.team_alerts(store, team, now=now, raised_by="record_steps", views=team_views)
    if commit is not None and result is not None:
        try:  # its own part: a failure here must not keep the platform's alerts from being checked
            _pace(
                store, user_id=user_id, state=state, result=result, deltas=deltas, limits=limits_now, now=now
            )
        except Exception:
            log.exception("the forecast and anomaly alerts of %s failed (the next request retries)", user_id)
        budget = settings.platform_budget_nanos
        for month, delta in deltas.items():
            after_shard = month_doc.shard_cost(result, month, commit.shard)
            budget_mark = budget is not None and alerts.shard_marks_crossed(
                after_shard - delta.total.cost_nanos, after_shard, budget, store.shards
            )
            if budget_mark or pace.shard_crossed(result, month, commit.shard, delta, now):
                pace.watch_platform(store, month, settings, now, raised_by="record_steps")


def _pace(
    store: RecordingStore,
    *,
    user_id: str,
    state: RecordingState,
    result: CommitResult,
    deltas: Mapping[str, MonthDelta],
    limits: Limits,
    now: datetime,
) -> None:
    """Raise the user's forecast and anomaly alerts this recording calls for (from what it read)."""
    month = month_key(now)
    if month not in deltas or month not in state.user_months:
        return
    month_state = state.user_months[month]
    user = pace.UserPace(
        user_id,
        pace.user_days_after(
            state=month_state, delta=deltas[month], result=result, user_id=user_id, month=month
        ),
        usage_doc.previous_costs(state.usage, month),
        limits.monthly_cost_limit_nanos,
        previous_days=lambda: pace.previous_days(store, user_id, now),
    )
    raised = pace.user_alerts(
        user=user, state=month_state, delta=deltas[month], now=now, raised_by="record_steps"
    )
    for alert in (raised.forecast, raised.anomaly):
        if alert is not None:
            pace.raise_flagged(store, alert, now)
    if raised.yesterday is not None:  # a step past midnight (rare): no flag, a read first
        alerts.ensure(store, [raised.yesterday], now)
