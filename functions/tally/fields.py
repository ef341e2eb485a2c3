"""The fields of Tally's requests: what a name, an id, a cost, a month or metadata may be, and their problems.

Every request model (`tally.requests`) is built from these; each validator raises a
problem that names its field, and nothing outside the edge parses input.
"""

from __future__ import annotations

import math
import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from tally.errors import FieldProblem
from tally.money import MoneyError, usd_to_nanos
from tally.timeutil import TimeError, parse_month
from tally.values import UsageType

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


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UNIT_COUNT:
        raise field_error(f"must be a whole number from 0 to {MAX_UNIT_COUNT:,}")
    return value


Count = Annotated[int, BeforeValidator(_count)]


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


MAX_PRICE_USD = Decimal(1_000_000)


def _usd(value: object) -> Decimal:
    try:
        nanos = usd_to_nanos(value, maximum=MAX_PRICE_USD)
    except MoneyError as exc:
        raise field_error(str(exc)) from None
    return Decimal(nanos) / 10**9


def _day(value: object) -> str:
    if not isinstance(value, str):
        raise field_error("must be a date like 2026-11-01")
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise field_error("must be a date like 2026-11-01") from None
    if parsed.isoformat() != value:
        raise field_error("must be a date like 2026-11-01")
    return value


Usd = Annotated[Decimal, BeforeValidator(_usd)]


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
