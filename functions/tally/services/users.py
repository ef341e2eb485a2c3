"""One user's usage and limits: `my_usage` (the user, or an admin) and `set_limits` (admin)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from tally import layout
from tally.access import resolve_reader
from tally.config import Settings
from tally.documents import usage as usage_doc
from tally.documents import user_months
from tally.documents.months import MonthAggregate
from tally.errors import InvalidArgument
from tally.money import nanos_to_usd
from tally.requests import MyUsageIn, SetLimitsIn
from tally.services import alerts, mirror
from tally.timeutil import month_key
from tally.usage import Counts, Held, Limits, limit_percent, limits_status
from tally.values import Caller, UsageType


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
    settings: Settings,
    held: Held | None = None,
) -> dict[str, Any]:
    """Return one user's month as `my_usage` shows it (holds count only in the current month).

    `held`: the user's allowed holds; by default, the truth's counter (which also holds the
    estimates still being decided).
    """
    stored = MonthAggregate.from_document(user_month)
    used = stored.total
    active, completed = usage_doc.sessions_of(usage)
    return {
        "month": month,
        "totalCost": nanos_to_usd(used.cost_nanos),
        "apiCalls": used.api_calls,
        "billableRuns": used.billable_runs,
        "unpricedSteps": stored.unpriced,
        "byType": {kind.value: stored.by_type.get(kind.value, Counts()).usd() for kind in UsageType},
        "features": _ranked(stored.features),
        "providers": _ranked(stored.providers),
        "limits": limits_status(
            used,
            usage_doc.limits_of(usage, settings),
            (held or usage_doc.held_of(usage)) if current else Held(),
        ),
        "lifetime": usage_doc.lifetime_of(usage).usd(),
        "sessions": {"active": max(0, active), "completed": completed},
    }


def my_usage(
    *, store: UserStore, caller: Caller, request: MyUsageIn, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Return a user's month (their own; an admin may name any user): two document reads."""
    user_id = resolve_reader(caller, request.user_id)
    month = request.month or month_key(now)
    user, user_month = layout.usage_path(user_id), layout.user_month_path(user_id, month)
    docs = store.read([user, user_month])
    current = month == month_key(now)
    view = month_view(
        usage=usage_doc.usage_of(docs[user].fields),
        user_month=docs[user_month].fields,
        month=month,
        current=current,
        settings=settings,
        held=store.active_holds(user_id=user_id) if current else None,  # allowed holds only
    )
    return {"userId": user_id, **view}


def set_limits(
    *, store: UserStore, request: SetLimitsIn, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Set a user's monthly limits (omitted ones keep their value) and refresh the free-tier entry."""
    if request.monthly_cost_limit_nanos is None and request.monthly_free_runs is None:
        raise InvalidArgument.field("data", "give monthlyCostLimit, monthlyFreeRuns or both")
    month = month_key(now)
    user, user_month = layout.usage_path(request.user_id), layout.user_month_path(request.user_id, month)
    docs = store.read([user, user_month])
    usage = usage_doc.usage_of(docs[user].fields)
    current = usage_doc.limits_of(usage, settings)
    limits = Limits(
        monthly_cost_limit_nanos=(
            request.monthly_cost_limit_nanos
            if request.monthly_cost_limit_nanos is not None
            else current.monthly_cost_limit_nanos
        ),
        monthly_free_runs=(
            request.monthly_free_runs if request.monthly_free_runs is not None else current.monthly_free_runs
        ),
    )
    used = MonthAggregate.from_document(docs[user_month].fields).total
    writes = usage_doc.limits_writes(user_id=request.user_id, limits=limits)
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
    # A limit lowered below what is already used raises its alerts now (each exists once).
    raised = alerts.user_alerts(
        user_id=request.user_id,
        month=month,
        before=Counts(),
        after=used,
        limits=limits,
        raised_by="set_limits",
    )
    alerts.ensure(store, raised, now)
    return {
        "userId": request.user_id,
        "month": month,
        "limits": limits_status(used, limits, usage_doc.held_of(usage)),
    }
