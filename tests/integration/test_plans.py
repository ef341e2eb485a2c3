"""(v3) Plans, day windows and feature limits, through the real functions on the emulators."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from tally_dev import accounts, emulator
from tally_dev.steps import step


def admin() -> accounts.User:
    return accounts.make_user(claims={"admin": True})


def reserve(user: accounts.User, rid: str, cost: str, **estimate: Any) -> dict[str, Any]:
    body = {"reservationId": rid, "estimate": {"cost": cost, **estimate}, "ttlSeconds": 60}
    response = accounts.record(user, body, endpoint="reserve_spend")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def scopes(usage: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["scope"]: s for s in usage["limits"]["scopes"]}


def test_plans_are_set_and_listed_by_admins_only() -> None:
    boss, someone = admin(), accounts.make_user()
    plan = emulator.unique("pro")

    stored = accounts.result_of(
        "set_plan", boss, {"plan": plan, "limits": {"monthlyCostLimit": 50, "dailyFreeRuns": 20}}
    )
    listed = accounts.result_of("list_plans", boss, {})
    denied, _ = accounts.call("set_plan", someone, {"plan": plan, "limits": {}})
    bad, body = accounts.call("set_plan", boss, {"plan": plan, "limits": {"dailyRuns": 1}})

    assert stored == {"plan": plan, "limits": {"monthlyCostLimit": 50.0, "dailyFreeRuns": 20}}
    assert listed["plans"][0]["plan"] == "default"
    assert {"plan": plan, "limits": {"monthlyCostLimit": 50.0, "dailyFreeRuns": 20}} in listed["plans"]
    assert (denied, bad) == (403, 400)
    assert "limits.dailyRuns" in body["error"]["message"]


def test_precedence_is_per_field_override_then_plan_then_default() -> None:
    boss, user = admin(), accounts.make_user()
    plan = emulator.unique("pro")
    accounts.result_of(
        "set_plan",
        boss,
        {"plan": plan, "limits": {"monthlyCostLimit": 50, "dailyCostLimit": 5, "dailyFreeRuns": 7}},
    )

    accounts.result_of("set_limits", boss, {"userId": user.uid, "plan": plan, "dailyCostLimit": 2})
    mine = accounts.result_of("my_usage", user, {})

    assert mine["limits"]["monthlyCostLimit"] == 50.0  # the plan's
    assert mine["limits"]["monthlyFreeRuns"] == 100  # the default plan's
    shown = scopes(mine)
    assert shown["user.day.cost"]["limit"] == 2.0  # the user's own override
    assert shown["user.day.runs"]["limit"] == 7  # the plan's


def test_the_plan_a_claim_names_applies_until_one_is_assigned() -> None:
    boss = admin()
    claimed, assigned = emulator.unique("claimed"), emulator.unique("assigned")
    accounts.result_of("set_plan", boss, {"plan": claimed, "limits": {"monthlyCostLimit": 40}})
    accounts.result_of("set_plan", boss, {"plan": assigned, "limits": {"monthlyCostLimit": 9}})
    user = accounts.make_user(claims={"tallyPlan": claimed})
    backend = accounts.make_user(claims={"recorder": True})

    own = accounts.result_of("my_usage", user, {})
    for_them = accounts.record(backend, {"userId": user.uid, "steps": [step(cost="0.01")]}).json()
    accounts.result_of("set_limits", boss, {"userId": user.uid, "plan": assigned})
    after = accounts.result_of("my_usage", user, {})

    assert own["limits"]["monthlyCostLimit"] == 40.0  # from the caller's own token
    assert for_them["usage"]["limits"]["monthlyCostLimit"] == 40.0  # from Firebase Auth, for a recorder
    assert after["limits"]["monthlyCostLimit"] == 9.0  # an assigned plan wins over the claim


def test_thirty_concurrent_reservations_admit_exactly_what_fits_the_day() -> None:
    boss, user = admin(), accounts.make_user()
    accounts.result_of("set_limits", boss, {"userId": user.uid, "dailyCostLimit": 2, "monthlyCostLimit": 100})
    accounts.record(user, {"steps": [step(cost="0.50")]})

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: reserve(user, f"day_{n}", "0.25"), range(30)))

    assert sum(a["allowed"] for a in answers) == 6  # $0.50 + 6 x $0.25 = $2.00
    assert {a["reason"] for a in answers if not a["allowed"]} == {"DAILY_COST_LIMIT"}


def test_thirty_concurrent_reservations_of_a_feature_admit_exactly_its_daily_runs() -> None:
    boss, user = admin(), accounts.make_user()
    accounts.result_of(
        "set_limits", boss, {"userId": user.uid, "features": {"image_generation": {"dailyRuns": 10}}}
    )
    accounts.record(user, {"steps": [step(cost="0.01", feature="image_generation")]})

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(
            pool.map(lambda n: reserve(user, f"img_{n}", "0.01", feature="image_generation"), range(30))
        )
    chat = reserve(user, "chat_1", "0.01", feature="chat")

    assert sum(a["allowed"] for a in answers) == 9  # 1 recorded + 9 held: 10 runs
    assert {a["reason"] for a in answers if not a["allowed"]} == {"FEATURE_RUNS"}
    assert chat["allowed"] is True
    assert scopes(chat["usage"])["feature:image_generation.day.runs"]["remaining"] == 0


def test_a_refusal_names_the_first_scope_in_the_specs_order() -> None:
    boss, user = admin(), accounts.make_user()
    accounts.result_of(
        "set_limits",
        boss,
        {
            "userId": user.uid,
            "dailyCostLimit": 1,
            "dailyFreeRuns": 0,
            "features": {"img": {"monthlyCostLimit": 0.1}},
        },
    )

    day = reserve(user, "r1", "1.5", feature="img", isBillableRun=True)
    runs = reserve(user, "r2", "0.5", feature="img", isBillableRun=True)
    feature = reserve(user, "r3", "0.5", feature="img")
    fine = reserve(user, "r4", "0.5", feature="chat")

    assert [day["reason"], runs["reason"], feature["reason"], fine["reason"]] == [
        "DAILY_COST_LIMIT",
        "DAILY_RUNS",
        "FEATURE_COST_LIMIT",
        None,
    ]


def test_usage_past_every_limit_is_still_recorded_and_every_scope_shows_it() -> None:
    boss, user = admin(), accounts.make_user()
    accounts.result_of(
        "set_limits", boss, {"userId": user.uid, "dailyCostLimit": 0.5, "features": {"img": {"dailyRuns": 1}}}
    )

    response = accounts.record(
        user, {"steps": [step(cost="0.40", feature="img"), step(cost="0.40", feature="img")]}
    )

    assert response.status_code == 200
    usage = response.json()["usage"]
    shown = scopes(usage)
    assert shown["user.day.cost"] == {
        "scope": "user.day.cost",
        "used": 0.8,
        "held": 0.0,
        "limit": 0.5,
        "remaining": 0.0,
    }
    assert shown["feature:img.day.runs"]["used"] == 2
    assert usage["totalCost"] == 0.8


def test_a_day_window_holds_only_its_own_day_so_the_limit_rolls_over_at_midnight_utc() -> None:
    boss, user = admin(), accounts.make_user()
    accounts.result_of("set_limits", boss, {"userId": user.uid, "dailyCostLimit": 1, "monthlyCostLimit": 100})
    yesterday = emulator.utc_now() - timedelta(hours=25)  # another UTC day, whenever the test runs

    old = accounts.record(user, {"steps": [step(cost="0.90", when=yesterday)]})
    fresh = reserve(user, "after-midnight", "0.50")
    accounts.record(user, {"steps": [step(cost="0.90")]})
    today = reserve(user, "same-day", "0.50")

    assert old.status_code == 200
    assert fresh["allowed"] is True  # yesterday's $0.90 is not today's
    assert scopes(fresh["usage"])["user.day.cost"]["used"] == 0.0
    assert (today["allowed"], today["reason"]) == (False, "DAILY_COST_LIMIT")
