"""The gate: reserve_spend before spending, settle with reservationId, release otherwise."""

from __future__ import annotations

import logging
import re

import pytest

from tally_client import BudgetExceeded, InvalidArgument, NotFound, Tally, current_reservation
from tally_fakes import FakeTally, error_body


def test_an_allowed_reservation_is_settled_by_the_recorded_step(tally: Tally, fake: FakeTally) -> None:
    with tally.reserve(
        user_id="user-1", estimate="0.05", is_billable_run=True, ttl_seconds=120
    ) as reservation:
        assert reservation.allowed
        operation_id = reservation.record(
            feature="chat", provider="openai", cost="0.04", is_billable_run=True
        )

    (reserve,) = fake.bodies("reserve_spend")
    assert reserve == {
        "userId": "user-1",
        "reservationId": reservation.reservation_id,
        "estimate": {"cost": "0.05", "isBillableRun": True},
        "ttlSeconds": 120,
    }
    assert re.fullmatch(r"res_\d{13}_[0-9a-f]{16}", reservation.reservation_id)
    (body,) = fake.bodies("record_steps")
    assert body["userId"] == "user-1"
    (step,) = body["steps"]
    assert step["operationId"] == operation_id
    assert step["reservationId"] == reservation.reservation_id
    assert step["cost"] == "0.04"
    assert fake.bodies("release_spend") == []
    assert reservation.usage == {"month": "2026-11", "totalCost": 1.25}
    assert reservation.expires_at == "2026-11-14T10:09:09.794Z"


def test_a_refused_reservation_raises_budget_exceeded(tally: Tally, fake: FakeTally) -> None:
    usage = {"month": "2026-11", "totalCost": 5.0, "limits": {"exceeded": True}}
    fake.reserve_answer = {"allowed": False, "reason": "MONTHLY_COST_LIMIT", "reserved": 0, "usage": usage}
    ran = False

    with pytest.raises(BudgetExceeded) as caught, tally.reserve(user_id="user-1", estimate=0.05):
        ran = True

    assert not ran
    assert caught.value.reason == "MONTHLY_COST_LIMIT"
    assert caught.value.usage == usage
    assert caught.value.reservation_id == fake.bodies("reserve_spend")[0]["reservationId"]
    assert fake.bodies("record_steps") == []
    assert fake.bodies("release_spend") == []


def test_free_runs_refusal_reports_its_reason(tally: Tally, fake: FakeTally) -> None:
    fake.reserve_answer = {"allowed": False, "reason": "FREE_RUNS", "usage": {}}

    with pytest.raises(BudgetExceeded) as caught:
        tally.reserve(estimate=0.01, is_billable_run=True)

    assert caught.value.reason == "FREE_RUNS"


def test_the_hold_is_released_when_the_block_raises(tally: Tally, fake: FakeTally) -> None:
    with pytest.raises(RuntimeError), tally.reserve(user_id="user-1", estimate="0.05") as reservation:
        raise RuntimeError("provider call failed")

    assert fake.bodies("release_spend") == [{"userId": "user-1", "reservationId": reservation.reservation_id}]
    assert fake.bodies("record_steps") == []


def test_usage_recorded_before_an_exception_is_sent_and_the_hold_released(
    tally: Tally, fake: FakeTally
) -> None:
    reservation = tally.reserve(estimate="0.05")

    def app_code() -> None:
        with reservation:
            reservation.record(feature="chat", provider="openai", cost="0.01")
            raise RuntimeError("later failure")

    with pytest.raises(RuntimeError):
        app_code()

    assert fake.steps()[0]["reservationId"] == reservation.reservation_id
    assert fake.bodies("release_spend") == [{"reservationId": reservation.reservation_id}]


def test_the_hold_is_released_when_nothing_was_recorded(tally: Tally, fake: FakeTally) -> None:
    with tally.reserve(user_id="user-1", estimate="0.05") as reservation:
        pass

    assert fake.bodies("release_spend") == [{"userId": "user-1", "reservationId": reservation.reservation_id}]


def test_a_units_estimate(tally: Tally, fake: FakeTally) -> None:
    estimate = {"model": "gpt-4o", "inputTokens": 2000, "outputTokens": 500}

    with tally.reserve(estimate=estimate, ttl_seconds=10) as reservation:
        reservation.step(feature="chat", provider="openai", units={**estimate, "outputTokens": 420})

    assert fake.bodies("reserve_spend")[0]["estimate"] == {"units": estimate, "isBillableRun": False}
    assert fake.steps()[0]["units"]["outputTokens"] == 420


