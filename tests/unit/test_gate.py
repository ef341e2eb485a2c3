"""Plans, day windows and feature limits through the services, on the in-memory store."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entrypoints.callables import list_plans, my_usage, set_limits, set_plan
from tally import layout, names
from tally.config import Settings
from tally.documents import plans
from tally.errors import InvalidArgument
from tally.requests import parse_record_request, parse_reserve_request
from tally.services import plan_claims
from tally.services.recording import record_steps
from tally.services.reservations import expire_holds, release_spend, reserve_spend
from tally.values import Caller
from tally_dev.memory import MemoryStore

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)
ADMIN = Caller("admin", admin=True)
USER = Caller("u1")
SETTINGS = Settings()


def admin_sets_limits(store: MemoryStore, **data: Any) -> dict[str, Any]:
    return set_limits(store=store, caller=ADMIN, data={"userId": "u1", **data}, settings=SETTINGS, now=NOW)


def admin_sets_plan(store: MemoryStore, plan: str, limits: dict[str, Any]) -> dict[str, Any]:
    return set_plan(
        store=store, caller=ADMIN, data={"plan": plan, "limits": limits}, settings=SETTINGS, now=NOW
    )


def reserve(
    store: MemoryStore,
    rid: str,
    usd: str = "0.5",
    *,
    feature: str | None = None,
    billable: bool = False,
    now: datetime = NOW,
    caller: Caller = USER,
    settings: Settings = SETTINGS,
) -> dict[str, Any]:
    estimate: dict[str, Any] = {"cost": usd, "isBillableRun": billable}
    if feature is not None:
        estimate["feature"] = feature
    request = parse_reserve_request({"reservationId": rid, "estimate": estimate, "ttlSeconds": 60})
    claimed = plan_claims.resolver(caller=caller, settings=settings, directory=NoDirectory())
    return reserve_spend(
        store=store, caller=caller, request=request, settings=settings, now=now, claimed_plan=claimed
    )


class NoDirectory:
    def custom_claims(self, user_id: str) -> dict[str, Any]:
        return {}


def spend(
    store: MemoryStore, usd: str, *, feature: str = "chat", now: datetime = NOW, **extra: Any
) -> dict[str, Any]:
    step = {
        "operationId": f"op-{len(store.commits)}-{usd}",
        "usageType": "AI",
        "feature": feature,
        "provider": "openai",
        "cost": usd,
        "timestamp": now.isoformat(),
        **extra,
    }
    request = parse_record_request({"steps": [step]}, now=now)
    return record_steps(
        store=store,
        caller=Caller("u1"),
        request=request,
        settings=SETTINGS,
        now=now,
        admitted_cache=names.AdmittedNames(),
        shards=plans.ShardPicker(seed=1),
    ).body


def scope(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in body["usage"]["limits"]["scopes"] if s["scope"] == name]
    assert found, f"no scope {name}"
    return found[0]


def test_plans_are_listed_default_first_and_an_admins_default_keeps_the_settings_monthly_fields() -> None:
    store = MemoryStore()
    admin_sets_plan(store, "pro", {"monthlyCostLimit": 50, "features": {"img": {"dailyRuns": 10}}})
    shown = admin_sets_plan(store, "default", {"dailyCostLimit": 1})

    listed = list_plans(store=store, caller=ADMIN, data={}, settings=SETTINGS)

    assert shown == {
        "plan": "default",
        "limits": {"monthlyCostLimit": 5.0, "monthlyFreeRuns": 100, "dailyCostLimit": 1.0},
    }
    assert listed["plans"] == [
        {
            "plan": "default",
            "limits": {"monthlyCostLimit": 5.0, "monthlyFreeRuns": 100, "dailyCostLimit": 1.0},
        },
        {"plan": "pro", "limits": {"monthlyCostLimit": 50.0, "features": {"img": {"dailyRuns": 10}}}},
    ]


def test_set_limits_assigns_a_plan_sets_and_removes_overrides_per_field() -> None:
    store = MemoryStore()
    admin_sets_plan(store, "pro", {"monthlyCostLimit": 50, "dailyCostLimit": 5})

    admin_sets_limits(store, plan="pro", dailyCostLimit=2, features={"img": {"dailyRuns": 3}})
    after = admin_sets_limits(store, dailyCostLimit=None)

    assert after["plan"] == "pro"
    assert after["limits"]["monthlyCostLimit"] == 50.0  # the plan's
    assert scope({"usage": after}, "user.day.cost")["limit"] == 5.0  # override removed: the plan's again
    assert scope({"usage": after}, "feature:img.day.runs")["limit"] == 3


def test_set_limits_refuses_an_unknown_plan_and_too_many_features_naming_the_field() -> None:
    store = MemoryStore()

    with pytest.raises(InvalidArgument, match="plan"):
        admin_sets_limits(store, plan="gold")
    with pytest.raises(InvalidArgument, match="features"):
        admin_sets_limits(store, features={f"f{i}": {"dailyRuns": 1} for i in range(51)})
    with pytest.raises(InvalidArgument, match="give plan, teamId or at least one field"):
        admin_sets_limits(store)


def test_thirty_concurrent_reservations_admit_exactly_what_fits_the_day() -> None:
    store = MemoryStore()
    admin_sets_limits(store, dailyCostLimit=2, monthlyCostLimit=100)  # only the day binds
    spend(store, "0.50")
    spend(store, "1.00", now=NOW - timedelta(days=1))  # yesterday: not today's

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: reserve(store, f"r{n}", "0.25"), range(30)))

    assert sum(a["allowed"] for a in answers) == 6  # $0.50 today + 6 x $0.25 = $2.00
    assert {a["reason"] for a in answers if not a["allowed"]} == {"DAILY_COST_LIMIT"}


def test_thirty_concurrent_reservations_of_a_feature_admit_exactly_its_daily_runs() -> None:
    store = MemoryStore()
    admin_sets_limits(store, features={"img": {"dailyRuns": 10}})
    spend(store, "0.01", feature="img")
    spend(store, "0.01", feature="chat")

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: reserve(store, f"r{n}", "0.01", feature="img"), range(30)))
    other = reserve(store, "chat-1", "0.01", feature="chat")

    assert sum(a["allowed"] for a in answers) == 9  # 1 recorded + 9 held = 10 runs, billable or not
    assert {a["reason"] for a in answers if not a["allowed"]} == {"FEATURE_RUNS"}
    assert other["allowed"] is True


def test_a_refusal_names_the_first_scope_that_refuses() -> None:
    store = MemoryStore()
    admin_sets_limits(store, monthlyCostLimit=1, dailyCostLimit=1, features={"img": {"dailyCostLimit": 0.5}})

    answer = reserve(store, "r1", "2", feature="img")

    assert (answer["allowed"], answer["reason"]) == (False, "MONTHLY_COST_LIMIT")


def test_settling_releasing_and_expiring_take_the_feature_hold_back() -> None:
    store = MemoryStore()
    admin_sets_limits(store, features={"img": {"dailyRuns": 5, "monthlyCostLimit": 3}})
    for rid in ("r1", "r2", "r3"):
        assert reserve(store, rid, "1", feature="img")["allowed"]

    settled = spend(store, "0.40", feature="img", reservationId="r1")
    release_spend(
        store=store, caller=Caller("u1"), user_id=None, reservation_id="r2", settings=SETTINGS, now=NOW
    )
    expire_holds(store=store, now=NOW + timedelta(minutes=2))
    after = reserve(store, "r4", "1", feature="img")

    assert scope(settled, "feature:img.month.cost")["used"] == 0.4
    held = store.docs[layout.usage_path("u1")]["windows"]["months"]["2026-11"]["held"]["img"]
    assert after["allowed"] is True
    assert held == {"costNanos": 1_000_000_000, "runs": 1}  # only r4 holds now
    assert scope(after, "feature:img.day.runs") == {
        "scope": "feature:img.day.runs",
        "used": 1,
        "held": 1,
        "limit": 5,
        "remaining": 3,
    }


def test_the_claimed_plan_applies_to_a_user_without_one() -> None:
    store = MemoryStore()
    admin_sets_plan(store, "pro", {"monthlyCostLimit": 50})
    settings = Settings(plan_claim="stripeRole")
    paying = Caller("u1", claims={"stripeRole": "pro"})

    claimed = reserve(store, "r1", "10", caller=paying, settings=settings)
    unclaimed = reserve(store, "r2", "10", settings=settings)

    assert claimed["allowed"] is True
    assert claimed["usage"]["limits"]["monthlyCostLimit"] == 50.0
    assert (unclaimed["allowed"], unclaimed["reason"]) == (False, "MONTHLY_COST_LIMIT")


def test_my_usage_shows_every_limited_scope_and_none_for_a_past_month() -> None:
    store = MemoryStore()
    admin_sets_limits(store, dailyFreeRuns=4, features={"img": {"monthlyRuns": 30}})
    spend(store, "0.10", feature="img", isBillableRun=True)

    now_view = my_usage(store=store, caller=Caller("u1"), data={}, settings=SETTINGS, now=NOW)
    past = my_usage(store=store, caller=Caller("u1"), data={"month": "2026-10"}, settings=SETTINGS, now=NOW)

    assert [s["scope"] for s in now_view["limits"]["scopes"]] == [
        "user.month.cost",
        "user.month.runs",
        "user.day.runs",
        "feature:img.month.runs",
    ]
    assert now_view["limits"]["scopes"][2] == {
        "scope": "user.day.runs",
        "used": 1,
        "held": 0,
        "limit": 4,
        "remaining": 3,
    }
    assert past["limits"]["scopes"] == []
