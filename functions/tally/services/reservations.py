"""Budgets enforced before spending: `reserve_spend`, `release_spend`, settling and expiring holds.

Admission is a fetch-and-add, with no read lock: one commit creates the reservation
(`pending`) and adds its estimate to the user's `usage.held` (in `TallyUsers/{uid}`, the
truth), while adding 0 to the month's recorded cost and billable runs; the commit returns
all of them as they are after it. The reservation is allowed only if recorded + held (its
own estimate included) stays within the limits; then only the reservation document is
updated (`active`), otherwise a second commit takes the hold back (`denied`). Of concurrent
reservations, each sees every hold committed before it, so none is allowed past a limit;
a hold that is taken back only makes others more careful. An estimate Tally cannot price
is refused (`UNPRICED`): the gate fails closed. A reservation's decision is stored, so the
same `reservationId` gets the same answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from tally import layout, limits, ports, pricing
from tally.access import resolve_user
from tally.config import Settings
from tally.documents import holds as hold_doc
from tally.documents import limits as limits_doc
from tally.documents import plans, platform_holds
from tally.documents import usage as usage_doc
from tally.documents import windows as window_doc
from tally.documents.months import MonthAggregate
from tally.documents.plan_catalog import catalog_of
from tally.documents.plans import ShardPicker
from tally.documents.teams import Team
from tally.errors import InvalidArgument, NotFound, Unavailable
from tally.limits import PLATFORM_BUDGET, UNPRICED, LimitSet, Scope, Windows
from tally.money import nanos_to_usd
from tally.requests import ReserveRequest
from tally.services import answers, mirror, teams
from tally.timeutil import month_key
from tally.usage import Counts, Held
from tally.values import Caller, CostSource, Document, HoldState, HoldStatus, IdleSession
from tally.writes import CommitResult

MAX_ATTEMPTS = 6


class HoldStore(teams.SliceStore, Protocol):
    """The store operations reservations need."""

    def active_holds(self, *, user_id: str) -> Held: ...

    def expired_holds(
        self, *, shard: int, now: datetime, limit: int, after: Any | None
    ) -> list[IdleSession]: ...


@dataclass(frozen=True)
class Estimate:
    """What a reservation holds."""

    cost_nanos: int
    runs: int
    source: CostSource


def estimate_of(request: ReserveRequest, *, store: ports.DocumentStore, now: datetime) -> Estimate:
    """Return the estimate in nano-USD: the given cost, or units priced as steps are."""
    runs = int(request.billable)
    if request.cost_nanos is not None:
        return Estimate(request.cost_nanos, runs, CostSource.CLIENT)
    assert request.units is not None
    if request.provider is None:  # units are priced per provider: without one, the gate cannot price them
        return Estimate(0, runs, CostSource.UNPRICED)
    books = store.read(pricing.book_paths(request.provider, request.units.model))
    try:
        priced = pricing.price(provider=request.provider, units=request.units, at=now, books=books)
    except pricing.PriceTooHigh as exc:
        raise InvalidArgument.field("estimate.units", str(exc)) from None
    return Estimate(priced.cost_nanos, runs, priced.source)


def _answer(
    *,
    hold: Mapping[str, Any],
    reservation_id: str,
    limits: LimitSet,
    windows: Windows,
    now: datetime,
    warnings: Sequence[Mapping[str, str]] = (),
    team_scopes: Sequence[Scope] = (),
) -> dict[str, Any]:
    outcome = hold_doc.outcome_of(hold)
    return {
        "allowed": outcome.allowed,
        "reservationId": reservation_id,
        "reserved": nanos_to_usd(outcome.reserved_nanos),
        "expiresAt": outcome.expires_at.isoformat().replace("+00:00", "Z"),
        "reason": outcome.reason,
        "usage": answers.usage_body(now=now, limits=limits, windows=windows, first=team_scopes),
        "warnings": list(warnings),
    }


def _committed_windows(
    result: CommitResult,
    truth: Mapping[str, Any],
    *,
    user_id: str,
    month: str,
    now: datetime,
    feature: str | None,
) -> Windows:
    """Return the gate's view as its fetch-and-add left it (other features, last month's holds: as read)."""
    found = window_doc.committed(result, user_id, now, feature)
    read = window_doc.windows_of(truth, now, month=Counts(), held=Held())
    view = replace(
        read,
        month=usage_doc.committed_month(result, user_id, month),
        day=found["day"],
        held=usage_doc.committed_held(result, user_id),
    )
    if feature is None:
        return view
    earlier = window_doc.earlier_held(truth, now, feature)
    this = found["feature_held"]
    return replace(
        view,
        feature_month={**read.feature_month, feature: found["feature_month"]},
        feature_day={**read.feature_day, feature: found["feature_day"]},
        feature_held={
            **read.feature_held,
            feature: Held(this.cost_nanos + earlier.cost_nanos, this.runs + earlier.runs),
        },
    )


PLATFORM = ShardPicker()  # the platform hold shard of each reservation, round-robin


def _enforced(settings: Settings) -> bool:
    return settings.platform_budget_enforced and settings.platform_budget_nanos is not None


def _platform(store: HoldStore, hold: HoldState, settings: Settings, at: Any) -> str | None:
    """Return PLATFORM_BUDGET if the platform's month, recorded and held, passes its budget (enforced only).

    Read as of the hold's commit in its hold shard (later: as now, which holds more), as a
    team's slices are: each hold sees exactly the holds committed up to its own.
    """
    budget = settings.platform_budget_nanos
    if hold.platform_shard is None or hold.month is None or budget is None:
        return None
    shards = range(store.shards)
    paths = [layout.shard_path(hold.month, n) for n in shards] + [
        layout.platform_hold_path(hold.month, n) for n in shards
    ]
    docs = store.read(paths) if at is None else store.read_as_of(paths, at)
    usage = [MonthAggregate.from_document(docs[layout.shard_path(hold.month, n)].fields) for n in shards]
    used = sum(aggregate.total.cost_nanos for aggregate in usage)
    held = sum(platform_holds.held_of(docs[layout.platform_hold_path(hold.month, n)]) for n in shards)
    return PLATFORM_BUDGET if used + held > budget else None


def _decide(
    store: HoldStore,
    limits_now: LimitSet,
    view: Windows,
    hold: HoldState,
    team: Team | None,
    now: datetime,
    at: Any = None,
) -> tuple[str | None, list[Scope]]:
    """Return why a hold is refused (None: allowed), team first, in the SPEC's order; and the team's scopes.

    The team's slices are read after the hold was committed to one of them (see `tally.services.teams`).
    """
    billable = bool(hold.runs)
    own = limits.refusal(limits_now, view, billable=billable, feature=hold.feature)
    if team is None or hold.team_id != team.team_id or hold.team_slice is None:
        return own, []
    # deciding again later (no commit time): as the slices are now, which holds more (conservative)
    views = teams.read_slices(store, team, now) if at is None else teams.slices_as_of(store, team, at, now)
    return teams.refusal(team, views, billable=billable) or own, list(teams.team_scopes(team, views))


def reserve_spend(
    *,
    store: HoldStore,
    caller: Caller,
    request: ReserveRequest,
    settings: Settings,
    now: datetime,
    claimed_plan: Callable[[str], str | None] = lambda _user_id: None,
) -> dict[str, Any]:
    """Hold an estimate against a user's limits, or refuse it; the same reservationId, the same answer.

    The answer's `held` sums the user's allowed holds (an aggregation over the reservations):
    the counter the gate adds to also holds the estimates still being decided.
    """
    user_id = resolve_user(caller, request.user_id)
    month = month_key(now)
    path, truth = layout.reservation_path(user_id, request.reservation_id), layout.usage_path(user_id)
    catalog = layout.plan_catalog_path()
    claimed = claimed_plan(user_id)

    def attempt() -> dict[str, Any]:  # a lost race (Contention) is tried again from a fresh read
        mirrored = True
        docs = store.read([path, truth, catalog])
        fields_read = docs[truth].fields
        usage = usage_doc.usage_of(fields_read)
        hold = hold_doc.hold_of(docs[path])
        limits_now = catalog_of(docs[catalog]).limits_of(
            usage_doc.limit_settings(usage), settings, claimed=claimed
        )
        team = teams.read_team(store, limits_doc.team_of(usage_doc.limit_settings(usage)))

        def as_read(fields: Mapping[str, Any]) -> dict[str, Any]:
            held = store.active_holds(user_id=user_id)
            view = window_doc.windows_of(
                fields_read, now, month=usage_doc.month_usage(usage, month), held=held
            )
            return _answer(
                hold=fields, reservation_id=request.reservation_id, limits=limits_now, windows=view, now=now
            )

        if hold is not None and hold.status is not HoldStatus.PENDING:
            return as_read(docs[path].fields)
        feature = request.feature
        if hold is None:
            estimate = estimate_of(request, store=store, now=now)
            limited = feature is not None and not getattr(limits_now.features.get(feature), "empty", True)
            k = teams.pick_slice(team) if team is not None else None
            platform = PLATFORM.next(store.shards) if _enforced(settings) else None
            fields = hold_doc.document(
                user_id=user_id,
                reservation_id=request.reservation_id,
                cost_nanos=estimate.cost_nanos,
                runs=estimate.runs,
                source=estimate.source,
                month=month,
                now=now,
                expires_at=now + timedelta(seconds=request.ttl_seconds),
                feature=feature,
                feature_held=limited,
                team=(team.team_id, k) if team is not None and k is not None else None,
                platform_shard=platform,
            )
            if estimate.source is CostSource.UNPRICED:  # refused before anything is held
                refused = hold_doc.decided(fields, reason=UNPRICED, now=now)
                store.commit(plans.refusal_writes(refused))  # lost: the same reservationId raced in
                return as_read(refused)
            committed = mirror.commit(  # lost: the same reservationId raced in
                store,
                plans.hold_writes(fields, now=now, stale=window_doc.stale_keys(fields_read, now)),
                stale=mirror.MirrorState.of(fields_read).stale,
            )
            result, mirrored = committed.result, committed.mirrored
            at = (
                result.versions.get(layout.team_slice_path(team.team_id, k))
                if team and k is not None
                else None
            )
            hold = HoldState(
                user_id,
                request.reservation_id,
                HoldStatus.PENDING,
                estimate.cost_nanos,
                estimate.runs,
                result.versions.get(path),
                feature=feature,
                month=month,
                feature_held=limited,
                team_id=team.team_id if team is not None else None,
                team_slice=k,
                platform_shard=platform,
            )
            platform_at = (
                result.versions.get(layout.platform_hold_path(month, platform))
                if platform is not None
                else None
            )

            # every hold allowed or being decided, this one included, in every window, as the commit left them
            view = _committed_windows(
                result, fields_read, user_id=user_id, month=month, now=now, feature=feature
            )
        else:  # pending: not decided (a crash, or its twin still deciding): decide again, as of now
            at = platform_at = None
            fields = dict(docs[path].fields)
            held = usage_doc.held_of(usage, pending=True)
            view = window_doc.windows_of(
                fields_read, now, month=usage_doc.month_usage(usage, month), held=held
            )
            team = teams.read_team(store, hold.team_id)
        reason, team_scopes = _decide(store, limits_now, view, hold, team, now, at)
        if hold.unpriced:
            reason = UNPRICED
        elif platform_refusal := _platform(store, hold, settings, platform_at):
            reason = platform_refusal
        # lost: released or expired meanwhile (read what it is now)
        mirrored &= mirror.commit(store, plans.decision_writes(hold, reason=reason, now=now)).mirrored
        if not mirrored:
            mirrored = mirror.repair(store, user_id, now=now)
        shown = replace(view, held=store.active_holds(user_id=user_id))  # allowed holds only
        return _answer(
            hold=hold_doc.decided(fields, reason=reason, now=now),
            reservation_id=request.reservation_id,
            limits=limits_now,
            windows=shown,
            now=now,
            warnings=[] if mirrored else [mirror.warning(user_id)],
            team_scopes=team_scopes,
        )

    return ports.retrying(
        attempt,
        attempts=MAX_ATTEMPTS,
        exhausted=lambda: Unavailable(
            f"reservation {request.reservation_id} is contended; retry the request"
        ),
    )


def release_spend(
    *,
    store: HoldStore,
    caller: Caller,
    user_id: str | None,
    reservation_id: str,
    settings: Settings,
    now: datetime,
) -> dict[str, Any]:
    """Release a hold without recording anything (idempotent)."""
    owner = resolve_user(caller, user_id)
    path = layout.reservation_path(owner, reservation_id)

    def attempt() -> dict[str, Any]:
        hold = hold_doc.hold_of(store.read([path])[path])
        if hold is None:
            raise NotFound(f"reservation {reservation_id} does not exist")
        if not hold.status.holding:
            return {"reservationId": reservation_id, "released": False, "status": hold.status.value}
        mirror.commit(store, plans.end_hold_writes(hold, status=HoldStatus.RELEASED, now=now))
        return {"reservationId": reservation_id, "released": True, "status": HoldStatus.RELEASED.value}

    return ports.retrying(
        attempt,
        attempts=MAX_ATTEMPTS,
        exhausted=lambda: Unavailable(f"reservation {reservation_id} is contended; retry the request"),
    )


def expire_holds(*, store: HoldStore, now: datetime, page_size: int = 200) -> int:
    """End every hold past its expiry (the sweep runs this); return how many stopped counting."""
    expired = 0
    for shard in range(layout.SWEEP_SHARDS):

        def due(after: Any, shard: int = shard) -> list[IdleSession]:
            return store.expired_holds(shard=shard, now=now, limit=page_size, after=after)

        for page in ports.pages(due, cursor=lambda found: found.cursor, size=page_size):
            docs = store.read([layout.reservation_path(h.user_id, h.session_id) for h in page])
            groups = [
                plans.end_hold_writes(hold, status=HoldStatus.EXPIRED, now=now)
                for doc in docs.values()
                if (hold := hold_doc.hold_of(doc)) is not None and hold.status.holding
            ]
            expired += sum(mirror.commit_each(store, groups))
    return expired


def holds_of(docs: Sequence[Document]) -> dict[str, HoldState]:
    """Return the reservations read for a request, by id."""
    return {hold.reservation_id: hold for doc in docs if (hold := hold_doc.hold_of(doc)) is not None}
