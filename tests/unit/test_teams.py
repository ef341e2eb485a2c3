"""Teams: shared limits enforced exactly across members, usage summed from slices, on the in-memory store."""

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entrypoints.callables import my_usage, set_limits, set_team, usage_analytics
from tally import layout
from tally.config import Settings
from tally.documents import plans
from tally.errors import InvalidArgument
from tally.requests import parse_reserve_request
from tally.services import teams
from tally.services.reconcile import reconcile
from tally.services.reservations import expire_holds, release_spend, reserve_spend
from tally.usage import Held
from tally.values import Caller, HoldState, HoldStatus, Step, UsageType
from tally_dev.memory import MemoryStore, record_body

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)
ADMIN = Caller("admin", admin=True)
SETTINGS = Settings(team_slices=4)
MEMBERS = ("m1", "m2", "m3")


def team(store: MemoryStore, team_id: str = "acme", **limits: Any) -> dict[str, Any]:
    made = set_team(
        store=store, caller=ADMIN, data={"teamId": team_id, "limits": limits}, settings=SETTINGS, now=NOW
    )
    for member in MEMBERS:
        join(store, member, team_id)
    return made


def join(store: MemoryStore, user: str, team_id: str | None) -> None:
    set_limits(
        store=store, caller=ADMIN, data={"userId": user, "teamId": team_id}, settings=SETTINGS, now=NOW
    )


def reserve(store: MemoryStore, user: str, rid: str, usd: str, *, billable: bool = False) -> dict[str, Any]:
    request = parse_reserve_request(
        {"reservationId": rid, "estimate": {"cost": usd, "isBillableRun": billable}, "ttlSeconds": 60}
    )
    return reserve_spend(store=store, caller=Caller(user), request=request, settings=SETTINGS, now=NOW)


def spend(store: MemoryStore, user: str, usd: str, **extra: Any) -> dict[str, Any]:
    step = {
        "operationId": f"op-{user}-{len(store.commits)}",
        "usageType": "API",
        "feature": "f",
        "provider": "p",
        "cost": usd,
        **extra,
    }
    return record_body(store, {"steps": [step]}, caller=Caller(user), now=NOW, settings=SETTINGS).body


def team_of(store: MemoryStore, user: str = "m1") -> dict[str, Any]:
    found: dict[str, Any] = my_usage(store=store, caller=Caller(user), data={}, settings=SETTINGS, now=NOW)[
        "team"
    ]
    return found


def slices_held(store: MemoryStore) -> int:
    return sum(
        doc.get("held", {}).get("costNanos", 0)
        for path, doc in store.docs.items()
        if path.startswith(layout.TEAM_SLICES)
    )


def test_thirty_concurrent_reservations_by_three_members_admit_exactly_what_fits_the_team() -> None:
    store = MemoryStore()
    team(store, monthlyCostLimit=3)
    spend(store, "m1", "0.50")

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: reserve(store, MEMBERS[n % 3], f"r{n}", "0.25"), range(30)))

    assert sum(a["allowed"] for a in answers) == 10  # $0.50 + 10 x $0.25 = $3.00
    assert {a["reason"] for a in answers if not a["allowed"]} == {"TEAM_MONTHLY_COST_LIMIT"}
    assert slices_held(store) == 2_500_000_000


def test_a_team_day_and_its_billable_runs_are_limits_too() -> None:
    store = MemoryStore()
    team(store, dailyCostLimit=1, monthlyFreeRuns=2)

    first = reserve(store, "m1", "r1", "0.6")
    day = reserve(store, "m2", "r2", "0.6")
    runs = [reserve(store, MEMBERS[n], f"b{n}", "0.01", billable=True) for n in range(3)]

    assert (first["allowed"], day["reason"]) == (True, "TEAM_DAILY_COST_LIMIT")
    assert [r["reason"] for r in runs] == [None, None, "TEAM_RUNS"]


def test_a_team_refusal_comes_before_the_users_own() -> None:
    store = MemoryStore()
    team(store, monthlyCostLimit=1)

    answer = reserve(store, "m1", "r1", "9")  # past the team's $1 and the user's own $5

    assert answer["reason"] == "TEAM_MONTHLY_COST_LIMIT"


def test_team_usage_is_what_members_recorded_while_members() -> None:
    store = MemoryStore()
    team(store, monthlyCostLimit=10)
    spend(store, "m1", "1.00")
    spend(store, "m2", "0.50")
    join(store, "m2", None)
    spend(store, "m2", "4.00")  # no longer a member: not the team's

    shown = team_of(store)

    assert shown["usage"]["monthCost"] == 1.5
    assert shown["scopes"] == [
        {"scope": "team.month.cost", "used": 1.5, "held": 0.0, "limit": 10.0, "remaining": 8.5}
    ]
    assert my_usage(store=store, caller=Caller("m2"), data={}, settings=SETTINGS, now=NOW)["team"] is None


def test_settling_releasing_and_expiring_take_a_members_hold_out_of_its_slice() -> None:
    store = MemoryStore()
    team(store, monthlyCostLimit=10)
    for n, user in enumerate(MEMBERS):
        assert reserve(store, user, f"r{n}", "1")["allowed"]

    spend(store, "m1", "0.30", reservationId="r0")
    release_spend(
        store=store, caller=Caller("m2"), user_id=None, reservation_id="r1", settings=SETTINGS, now=NOW
    )
    expire_holds(store=store, now=NOW + timedelta(minutes=2))

    assert slices_held(store) == 0
    assert team_of(store)["usage"]["monthCost"] == 0.3


