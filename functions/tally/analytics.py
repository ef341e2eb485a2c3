"""Analytics: the admin's platform month, a user's own month, and setting limits."""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BeforeValidator, Field, ValidationError

from tally.config import Settings
from tally.errors import InvalidArgument, PermissionDenied, Unauthenticated
from tally.models import EdgeModel, UserId, field_error, problems_of
from tally.money import MoneyError, nanos_to_usd, usd_to_nanos
from tally.recording import Caller, limits_of, month_usage
from tally.timeutil import TimeError, month_key, parse_month
from tally.usage import WARNING_PERCENT, Counts, Limits, limit_percent, limits_status

FREE_TIER_ROWS = 100
FREE_TIER_PERCENT = WARNING_PERCENT
MAX_COST_LIMIT_USD = Decimal(1_000_000)
MAX_FREE_RUNS = 1_000_000_000
HISTORY_MONTHS = 12


def _month(value: object) -> str:
    if not isinstance(value, str):
        raise field_error("must be a month like 2026-11")
    try:
        month = parse_month(value)
    except TimeError as exc:
        raise field_error(str(exc)) from None
    if not "2000-01" <= month <= "2999-12":
        raise field_error("must be between 2000-01 and 2999-12")
    return month


def _top(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise field_error("must be an integer from 1 to 100")
    return value


def _cost_limit(value: object) -> int:
    try:
        return usd_to_nanos(value, maximum=MAX_COST_LIMIT_USD)
    except MoneyError as exc:
        raise field_error(str(exc)) from None


def _free_runs(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FREE_RUNS:
        raise field_error(f"must be an integer from 0 to {MAX_FREE_RUNS}")
    return value


Month = Annotated[str, BeforeValidator(_month)]


class AnalyticsIn(EdgeModel):
    """`usage_analytics` data."""

    month: Month | None = None
    top: Annotated[int, BeforeValidator(_top)] = 10


class MyUsageIn(EdgeModel):
    """`my_usage` data."""

    month: Month | None = None


class SetLimitsIn(EdgeModel):
    """`set_limits` data."""

    user_id: UserId = Field(alias="userId")
    monthly_cost_limit_nanos: Annotated[int, BeforeValidator(_cost_limit)] | None = Field(
        default=None, alias="monthlyCostLimit"
    )
    monthly_free_runs: Annotated[int, BeforeValidator(_free_runs)] | None = Field(
        default=None, alias="monthlyFreeRuns"
    )


Model = TypeVar("Model", bound=EdgeModel)


def parse_data(model: type[Model], data: object) -> Model:
    """Validate callable `data` (absent means `{}`) into an edge model."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidArgument.field("data", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgument.of(problems_of(exc)) from None


def require_signed_in(caller: Caller | None) -> Caller:
    """Refuse calls without a verified ID token."""
    if caller is None:
        raise Unauthenticated("sign in first: this function needs a Firebase ID token")
    return caller


def require_admin(caller: Caller | None) -> Caller:
    """Refuse callers without the `admin` claim."""
    caller = require_signed_in(caller)
    if not caller.admin:
        raise PermissionDenied("this function needs the admin claim")
    return caller


class AnalyticsStore(Protocol):
    """The store operations analytics needs; each read returns how many documents it read."""

    def platform_months(
        self, *, month: str, history: list[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]: ...

    def top_users(self, *, month: str, limit: int) -> tuple[list[dict[str, Any]], int]: ...

    def free_tier(
        self, *, month: str, min_percent: float, limit: int
    ) -> tuple[list[dict[str, Any]], int]: ...

    def user_usage(self, *, user_id: str) -> dict[str, Any]: ...

    def write_limits(self, *, user_id: str, limits: Limits) -> None: ...

    def set_limit_percent(self, *, user_id: str, month: str, percent: float, limits: Limits) -> None: ...


class CallableService(Protocol):
    """The shape of every callable's service."""

    def __call__(
        self, *, store: AnalyticsStore, caller: Caller | None, data: object, settings: Settings, now: datetime
    ) -> dict[str, Any]: ...


def months_back(month: str, count: int) -> list[str]:
    """Return `count` months up to and including `month`, oldest first."""
    year, number = (int(part) for part in month.split("-"))
    index = year * 12 + number - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)]


