"""Check step values against the SPEC's rules and give their wire form (no float ever sent)."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from tally_client.errors import InvalidArgument

Money = Decimal | str | int | float
"""A USD amount: Decimal, decimal string, int, or float (converted through its repr)."""

Timestamp = datetime | str | int
"""An instant: an aware datetime, an ISO-8601 string with offset or `Z`, or epoch milliseconds."""

MAX_STEPS = 100
MAX_NAMES = 20
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 10
MAX_COST = Decimal(1000)
MAX_COUNT = 10**9
UNIT_COUNTS = (
    "inputTokens",
    "outputTokens",
    "cacheReadTokens",
    "cacheWriteTokens",
    "cacheWrite1hTokens",
    "requests",
)

_NAME_RE = re.compile(r"[A-Za-z0-9_\-.:/]{1,100}")
_ID_RE = re.compile(r"[A-Za-z0-9_\-.]{1,128}")
_USER_ID_RE = re.compile(r"[A-Za-z0-9_\-.:@+]{1,128}")
_RESERVED_RE = re.compile(r"__.*__", re.DOTALL)
_DECIMAL_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?")
_MAX_DECIMAL_TEXT = 64
_NANO = Decimal("1e-9")
_USAGE_TYPES = {"ai": "AI", "aiusage": "AI", "api": "API", "apiusage": "API"}


def check_name(field: str, value: object) -> str:
    """Return a feature, provider or model name, or raise InvalidArgument."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidArgument.field(field, "must be 1-100 characters of letters, digits and _ - . : /")
    if _RESERVED_RE.fullmatch(value):
        raise InvalidArgument.field(field, "must not be of the form __name__ (reserved)")
    return value


