"""Budgets enforced before spending, and alerts with signed webhooks, against the emulators."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import requests

from tally import layout
from tally.config import Settings
from tally.services.sweep import run as run_sweep
from tally_dev import accounts, emulator
from tally_dev.steps import step
from tally_dev.webhook import Receiver


def reserve(user: accounts.User, rid: str, cost: str = "0.5", **estimate: Any) -> dict[str, Any]:
    body = {"reservationId": rid, "estimate": {"cost": cost, **estimate}}
    response = accounts.record(user, body, endpoint="reserve_spend")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def spend(user: accounts.User, cost: str, **extra: Any) -> dict[str, Any]:
    response = accounts.record(user, {"steps": [step(cost=cost, **extra)]})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def held(user: accounts.User) -> dict[str, int]:
    found: dict[str, int] = emulator.document(layout.user_path(user.uid))["usage"].get("held", {})
    return found


def test_thirty_concurrent_reservations_admit_exactly_six(capsys: pytest.CaptureFixture[str]) -> None:
    user = accounts.make_user()
    spend(user, "2.00")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: reserve(user, f"res_{n}"), range(30)))
    elapsed = time.perf_counter() - started

    assert sum(a["allowed"] for a in answers) == 6
    assert {a["reason"] for a in answers if not a["allowed"]} == {"MONTHLY_COST_LIMIT"}
    assert max(a["usage"]["limits"]["held"] for a in answers) <= 3.0
    assert held(user)["costNanos"] == 3_000_000_000
    with capsys.disabled():
        print(
            f"\n[measure] 30 concurrent reserve_spend of $0.50 at $2.00 of $5.00: 6 allowed, {elapsed:.2f} s"
        )


def test_billable_runs_are_held_against_the_free_runs() -> None:
    admin, user = accounts.make_user(claims={"admin": True}), accounts.make_user()
    accounts.result_of("set_limits", admin, {"userId": user.uid, "monthlyFreeRuns": 3})
    spend(user, "0.01", billable=True)

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda n: reserve(user, f"run_{n}", "0.01", isBillableRun=True), range(10)))

    assert sum(a["allowed"] for a in answers) == 2
    assert {a["reason"] for a in answers if not a["allowed"]} == {"FREE_RUNS"}
    assert held(user)["runs"] == 2


def test_a_repeated_reservation_id_returns_the_same_decision() -> None:
    user = accounts.make_user()

    first, again = reserve(user, "res_same", "4"), reserve(user, "res_same", "4")
    refused = reserve(user, "res_over", "4")

    assert again == first
    assert first["allowed"] is True
    assert (refused["allowed"], reserve(user, "res_over", "4")["allowed"]) == (False, False)
    assert held(user)["costNanos"] == 4_000_000_000


def test_settling_records_the_actual_cost_even_above_the_estimate() -> None:
    user = accounts.make_user()
    reserve(user, "res_chat", "0.5")

    body = spend(user, "1.25", reservationId="res_chat")

    assert body["usage"]["totalCost"] == 1.25
    assert (body["usage"]["limits"]["held"], body["usage"]["limits"]["costRemaining"]) == (0.0, 3.75)
    assert emulator.document(layout.reservation_path(user.uid, "res_chat"))["status"] == "settled"


def test_release_and_expiry_free_the_hold() -> None:
    user = accounts.make_user()
    reserve(user, "res_release", "1")
    response = accounts.record(
        user,
        {"reservationId": "res_expire", "estimate": {"cost": "1"}, "ttlSeconds": 10},
        endpoint="reserve_spend",
    )
    assert response.json()["allowed"] is True

    released = accounts.record(user, {"reservationId": "res_release"}, endpoint="release_spend")
    again = accounts.record(user, {"reservationId": "res_release"}, endpoint="release_spend")
    unknown = accounts.record(user, {"reservationId": "res_never"}, endpoint="release_spend")
    swept = run_sweep(
        store=emulator.store(),
        settings=Settings.from_env(),
        now=emulator.utc_now() + timedelta(seconds=11),
        idle_minutes=30,
        post=lambda *a: 204,
        clock=emulator.utc_now,
    )

    assert (released.json()["released"], again.json()["released"], unknown.status_code) == (True, False, 404)
    assert swept.holds_expired == 1
    assert held(user) == {"costNanos": 0, "runs": 0}


def test_reserve_spend_refuses_bad_input_and_other_users() -> None:
    user, other = accounts.make_user(), accounts.make_user()

    bad_ttl = accounts.record(
        user, {"reservationId": "r", "estimate": {"cost": 1}, "ttlSeconds": 5}, endpoint="reserve_spend"
    )
    no_estimate = accounts.record(user, {"reservationId": "r", "estimate": {}}, endpoint="reserve_spend")
    for_other = accounts.record(
        user, {"userId": other.uid, "reservationId": "r", "estimate": {"cost": 1}}, endpoint="reserve_spend"
    )
    anonymous = requests.post(emulator.functions_url("reserve_spend"), json={}, timeout=30)

    assert (bad_ttl.status_code, bad_ttl.json()["error"]["details"][0]["field"]) == (400, "ttlSeconds")
    assert (no_estimate.status_code, no_estimate.json()["error"]["details"][0]["field"]) == (400, "estimate")
    assert (for_other.status_code, anonymous.status_code) == (403, 401)


def alerts_of(uid: str | None, kinds: tuple[str, ...] = ("cost", "runs")) -> list[dict[str, Any]]:
    """Return the user's (None: the platform's) alerts of these kinds (v2's: a forecast's come on top)."""
    docs = (d.to_dict() or {} for d in emulator.db().collection(layout.ALERTS).stream())
    return [d for d in docs if d.get("userId") == uid and d.get("kind") in kinds]


def test_twenty_concurrent_requests_across_80_and_100_percent_raise_one_alert_each(
    webhook: Receiver, this_month: str
) -> None:
    user = accounts.make_user()
    month = this_month

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda _: spend(user, "0.3"), range(20)))

    raised = alerts_of(user.uid)
    assert sorted((a["kind"], a["threshold"]) for a in raised) == [("cost", 80), ("cost", 100)]
    for threshold in (80, 100):
        alert_id = layout.alert_id(user.uid, month, "cost", threshold)
        deliveries = webhook.wait_for(alert_id)
        assert all(d.signature_valid for d in deliveries)
        assert deliveries[-1].body["threshold"] == threshold


def test_a_failed_delivery_is_retried_until_the_receiver_answers(webhook: Receiver, this_month: str) -> None:
    user = accounts.make_user()
    alert_id = layout.alert_id(user.uid, this_month, "cost", 80)
    webhook.fail_next(2, alert_id)

    spend(user, "4.5")
    deliveries = webhook.wait_for(alert_id)

    assert [d.answered for d in deliveries] == [500, 500, 204]
    assert all(d.signature_valid for d in deliveries)
    doc = emulator.wait_until(
        lambda: (d := emulator.document(layout.alert_path(alert_id))).get("deliveredAt") and d
    )
    assert doc["attempts"] == 3


def test_a_redirect_is_a_failed_delivery_and_is_never_followed(webhook: Receiver, this_month: str) -> None:
    user = accounts.make_user()
    alert_id = layout.alert_id(user.uid, this_month, "cost", 80)
    attempts = emulator.settings().webhook_attempts
    webhook.redirect_next(attempts, "/moved", alert_id)  # a GET there would get a 200 page

    def settled() -> dict[str, Any] | None:
        doc = emulator.document(layout.alert_path(alert_id))
        return doc if doc.get("deliveredAt") or doc.get("attempts") == attempts else None

    spend(user, "4.5")
    doc = emulator.wait_until(settled)

    assert (doc.get("deliveredAt"), doc["attempts"], doc["lastStatus"]) == (None, attempts, 302)
    deliveries = webhook.received(alert_id)
    assert [d.answered for d in deliveries] == [302] * attempts
    assert all(d.signature_valid for d in deliveries)
    assert (webhook.visits, [d for d in webhook.deliveries if d.path == "/moved"]) == ([], [])


def test_lowering_a_limit_below_usage_raises_the_alert(webhook: Receiver, this_month: str) -> None:
    admin, user = accounts.make_user(claims={"admin": True}), accounts.make_user()
    spend(user, "1")
    assert alerts_of(user.uid) == []

    accounts.result_of("set_limits", admin, {"userId": user.uid, "monthlyCostLimit": 1.1})
    mine = accounts.call("my_usage", user)[1]["result"]

    assert [(a["threshold"], a["raisedBy"]) for a in alerts_of(user.uid)] == [(80, "set_limits")]
    assert mine["limits"]["warning"] is True
    webhook.wait_for(layout.alert_id(user.uid, this_month, "cost", 80))


def test_the_platform_budget_alert_fires_once(webhook: Receiver) -> None:
    recorder = accounts.make_user(claims={"recorder": True})
    users = [accounts.make_user() for _ in range(4)]
    admin = accounts.make_user(claims={"admin": True})

    def big(n: int) -> None:
        body = {"userId": users[n % 4].uid, "steps": [step(cost="125") for _ in range(2)]}
        assert accounts.record(recorder, body).status_code == 200

    with ThreadPoolExecutor(max_workers=8) as pool:  # $2,000 against the test project's $1,000 budget
        list(pool.map(big, range(8)))
    report = accounts.result_of("usage_analytics", admin, {"fresh": True})

    platform = alerts_of(None)
    assert sorted(a["threshold"] for a in platform) == [80, 100]
    assert {a["alertId"] for a in report["alerts"]} >= {a["alertId"] for a in platform}
    for alert in platform:
        webhook.wait_for(alert["alertId"])
