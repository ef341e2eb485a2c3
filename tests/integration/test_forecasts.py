"""(v3) Forecasts and their alerts through the real functions: my_usage, usage_analytics, record_steps.

The functions run on today's clock, so each test builds its month from steps timestamped on
the days before today (the month's own days; for anomalies, the 14 days before today) and
asserts what the SPEC asks for on today's date: a forecast alert only from the 3rd UTC day.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally import layout
from tally_dev import accounts, emulator
from tally_dev.steps import step
from tally_dev.webhook import Receiver


def alerts(kind: str, **where: Any) -> list[dict[str, Any]]:
    docs = (d.to_dict() or {} for d in emulator.db().collection(layout.ALERTS).stream())
    return [d for d in docs if d.get("kind") == kind and all(d.get(k) == v for k, v in where.items())]


def earlier_days(now: datetime, count: int | None = None) -> list[datetime]:
    """Return noon of each day of this month before today (or of the `count` days before today)."""
    days = count if count is not None else now.day - 1
    return [
        (now - timedelta(days=n)).replace(hour=12, minute=0, second=0, microsecond=0)
        for n in range(days, 0, -1)
    ]


def record(user: accounts.User, steps: list[dict[str, Any]]) -> None:
    response = accounts.record(user, {"steps": steps})
    assert response.status_code == 200, response.text


def test_forecast_is_the_same_in_my_usage_and_usage_analytics() -> None:
    now = datetime.now(UTC)
    user, admin = accounts.make_user(), accounts.make_user(claims={"admin": True})
    record(user, [step(cost="1.00", when=day) for day in earlier_days(now)] + [step(cost="0.50")])

    mine = accounts.result_of("my_usage", user, {})["forecast"]
    platform = accounts.result_of("usage_analytics", admin, {"fresh": True})

    assert mine["low"] <= mine["monthEnd"] <= mine["high"]
    assert mine["monthEnd"] >= mine["low"] >= now.day - 1 + 0.5  # never below what is spent
    assert platform["forecast"]["monthEnd"] == pytest.approx(mine["monthEnd"], rel=0.02)  # the only user
    (top,) = platform["topUsers"]
    assert top["userId"] == user.uid
    assert top["monthEnd"] >= now.day - 1 + 0.5


def test_a_pace_past_the_limit_raises_one_forecast_alert_with_twenty_requests_at_the_crossing(
    webhook: Receiver,
) -> None:
    now = datetime.now(UTC)
    user, admin = accounts.make_user(), accounts.make_user(claims={"admin": True})
    accounts.result_of("set_limits", admin, {"userId": user.uid, "monthlyCostLimit": 50})
    days = earlier_days(now)
    if days:
        record(user, [step(cost="1.00", when=day) for day in days])  # about $30 a month: under $50
    assert alerts("forecast", userId=user.uid) == []

    def add(n: int) -> None:  # each adds $0.10 to every day so far: $3 a day in all, past $50 a month
        record(user, [step(cost="0.10", when=day, operation_id=f"op_{n}_{day:%d}") for day in days or [now]])

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(add, range(20)))

    raised = alerts("forecast", userId=user.uid)
    if now.day < 3:  # SPEC: from the 3rd UTC day of the month on
        assert raised == []
        return
    (alert,) = raised
    assert (alert["scope"], alert["window"], alert["threshold"], alert["limit"]) == (
        "user.month.cost",
        now.strftime("%Y-%m"),
        100,
        50,
    )
    assert alert["used"] >= 50
    (delivery, *_) = webhook.wait_for(alert["alertId"])
    assert delivery.signature_valid
    assert (delivery.body["kind"], delivery.body["scope"]) == ("forecast", "user.month.cost")
    assert accounts.result_of("my_usage", user, {})["forecast"]["monthEnd"] >= 50


def test_a_spike_day_raises_one_anomaly_alert_per_scope() -> None:
    now = datetime.now(UTC)
    user = accounts.make_user()
    feature = emulator.unique("spiky")
    history = earlier_days(now, 16)
    record(
        user, [step(cost="0.05", feature=feature, when=day) for day in history]
    )  # two usual weeks, and more

    for _ in range(16):  # $3.20 today: every aggregate shard takes two of these
        record(user, [step(cost="0.20", feature=feature)])

    today = now.strftime("%Y-%m-%d")
    (platform,) = alerts("anomaly", scope="platform.day.cost")
    (by_feature,) = alerts("anomaly", scope=f"feature:{feature}.day.cost")
    assert (platform["window"], by_feature["window"], by_feature["threshold"]) == (today, today, 250)
    assert by_feature["used"] > 2.5 * by_feature["limit"]  # the day so far (when judged), against its usual
    mine = alerts("anomaly", userId=user.uid)  # early in a month, with the previous month's days
    assert [(a["scope"], a["window"]) for a in mine] == [("user.day.cost", today)]
