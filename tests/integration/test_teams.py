"""(v3) Teams: a budget shared by members, enforced exactly through the real functions on the emulators."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from google.cloud.firestore import FieldFilter

from tally import layout
from tally_dev import accounts, emulator
from tally_dev.steps import step


def reserve(user: accounts.User, rid: str, cost: str, **estimate: Any) -> dict[str, Any]:
    body = {"reservationId": rid, "estimate": {"cost": cost, **estimate}, "ttlSeconds": 60}
    response = accounts.record(user, body, endpoint="reserve_spend")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def make_team(limits: dict[str, Any], members: int = 3) -> tuple[str, accounts.User, list[accounts.User]]:
    boss = accounts.make_user(claims={"admin": True})
    team_id = emulator.unique("team")
    accounts.result_of("set_team", boss, {"teamId": team_id, "limits": limits})
    users = accounts.make_users(members)
    for user in users:
        accounts.result_of("set_limits", boss, {"userId": user.uid, "teamId": team_id})
    return team_id, boss, users


def test_thirty_concurrent_reservations_by_three_members_admit_exactly_what_fits_the_team() -> None:
    _, _, members = make_team({"monthlyCostLimit": 3})
    recorded = accounts.record(members[0], {"steps": [step(cost="0.50")]}).json()
    assert recorded["usage"]["limits"]["scopes"][0]["scope"] == "team.month.cost"  # a member sees the team

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: reserve(members[n % 3], f"team_{n}", "0.25"), range(30)))

    assert sum(a["allowed"] for a in answers) == 10  # $0.50 + 10 x $0.25 = $3.00
    assert {a["reason"] for a in answers if not a["allowed"]} == {"TEAM_MONTHLY_COST_LIMIT"}


def test_my_usage_shows_the_team_and_its_scopes_and_a_team_refusal_comes_first() -> None:
    team_id, _, members = make_team({"monthlyCostLimit": 1, "dailyFreeRuns": 5})
    accounts.record(members[0], {"steps": [step(cost="0.40")]})
    accounts.record(members[1], {"steps": [step(cost="0.20", billable=True)]})

    mine = accounts.result_of("my_usage", members[2], {})
    refused = reserve(members[2], "big", "6")  # past the team's $1 and the member's own $5

    assert mine["team"]["teamId"] == team_id
    assert mine["team"]["scopes"] == [
        {"scope": "team.month.cost", "used": 0.6, "held": 0.0, "limit": 1.0, "remaining": 0.4},
        {"scope": "team.day.runs", "used": 1, "held": 0, "limit": 5, "remaining": 4},
    ]
    assert refused["reason"] == "TEAM_MONTHLY_COST_LIMIT"


def test_a_team_is_admin_only_and_holds_no_features() -> None:
    boss, someone = accounts.make_user(claims={"admin": True}), accounts.make_user()

    denied, _ = accounts.call("set_team", someone, {"teamId": "t1", "limits": {}})
    features, body = accounts.call("set_team", boss, {"teamId": "t1", "limits": {"features": {}}})
    unknown, _ = accounts.call("set_limits", boss, {"userId": someone.uid, "teamId": emulator.unique("none")})

    assert (denied, features, unknown) == (403, 400, 400)
    assert "limits.features" in body["error"]["message"]
    assert layout.TEAMS == "TallyTeams"


def alert_docs(field: str, value: str) -> list[dict[str, Any]]:
    docs = emulator.db().collection(layout.ALERTS).where(filter=FieldFilter(field, "==", value)).stream()
    return [doc.to_dict() or {} for doc in docs]


def scope_alerts(field: str, value: str) -> list[tuple[str, str | None, int]]:
    found = alert_docs(field, value)
    return sorted((a["scope"], a.get("teamId"), a["threshold"]) for a in found if a["kind"] == "cost")


def test_twenty_concurrent_crossings_raise_each_scope_alert_once() -> None:
    team_id, boss, members = make_team({"monthlyCostLimit": 1}, members=20)
    loner = accounts.make_user()
    accounts.result_of("set_limits", boss, {"userId": loner.uid, "dailyCostLimit": 1})

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda m: accounts.record(m, {"steps": [step(cost="0.06")]}), members))  # $1.20
        list(pool.map(lambda _: accounts.record(loner, {"steps": [step(cost="0.06")]}), range(20)))

    assert scope_alerts("teamId", team_id) == [
        ("team.month.cost", team_id, 80),
        ("team.month.cost", team_id, 100),
    ]
    assert scope_alerts("userId", loner.uid) == [("user.day.cost", None, 80), ("user.day.cost", None, 100)]
    forecasts = [a for a in alert_docs("teamId", team_id) if a["kind"] == "forecast"]
    assert len(forecasts) == (1 if datetime.now(UTC).day >= 3 else 0)  # past the limit: its pace too


def test_usage_analytics_lists_the_months_top_teams() -> None:
    team_id, boss, members = make_team({"monthlyCostLimit": 100}, members=2)
    accounts.record(members[0], {"steps": [step(cost="0.70")]})
    accounts.record(members[1], {"steps": [step(cost="0.30")]})

    shown = accounts.result_of("usage_analytics", boss, {"fresh": True, "top": 100})

    mine = [t for t in shown["topTeams"] if t["teamId"] == team_id]
    end = mine[0].pop("monthEnd")  # (v3) the team's projected month-end
    assert mine == [{"teamId": team_id, "cost": 1.0, "apiCalls": 2, "billableRuns": 0}]
    assert end >= 1.0
