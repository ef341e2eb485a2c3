"""(v3) Forecasts in my_usage and usage_analytics, from the documents they already read."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from entrypoints.callables import my_usage, set_limits, set_team, usage_analytics
from tally.config import Settings
from tally.values import Caller
from tally_dev.memory import MemoryStore, record_body

NOW = datetime(2026, 11, 14, 12, tzinfo=UTC)
ADMIN = Caller("admin", admin=True)
SETTINGS = Settings(platform_budget_nanos=10**12, team_slices=4)


class NoEmails:
    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        return {}


def spend(store: MemoryStore, user: str, usd: str, day: int) -> None:
    when = datetime(2026, 11, day, 9, tzinfo=UTC)
    step = {
        "operationId": f"op-{user}-{day}-{len(store.commits)}",
        "usageType": "API",
        "feature": "f",
        "provider": "p",
        "cost": usd,
        "timestamp": when.isoformat(),
    }
    record_body(store, {"steps": [step]}, caller=Caller(user), now=NOW, settings=SETTINGS)


def steady(store: MemoryStore, user: str = "u1") -> None:
    for day in range(1, 15):
        spend(store, user, "0.10", day)


def mine(store: MemoryStore, **data: Any) -> dict[str, Any]:
    return my_usage(store=store, caller=Caller("u1"), data=data, settings=SETTINGS, now=NOW)


def test_my_usage_projects_the_current_month_and_shows_a_past_months_total() -> None:
    store = MemoryStore()
    steady(store)

    now_view, past = mine(store), mine(store, month="2026-10")

    forecast = now_view["forecast"]
    assert set(forecast) == {"monthEnd", "low", "high", "exceedsOn", "basis"}
    assert 2.5 <= forecast["low"] <= forecast["monthEnd"] <= forecast["high"] <= 4.0  # $0.10 a day: ~$3.00
    assert forecast["monthEnd"] >= now_view["totalCost"]
    assert (past["forecast"]["monthEnd"], past["forecast"]["exceedsOn"]) == (0.0, None)


def test_a_pace_past_the_limit_says_when_it_will_be_reached() -> None:
    store = MemoryStore()
    set_limits(
        store=store, caller=ADMIN, data={"userId": "u1", "monthlyCostLimit": 2}, settings=SETTINGS, now=NOW
    )
    steady(store)

    forecast = mine(store)["forecast"]

    assert forecast["exceedsOn"] is not None
    assert (
        "2026-11-18" <= forecast["exceedsOn"] <= "2026-11-24"
    )  # $1.40 by the 14th, $0.10 a day: about the 20th


def test_the_team_and_the_platform_get_their_projection_and_top_rows_their_month_end() -> None:
    store = MemoryStore()
    set_team(store=store, caller=ADMIN, data={"teamId": "acme", "limits": {}}, settings=SETTINGS, now=NOW)
    set_limits(store=store, caller=ADMIN, data={"userId": "u1", "teamId": "acme"}, settings=SETTINGS, now=NOW)
    steady(store)

    team = mine(store)["team"]
    shown = usage_analytics(
        store=store, directory=NoEmails(), caller=ADMIN, data={"fresh": True}, settings=SETTINGS, now=NOW
    )

    assert 2.5 <= team["forecast"]["monthEnd"] <= 4.0
    assert 2.5 <= shown["forecast"]["monthEnd"] <= 4.0
    assert shown["topUsers"][0]["monthEnd"] >= shown["topUsers"][0]["cost"]
    assert shown["topTeams"][0]["monthEnd"] >= shown["topTeams"][0]["cost"]
