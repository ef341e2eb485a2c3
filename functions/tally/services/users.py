"""One user's usage and limits: `my_usage` (the user, or an admin); `set_limits`, `set_plan`, `list_plans`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from tally import layout, ports
from tally.access import resolve_reader
from tally.config import Settings
from tally.documents import limits as limits_doc
from tally.documents import plan_catalog, user_months
from tally.documents import usage as usage_doc
from tally.documents import windows as window_doc
from tally.documents.months import MonthAggregate
from tally.documents.plan_catalog import catalog_of
from tally.errors import InvalidArgument
from tally.limits import DEFAULT_PLAN, MAX_FEATURES, MAX_PLANS, LimitSet, limits_view, scopes
from tally.money import nanos_to_usd
from tally.requests import MyUsageIn, SetLimitsIn, SetPlanIn
from tally.services import alerts, mirror, pace, projections, teams
from tally.timeutil import month_key
from tally.usage import Counts, Held, Limits, limit_percent, limits_status
from tally.values import Caller, Document, UsageType
from tally.writes import DELETE

log = logging.getLogger("tally.users")


class UserStore(alerts.AlertStore, Protocol):
    """The store operations the user views and limits need."""

    def active_holds(self, *, user_id: str) -> Held: ...


def _ranked(counts: Mapping[str, Counts]) -> list[dict[str, Any]]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1].cost_nanos, item[0]))
    return [{"name": name, **c.usd()} for name, c in ordered]


def month_view(
    *,
    usage: Mapping[str, Any],
    user_month: Mapping[str, Any],
    month: str,
    current: bool,
    limits: LimitSet,
    truth: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    held: Held | None = None,
) -> dict[str, Any]:
    """Return one user's month as `my_usage` shows it (holds and scopes only in the current month).

    `held`: the user's allowed holds; by default, the truth's counter (which also holds the
    estimates still being decided). `truth` and `now` give the current month's day and feature
    windows; a past month's `scopes` is empty.
    """
    stored = MonthAggregate.from_document(user_month)
    used = stored.total
    active, completed = usage_doc.sessions_of(usage)
    holding = (held or usage_doc.held_of(usage)) if current else Held()
    status = limits_status(used, limits.month, holding)
    status["scopes"] = []
    if current and truth is not None and now is not None:
        view = window_doc.windows_of(truth, now, month=used, held=holding)
        status["scopes"] = [scope.view() for scope in scopes(limits, view)]
    return {
        "month": month,
        "totalCost": nanos_to_usd(used.cost_nanos),
        "apiCalls": used.api_calls,
        "billableRuns": used.billable_runs,
        "unpricedSteps": stored.unpriced,
        "byType": {kind.value: stored.by_type.get(kind.value, Counts()).usd() for kind in UsageType},
        "features": _ranked(stored.features),
        "providers": _ranked(stored.providers),
        "limits": status,
        "lifetime": usage_doc.lifetime_of(usage).usd(),
        "sessions": {"active": max(0, active), "completed": completed},
        "forecast": projections.view(
            projections.project(
                month=month,
                days=stored.days,
                now=now or datetime.now(UTC),
                previous_months_nanos=usage_doc.previous_costs(usage, month),
                limit_nanos=limits.month.monthly_cost_limit_nanos,
            )
        ),
    }


def my_usage(
    *,
    store: UserStore,
    caller: Caller,
    request: MyUsageIn,
    settings: Settings,
    now: datetime,
    claimed_plan: Callable[[str], str | None] = lambda _user_id: None,
) -> dict[str, Any]:
    """Return a user's month (their own; an admin may name any user): three document reads."""
    user_id = resolve_reader(caller, request.user_id)
    month = request.month or month_key(now)
    user, user_month = layout.usage_path(user_id), layout.user_month_path(user_id, month)
    catalog = layout.plan_catalog_path()
    docs = store.read([user, user_month, catalog])
    current = month == month_key(now)
    usage = usage_doc.usage_of(docs[user].fields)
    view = month_view(
        usage=usage,
        user_month=docs[user_month].fields,
        month=month,
        current=current,
        limits=catalog_of(docs[catalog]).limits_of(
            usage_doc.limit_settings(usage), settings, claimed=claimed_plan(user_id)
        ),
        truth=docs[user].fields,
        now=now,
        held=store.active_holds(user_id=user_id) if current else None,  # allowed holds only
    )
    team = teams.read_team(store, limits_doc.team_of(usage_doc.limit_settings(usage)))
    shown = teams.team_view(store, team, now) if team is not None and current else None
    return {"userId": user_id, **view, "team": shown}


def _forecast(
    store: UserStore,
    user_id: str,
    month_doc: Document,
    usage: Mapping[str, Any],
    limits: Limits,
    now: datetime,
) -> None:
    """Raise the forecast alert a changed limit calls for now (from what set_limits read)."""
    state = user_months.state_of(month_doc)
    if state.forecast_alerted:
        return
    user = pace.UserPace(
        user_id,
        state.day_costs,
        usage_doc.previous_costs(usage, month_key(now)),
        limits.monthly_cost_limit_nanos,
    )
    found = pace.user_forecast(user, now, "set_limits")
    if found is not None:
        pace.raise_flagged(store, found, now)


