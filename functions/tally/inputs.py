"""The `data` of the callable functions, validated at the edge (pydantic, unknown fields refused)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, TypeVar

from pydantic import BeforeValidator, Field, ValidationError

from tally.errors import InvalidArgument
from tally.models import EdgeModel, StrictFlag, UserId, field_error, problems_of
from tally.money import MoneyError, usd_to_nanos
from tally.timeutil import TimeError, parse_month

MAX_COST_LIMIT_USD = Decimal(1_000_000)
MAX_FREE_RUNS = 1_000_000_000


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
    fresh: StrictFlag = False


class MyUsageIn(EdgeModel):
    """`my_usage` data."""

    month: Month | None = None
    user_id: UserId | None = Field(default=None, alias="userId")


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
