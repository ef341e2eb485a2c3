from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tally.errors import InvalidArgument
from tally.requests import parse_record_request, parse_reserve_request
from tally.values import Units, UsageType

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)


def step(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "operationId": "usage_1760436249794_a460",
        "usageType": "ApiUsage",
        "feature": "google_maps_autocomplete",
        "provider": "google_maps",
        "cost": Decimal("0.00283"),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def problem_of(body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as info:
        parse_record_request(body, now=NOW)
    first = info.value.details[0]
    assert info.value.message.startswith(f"{first.field}: {first.problem}")
    return first.field, first.problem


def test_a_full_request_becomes_domain_values() -> None:
    body = {
        "userId": "user-1",
        "session": {"id": "session_1760436245953_ab12", "feature": "google_maps", "complete": True},
        "steps": [
            step(timestamp="2026-11-14T10:04:09.794Z", isBillableRun=True, metadata={"input": "55 cours"})
        ],
    }

    request = parse_record_request(body, now=NOW)

    assert request.user_id == "user-1"
    assert request.session is not None
    assert (request.session.session_id, request.session.complete) == ("session_1760436245953_ab12", True)
    only = request.steps[0]
    assert only.usage_type is UsageType.API
    assert only.cost_nanos == 2_830_000
    assert only.is_billable_run is True
    assert only.timestamp == datetime(2026, 11, 14, 10, 4, 9, 794000, tzinfo=UTC)
    assert only.metadata == {"input": "55 cours"}


def test_defaults_server_time_and_not_billable() -> None:
    request = parse_record_request({"steps": [step()]}, now=NOW)

    assert request.steps[0].timestamp == NOW
    assert request.steps[0].is_billable_run is False
    assert request.session is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("AI", UsageType.AI),
        ("ai", UsageType.AI),
        ("AIUsage", UsageType.AI),
        ("API", UsageType.API),
        ("api", UsageType.API),
        ("Api", UsageType.API),
        ("ApiUsage", UsageType.API),
        ("APIUsage", UsageType.API),
    ],
)
def test_usage_type_forms(given: str, expected: UsageType) -> None:
    assert parse_record_request({"steps": [step(usageType=given)]}, now=NOW).steps[0].usage_type is expected


def test_epoch_milliseconds_timestamp() -> None:
    millis = int((NOW - timedelta(hours=1)).timestamp() * 1000)

    parsed = parse_record_request({"steps": [step(timestamp=millis)]}, now=NOW)

    assert parsed.steps[0].timestamp == NOW - timedelta(hours=1)


