"""Strict JSON: numbers as exact Decimals, no NaN or Infinity, no duplicate keys."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from tally.errors import InvalidArgument, PayloadTooLarge, UnsupportedMediaType

MAX_BODY_BYTES = 256 * 1024


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON text; floats become Decimal; raise ValueError on anything not strict JSON."""
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


def check_content_type(content_type: str | None) -> None:
    """Accept only `application/json` (any charset)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")


def check_declared_length(length: int | None) -> None:
    """Reject a body whose declared length is over the limit, before reading it."""
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body must be at most {MAX_BODY_BYTES} bytes")


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be one JSON object."""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body must be at most {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        value = loads_strict(text)
    except UnicodeDecodeError:
        raise InvalidArgument.field("body", "must be UTF-8 encoded JSON") from None
    except ValueError as exc:
        raise InvalidArgument.field("body", f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument.field("body", "must be a JSON object")
    return value
