from decimal import Decimal

import pytest

from entrypoints.jsonbody import MAX_BODY_BYTES, check_content_type, check_declared_length, parse_json_body
from tally.errors import InvalidArgument, PayloadTooLarge, UnsupportedMediaType


def test_numbers_parse_as_exact_decimals() -> None:
    body = parse_json_body(b'{"cost": 0.00283, "n": 3}')

    assert body == {"cost": Decimal("0.00283"), "n": 3}
    assert isinstance(body["cost"], Decimal)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"cost": NaN}',
        b'{"cost": Infinity}',
        b'{"a": 1, "a": 2}',
        b"{",
        b"\xff\xfe",
        b"[1]",
        b'"x"',
        b"[" * 50_000,
    ],
)
def test_malformed_bodies_are_invalid_argument(raw: bytes) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_json_body(raw)

    assert info.value.details[0].field == "body"


def test_oversized_body_is_rejected() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_json_body(b" " * (MAX_BODY_BYTES + 1))
    with pytest.raises(PayloadTooLarge):
        check_declared_length(MAX_BODY_BYTES + 1)
    check_declared_length(MAX_BODY_BYTES)
    check_declared_length(None)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    check_content_type(content_type)


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_rejected(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_content_type(content_type)
