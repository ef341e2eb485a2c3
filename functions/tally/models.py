"""Request models and validation at the edge: pydantic in, frozen domain values out."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tally.errors import FieldProblem, InvalidArgument
from tally.money import MoneyError, usd_to_nanos
from tally.timeutil import TimeError, check_step_time, parse_instant
from tally.values import CostSource, RecordRequest, SessionRequest, Step, Units, UsageType

MAX_STEPS = 100
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 10
_INT64 = (-(2**63), 2**63 - 1)
MAX_DISTINCT_NAMES = 20  # per kind and request: keeps every commit under 500 transforms a document
MAX_UNIT_COUNT = 10**9
# Matched whole (fullmatch): a trailing newline or space makes a value invalid, never another name.
_NAME_RE = re.compile(r"[A-Za-z0-9_\-.:/]{1,100}")
_ID_RE = re.compile(r"[A-Za-z0-9_\-.]{1,128}")
_USER_ID_RE = re.compile(r"[A-Za-z0-9_\-.:@+]{1,128}")
_RESERVED_KEY_RE = re.compile(r"__.*__", re.DOTALL)


_USAGE_TYPES = {
    "ai": UsageType.AI,
    "aiusage": UsageType.AI,
    "api": UsageType.API,
    "apiusage": UsageType.API,
}


def field_error(message: str) -> PydanticCustomError:
    """Return a validation error whose message is shown as the field's problem."""
    return PydanticCustomError("tally", message)


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise field_error("must be a string")
    if not _NAME_RE.fullmatch(value):
        raise field_error("must be 1-100 characters of letters, digits and _ - . : /")
    if _RESERVED_KEY_RE.fullmatch(value):
        raise field_error("must not be of the form __name__ (reserved by Firestore)")
    return value


def _identifier(value: object) -> str:
    if not isinstance(value, str):
        raise field_error("must be a string")
    if not _ID_RE.fullmatch(value):
        raise field_error("must be 1-128 characters of letters, digits and _ - .")
    if value in {".", ".."} or _RESERVED_KEY_RE.fullmatch(value):
        raise field_error("is a reserved id")
    return value


def _user_id(value: object) -> str:
    if not isinstance(value, str):
        raise field_error("must be a string")
    if not _USER_ID_RE.fullmatch(value) or value in {".", ".."} or _RESERVED_KEY_RE.fullmatch(value):
        raise field_error("must be a Firebase Auth uid (1-128 characters, no / or spaces)")
    return value


def is_user_id(value: str) -> bool:
    """Return whether a string is an acceptable user id."""
    return (
        bool(_USER_ID_RE.fullmatch(value))
        and value not in {".", ".."}
        and not _RESERVED_KEY_RE.fullmatch(value)
    )


def _usage_type(value: object) -> UsageType:
    if isinstance(value, str) and value.lower() in _USAGE_TYPES:
        return _USAGE_TYPES[value.lower()]
    raise field_error("must be AI or API (also accepted: ai, AIUsage, api, Api, ApiUsage, APIUsage)")


def _cost(value: object) -> int:
    try:
        return usd_to_nanos(value)
    except MoneyError as exc:
        raise field_error(str(exc)) from None


def _strict_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise field_error("must be true or false")
    return value


Name = Annotated[str, BeforeValidator(_name)]
Identifier = Annotated[str, BeforeValidator(_identifier)]
UserId = Annotated[str, BeforeValidator(_user_id)]
StrictFlag = Annotated[bool, BeforeValidator(_strict_bool)]


def clean_metadata(value: object) -> dict[str, Any]:
    """Validate step metadata and return it in a form Firestore stores as given."""
    if not isinstance(value, dict):
        raise field_error("must be a JSON object")
    cleaned = _clean_value(value, depth=1, in_array=False)
    assert isinstance(cleaned, dict)
    size = len(_compact_json(cleaned).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise field_error(f"must be at most {MAX_METADATA_BYTES} bytes as JSON (got {size})")
    return cleaned


def _compact_json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise field_error("must not contain unpaired surrogates") from None


def _clean_value(value: Any, *, depth: int, in_array: bool) -> Any:
    if depth > MAX_METADATA_DEPTH:
        raise field_error(f"must not nest deeper than {MAX_METADATA_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise field_error("integers must fit in 64 bits")
        return value
    if isinstance(value, Decimal | float):
        number = float(value)
        if not math.isfinite(number):
            raise field_error("numbers must be finite")
        return number
    if isinstance(value, str):
        _check_text(value)
        return value
    if isinstance(value, list):
        if in_array:
            raise field_error("arrays must not directly contain arrays")
        return [_clean_value(item, depth=depth + 1, in_array=True) for item in value]
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not key or len(key) > 256 or _RESERVED_KEY_RE.fullmatch(key):
                raise field_error("keys must be 1-256 characters and not of the form __name__")
            _check_text(key)
            result[key] = _clean_value(item, depth=depth + 1, in_array=False)
        return result
    raise field_error("must hold only JSON values")


class EdgeModel(BaseModel):
    """Base of the models at the edge: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class SessionIn(EdgeModel):
    """The `session` object of a `record_steps` request."""

    id: Identifier
    feature: Name | None = None
    complete: StrictFlag = False


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UNIT_COUNT:
        raise field_error(f"must be a whole number from 0 to {MAX_UNIT_COUNT:,}")
    return value


Count = Annotated[int, BeforeValidator(_count)]


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


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


_PROBLEMS = {
    "missing": "is required",
    "extra_forbidden": "is not an accepted field",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be an array",
}


def problems_of(error: ValidationError) -> list[FieldProblem]:
    """Translate pydantic errors into field problems with plain messages."""
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        problem = _PROBLEMS.get(item["type"], item["msg"])
        if item["type"] == "tally":
            problem = item["msg"]
        if item["type"] in {"model_type", "model_attributes_type"} and not loc:
            problem = "must be a JSON object"
        problems.append(FieldProblem(_field_path(loc), problem))
    return problems


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


# reserve_spend and release_spend

MIN_TTL_SECONDS, MAX_TTL_SECONDS, DEFAULT_TTL_SECONDS = 10, 3600, 300


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