def test_only_the_first_step_carries_the_reservation_id(tally: Tally, fake: FakeTally) -> None:
    with tally.reserve(estimate="0.05") as reservation:
        reservation.record(feature="chat", provider="openai", cost="0.01")
        reservation.record(feature="chat", provider="openai", cost="0.02")

    assert [s.get("reservationId") for s in fake.steps()] == [reservation.reservation_id, None]


def test_a_session_reservation_records_into_the_session(tally: Tally, fake: FakeTally) -> None:
    with tally.session(feature="assistant", user_id="user-1") as session:
        with session.reserve(estimate="0.05") as reservation:
            reservation.record(provider="openai", cost="0.03")
        assert len(fake.bodies("record_steps")) == 1

    first, last = fake.bodies("record_steps")
    assert first["session"] == {"id": session.id, "feature": "assistant", "complete": False}
    assert first["steps"][0]["reservationId"] == reservation.reservation_id
    assert first["steps"][0]["feature"] == "assistant"
    assert last["session"]["complete"] is True
    assert fake.bodies("reserve_spend")[0]["userId"] == "user-1"


def test_a_server_without_reserve_spend_raises_not_found(tally: Tally, fake: FakeTally) -> None:
    fake.inject("reserve_spend", 404, error_body("NOT_FOUND", "no such function"))

    with pytest.raises(NotFound):
        tally.reserve(estimate="0.05")


@pytest.mark.parametrize("ttl", [9, 3601, 2.5])
def test_the_ttl_is_checked(tally: Tally, ttl: object) -> None:
    with pytest.raises(InvalidArgument):
        tally.reserve(estimate="0.05", ttl_seconds=ttl)  # type: ignore[arg-type]


def test_the_current_reservation_is_set_inside_the_block_only(tally: Tally) -> None:
    with tally.reserve(estimate="0.05") as reservation:
        assert current_reservation() is reservation

    assert current_reservation() is None


def test_a_units_estimate_carries_its_provider_and_feature(tally: Tally, fake: FakeTally) -> None:
    estimate = {"model": "gpt-4o", "inputTokens": 2000, "outputTokens": 500}

    with tally.reserve(estimate=estimate, provider="openai", feature="chat", user_id="user-1") as reservation:
        reservation.record(units={**estimate, "outputTokens": 420})

    assert fake.bodies("reserve_spend")[0]["estimate"] == {
        "units": estimate,
        "provider": "openai",
        "feature": "chat",
        "isBillableRun": False,
    }
    (step,) = fake.steps()
    assert (step["provider"], step["feature"]) == ("openai", "chat")
    assert step["reservationId"] == reservation.reservation_id


def test_a_cost_estimate_may_name_its_provider_and_feature(tally: Tally, fake: FakeTally) -> None:
    with tally.reserve(estimate="0.017", provider="google_maps", feature="place_details") as reservation:
        reservation.record(cost="0.017")

    estimate = fake.bodies("reserve_spend")[0]["estimate"]
    assert estimate == {
        "cost": "0.017",
        "provider": "google_maps",
        "feature": "place_details",
        "isBillableRun": False,
    }
    assert fake.steps()[0]["feature"] == "place_details"


def test_a_session_reservation_names_the_sessions_feature(tally: Tally, fake: FakeTally) -> None:
    with tally.session(feature="assistant", user_id="user-1") as session:
        estimate = {"model": "claude-haiku-4-5", "outputTokens": 100}
        with session.reserve(estimate=estimate, provider="anthropic") as reservation:
            reservation.record(units=estimate)

    assert fake.bodies("reserve_spend")[0]["estimate"]["feature"] == "assistant"
    assert fake.bodies("reserve_spend")[0]["estimate"]["provider"] == "anthropic"
    assert fake.steps()[0]["provider"] == "anthropic"


def test_a_units_estimate_without_provider_is_sent_and_logged(
    tally: Tally, fake: FakeTally, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tally_client")

    tally.reserve(estimate={"model": "gpt-4o", "inputTokens": 10})

    assert "provider" not in fake.bodies("reserve_spend")[0]["estimate"]
    assert any("without provider" in r.getMessage() for r in caplog.records)


def test_recording_needs_a_provider_when_the_reservation_has_none(tally: Tally) -> None:
    reservation = tally.reserve(estimate="0.05")

    with pytest.raises(InvalidArgument):
        reservation.record(feature="chat", cost="0.01")


def test_an_invalid_estimate_provider_is_refused_before_sending(tally: Tally, fake: FakeTally) -> None:
    with pytest.raises(InvalidArgument) as caught:
        tally.reserve(estimate="0.05", provider="open ai")

    assert caught.value.details[0]["field"] == "estimate.provider"
    assert fake.received == []
