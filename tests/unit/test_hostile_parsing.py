"""Hostile input at the parsing layer, many examples: every rejection is InvalidArgument naming a field."""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrypoints.jsonbody import parse_json_body
from tally.errors import InvalidArgument, PayloadTooLarge
from tally.fields import EdgeModel
from tally.requests import (
    AnalyticsIn,
    ExportIn,
    ListPricesIn,
    MyUsageIn,
    SetLimitsIn,
    SetPriceIn,
    parse_data,
    parse_record_request,
    parse_release_request,
    parse_reserve_request,
)
from tally_dev.hostile import ANY_JSON, hostile_body

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)
MANY = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
SOME = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


def raw(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def parses_or_names_fields(parse: Callable[[], object]) -> bool:
    """Return whether `parse` succeeds or raises InvalidArgument with field details (anything else raises)."""
    try:
        parse()
    except InvalidArgument as exc:
        return bool(exc.details) and all(d.field and d.problem for d in exc.details)
    return True


@MANY
@given(body=hostile_body())
def test_hostile_record_steps_bodies_are_invalid_arguments_naming_a_field(body: Any) -> None:
    with pytest.raises((InvalidArgument, PayloadTooLarge)) as caught:
        parse_record_request(parse_json_body(raw(body)), now=NOW)

    assert str(caught.value)
    if isinstance(caught.value, InvalidArgument):
        assert caught.value.details
        assert all(problem.field and problem.problem for problem in caught.value.details)


@SOME
@given(
    data=ANY_JSON,
    model=st.sampled_from([AnalyticsIn, MyUsageIn, SetLimitsIn, ExportIn, SetPriceIn, ListPricesIn]),
)
def test_any_callable_data_parses_or_is_an_invalid_argument(data: Any, model: type[EdgeModel]) -> None:
    assert parses_or_names_fields(lambda: parse_data(model, data))


@SOME
@given(body=ANY_JSON, parse=st.sampled_from([parse_reserve_request, parse_release_request]))
def test_any_gate_body_parses_or_is_an_invalid_argument(body: Any, parse: Any) -> None:
    assert parses_or_names_fields(lambda: parse(parse_json_body(raw(body))))