def days_of(month: str) -> list[str]:
    """Return every `YYYY-MM-DD` of a month."""
    year, number = (int(part) for part in month.split("-"))
    return [f"{month}-{day:02d}" for day in range(1, calendar.monthrange(year, number)[1] + 1)]


@dataclass
class _Merged:
    total: Counts
    by_type: dict[str, Counts]
    features: dict[str, Counts]
    providers: dict[str, Counts]
    days: dict[str, Counts]
    users: set[str]
    sessions: dict[str, int]


def _add(into: dict[str, Counts], named: Mapping[str, Any] | None) -> None:
    for name, fields in (named or {}).items():
        into.setdefault(name, Counts()).merge(Counts.from_fields(fields))


def merge_shards(shards: Iterable[Mapping[str, Any]]) -> _Merged:
    """Add up the shards of one platform month."""
    merged = _Merged(Counts(), {}, {}, {}, {}, set(), {})
    for shard in shards:
        merged.total.merge(Counts.from_fields(shard))
        _add(merged.by_type, shard.get("byType"))
        _add(merged.features, shard.get("features"))
        _add(merged.providers, shard.get("providers"))
        _add(merged.days, shard.get("days"))
        merged.users.update((shard.get("users") or {}).keys())
        for key, value in (shard.get("sessions") or {}).items():
            merged.sessions[key] = merged.sessions.get(key, 0) + int(value)
    return merged


def _ranked(named: Mapping[str, Counts]) -> list[dict[str, Any]]:
    ordered = sorted(named.items(), key=lambda item: (-item[1].cost_nanos, item[0]))
    return [{"name": name, **counts.usd()} for name, counts in ordered]


def _per(total: int, count: int) -> float:
    return round(total / count, 9) if count else 0.0


def _sessions_view(sessions: Mapping[str, int]) -> dict[str, Any]:
    completed = sessions.get("completed", 0)
    return {
        "active": max(0, sessions.get("active", 0)),
        "completed": completed,
        "avgCost": nanos_to_usd(round(sessions.get("costNanos", 0) / completed)) if completed else 0.0,
        "avgSteps": _per(sessions.get("stepCount", 0), completed),
        "avgDurationSeconds": _per(sessions.get("durationMs", 0), completed * 1000),
    }


def _free_tier_row(doc: Mapping[str, Any], settings: Settings) -> dict[str, Any] | None:
    used = Counts.from_fields(doc)
    limits = Limits(
        monthly_cost_limit_nanos=int(
            doc.get("monthlyCostLimitNanos", settings.default_monthly_cost_limit_nanos)
        ),
        monthly_free_runs=int(doc.get("monthlyFreeRuns", settings.default_monthly_free_runs)),
    )
    percent = limit_percent(used, limits)
    if percent < FREE_TIER_PERCENT:
        return None
    return {
        "userId": doc["userId"],
        "costUsed": nanos_to_usd(used.cost_nanos),
        "monthlyCostLimit": nanos_to_usd(limits.monthly_cost_limit_nanos),
        "runsUsed": used.billable_runs,
        "monthlyFreeRuns": limits.monthly_free_runs,
        "percent": round(percent, 2),
    }