def test_set_limits_refuses_a_team_that_does_not_exist_and_set_team_refuses_features() -> None:
    store = MemoryStore()

    with pytest.raises(InvalidArgument, match="teamId"):
        join(store, "m1", "nope")
    with pytest.raises(InvalidArgument, match="features"):
        set_team(
            store=store,
            caller=ADMIN,
            data={"teamId": "t", "limits": {"features": {}}},
            settings=SETTINGS,
            now=NOW,
        )


def test_a_recording_counts_each_step_in_the_slice_that_held_it() -> None:
    def step(op: str, rid: str | None) -> Step:
        return Step(op, UsageType.API, "f", "p", 100, False, NOW, reservation_id=rid)

    held = HoldState("u", "r1", HoldStatus.ACTIVE, 70, 0, "v", team_id="acme", team_slice=3)
    gone = HoldState("u", "r2", HoldStatus.ACTIVE, 50, 0, "v", team_id="old-team", team_slice=1)
    commit = plans.RecordingCommit(
        user_id="u",
        request_id="q",
        now=NOW,
        steps=(step("a", "r1"), step("b", "r2"), step("c", None)),
        shard=0,
        settlements=((held, "a"), (gone, "b")),
        team_id="acme",
        team_slice=0,
    )

    writes = {w.path: w.data for w in plans.recording_writes(commit)}

    three, zero = writes[layout.team_slice_path("acme", 3)], writes[layout.team_slice_path("acme", 0)]
    assert three["months"]["2026-11"]["costNanos"].value == 100
    assert three["held"]["costNanos"].value == -70
    assert zero["months"]["2026-11"]["days"]["14"]["costNanos"].value == 200
    assert writes[layout.team_slice_path("old-team", 1)]["held"]["costNanos"].value == -50
    assert Held(70, 0).cost_nanos == 70


def test_a_team_is_read_once_per_30_seconds_and_set_team_applies_at_once_here() -> None:
    store = MemoryStore()
    team(store, "cached-team", monthlyCostLimit=1)
    start = time.monotonic() + 100
    clock = iter([start, start + 10, start + 31]).__next__

    first = teams.read_team(store, "cached-team", clock=clock)
    store.docs[layout.team_path("cached-team")]["limits"] = {"monthlyCostLimitNanos": 7}  # changed elsewhere
    within = teams.read_team(store, "cached-team", clock=clock)
    after = teams.read_team(store, "cached-team", clock=clock)

    assert first is not None
    assert within == first
    assert after is not None
    assert after.limits.monthly_cost_nanos == 7


def test_a_members_reservation_answer_shows_the_team_scopes_first() -> None:
    store = MemoryStore()
    team(store, monthlyCostLimit=3)
    spend(store, "m2", "1.00")

    answer = reserve(store, "m1", "r1", "0.5")

    shown = answer["usage"]["limits"]["scopes"]
    assert shown[0] == {"scope": "team.month.cost", "used": 1.0, "held": 0.5, "limit": 3.0, "remaining": 1.5}
    assert shown[1]["scope"] == "user.month.cost"


class NoEmails:
    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        return {}


def test_usage_analytics_ranks_the_months_top_teams_and_reconcile_agrees() -> None:
    store = MemoryStore()
    team(store, "acme", monthlyCostLimit=100)
    set_team(store=store, caller=ADMIN, data={"teamId": "globex", "limits": {}}, settings=SETTINGS, now=NOW)
    set_limits(
        store=store, caller=ADMIN, data={"userId": "g1", "teamId": "globex"}, settings=SETTINGS, now=NOW
    )
    spend(store, "m1", "1.00")
    spend(store, "m2", "0.50")
    spend(store, "g1", "2.00")
    spend(store, "loner", "9.00")  # no team

    shown = usage_analytics(
        store=store, directory=NoEmails(), caller=ADMIN, data={"fresh": True}, settings=SETTINGS, now=NOW
    )
    report = reconcile(store=store, month="2026-11", settings=SETTINGS, now=NOW, fix=False)

    assert [(t["teamId"], t["cost"]) for t in shown["topTeams"]] == [("globex", 2.0), ("acme", 1.5)]
    assert report.differences == []


def test_set_team_refuses_a_team_past_the_bound() -> None:
    store = MemoryStore()
    store.put(layout.team_count_path(), {"teams": teams.MAX_TEAMS})

    with pytest.raises(InvalidArgument, match="teamId"):
        set_team(
            store=store,
            caller=ADMIN,
            data={"teamId": "one-too-many", "limits": {}},
            settings=SETTINGS,
            now=NOW,
        )

    assert store.docs[layout.team_count_path()]["teams"] == teams.MAX_TEAMS
    assert layout.team_path("one-too-many") not in store.docs


def test_a_members_recording_answer_shows_the_team_scopes_first() -> None:
    store = MemoryStore()
    team(store, monthlyCostLimit=3)
    spend(store, "m2", "1.00")

    body = spend(store, "m1", "0.50")

    shown = body["usage"]["limits"]["scopes"]
    assert shown[0] == {"scope": "team.month.cost", "used": 1.5, "held": 0.0, "limit": 3.0, "remaining": 1.5}
    assert shown[1]["scope"] == "user.month.cost"