def set_limits(
    *,
    store: UserStore,
    request: SetLimitsIn,
    settings: Settings,
    now: datetime,
    claimed_plan: Callable[[str], str | None] = lambda _user_id: None,
) -> dict[str, Any]:
    """Change a user's plan and own overrides (omitted fields keep theirs, null removes them).

    The free-tier entry is measured against the resulting monthly limits, and a limit lowered
    below what is already used raises its alerts now (each exists once).
    """
    overrides, features = request.overrides(), request.features or {}
    assigning, joining = "plan" in request.model_fields_set, "team_id" in request.model_fields_set
    if not overrides and not features and not assigning and not joining:
        raise InvalidArgument.field("data", "give plan, teamId or at least one field of a limits object")
    if request.team_id is not None and teams.read_team(store, request.team_id, fresh=True) is None:
        raise InvalidArgument.field("teamId", f"no team {request.team_id!r} (create it with set_team first)")
    month = month_key(now)
    user, user_month = layout.usage_path(request.user_id), layout.user_month_path(request.user_id, month)
    catalog_path = layout.plan_catalog_path()
    docs = store.read([user, user_month, catalog_path])
    catalog = catalog_of(docs[catalog_path])
    if request.plan is not None and request.plan not in catalog.names():
        raise InvalidArgument.field("plan", f"no plan named {request.plan!r} (set it with set_plan first)")
    usage = usage_doc.usage_of(docs[user].fields)
    stored = usage_doc.limit_settings(usage)
    kept = {name for name, own in limits_doc.limit_set(stored).features.items() if not own.empty}
    named = (kept | {n for n, own in features.items() if own is not None}) - {
        n for n, o in features.items() if o is None
    }
    if len(named) > MAX_FEATURES:
        raise InvalidArgument.field("features", f"a user may have at most {MAX_FEATURES} feature limits")
    change = limits_doc.settings_change(
        plan=(request.plan,) if assigning else None,
        team=(request.team_id,) if joining else None,
        overrides=overrides,
        features={name: None if own is None else own.given() for name, own in features.items()},
    )
    after = _apply(stored, change)
    resolved = catalog.limits_of(after, settings, claimed=claimed_plan(request.user_id))
    limits = resolved.month
    used = MonthAggregate.from_document(docs[user_month].fields).total
    writes = usage_doc.limits_writes(user_id=request.user_id, change=change)
    if used.api_calls:
        writes.append(
            user_months.free_tier_write(
                user_id=request.user_id,
                month=month,
                percent=limit_percent(used, limits),
                limits=limits,
                exact=True,
            )
        )
    mirror.commit(store, writes)
    raised = alerts.user_alerts(
        user_id=request.user_id,
        month=month,
        before=Counts(),
        after=used,
        limits=limits,
        raised_by="set_limits",
    )
    try:  # the limits are set: a failure here must not say otherwise (the next request retries)
        alerts.ensure(store, raised, now)
        _forecast(store, request.user_id, docs[user_month], usage, limits, now)
    except Exception:
        log.exception("the alerts of %s failed after set_limits", request.user_id)
    held = usage_doc.held_of(usage)
    status = limits_status(used, limits, held)
    view = window_doc.windows_of(docs[user].fields, now, month=used, held=held)
    status["scopes"] = [scope.view() for scope in scopes(resolved, view)]
    return {
        "userId": request.user_id,
        "month": month,
        "plan": limits_doc.assigned_plan(after),
        "teamId": limits_doc.team_of(after),
        "limits": status,
    }


def _apply(stored: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """Return stored settings with a merge applied (DELETE removes), as the store will hold them."""
    result: dict[str, Any] = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in stored.items()
    }
    for key, value in change.items():
        if value is DELETE:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            inner = result.get(key)
            result[key] = _apply(inner if isinstance(inner, Mapping) else {}, value)
        else:
            result[key] = value
    return result


def set_plan(
    *, store: ports.DocumentStore, request: SetPlanIn, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Store a plan's limits object (replacing it); `default` overrides the settings field by field."""
    catalog = catalog_of(store.read([layout.plan_catalog_path()])[layout.plan_catalog_path()])
    if request.plan not in catalog.names() and len(catalog.plans) >= MAX_PLANS:
        raise InvalidArgument.field("plan", f"at most {MAX_PLANS} plans; change an existing one")
    limits = request.limits.limit_set()
    store.commit([plan_catalog.plan_write(request.plan, limits, now=now)])
    shown = limits.overlay(catalog.default(settings)) if request.plan == DEFAULT_PLAN else limits
    return {"plan": request.plan, "limits": limits_view(shown)}


def list_plans(*, store: ports.DocumentStore, settings: Settings) -> dict[str, Any]:
    """Return every plan, `default` first, then by name."""
    catalog = catalog_of(store.read([layout.plan_catalog_path()])[layout.plan_catalog_path()])
    ordered = [DEFAULT_PLAN] + [name for name in catalog.names() if name != DEFAULT_PLAN]
    return {
        "plans": [
            {
                "plan": name,
                "limits": limits_view(
                    catalog.default(settings) if name == DEFAULT_PLAN else catalog.plans[name]
                ),
            }
            for name in ordered
        ]
    }