def usage_analytics(
    *, store: AnalyticsStore, caller: Caller | None, data: object, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Return the platform's month for an admin, from a bounded number of reads."""
    require_admin(caller)
    request = parse_data(AnalyticsIn, data)
    month = request.month or month_key(now)
    history = months_back(month, HISTORY_MONTHS)
    current, past, reads = store.platform_months(month=month, history=history[:-1])
    top, top_reads = store.top_users(month=month, limit=request.top)
    candidates, free_reads = store.free_tier(month=month, min_percent=FREE_TIER_PERCENT, limit=FREE_TIER_ROWS)
    merged = merge_shards(current)
    past_totals: dict[str, Counts] = {}
    for shard in past:
        _add(past_totals, {str(shard.get("month")): shard})
    past_totals[month] = merged.total
    free_rows = [row for doc in candidates if (row := _free_tier_row(doc, settings)) is not None]
    free_rows.sort(key=lambda row: (-row["percent"], row["userId"]))
    return {
        "month": month,
        "totals": {
            **merged.total.usd(),
            "activeUsers": len(merged.users),
            "byType": {kind: merged.by_type.get(kind, Counts()).usd() for kind in ("AI", "API")},
        },
        "features": _ranked(merged.features),
        "providers": _ranked(merged.providers),
        "topUsers": [{"userId": doc["userId"], **Counts.from_fields(doc).usd()} for doc in top],
        "freeTier": free_rows,
        "sessions": _sessions_view(merged.sessions),
        "daily": [{"date": day, **merged.days.get(day, Counts()).usd()} for day in days_of(month)],
        "history": [
            {
                "month": m,
                "cost": nanos_to_usd(past_totals.get(m, Counts()).cost_nanos),
                "apiCalls": past_totals.get(m, Counts()).api_calls,
            }
            for m in history
        ],
        "meta": {
            "generatedAt": now.isoformat().replace("+00:00", "Z"),
            "documentsRead": reads + top_reads + free_reads,
        },
    }


def month_view(usage: Mapping[str, Any], month: str, settings: Settings) -> dict[str, Any]:
    """Return one user's month as `my_usage` shows it."""
    stored = (usage.get("months") or {}).get(month) or {}
    used = month_usage(usage, month)
    features: dict[str, Counts] = {}
    providers: dict[str, Counts] = {}
    _add(features, stored.get("features"))
    _add(providers, stored.get("providers"))
    sessions = usage.get("sessions") or {}
    return {
        "month": month,
        "totalCost": nanos_to_usd(used.cost_nanos),
        "apiCalls": used.api_calls,
        "billableRuns": used.billable_runs,
        "byType": {
            kind: Counts.from_fields((stored.get("byType") or {}).get(kind)).usd() for kind in ("AI", "API")
        },
        "features": _ranked(features),
        "providers": _ranked(providers),
        "limits": limits_status(used, limits_of(usage, settings)),
        "lifetime": Counts.from_fields(usage.get("lifetime")).usd(),
        "sessions": {
            "active": max(0, int(sessions.get("active", 0))),
            "completed": int(sessions.get("completed", 0)),
        },
    }


def my_usage(
    *, store: AnalyticsStore, caller: Caller | None, data: object, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Return the caller's own month (one document read)."""
    caller = require_signed_in(caller)
    request = parse_data(MyUsageIn, data)
    return month_view(store.user_usage(user_id=caller.uid), request.month or month_key(now), settings)


def set_limits(
    *, store: AnalyticsStore, caller: Caller | None, data: object, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Set a user's monthly limits (omitted ones keep their value) and refresh the free-tier entry."""
    require_admin(caller)
    request = parse_data(SetLimitsIn, data)
    if request.monthly_cost_limit_nanos is None and request.monthly_free_runs is None:
        raise InvalidArgument.field("data", "give monthlyCostLimit, monthlyFreeRuns or both")
    current = limits_of(store.user_usage(user_id=request.user_id), settings)
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
    store.write_limits(user_id=request.user_id, limits=limits)
    usage = store.user_usage(user_id=request.user_id)
    month = month_key(now)
    used = month_usage(usage, month)
    if used.api_calls:
        store.set_limit_percent(
            user_id=request.user_id, month=month, percent=limit_percent(used, limits), limits=limits
        )
    return {
        "userId": request.user_id,
        "month": month,
        "limits": limits_status(used, limits),
    }