def test_names_with_dots_slashes_and_colons_are_kept_as_given() -> None:
    parsed = parse_record_request(
        {"steps": [step(feature="claude-3.5-sonnet", provider="anthropic:api/v1")]}, now=NOW
    )

    assert (parsed.steps[0].feature, parsed.steps[0].provider) == ("claude-3.5-sonnet", "anthropic:api/v1")


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"steps": [step(cost=Decimal("-1"))]}, "steps[0].cost", "must be >= 0"),
        ({"steps": [step(cost="abc")]}, "steps[0].cost", "must be a decimal string"),
        ({"steps": [step(cost=True)]}, "steps[0].cost", "must be a number or a decimal string"),
        ({"steps": [step(cost=1001)]}, "steps[0].cost", "must be <= 1000"),
        ({"steps": [step(cost=...)]}, "steps[0]", "give cost (USD) or units"),
        ({"steps": [step(units={"inputTokens": 5})]}, "steps[0].units.model", "is required"),
        ({"steps": [step(units={"model": "gpt-4o"})]}, "steps[0].units", "give at least one count"),
        (
            {"steps": [step(units={"model": "gpt-4o", "inputTokens": -1})]},
            "steps[0].units.inputTokens",
            "whole number",
        ),
        (
            {"steps": [step(units={"model": "gpt-4o", "outputTokens": 1.5})]},
            "steps[0].units.outputTokens",
            "whole",
        ),
        (
            {"steps": [step(units={"model": "gpt-4o", "requests": 10**9 + 1})]},
            "steps[0].units.requests",
            "1,000,000,000",
        ),
        (
            {"steps": [step(units={"model": "gpt-4o", "cacheWrite1hTokens": -1})]},
            "steps[0].units.cacheWrite1hTokens",
            "whole number from 0 to 1,000,000,000",
        ),
        (
            {"steps": [step(units={"model": "gpt-4o", "cacheWrite1hTokens": 10**9 + 1})]},
            "steps[0].units.cacheWrite1hTokens",
            "whole number from 0 to 1,000,000,000",
        ),
        (
            {"steps": [step(units={"model": "gpt-4o", "cacheWrite1hTokens": 2.5})]},
            "steps[0].units.cacheWrite1hTokens",
            "whole number",
        ),
        (
            {"steps": [step(units={"model": "gpt-4o", "cacheWrite1hTokens": True})]},
            "steps[0].units.cacheWrite1hTokens",
            "whole number",
        ),
        (
            {"steps": [step(units={"model": "gpt-4o", "cacheWrite1hTokens": "5"})]},
            "steps[0].units.cacheWrite1hTokens",
            "whole number",
        ),
        (
            {"steps": [step(units={"model": "gpt-4o", "cacheWrite1HTokens": 5})]},
            "steps[0].units.cacheWrite1HTokens",
            "is not an accepted field",
        ),
        (
            {"steps": [step(units={"model": "gpt 4o", "requests": 1})]},
            "steps[0].units.model",
            "1-100 characters",
        ),
        (
            {"steps": [step(units={"model": "m", "tokens": 1})]},
            "steps[0].units.tokens",
            "is not an accepted field",
        ),
        ({"steps": [step(usageType="Gpu")]}, "steps[0].usageType", "must be AI or API"),
        ({"steps": [step(feature="")]}, "steps[0].feature", "must be 1-100 characters"),
        ({"steps": [step(feature="a b")]}, "steps[0].feature", "must be 1-100 characters"),
        ({"steps": [step(feature="x" * 101)]}, "steps[0].feature", "must be 1-100 characters"),
        ({"steps": [step(provider=7)]}, "steps[0].provider", "must be a string"),
        ({"steps": [step(operationId="a/b")]}, "steps[0].operationId", "must be 1-128 characters"),
        ({"steps": [step(operationId="x" * 129)]}, "steps[0].operationId", "must be 1-128 characters"),
        ({"steps": [step(isBillableRun="yes")]}, "steps[0].isBillableRun", "must be true or false"),
        ({"steps": [step(timestamp="2026-11-14T10:00:00")]}, "steps[0].timestamp", "UTC offset"),
        ({"steps": [step(timestamp="2026-11-14T10:06:00Z")]}, "steps[0].timestamp", "future"),
        ({"steps": [step(timestamp="2026-10-01T00:00:00Z")]}, "steps[0].timestamp", "older than 35 days"),
        ({"steps": [step(metadata=[1])]}, "steps[0].metadata", "must be a JSON object"),
        ({"steps": [step(metadata={"a": "x" * 5000})]}, "steps[0].metadata", "at most 4096 bytes"),
        ({"steps": [step(metadata={"a": [[1]]})]}, "steps[0].metadata", "arrays must not directly contain"),
        ({"steps": [step(metadata={"a": 2**70})]}, "steps[0].metadata", "64 bits"),
        ({"steps": [step(metadata={"": 1})]}, "steps[0].metadata", "keys must be"),
        ({"steps": [step(metadata={"a": "\ud800"})]}, "steps[0].metadata", "surrogates"),
        ({"steps": [step(extra=1)]}, "steps[0].extra", "is not an accepted field"),
        ({"steps": []}, "steps", "must hold 1-100 steps"),
        ({"steps": [step(operationId=f"op{i}") for i in range(101)]}, "steps", "at most 100"),
        ({"steps": "x"}, "steps", "must be an array"),
        ({}, "steps", "is required"),
        ({"steps": [step()], "session": {"id": "s 1"}}, "session.id", "must be 1-128 characters"),
        (
            {"steps": [step()], "session": {"id": "s", "complete": "true"}},
            "session.complete",
            "true or false",
        ),
        ({"steps": [step()], "session": "s"}, "session", "must be a JSON object"),
        ({"steps": [step()], "userId": "a/b"}, "userId", "Firebase Auth uid"),
        ({"steps": [step()], "nope": 1}, "nope", "is not an accepted field"),
        ({"steps": [step(), step()]}, "steps[1].operationId", "repeats steps[0].operationId"),
        ({"steps": [step(feature="gpt-4o\n")]}, "steps[0].feature", "must be 1-100 characters"),
        ({"steps": [step(provider="openai ")]}, "steps[0].provider", "must be 1-100 characters"),
        ({"steps": [step(feature="__x__")]}, "steps[0].feature", "reserved by Firestore"),
        ({"steps": [step(provider="__name__")]}, "steps[0].provider", "reserved by Firestore"),
        ({"steps": [step(operationId="op1\n")]}, "steps[0].operationId", "must be 1-128 characters"),
        ({"steps": [step()], "session": {"id": "s1\n"}}, "session.id", "must be 1-128 characters"),
        ({"steps": [step()], "userId": "u1\n"}, "userId", "Firebase Auth uid"),
        ({"steps": [step(cost="0.5\n")]}, "steps[0].cost", "must be a decimal string"),
        (
            {"steps": [step(operationId=f"op{i}", feature=f"f{i}") for i in range(21)]},
            "steps[20].feature",
            "at most 20 distinct features",
        ),
        (
            {"steps": [step(operationId=f"op{i}", provider=f"p{i}") for i in range(21)]},
            "steps[20].provider",
            "at most 20 distinct providers",
        ),
    ],
)
def test_invalid_fields_are_named(body: dict[str, Any], field: str, problem: str) -> None:
    got_field, got_problem = problem_of(body)

    assert got_field == field
    assert problem in got_problem


