"""The callable functions at the edge: each checks access, parses its `data`, then calls a service.

One convention for every entry point: the caller comes from a verified token (None when
there is none), access is checked first, the data is parsed into a typed request
(`tally.requests`), and the service takes typed values. Errors are `tally.errors`, mapped
to the callable protocol's codes by `entrypoints.edge`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tally import ports
from tally.access import require_admin, require_signed_in
from tally.config import Settings
from tally.requests import (
    AnalyticsIn,
    ExportIn,
    ListPlansIn,
    ListPricesIn,
    MyUsageIn,
    SetLimitsIn,
    SetPlanIn,
    SetPriceIn,
    SetTeamIn,
    parse_data,
)
from tally.services import analytics, export, prices, teams, users
from tally.services.plan_claims import ClaimedPlan, no_claim
from tally.values import Caller


def usage_analytics(
    *,
    store: analytics.AnalyticsStore,
    directory: ports.Directory,
    caller: Caller | None,
    data: object,
    settings: Settings,
    now: datetime,
) -> dict[str, Any]:
    """`usage_analytics` (admin): the platform's month."""
    require_admin(caller)
    request = parse_data(AnalyticsIn, data)
    return analytics.usage_analytics(
        store=store, directory=directory, request=request, settings=settings, now=now
    )


def my_usage(
    *,
    store: users.UserStore,
    caller: Caller | None,
    data: object,
    settings: Settings,
    now: datetime,
    claimed_plan: ClaimedPlan = no_claim,
) -> dict[str, Any]:
    """`my_usage` (signed in): the caller's month, or any user's for an admin."""
    who = require_signed_in(caller)
    request = parse_data(MyUsageIn, data)
    return users.my_usage(
        store=store, caller=who, request=request, settings=settings, now=now, claimed_plan=claimed_plan
    )


def set_limits(
    *,
    store: users.UserStore,
    caller: Caller | None,
    data: object,
    settings: Settings,
    now: datetime,
    claimed_plan: ClaimedPlan = no_claim,
) -> dict[str, Any]:
    """`set_limits` (admin): a user's plan and own overrides."""
    require_admin(caller)
    request = parse_data(SetLimitsIn, data)
    return users.set_limits(
        store=store, request=request, settings=settings, now=now, claimed_plan=claimed_plan
    )


def set_plan(
    *, store: ports.DocumentStore, caller: Caller | None, data: object, settings: Settings, now: datetime
) -> dict[str, Any]:
    """`set_plan` (admin): a named limits object."""
    require_admin(caller)
    request = parse_data(SetPlanIn, data)
    return users.set_plan(store=store, request=request, settings=settings, now=now)


def set_team(
    *, store: ports.DocumentStore, caller: Caller | None, data: object, settings: Settings, now: datetime
) -> dict[str, Any]:
    """`set_team` (admin): a team's limits."""
    require_admin(caller)
    request = parse_data(SetTeamIn, data)
    return teams.set_team(store=store, request=request, settings=settings, now=now)


def list_plans(
    *, store: ports.DocumentStore, caller: Caller | None, data: object, settings: Settings
) -> dict[str, Any]:
    """`list_plans` (admin): every plan, `default` first."""
    require_admin(caller)
    parse_data(ListPlansIn, data)
    return users.list_plans(store=store, settings=settings)


def set_price(
    *, store: prices.PriceStore, caller: Caller | None, data: object, settings: Settings, now: datetime
) -> dict[str, Any]:
    """`set_price` (admin): a catalog price for a provider and model."""
    admin = require_admin(caller)
    request = parse_data(SetPriceIn, data)
    return prices.set_price(store=store, admin=admin, request=request, settings=settings, now=now)


def list_prices(
    *, store: prices.PriceStore, caller: Caller | None, data: object, settings: Settings, now: datetime
) -> dict[str, Any]:
    """`list_prices` (admin): every price set, newest first."""
    require_admin(caller)
    parse_data(ListPricesIn, data)
    return prices.list_prices(store=store, settings=settings, now=now)


def export_usage(
    *,
    store: export.ExportStore,
    directory: ports.Directory,
    caller: Caller | None,
    data: object,
    now: datetime,
) -> dict[str, Any]:
    """`export_usage` (admin): one page of every user's totals for a month."""
    require_admin(caller)
    request = parse_data(ExportIn, data)
    return export.export_usage(store=store, directory=directory, request=request, now=now)
