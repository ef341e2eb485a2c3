"""Values on the wire and errors from the server's envelope."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from tally_client import _values as v
from tally_client.errors import (
    FailedPrecondition,
    InvalidArgument,
    TallyError,
    Unauthenticated,
    Unavailable,
    error_from_body,
)


def test_a_cost_with_more_than_64_characters_is_rounded_to_nanos_half_even() -> None:
    long_cost = Decimal("0.1234567885" + "0" * 60)

    text = v.cost_text("cost", long_cost)

    assert text == "0.123456788"


def test_floats_convert_through_their_repr_not_their_binary_value() -> None:
    assert v.cost_text("cost", 0.1 + 0.2) == "0.30000000000000004"
    assert v.cost_text("cost", 1e-9) == "0.000000001"


def test_a_negative_zero_is_plain_zero() -> None:
    assert v.cost_text("cost", Decimal("-0")) == "0"


def test_generated_ids_follow_the_documented_shapes() -> None:
    assert v.new_operation_id().startswith("usage_")
    assert v.new_session_id().startswith("session_")
    assert v.new_reservation_id().startswith("res_")
    assert len(v.new_operation_id()) <= 128


@pytest.mark.parametrize(
    ("status", "body", "error_type", "canonical"),
    [
        (400, {"error": {"status": "INVALID_ARGUMENT", "message": "m"}}, InvalidArgument, "INVALID_ARGUMENT"),
        (401, {"error": {"status": "UNAUTHENTICATED", "message": "m"}}, Unauthenticated, "UNAUTHENTICATED"),
        (409, None, FailedPrecondition, "FAILED_PRECONDITION"),
        (500, {"error": {"status": "INTERNAL", "message": "m"}}, Unavailable, "INTERNAL"),
        (503, "<html>busy</html>", Unavailable, "UNAVAILABLE"),
        (413, None, TallyError, "PAYLOAD_TOO_LARGE"),
    ],
)
def test_error_envelopes_map_to_error_types(
    status: int, body: object, error_type: type[TallyError], canonical: str
) -> None:
    error = error_from_body(status, body)

    assert type(error) is error_type
    assert error.status == canonical
    assert error.http_status == status


def test_invalid_argument_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="feature"):
        v.check_name("feature", "no spaces allowed")


def test_importing_the_client_imports_neither_openai_nor_anthropic() -> None:
    code = (
        "import sys, tally_client, tally_client.wrappers; "
        "assert 'openai' not in sys.modules and 'anthropic' not in sys.modules"
    )

    completed = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)  # noqa: S603

    assert completed.returncode == 0, completed.stderr