def test_deep_metadata_is_rejected() -> None:
    nested: dict[str, Any] = {}
    cursor = nested
    for _ in range(12):
        cursor["a"] = {}
        cursor = cursor["a"]

    assert problem_of({"steps": [step(metadata=nested)]}) == (
        "steps[0].metadata",
        "must not nest deeper than 10 levels",
    )


def test_zero_steps_allowed_only_to_complete_a_session() -> None:
    request = parse_record_request({"session": {"id": "s1", "complete": True}, "steps": []}, now=NOW)

    assert request.steps == ()
    assert problem_of({"session": {"id": "s1"}, "steps": []})[0] == "steps"


def test_every_problem_is_reported() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_record_request({"steps": [step(cost=Decimal(-1), feature="")]}, now=NOW)

    assert {d.field for d in info.value.details} == {"steps[0].cost", "steps[0].feature"}
    assert "(and 1 more)" in info.value.message


def test_units_with_one_hour_cache_writes_become_domain_units() -> None:
    units = {
        "model": "claude-sonnet-4-5-20250929",
        "inputTokens": 400,
        "outputTokens": 200,
        "cacheReadTokens": 500,
        "cacheWriteTokens": 100,
        "cacheWrite1hTokens": 1000,
        "requests": 1,
    }

    request = parse_record_request({"steps": [step(cost=..., units=units)]}, now=NOW)

    parsed = request.steps[0].units
    assert parsed is not None
    assert parsed == Units(
        "claude-sonnet-4-5-20250929",
        input_tokens=400,
        output_tokens=200,
        cache_read_tokens=500,
        cache_write_tokens=100,
        requests=1,
        cache_write_1h_tokens=1000,
    )
    assert parsed.document() == units


def test_one_hour_cache_writes_alone_are_a_count_and_are_stored_only_when_some() -> None:
    only = parse_record_request(
        {"steps": [step(cost=..., units={"model": "m", "cacheWrite1hTokens": 0})]}, now=NOW
    )
    estimate = parse_reserve_request(
        {
            "reservationId": "res_1",
            "estimate": {"provider": "anthropic", "units": {"model": "m", "cacheWrite1hTokens": 10**9}},
        }
    )

    assert only.steps[0].units == Units("m")
    assert "cacheWrite1hTokens" not in Units("m").document()
    assert estimate.units == Units("m", cache_write_1h_tokens=10**9)
