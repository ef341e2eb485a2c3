"""Every request Tally accepts, validated at the edge: pydantic models (no unknown field), typed values out.

The HTTPS endpoints' bodies (`record_steps`, `reserve_spend`, `release_spend`) and the
callables' `data` (`usage_analytics`, `my_usage`, `set_limits`, `set_plan`, `list_plans`,
`set_price`, `list_prices`, `export_usage`; the limits objects in `tally.requests.limits`). An
entry point checks access, parses with these, then calls a service with typed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tally.errors import FieldProblem, InvalidArgument
from tally.fields import (
    MAX_DISTINCT_NAMES,
    MAX_STEPS,
    Count,
    EdgeModel,
    Identifier,
    Month,
    Name,
    StrictFlag,
    Usd,
    UserId,
    _cost,
    _day,
    _top,
    _usage_type,
    clean_metadata,
    field_error,
    problems_of,
)
from tally.requests.limits import (
    FeatureLimitsIn,
    LimitsIn,
    ListPlansIn,
    SetLimitsIn,
    SetPlanIn,
    SetTeamIn,
    TeamLimitsIn,
)
from tally.timeutil import TimeError, check_step_time, parse_instant
from tally.values import CostSource, RecordRequest, SessionRequest, Step, Units, UsageType

__all__ = [
    "FeatureLimitsIn",
    "LimitsIn",
    "ListPlansIn",
    "SetLimitsIn",
    "SetPlanIn",
    "SetTeamIn",
    "TeamLimitsIn",
]

MIN_TTL_SECONDS = 10
MAX_TTL_SECONDS = 3600
DEFAULT_TTL_SECONDS = 300
EXPORT_PAGE_SIZE = 500
MAX_EXPORT_PAGE_SIZE = 1000

# record_steps, reserve_spend, release_spend


class SessionIn(EdgeModel):
    """The `session` object of a `record_steps` request."""

    id: Identifier
    feature: Name | None = None
    complete: StrictFlag = False


class UnitsIn(EdgeModel):
    """What a step used, for Tally to price (see Pricing)."""

    model: Name
    input_tokens: Count = Field(default=0, alias="inputTokens")
    output_tokens: Count = Field(default=0, alias="outputTokens")
    cache_read_tokens: Count = Field(default=0, alias="cacheReadTokens")
    cache_write_tokens: Count = Field(default=0, alias="cacheWriteTokens")  # kept 5 minutes
    cache_write_1h_tokens: Count = Field(default=0, alias="cacheWrite1hTokens")  # kept 1 hour
    requests: Count = 0

    @model_validator(mode="after")
    def _some_count(self) -> UnitsIn:
        if not self.model_fields_set - {"model"}:
            raise field_error(
                "give at least one count: inputTokens, outputTokens, cacheReadTokens, "
                "cacheWriteTokens, cacheWrite1hTokens or requests"
            )
        return self

    def units(self) -> Units:
        """Return the domain value."""
        return Units(
            self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
            requests=self.requests,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
        )


class StepIn(EdgeModel):
    """One step of a `record_steps` request."""

    operation_id: Identifier = Field(alias="operationId")
    usage_type: Annotated[UsageType, BeforeValidator(_usage_type)] = Field(alias="usageType")
    feature: Name
    provider: Name
    cost_nanos: Annotated[int, BeforeValidator(_cost)] | None = Field(default=None, alias="cost")
    units: UnitsIn | None = None
    reservation_id: Identifier | None = Field(default=None, alias="reservationId")
    is_billable_run: StrictFlag = Field(default=False, alias="isBillableRun")
    timestamp: datetime | None = None
    metadata: Annotated[dict[str, Any], BeforeValidator(clean_metadata)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cost_or_units(self) -> StepIn:
        if self.cost_nanos is None and self.units is None:
            raise field_error("give cost (USD) or units (for Tally to price), or both")
        return self

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: object, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        context = info.context or {}
        try:
            instant = parse_instant(value)
            if context.get("any_age"):  # the legacy import keeps original timestamps whatever their age
                return check_step_time(instant, now=context["now"], max_age=None)
            return check_step_time(instant, now=context["now"])
        except TimeError as exc:
            raise field_error(str(exc)) from None


class RecordStepsIn(EdgeModel):
    """The body of a `record_steps` request."""

    user_id: UserId | None = Field(default=None, alias="userId")
    session: SessionIn | None = None
    steps: list[StepIn]

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_is_list(cls, value: object) -> object:
        if not isinstance(value, list):
            raise field_error("must be an array of steps")
        if len(value) > MAX_STEPS:
            raise field_error(f"must hold at most {MAX_STEPS} steps (got {len(value)})")
        return value

    @model_validator(mode="after")
    def _rules(self) -> RecordStepsIn:
        if not self.steps and not (self.session and self.session.complete):
            raise InvalidArgument.field("steps", "must hold 1-100 steps (0 only with session.complete true)")
        seen: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            if step.operation_id in seen:
                raise InvalidArgument.field(
                    f"steps[{index}].operationId",
                    f"repeats steps[{seen[step.operation_id]}].operationId",
                )
            seen[step.operation_id] = index
        for kind in ("feature", "provider", "units.model"):
            names: set[str] = set()
            for index, step in enumerate(self.steps):
                name = step.units.model if kind == "units.model" and step.units else getattr(step, kind, None)
                if name is None:
                    continue
                names.add(name)
                if len(names) > MAX_DISTINCT_NAMES:
                    raise InvalidArgument.field(
                        f"steps[{index}].{kind}",
                        f"a request may name at most {MAX_DISTINCT_NAMES} distinct {kind.split('.')[-1]}s; "
                        "send the other steps in another request",
                    )
        return self


def _step_of(parsed: StepIn, now: datetime) -> Step:
    """Return the domain step; a step with only units is unpriced until Tally prices it."""
    return Step(
        operation_id=parsed.operation_id,
        usage_type=parsed.usage_type,
        feature=parsed.feature,
        provider=parsed.provider,
        cost_nanos=parsed.cost_nanos or 0,
        is_billable_run=parsed.is_billable_run,
        timestamp=parsed.timestamp or now,
        metadata=parsed.metadata,
        cost_source=CostSource.CLIENT if parsed.cost_nanos is not None else CostSource.UNPRICED,
        units=parsed.units.units() if parsed.units is not None else None,
        reservation_id=parsed.reservation_id,
    )


def parse_step(data: object, *, now: datetime, field: str, any_age: bool = False) -> Step:
    """Validate one step (as `record_steps` does); raise InvalidArgument naming fields under `field`."""
    try:
        parsed = StepIn.model_validate(data, context={"now": now, "any_age": any_age})
    except ValidationError as exc:
        problems = [
            FieldProblem(f"{field}.{p.field}" if p.field != "body" else field, p.problem)
            for p in problems_of(exc)
        ]
        raise InvalidArgument.of(problems) from None
    return _step_of(parsed, now)


def parse_record_request(body: dict[str, Any], *, now: datetime) -> RecordRequest:
    """Validate a `record_steps` body; raise InvalidArgument naming every bad field."""
    try:
        parsed = RecordStepsIn.model_validate(body, context={"now": now})
    except ValidationError as exc:
        raise InvalidArgument.of(problems_of(exc)) from None
    session = parsed.session
    return RecordRequest(
        user_id=parsed.user_id,
        session=(
            SessionRequest(session_id=session.id, feature=session.feature, complete=session.complete)
            if session
            else None
        ),
        steps=tuple(_step_of(s, now) for s in parsed.steps),
    )


def _ttl(value: object) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_TTL_SECONDS <= value <= MAX_TTL_SECONDS
    ):
        raise field_error(f"must be whole seconds from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}")
    return value


class EstimateIn(EdgeModel):
    """What a paid call is expected to cost: `cost` (USD) or `units` (priced by Tally)."""

    cost_nanos: Annotated[int, BeforeValidator(_cost)] | None = Field(default=None, alias="cost")
    units: UnitsIn | None = None
    provider: Name | None = None  # whose price `units` take (without it, units cannot be priced)
    feature: Name | None = None  # what the call is for (v3: the feature whose limits it counts in)
    is_billable_run: StrictFlag = Field(default=False, alias="isBillableRun")

    @model_validator(mode="after")
    def _cost_or_units(self) -> EstimateIn:
        if self.cost_nanos is None and self.units is None:
            raise field_error("give cost (USD) or units (for Tally to price)")
        return self


class ReserveIn(EdgeModel):
    """The body of a `reserve_spend` request."""

    user_id: UserId | None = Field(default=None, alias="userId")
    reservation_id: Identifier = Field(alias="reservationId")
    estimate: EstimateIn
    ttl_seconds: Annotated[int, BeforeValidator(_ttl)] = Field(
        default=DEFAULT_TTL_SECONDS, alias="ttlSeconds"
    )


class ReleaseIn(EdgeModel):
    """The body of a `release_spend` request."""

    user_id: UserId | None = Field(default=None, alias="userId")
    reservation_id: Identifier = Field(alias="reservationId")


@dataclass(frozen=True)
class ReserveRequest:
    """A validated `reserve_spend` request."""

    user_id: str | None
    reservation_id: str
    cost_nanos: int | None
    units: Units | None
    provider: str | None
    billable: bool
    ttl_seconds: int
    feature: str | None = None


def parse_reserve_request(body: dict[str, Any]) -> ReserveRequest:
    """Validate a `reserve_spend` body; raise InvalidArgument naming every bad field."""
    try:
        parsed = ReserveIn.model_validate(body)
    except ValidationError as exc:
        raise InvalidArgument.of(problems_of(exc)) from None
    estimate = parsed.estimate
    return ReserveRequest(
        user_id=parsed.user_id,
        reservation_id=parsed.reservation_id,
        cost_nanos=estimate.cost_nanos,
        units=estimate.units.units() if estimate.units is not None else None,
        provider=estimate.provider,
        billable=estimate.is_billable_run,
        ttl_seconds=parsed.ttl_seconds,
        feature=estimate.feature,
    )


def parse_release_request(body: dict[str, Any]) -> tuple[str | None, str]:
    """Validate a `release_spend` body; return (userId, reservationId)."""
    try:
        parsed = ReleaseIn.model_validate(body)
    except ValidationError as exc:
        raise InvalidArgument.of(problems_of(exc)) from None
    return parsed.user_id, parsed.reservation_id


# The callables


class AnalyticsIn(EdgeModel):
    """`usage_analytics` data."""

    month: Month | None = None
    top: Annotated[int, BeforeValidator(_top)] = 10
    fresh: StrictFlag = False


class MyUsageIn(EdgeModel):
    """`my_usage` data."""

    month: Month | None = None
    user_id: UserId | None = Field(default=None, alias="userId")


class PricesIn(EdgeModel):
    """USD per million tokens, or per request; at least one."""

    input_mtok: Usd | None = Field(default=None, alias="inputMTok")
    output_mtok: Usd | None = Field(default=None, alias="outputMTok")
    cache_read_mtok: Usd | None = Field(default=None, alias="cacheReadMTok")
    cache_write_mtok: Usd | None = Field(default=None, alias="cacheWriteMTok")  # 5-minute writes
    cache_write_1h_mtok: Usd | None = Field(default=None, alias="cacheWrite1hMTok")  # 1-hour writes
    request: Usd | None = None

    def given(self) -> dict[str, Decimal]:
        """Return the prices given, by their names in the SPEC."""
        return {
            key: value
            for key, value in (
                ("inputMTok", self.input_mtok),
                ("outputMTok", self.output_mtok),
                ("cacheReadMTok", self.cache_read_mtok),
                ("cacheWriteMTok", self.cache_write_mtok),
                ("cacheWrite1hMTok", self.cache_write_1h_mtok),
                ("request", self.request),
            )
            if value is not None
        }


class SetPriceIn(EdgeModel):
    """`set_price` data."""

    provider: Name
    model: Name
    effective_from: Annotated[str, BeforeValidator(_day)] | None = Field(default=None, alias="effectiveFrom")
    prices: PricesIn

    @field_validator("prices")
    @classmethod
    def _one_price(cls, value: PricesIn) -> PricesIn:
        if not value.given():
            raise field_error(
                "give at least one price: inputMTok, outputMTok, cacheReadMTok, cacheWriteMTok, "
                "cacheWrite1hMTok, request"
            )
        return value


class ListPricesIn(EdgeModel):
    """`list_prices` data (none)."""


def _limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EXPORT_PAGE_SIZE:
        raise field_error(f"must be an integer from 1 to {MAX_EXPORT_PAGE_SIZE}")
    return value


class ExportIn(EdgeModel):
    """`export_usage` data."""

    month: Month | None = None
    page_token: UserId | None = Field(default=None, alias="pageToken")
    limit: Annotated[int, BeforeValidator(_limit)] = EXPORT_PAGE_SIZE


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
