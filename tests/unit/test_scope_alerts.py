"""(v3) Alerts per scope: once per (scope, window, threshold), however many requests cross it at once."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from entrypoints.callables import set_limits, set_team
from tally import layout
from tally.config import Settings
from tally.values import Caller
from tally_dev.memory import MemoryStore, record_body

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)
ADMIN = Caller("admin", admin=True)
SETTINGS = Settings(team_slices=4)


def spend(store: MemoryStore, user: str, usd: str, op: str, *, feature: str = "f") -> None:
    step = {"operationId": op, "usageType": "API", "feature": feature, "provider": "p", "cost": usd}
    record_body(store, {"steps": [step]}, caller=Caller(user), now=NOW, settings=SETTINGS)


def alerts(store: MemoryStore) -> list[dict[str, Any]]:
    return sorted(
        (doc for path, doc in store.docs.items() if path.startswith(layout.ALERTS)),
        key=lambda a: (a["scope"], a["threshold"]),
    )


def test_twenty_concurrent_crossings_of_a_day_limit_raise_each_threshold_once() -> None:
    store = MemoryStore()
    set_limits(
        store=store, caller=ADMIN, data={"userId": "u1", "dailyCostLimit": 1}, settings=SETTINGS, now=NOW
    )

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(
            pool.map(lambda n: spend(store, "u1", "0.06", f"op{n}"), range(20))
        )  # $1.20: past 80 % and 100 %

    found = [
        (a["scope"], a["window"], a["threshold"], a["kind"]) for a in alerts(store) if a["kind"] == "cost"
    ]
    assert found == [
        ("user.day.cost", "2026-11-14", 80, "cost"),
        ("user.day.cost", "2026-11-14", 100, "cost"),
    ]


def test_a_features_runs_alert_counts_every_step_and_the_month_keeps_its_v2_alerts() -> None:
    store = MemoryStore()
    data = {"userId": "u1", "monthlyCostLimit": 0.1, "features": {"img": {"dailyRuns": 5}}}
    set_limits(store=store, caller=ADMIN, data=data, settings=SETTINGS, now=NOW)

    for n in range(5):
        spend(store, "u1", "0.02", f"img{n}", feature="img")

    found = [(a["scope"], a["window"], a["threshold"]) for a in alerts(store)]
    assert found == [
        ("feature:img.day.runs", "2026-11-14", 80),
        ("feature:img.day.runs", "2026-11-14", 100),
        ("user.month.cost", "2026-11", 80),
        ("user.month.cost", "2026-11", 100),
        ("user.month.cost", "2026-11", 100),  # the forecast's
    ]


def test_twenty_members_crossing_their_teams_limit_at_once_raise_each_threshold_once() -> None:
    store = MemoryStore()
    team = {"teamId": "acme", "limits": {"monthlyCostLimit": 1}}
    set_team(store=store, caller=ADMIN, data=team, settings=SETTINGS, now=NOW)
    members = [f"m{n}" for n in range(20)]
    for member in members:
        set_limits(
            store=store, caller=ADMIN, data={"userId": member, "teamId": "acme"}, settings=SETTINGS, now=NOW
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda m: spend(store, m, "0.06", f"op-{m}"), members))  # $1.20 in all

    found = sorted((a["kind"], a["scope"], a["teamId"], a["userId"], a["threshold"]) for a in alerts(store))
    assert found == [
        ("cost", "team.month.cost", "acme", None, 80),
        ("cost", "team.month.cost", "acme", None, 100),
        ("forecast", "team.month.cost", "acme", None, 100),
    ]
