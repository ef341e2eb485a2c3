"""Recording, batching, retries and errors against a fake of Tally's functions."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from tally_client import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QueueFull,
    Tally,
    TallyError,
    Unauthenticated,
    Unavailable,
)
from tally_fakes import FakeTally, error_body

OPERATION_ID = re.compile(r"usage_\d{13}_[0-9a-f]{16}")


def test_record_queues_until_flush_then_sends_one_step(tally: Tally, fake: FakeTally) -> None:
    operation_id = tally.record(feature="google_maps_autocomplete", provider="google_maps", cost=0.00283)
    assert fake.bodies() == []

    responses = tally.flush()

    assert responses[0]["recorded"] == 1
    (body,) = fake.bodies()
    assert "userId" not in body
    assert "session" not in body
    (step,) = body["steps"]
    assert step["operationId"] == operation_id
    assert OPERATION_ID.fullmatch(operation_id)
    assert step["usageType"] == "API"
    assert step["feature"] == "google_maps_autocomplete"
    assert step["provider"] == "google_maps"
    assert step["cost"] == "0.00283"
    assert step["isBillableRun"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", step["timestamp"])
    assert fake.received[0].headers["Authorization"] == "Bearer token"
    assert tally.pending == 0


@pytest.mark.parametrize(
    ("cost", "wire"),
    [
        (0.1, "0.1"),
        (0.00283, "0.00283"),
        (1e-7, "0.0000001"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("0.123456789123"), "0.123456789123"),
        ("0.017", "0.017"),
        (2, "2"),
        (0, "0"),
        (1000, "1000"),
    ],
)
def test_costs_go_on_the_wire_as_decimal_strings(tally: Tally, fake: FakeTally, cost: Any, wire: str) -> None:
    tally.record(feature="f", provider="p", cost=cost)

    tally.flush()

    assert fake.steps()[0]["cost"] == wire
    assert b'"cost":"' + wire.encode() + b'"' in fake.received[0].raw


def test_all_fields_of_a_step(tally: Tally, fake: FakeTally) -> None:
    when = datetime(2026, 11, 14, 10, 4, 9, 794000, tzinfo=UTC)

    tally.record(
        usage_type="AIUsage",
        feature="chat",
        provider="openai",
        cost=Decimal("0.5"),
        units={"model": "gpt-4o", "inputTokens": 1200, "outputTokens": 350},
        is_billable_run=True,
        timestamp=when,
        metadata={"input": "55 cours", "resultCount": 5, "price": Decimal("1.5")},
        user_id="user-1",
        operation_id="usage_custom_1",
        reservation_id="res_1",
    )
    tally.flush()

    (body,) = fake.bodies()
    assert body["userId"] == "user-1"
    assert body["steps"] == [
        {
            "operationId": "usage_custom_1",
            "usageType": "AI",
            "feature": "chat",
            "provider": "openai",
            "cost": "0.5",
            "units": {"model": "gpt-4o", "inputTokens": 1200, "outputTokens": 350},
            "isBillableRun": True,
            "timestamp": "2026-11-14T10:04:09.794Z",
            "metadata": {"input": "55 cours", "resultCount": 5, "price": "1.5"},
            "reservationId": "res_1",
        }
    ]


def test_units_alone_default_to_usage_type_ai(tally: Tally, fake: FakeTally) -> None:
    tally.record(
        feature="chat", provider="anthropic", units={"model": "claude-3.5-sonnet", "outputTokens": 7}
    )

    tally.flush()

    (step,) = fake.steps()
    assert step["usageType"] == "AI"
    assert "cost" not in step
    assert step["units"] == {"model": "claude-3.5-sonnet", "outputTokens": 7}


def test_epoch_milliseconds_and_iso_timestamps(tally: Tally, fake: FakeTally) -> None:
    tally.record(feature="f", provider="p", cost=1, timestamp=1_760_436_249_794)
    tally.record(feature="f", provider="p", cost=1, timestamp="2026-11-14T12:04:09.794+02:00")

    tally.flush()

    assert [s["timestamp"] for s in fake.steps()] == [1_760_436_249_794, "2026-11-14T10:04:09.794Z"]


def test_operation_ids_are_unique(tally: Tally) -> None:
    ids = {tally.record(feature="f", provider="p", cost=0) for _ in range(2000)}

    assert len(ids) == 2000
    assert all(OPERATION_ID.fullmatch(i) for i in ids)


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"cost": -1}, "cost"),
        ({"cost": 1000.5}, "cost"),
        ({"cost": float("nan")}, "cost"),
        ({"cost": "NaN"}, "cost"),
        ({"cost": "1_000"}, "cost"),
        ({"cost": True}, "cost"),
        ({"cost": None}, "cost"),
        ({"cost": 1, "feature": "bad name"}, "feature"),
        ({"cost": 1, "feature": "chat\n"}, "feature"),
        ({"cost": 1, "feature": "__name__"}, "feature"),
        ({"cost": 1, "provider": "x" * 101}, "provider"),
        ({"cost": 1, "usage_type": "AiUsageX"}, "usageType"),
        ({"cost": 1, "operation_id": "a/b"}, "operationId"),
        ({"cost": 1, "user_id": "a/b"}, "userId"),
        ({"cost": 1, "timestamp": datetime(2026, 1, 1)}, "timestamp"),  # noqa: DTZ001 - naive on purpose
        ({"cost": 1, "timestamp": "yesterday"}, "timestamp"),
        ({"cost": 1, "metadata": {"x": "y" * 5000}}, "metadata"),
        ({"cost": 1, "metadata": {"__key__": 1}}, "metadata"),
        ({"cost": 1, "metadata": {"f": float("inf")}}, "metadata"),
        ({"units": {"model": "gpt-4o"}}, "units"),
        ({"units": {"model": "gpt-4o", "input_tokens": 3}}, "units.input_tokens"),
        ({"units": {"model": "gpt 4o", "inputTokens": 3}}, "units.model"),
        ({"units": {"model": "gpt-4o", "inputTokens": -1}}, "units.inputTokens"),
        ({"units": {"model": "gpt-4o", "inputTokens": 10**9 + 1}}, "units.inputTokens"),
    ],
)
def test_invalid_values_raise_before_anything_is_queued(
    tally: Tally, fields: dict[str, Any], bad_field: str
) -> None:
    step: dict[str, Any] = {"feature": "f", "provider": "p", **fields}

    with pytest.raises(InvalidArgument) as caught:
        tally.record(**step)

    assert caught.value.details[0]["field"] == bad_field
    assert caught.value.http_status is None
    assert tally.pending == 0


def test_steps_of_different_users_go_in_separate_requests(tally: Tally, fake: FakeTally) -> None:
    tally.record(feature="f", provider="p", cost=1, user_id="alice")
    tally.record(feature="f", provider="p", cost=1, user_id="bob")
    tally.record(feature="f", provider="p", cost=1, user_id="alice")

    tally.flush()

    assert [(b["userId"], len(b["steps"])) for b in fake.bodies()] == [("alice", 2), ("bob", 1)]


def test_101_steps_make_two_requests(tally: Tally, fake: FakeTally) -> None:
    ids = [tally.record(feature="f", provider="p", cost="0.01") for _ in range(101)]

    tally.flush()

    assert [len(body["steps"]) for body in fake.bodies()] == [100, 1]
    assert [s["operationId"] for s in fake.steps()] == ids


def test_21_distinct_features_make_two_requests(tally: Tally, fake: FakeTally) -> None:
    for n in range(21):
        tally.record(feature=f"feature_{n}", provider="p", cost=1)

    tally.flush()

    bodies = fake.bodies()
    assert [len(body["steps"]) for body in bodies] == [20, 1]
    assert all(len({s["feature"] for s in body["steps"]}) <= 20 for body in bodies)


def test_21_distinct_providers_make_two_requests(tally: Tally, fake: FakeTally) -> None:
    for n in range(30):
        tally.record(feature="f", provider=f"provider_{n % 21}", cost=1)

    tally.flush()

    bodies = fake.bodies()
    assert len(bodies) == 2
    assert all(len({s["provider"] for s in body["steps"]}) <= 20 for body in bodies)
    assert sum(len(body["steps"]) for body in bodies) == 30


def test_21_distinct_models_make_two_requests(tally: Tally, fake: FakeTally) -> None:
    ids = [
        tally.record(feature="chat", provider="openai", units={"model": f"model-{n}", "inputTokens": 1})
        for n in range(21)
    ]

    tally.flush()

    bodies = fake.bodies()
    assert [len(body["steps"]) for body in bodies] == [20, 1]
    assert list(fake.recorded) == ids


def test_names_and_models_split_at_whichever_bound_comes_first(tally: Tally, fake: FakeTally) -> None:
    for n in range(60):
        tally.record(
            feature=f"feature_{n % 25}",
            provider=f"provider_{n % 7}",
            units={"model": f"model-{n % 23}", "outputTokens": 1},
        )
        tally.record(feature="f", provider="p", cost=1)  # steps without units name no model

    tally.flush()

    bodies = fake.bodies()
    for body in bodies:
        assert len({s["feature"] for s in body["steps"]}) <= 20
        assert len({s["provider"] for s in body["steps"]}) <= 20
        assert len({s["units"]["model"] for s in body["steps"] if "units" in s}) <= 20
    assert len(fake.recorded) == 120
    assert len(fake.received) == len(bodies)


def test_a_body_is_filled_up_to_256_kib_and_never_over(tally: Tally, fake: FakeTally) -> None:
    for n in range(100):
        tally.record(feature="f", provider="p", cost=1, metadata={"blob": "x" * (3900 + n)})

    tally.flush()

    sizes = [len(r.raw) for r in fake.received]
    assert all(size <= 256 * 1024 for size in sizes)
    assert sizes[0] > 256 * 1024 - 4100  # the next step would not have fitted
    assert len(fake.recorded) == 100


def test_a_repeated_operation_id_goes_in_another_request(tally: Tally, fake: FakeTally) -> None:
    tally.record(feature="f", provider="p", cost=1, operation_id="usage_repeated_1")
    tally.record(feature="f", provider="p", cost=1, operation_id="usage_repeated_1")

    responses = tally.flush()

    assert [(r["recorded"], r["duplicates"]) for r in responses] == [(1, 0), (0, 1)]


def test_a_session_over_every_bound_completes_only_with_its_last_request(
    tally: Tally, fake: FakeTally
) -> None:
    with tally.session(feature="assistant") as session:
        for n in range(130):
            session.step(
                provider=f"provider_{n % 21}",
                feature=f"feature_{n % 22}",
                units={"model": f"model-{n % 23}", "inputTokens": n},
            )

    bodies = fake.bodies()
    assert len(bodies) >= 7
    assert [b["session"]["complete"] for b in bodies] == [False] * (len(bodies) - 1) + [True]
    assert len(fake.recorded) == 130
    assert session.id in fake.completed_sessions


def test_big_metadata_splits_requests_under_the_body_limit(tally: Tally, fake: FakeTally) -> None:
    for _ in range(100):
        tally.record(feature="f", provider="p", cost=1, metadata={"blob": "x" * 4000})

    tally.flush()

    assert len(fake.bodies()) >= 2
    assert all(len(r.raw) < 256 * 1024 for r in fake.received)
    assert len(fake.steps()) == 100


def test_a_full_batch_is_sent_by_the_background_thread(tally: Tally, fake: FakeTally) -> None:
    for _ in range(100):
        tally.record(feature="f", provider="p", cost=1)

    fake.wait_for(lambda: len(fake.steps()) == 100)

    assert [len(b["steps"]) for b in fake.bodies()] == [100]


def test_the_timer_sends_queued_steps(make_tally: Callable[..., Tally], fake: FakeTally) -> None:
    tally = make_tally(flush_interval=0.05)

    tally.record(feature="f", provider="p", cost=1)

    fake.wait_for(lambda: len(fake.steps()) == 1 and tally.pending == 0)  # the answer arrives after the body


def test_close_sends_what_is_queued(fake: FakeTally) -> None:
    with Tally(fake.url, id_token=lambda: "token", flush_interval=None) as tally:
        tally.record(feature="f", provider="p", cost=1)

    assert len(fake.steps()) == 1
    with pytest.raises(TallyError):
        tally.record(feature="f", provider="p", cost=1)


def test_app_check_token_is_sent(make_tally: Callable[..., Tally], fake: FakeTally) -> None:
    tally = make_tally(app_check_token=lambda: "app-check-token")
    tally.record(feature="f", provider="p", cost=1)

    tally.flush()

    assert fake.received[0].headers["X-Firebase-Appcheck"] == "app-check-token"


def test_a_retry_after_503_resends_the_identical_body(tally: Tally, fake: FakeTally) -> None:
    fake.inject("record_steps", 503, error_body("UNAVAILABLE", "try again"))
    ids = [tally.record(feature="f", provider="p", cost="0.1") for _ in range(3)]

    responses = tally.flush()

    first, second = fake.received
    assert first.raw == second.raw
    assert [s["operationId"] for s in second.body["steps"]] == ids
    assert len(responses) == 1
    assert responses[0]["recorded"] == 3


@pytest.mark.parametrize("status", [500, 502, 504, 429])
def test_other_transient_statuses_are_retried(tally: Tally, fake: FakeTally, status: int) -> None:
    fake.inject("record_steps", status, {"error": {"status": "INTERNAL", "message": "oops"}})
    tally.record(feature="f", provider="p", cost=1)

    tally.flush()

    assert len(fake.received) == 2
    assert fake.received[0].raw == fake.received[1].raw


def test_network_errors_are_retried_with_the_same_body(
    make_tally: Callable[..., Tally], fake: FakeTally
) -> None:
    class Flaky(requests.Session):
        failures = 2
        sent: list[bytes] = []  # noqa: RUF012 - a test double

        def post(
            self, url: str | bytes, data: Any = None, json: Any = None, **kwargs: Any
        ) -> requests.Response:
            self.sent.append(data)
            if self.failures:
                self.failures -= 1
                raise requests.ConnectionError("connection reset")
            return super().post(url, data=data, json=json, **kwargs)

    http = Flaky()
    tally = make_tally(session=http)
    tally.record(feature="f", provider="p", cost=1)

    tally.flush()

    assert len(http.sent) == 3
    assert len(set(http.sent)) == 1
    assert len(fake.received) == 1


def test_after_every_retry_fails_the_steps_stay_queued(tally: Tally, fake: FakeTally) -> None:
    fake.inject("record_steps", 503, error_body("UNAVAILABLE", "down"), times=4)
    operation_id = tally.record(feature="f", provider="p", cost=1)

    with pytest.raises(Unavailable):
        tally.flush()
    assert tally.pending == 1
    tally.flush()

    assert len(fake.received) == 5
    assert {s["operationId"] for s in fake.steps()} == {operation_id}
    assert tally.pending == 0


def test_a_400_raises_with_the_server_message_and_drops_the_batch(tally: Tally, fake: FakeTally) -> None:
    details = [{"field": "steps[0].timestamp", "problem": "older than 35 days"}]
    fake.inject("record_steps", 400, error_body("INVALID_ARGUMENT", "steps[0].timestamp: older", details))
    operation_id = tally.record(feature="f", provider="p", cost=1, timestamp="2026-01-01T00:00:00Z")

    with pytest.raises(InvalidArgument) as caught:
        tally.flush()

    error = caught.value
    assert error.status == "INVALID_ARGUMENT"
    assert error.message == "steps[0].timestamp: older"
    assert error.details == details
    assert error.http_status == 400
    assert [s["operationId"] for s in error.steps] == [operation_id]
    assert len(fake.received) == 1
    assert tally.pending == 0


@pytest.mark.parametrize(
    ("http_status", "status", "error_type"),
    [
        (403, "PERMISSION_DENIED", PermissionDenied),
        (404, "NOT_FOUND", NotFound),
        (409, "FAILED_PRECONDITION", FailedPrecondition),
    ],
)
def test_4xx_statuses_raise_their_error_type(
    tally: Tally, fake: FakeTally, http_status: int, status: str, error_type: type[TallyError]
) -> None:
    fake.inject("record_steps", http_status, error_body(status, "no"))
    tally.record(feature="f", provider="p", cost=1)

    with pytest.raises(error_type) as caught:
        tally.flush()

    assert caught.value.status == status
    assert caught.value.message == "no"
    assert len(fake.received) == 1


def test_a_refused_batch_does_not_block_the_next_ones(tally: Tally, fake: FakeTally) -> None:
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "not yours"))
    tally.record(feature="f", provider="p", cost=1, user_id="someone-else")
    kept = tally.record(feature="f", provider="p", cost=1, user_id="me")

    with pytest.raises(PermissionDenied):
        tally.flush()
    tally.flush()

    assert fake.bodies()[-1]["steps"][0]["operationId"] == kept


def test_a_401_is_retried_once_with_a_fresh_token(make_tally: Callable[..., Tally], fake: FakeTally) -> None:
    tokens = iter(["stale", "fresh"])
    fake.valid_tokens = {"fresh"}
    tally = make_tally(id_token=lambda: next(tokens))
    tally.record(feature="f", provider="p", cost=1)

    tally.flush()

    assert [r.headers["Authorization"] for r in fake.received] == ["Bearer stale", "Bearer fresh"]
    assert fake.received[0].raw == fake.received[1].raw


def test_a_second_401_raises_unauthenticated(make_tally: Callable[..., Tally], fake: FakeTally) -> None:
    fake.valid_tokens = {"never"}
    tally = make_tally()
    tally.record(feature="f", provider="p", cost=1)

    with pytest.raises(Unauthenticated) as caught:
        tally.flush()

    assert caught.value.message == "the ID token has expired"
    assert len(fake.received) == 2


def test_a_failing_token_source_keeps_the_steps(make_tally: Callable[..., Tally], fake: FakeTally) -> None:
    def broken() -> str:
        raise OSError("no network for the token")

    tally = make_tally(id_token=broken)
    tally.record(feature="f", provider="p", cost=1)

    with pytest.raises(Unavailable):
        tally.flush()

    assert tally.pending == 1
    assert fake.received == []


def test_background_failures_are_logged_and_retried_later(
    make_tally: Callable[..., Tally], fake: FakeTally, caplog: pytest.LogCaptureFixture
) -> None:
    fake.inject("record_steps", 503, error_body("UNAVAILABLE", "down"), times=2)
    tally = make_tally(flush_interval=0.05, max_retries=1)
    caplog.set_level(logging.WARNING, logger="tally_client")

    operation_id = tally.record(feature="f", provider="p", cost=1)

    fake.wait_for(lambda: len(fake.received) >= 3)
    fake.wait_for(lambda: tally.pending == 0)
    assert {s["operationId"] for s in fake.steps()} == {operation_id}
    assert any("kept for the next one" in r.getMessage() for r in caplog.records)


def test_the_queue_is_bounded(make_tally: Callable[..., Tally]) -> None:
    tally = make_tally(max_queued_steps=2)
    tally.record(feature="f", provider="p", cost=1)
    tally.record(feature="f", provider="p", cost=1)

    with pytest.raises(QueueFull):
        tally.record(feature="f", provider="p", cost=1)


def test_my_usage_uses_the_callable_protocol(tally: Tally, fake: FakeTally) -> None:
    usage = tally.my_usage(month="2026-11")

    assert usage["month"] == "2026-11"
    assert fake.bodies("my_usage") == [{"data": {"month": "2026-11"}}]


def test_the_wire_body_is_compact_json(tally: Tally, fake: FakeTally) -> None:
    tally.record(feature="f", provider="p", cost=1, metadata={"text": "café"})

    tally.flush()

    raw = fake.received[0].raw
    assert json.loads(raw) == fake.bodies()[0]
    assert "café".encode() in raw
    assert b", " not in raw


def test_a_bad_url_keeps_the_steps_and_close_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    tally = Tally("not-a-url", id_token=lambda: "token", flush_interval=None, max_retries=3)
    tally.record(feature="f", provider="p", cost=1)

    with pytest.raises(Unavailable, match="MissingSchema"):
        tally.flush()
    assert tally.pending == 1
    tally.close()

    assert any("never acknowledged" in r.getMessage() for r in caplog.records)