def check_id(field: str, value: object) -> str:
    """Return an operation, session or reservation id, or raise InvalidArgument."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidArgument.field(field, "must be 1-128 characters of letters, digits and _ - .")
    if value in {".", ".."} or _RESERVED_RE.fullmatch(value):
        raise InvalidArgument.field(field, "is a reserved id")
    return value


def check_user_id(field: str, value: object) -> str:
    """Return a Firebase Auth uid, or raise InvalidArgument."""
    if (
        not isinstance(value, str)
        or not _USER_ID_RE.fullmatch(value)
        or value in {".", ".."}
        or _RESERVED_RE.fullmatch(value)
    ):
        raise InvalidArgument.field(field, "must be a Firebase Auth uid (1-128 characters, no / or spaces)")
    return value


def usage_type(field: str, value: object) -> str:
    """Return `AI` or `API` for any accepted spelling, or raise InvalidArgument."""
    if isinstance(value, str) and value.lower() in _USAGE_TYPES:
        return _USAGE_TYPES[value.lower()]
    raise InvalidArgument.field(field, "must be AI or API (also: ai, AIUsage, api, Api, ApiUsage, APIUsage)")


def to_decimal(field: str, value: object) -> Decimal:
    """Return a USD amount as an exact Decimal in [0, 1000]; floats go through their repr."""
    if isinstance(value, bool):
        raise InvalidArgument.field(field, "must be a number or a decimal string")
    try:
        if isinstance(value, Decimal):
            amount = value
        elif isinstance(value, int):
            amount = Decimal(value)
        elif isinstance(value, float):
            amount = Decimal(repr(value))
        elif isinstance(value, str) and _DECIMAL_RE.fullmatch(value.strip()):
            amount = Decimal(value.strip())
        else:
            raise InvalidArgument.field(field, 'must be a number or a decimal string like "0.017"')
    except InvalidOperation:
        raise InvalidArgument.field(field, "must be a number or a decimal string") from None
    if not amount.is_finite():
        raise InvalidArgument.field(field, "must be finite")
    if amount < 0:
        raise InvalidArgument.field(field, "must be >= 0")
    if amount > MAX_COST:
        raise InvalidArgument.field(field, f"must be <= {MAX_COST}")
    return amount


def cost_text(field: str, value: object) -> str:
    """Return a USD amount as a plain decimal string (`"0.00283"`), exact unless longer than 64 characters."""
    amount = to_decimal(field, value)
    if amount == 0:
        return "0"
    text = format(amount, "f")
    if len(text) > _MAX_DECIMAL_TEXT:
        # The server rounds to nano-USD half-even anyway: do the same so the string stays short.
        text = format(amount.quantize(_NANO, rounding=ROUND_HALF_EVEN), "f")
    return text


def units_body(field: str, value: object) -> dict[str, Any]:
    """Return a checked `units` object: `model` and at least one count in [0, 10^9]."""
    if not isinstance(value, Mapping):
        raise InvalidArgument.field(field, "must be an object with model and token counts")
    unknown = sorted(str(key) for key in value if key not in {"model", *UNIT_COUNTS})
    if unknown:
        raise InvalidArgument.field(
            f"{field}.{unknown[0]}", f"is not a units field (model, {', '.join(UNIT_COUNTS)})"
        )
    body: dict[str, Any] = {"model": check_name(f"{field}.model", value.get("model"))}
    for key in UNIT_COUNTS:
        if key not in value or value[key] is None:
            continue
        count = value[key]
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            raise InvalidArgument.field(f"{field}.{key}", f"must be an integer from 0 to {MAX_COUNT}")
        body[key] = count
    if len(body) == 1:
        raise InvalidArgument.field(field, f"needs at least one count ({', '.join(UNIT_COUNTS)})")
    return body


def utc_iso(moment: datetime) -> str:
    """Return an aware datetime as ISO-8601 UTC with milliseconds and `Z`."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def timestamp_value(field: str, value: object) -> str | int:
    """Return a step timestamp for the wire: ISO-8601 UTC `...Z`, or epoch milliseconds as given."""
    if isinstance(value, bool):
        raise InvalidArgument.field(field, "must be a datetime, an ISO-8601 string or epoch milliseconds")
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgument.field(field, "epoch milliseconds must be >= 0")
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidArgument.field(field, "must be ISO-8601 with an offset or Z") from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument.field(field, "must have a time zone (an aware datetime, offset or Z)")
        return utc_iso(value)
    raise InvalidArgument.field(field, "must be a datetime, an ISO-8601 string or epoch milliseconds")


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def metadata_body(field: str, value: object) -> dict[str, Any]:
    """Return metadata as plain JSON (Decimals as strings, dates ISO) of at most 4 KiB."""
    if not isinstance(value, Mapping):
        raise InvalidArgument.field(field, "must be a JSON object (a dict)")
    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
        )
    except (TypeError, ValueError) as exc:
        raise InvalidArgument.field(field, f"must hold only JSON values ({exc})") from None
    size = len(text.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument.field(field, f"must be at most {MAX_METADATA_BYTES} bytes as JSON (got {size})")
    loaded: dict[str, Any] = json.loads(text)
    _check_json(field, loaded, depth=1, in_array=False)
    return loaded


def _check_json(field: str, value: object, *, depth: int, in_array: bool) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidArgument.field(field, f"must not nest deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, list):
        if in_array:
            raise InvalidArgument.field(field, "arrays must not directly contain arrays")
        for item in value:
            _check_json(field, item, depth=depth + 1, in_array=True)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not key or len(key) > 256 or _RESERVED_RE.fullmatch(key):
                raise InvalidArgument.field(
                    field, "keys must be 1-256 characters and not of the form __name__"
                )
            _check_json(field, item, depth=depth + 1, in_array=False)


def encode(body: object) -> bytes:
    """Return the compact UTF-8 JSON bytes sent (once per request, so a retry resends them exactly)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_operation_id() -> str:
    """Return a fresh operation id, `usage_<epoch ms>_<16 random hex>`."""
    return f"usage_{_now_ms()}_{secrets.token_hex(8)}"


def new_session_id() -> str:
    """Return a fresh session id, `session_<epoch ms>_<16 random hex>`."""
    return f"session_{_now_ms()}_{secrets.token_hex(8)}"


def new_reservation_id() -> str:
    """Return a fresh reservation id, `res_<epoch ms>_<16 random hex>`."""
    return f"res_{_now_ms()}_{secrets.token_hex(8)}"
