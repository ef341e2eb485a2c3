"""usage_analytics, my_usage and set_limits through the callable protocol with real ID tokens."""

from __future__ import annotations

import calendar
import csv
import random
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from tally import layout
from tally.requests import parse_record_request
from tally.services.recording import record_steps
from tally.timeutil import months_back
from tally.values import Caller
from tally_dev import accounts, commands, emulator
from tally_dev.steps import step as one_step

FEATURES = [
    ("claude-3.5-sonnet", "anthropic", "AI"),
    ("gpt-4o.mini", "openai", "AIUsage"),
    ("google_maps_autocomplete", "google_maps", "ApiUsage"),
    ("google_maps_details", "google_maps", "API"),
    ("property_lookup", "rentcast", "api"),
]


def nanos(usd: str) -> int:
    return int(Decimal(usd) * 10**9)


def usd(value: int) -> float:
    return round(value / 10**9, 9)


@dataclass
class Sums:
    """The test's own running sums: cost in nanos, calls, billable runs."""

    cost: int = 0
    calls: int = 0
    billable: int = 0

    def add(self, cost: int, billable: bool) -> None:
        self.cost += cost
        self.calls += 1
        self.billable += int(billable)

    def view(self) -> dict[str, Any]:
        return {"cost": usd(self.cost), "apiCalls": self.calls, "billableRuns": self.billable}


@dataclass
class Expected:
    """Independent totals of everything the workload sent, per month."""

    total: Sums = field(default_factory=Sums)
    by_type: defaultdict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))
    features: defaultdict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))
    providers: defaultdict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))
    days: defaultdict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))
    users: defaultdict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))


def step_at(rng: random.Random, when: datetime) -> dict[str, Any]:
    feature, provider, kind = rng.choice(FEATURES)
    return {
        "operationId": emulator.unique("op"),
        "usageType": kind,
        "feature": feature,
        "provider": provider,
        "cost": f"{rng.randint(1, 250_000) / 10**7:.7f}",
        "isBillableRun": rng.random() < 0.3,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
    }


def normalized_type(kind: str) -> str:
    return "AI" if kind.lower().startswith("ai") else "API"


def run_workload(rng: random.Random, users: list[accounts.User], sessions_each: int) -> dict[str, Any]:
    """Send sessions of steps on different days through record_steps; return the expected numbers.

    The bodies are drawn first, in order; each user's are then sent in order, the users at once.
    """
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    earliest = now - timedelta(days=30)
    per_month: defaultdict[str, Expected] = defaultdict(Expected)
    sessions = {"completed": 0, "open": 0, "steps": 0, "cost": 0}
    bodies: dict[str, list[dict[str, Any]]] = {user.uid: [] for user in users}
    for user in users:
        for index in range(sessions_each):
            sid = emulator.unique(f"s{index}")
            complete = rng.random() < 0.6
            requests_in_session = rng.randint(1, 3)
            session_steps = session_cost = 0
            for n in range(requests_in_session):
                when = earliest + (now - timedelta(minutes=1) - earliest) * rng.random()
                steps = [step_at(rng, when) for _ in range(rng.randint(1, 4))]
                last = n == requests_in_session - 1
                bodies[user.uid].append(
                    {"session": {"id": sid, "complete": complete and last}, "steps": steps}
                )
                for step in steps:
                    cost = nanos(step["cost"])
                    stamp = datetime.fromisoformat(step["timestamp"])
                    expected = per_month[stamp.strftime("%Y-%m")]
                    billable = step["isBillableRun"]
                    for sums in (
                        expected.total,
                        expected.by_type[normalized_type(step["usageType"])],
                        expected.features[step["feature"]],
                        expected.providers[step["provider"]],
                        expected.days[stamp.strftime("%Y-%m-%d")],
                        expected.users[user.uid],
                    ):
                        sums.add(cost, billable)
                    session_steps += 1
                    session_cost += cost
            if complete:
                sessions["completed"] += 1
                sessions["steps"] += session_steps
                sessions["cost"] += session_cost
            else:
                sessions["open"] += 1

    def send(user: accounts.User) -> None:
        with requests.Session() as http:
            for body in bodies[user.uid]:
                response = accounts.record(user, body, http=http)
                assert response.status_code == 200, response.text

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        list(pool.map(send, users))
    return {"months": per_month, "sessions": sessions, "month_start": month_start}


def ranked(named: dict[str, Sums]) -> list[dict[str, Any]]:
    ordered = sorted(named.items(), key=lambda item: (-item[1].cost, item[0]))
    return [{"name": name, **sums.view()} for name, sums in ordered]


def analytics(admin: accounts.User, data: dict[str, Any] | None = None) -> dict[str, Any]:
    status, body = accounts.call("usage_analytics", admin, data or {})
    assert status == 200, body
    result: dict[str, Any] = body["result"]
    return result


def test_analytics_equal_the_workload_to_the_nano(this_month: str) -> None:
    rng = random.Random(20261121)
    admin = accounts.make_user(claims={"admin": True})
    users = accounts.make_users(6)
    workload = run_workload(rng, users, sessions_each=3)
    tight = users[0]
    status, _ = accounts.call("set_limits", admin, {"userId": tight.uid, "monthlyCostLimit": 0.01})
    assert status == 200
    emulator.wait_for_finalizations()
    month = this_month
    expected: Expected = workload["months"][month]
    for earlier in months_back(month, 3)[:-1]:  # folded by the platform's check while steps still came
        emulator.db().document(layout.rollup_path(earlier)).delete()  # (an answer may be 60 s old)

    result = analytics(admin, {"month": month, "top": 3})

    assert result["month"] == month
    totals = result["totals"]
    assert {k: totals[k] for k in ("cost", "apiCalls", "billableRuns")} == expected.total.view()
    assert totals["activeUsers"] == len(expected.users)
    assert totals["byType"] == {kind: expected.by_type[kind].view() for kind in ("AI", "API")}
    assert result["features"] == ranked(expected.features)
    assert result["providers"] == ranked(expected.providers)
    top = sorted(expected.users.items(), key=lambda item: (-item[1].cost, item[0]))[:3]
    ends = [row.pop("monthEnd") for row in result["topUsers"]]  # (v3) each top user's projection
    assert result["topUsers"] == [
        {"userId": uid, "email": f"{uid}@example.com", **sums.view()} for uid, sums in top
    ]
    assert all(end >= row["cost"] for end, row in zip(ends, result["topUsers"], strict=True))
    year, number = (int(part) for part in month.split("-"))
    days = [f"{month}-{d:02d}" for d in range(1, calendar.monthrange(year, number)[1] + 1)]
    assert [d["date"] for d in result["daily"]] == days
    assert result["daily"] == [{"date": day, **expected.days[day].view()} for day in days]
    for part in ("features", "providers", "daily"):
        assert sum(nanos(str(row["cost"])) for row in result[part]) == expected.total.cost
        assert sum(row["apiCalls"] for row in result[part]) == expected.total.calls
    sessions = workload["sessions"]
    assert result["sessions"]["completed"] == sessions["completed"]
    assert result["sessions"]["active"] == sessions["open"]
    assert result["sessions"]["avgSteps"] == round(sessions["steps"] / sessions["completed"], 9)
    assert result["sessions"]["avgCost"] == usd(round(sessions["cost"] / sessions["completed"]))
    assert result["sessions"]["avgDurationSeconds"] >= 0
    tight_used = expected.users[tight.uid]
    assert result["freeTier"][0] == {
        "userId": tight.uid,
        "email": tight.email,
        "costUsed": usd(tight_used.cost),
        "monthlyCostLimit": 0.01,
        "runsUsed": tight_used.billable,
        "monthlyFreeRuns": 100,
        "percent": round(max(100 * tight_used.cost / nanos("0.01"), tight_used.billable), 2),
    }
    history = result["history"]
    assert len(history) == 12
    assert history[-1] == {
        "month": month,
        "cost": expected.total.view()["cost"],
        "apiCalls": expected.total.calls,
    }
    previous = (workload["month_start"] - timedelta(days=1)).strftime("%Y-%m")
    assert history[-2]["month"] == previous
    before: Expected = workload["months"].get(previous, Expected())
    assert history[-2]["apiCalls"] == before.total.calls
    assert history[-2]["cost"] == usd(before.total.cost)
    assert [h["month"] for h in history] == sorted(h["month"] for h in history)
    assert 0 < result["meta"]["documentsRead"] < 300
    assert datetime.fromisoformat(result["meta"]["generatedAt"]).tzinfo is not None


def send_one(user: accounts.User, when: datetime | None = None) -> dict[str, Any]:
    response = requests.post(
        emulator.functions_url("record_steps"),
        json={"steps": [step_at(random.Random(), when or datetime.now(UTC))]},
        headers=user.headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_fresh_totals_are_exact_as_of_the_call_and_cached_ones_as_of_their_as_of() -> None:
    admin = accounts.make_user(claims={"admin": True})
    user = accounts.make_user()
    send_one(user)
    first = analytics(admin)

    send_one(user)
    cached = analytics(admin)
    fresh = analytics(admin, {"fresh": True})

    assert first["totals"]["apiCalls"] == 1
    assert cached["meta"]["asOf"] == first["meta"]["asOf"]
    assert cached["totals"]["apiCalls"] == 1  # exact as of asOf: the second step came later
    assert [u["apiCalls"] for u in cached["topUsers"]] == [1]  # the ranking is of the same instant
    assert [u["apiCalls"] for u in fresh["topUsers"]] == [2]
    generated = datetime.fromisoformat(cached["meta"]["generatedAt"])
    assert generated - datetime.fromisoformat(cached["meta"]["asOf"]) <= timedelta(seconds=60)
    assert (fresh["totals"]["apiCalls"], fresh["totals"]["activeUsers"]) == (2, 1)
    assert fresh["meta"]["asOf"] >= fresh["meta"]["generatedAt"]
    assert fresh["meta"]["documentsRead"] < 300 + 8


def test_active_users_are_exact_across_two_months() -> None:
    admin = accounts.make_user(claims={"admin": True})
    both, earlier_only, this_only = accounts.make_user(), accounts.make_user(), accounts.make_user()
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = month_start - timedelta(hours=2)
    for _ in range(3):
        send_one(both, last_month)
        send_one(both)
    send_one(earlier_only, last_month)
    send_one(this_only)

    now_view = analytics(admin, {"fresh": True})
    then_view = analytics(admin, {"fresh": True, "month": last_month.strftime("%Y-%m")})

    assert now_view["totals"]["activeUsers"] == 2
    assert then_view["totals"]["activeUsers"] == 2
    assert then_view["totals"]["apiCalls"] == 4


def seed_users(count: int) -> None:
    """Record one step for each of `count` new users, through the recording service (no HTTP: quicker)."""
    rng = random.Random(count)
    store, settings, now = emulator.store(), emulator.settings(), emulator.utc_now()
    bodies = [{"steps": [step_at(rng, now - timedelta(minutes=1))]} for _ in range(count)]

    def record(body: dict[str, Any]) -> None:
        record_steps(
            store=store,
            caller=Caller(emulator.unique("u"), recorder=True),
            request=parse_record_request(body, now=now),
            settings=settings,
            now=now,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(record, bodies))


def timed_analytics(admin: accounts.User) -> tuple[int, float]:
    analytics(admin, {"top": 5})  # folds whatever is stale, so the timed call reads rollups only
    started = time.perf_counter()
    result = analytics(admin, {"top": 5})
    return result["meta"]["documentsRead"], time.perf_counter() - started


def test_documents_read_do_not_grow_with_users(capsys: pytest.CaptureFixture[str]) -> None:
    admin = accounts.make_user(claims={"admin": True})
    seed_users(5)
    small_reads, small_latency = timed_analytics(admin)

    seed_users(95)
    large_reads, large_latency = timed_analytics(admin)

    assert small_reads == large_reads
    with capsys.disabled():
        print(
            f"\n[measure] usage_analytics documentsRead: {small_reads} at 5 users, "
            f"{large_reads} at 100 users; latency {small_latency * 1000:.0f} ms "
            f"vs {large_latency * 1000:.0f} ms"
        )


def test_roles_of_usage_analytics() -> None:
    user = accounts.make_user()
    recorder = accounts.make_user(claims={"recorder": True})
    admin = accounts.make_user(claims={"admin": True})

    anonymous = accounts.call("usage_analytics", None, {})
    signed_in = accounts.call("usage_analytics", user, {})
    trusted_backend = accounts.call("usage_analytics", recorder, {})
    allowed = accounts.call("usage_analytics", admin, {})

    assert anonymous[0] == 401
    assert anonymous[1]["error"]["status"] == "UNAUTHENTICATED"
    assert signed_in[0] == 403
    assert signed_in[1]["error"]["status"] == "PERMISSION_DENIED"
    assert trusted_backend[0] == 403
    assert allowed[0] == 200
    assert allowed[1]["result"]["totals"]["cost"] == 0.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"month": "2026-13"}, "month: must be a month like 2026-11"),
        ({"month": 202611}, "month: must be a month like 2026-11"),
        ({"top": 0}, "top: must be an integer from 1 to 100"),
        ({"top": 101}, "top: must be an integer from 1 to 100"),
        ({"top": "5"}, "top: must be an integer from 1 to 100"),
        ({"top": 5, "user": "x"}, "user: is not an accepted field"),
        ([1], "data: must be a JSON object"),
    ],
)
def test_bad_analytics_input_is_invalid_argument(data: Any, message: str) -> None:
    admin = accounts.make_user(claims={"admin": True})

    status, body = accounts.call("usage_analytics", admin, data)

    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["message"] == message


def test_my_usage_shows_only_the_callers_own_month(this_month: str) -> None:
    alice, bob = accounts.make_user(), accounts.make_user()
    rng = random.Random(7)
    now = datetime.now(UTC) - timedelta(minutes=1)
    alice_steps = [step_at(rng, now) for _ in range(3)]
    with requests.Session() as http:
        for user, steps in ((alice, alice_steps), (bob, [step_at(rng, now) for _ in range(5)])):
            response = http.post(
                emulator.functions_url("record_steps"),
                json={"session": {"id": emulator.unique("s"), "complete": True}, "steps": steps},
                headers=user.headers,
                timeout=60,
            )
            assert response.status_code == 200
    emulator.wait_for_finalizations()
    mine = Sums()
    for step in alice_steps:
        mine.add(nanos(step["cost"]), step["isBillableRun"])

    status, body = accounts.call("my_usage", alice, {})
    other_status, other = accounts.call("my_usage", alice, {"userId": bob.uid})
    anonymous_status, _ = accounts.call("my_usage", None, {})
    old_status, old = accounts.call("my_usage", alice, {"month": "2020-01"})

    assert status == 200
    result = body["result"]
    assert result["month"] == this_month
    assert {k: result[k] for k in ("apiCalls", "billableRuns")} == {
        "apiCalls": 3,
        "billableRuns": mine.billable,
    }
    assert result["totalCost"] == usd(mine.cost)
    assert result["lifetime"] == mine.view()
    assert result["sessions"] == {"active": 0, "completed": 1}
    assert sum(f["apiCalls"] for f in result["features"]) == 3
    assert sum(p["apiCalls"] for p in result["providers"]) == 3
    assert result["byType"]["AI"]["apiCalls"] + result["byType"]["API"]["apiCalls"] == 3
    assert result["limits"]["monthlyCostLimit"] == 5.0
    assert (other_status, other["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert anonymous_status == 401
    assert (old_status, old["result"]["apiCalls"], old["result"]["lifetime"]["apiCalls"]) == (200, 0, 3)


def test_admins_read_any_users_month_and_past_months() -> None:
    admin, user = accounts.make_user(claims={"admin": True}), accounts.make_user()
    last_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(
        hours=3
    )
    send_one(user, last_month)
    send_one(user)

    status, body = accounts.call(
        "my_usage", admin, {"userId": user.uid, "month": last_month.strftime("%Y-%m")}
    )
    _, own = accounts.call("my_usage", user, {"month": last_month.strftime("%Y-%m")})

    assert status == 200
    assert (body["result"]["userId"], body["result"]["apiCalls"]) == (user.uid, 1)
    assert body["result"]["features"] == own["result"]["features"]
    assert len(body["result"]["features"]) == 1


def test_set_limits_is_reflected_at_once_everywhere(http: requests.Session) -> None:
    admin = accounts.make_user(claims={"admin": True})
    user = accounts.make_user()
    step = {
        "operationId": emulator.unique("op"),
        "usageType": "API",
        "feature": "property_lookup",
        "provider": "rentcast",
        "cost": "0.5",
        "isBillableRun": True,
    }
    first = http.post(
        emulator.functions_url("record_steps"), json={"steps": [step]}, headers=user.headers, timeout=60
    )
    assert first.json()["usage"]["limits"]["warning"] is False

    status, body = accounts.call(
        "set_limits", admin, {"userId": user.uid, "monthlyCostLimit": 0.6, "monthlyFreeRuns": 2}
    )
    step2 = step | {"operationId": emulator.unique("op"), "cost": "0.01", "isBillableRun": False}
    second = http.post(
        emulator.functions_url("record_steps"), json={"steps": [step2]}, headers=user.headers, timeout=60
    )
    mine = accounts.call("my_usage", user, {})[1]["result"]
    table = analytics(admin, {"fresh": True})["freeTier"]

    assert status == 200
    assert body["result"]["limits"]["monthlyCostLimit"] == 0.6
    assert body["result"]["limits"]["warning"] is True
    limits = second.json()["usage"]["limits"]
    assert limits == {
        "monthlyCostLimit": 0.6,
        "costRemaining": 0.09,
        "monthlyFreeRuns": 2,
        "freeRunsRemaining": 1,
        "exceeded": False,
        "warning": True,
        "held": 0.0,
        "heldRuns": 0,
        "scopes": [  # (v3) every limited scope
            {"scope": "user.month.cost", "used": 0.51, "held": 0.0, "limit": 0.6, "remaining": 0.09},
            {"scope": "user.month.runs", "used": 1, "held": 0, "limit": 2, "remaining": 1},
        ],
    }
    assert mine["limits"] == limits
    assert table == [
        {
            "userId": user.uid,
            "email": user.email,
            "costUsed": 0.51,
            "monthlyCostLimit": 0.6,
            "runsUsed": 1,
            "monthlyFreeRuns": 2,
            "percent": 85.0,
        }
    ]

    accounts.call("set_limits", admin, {"userId": user.uid, "monthlyCostLimit": 100})
    assert analytics(admin, {"fresh": True})["freeTier"] == []


def test_set_limits_roles_and_input() -> None:
    user = accounts.make_user()
    admin = accounts.make_user(claims={"admin": True})

    by_user = accounts.call("set_limits", user, {"userId": user.uid, "monthlyCostLimit": 1000})
    negative = accounts.call("set_limits", admin, {"userId": user.uid, "monthlyCostLimit": -1})
    empty = accounts.call("set_limits", admin, {"userId": user.uid})
    runs = accounts.call("set_limits", admin, {"userId": user.uid, "monthlyFreeRuns": 1.5})

    assert by_user[0] == 403
    assert (negative[0], negative[1]["error"]["message"]) == (400, "monthlyCostLimit: must be >= 0")
    assert (empty[0], empty[1]["error"]["message"]) == (
        400,
        "data: give plan, teamId or at least one field of a limits object",  # (v3) plans, teams, every limit
    )
    assert runs[1]["error"]["message"].startswith("monthlyFreeRuns: must be an integer")


def test_export_lists_every_user_of_the_month_by_callable_and_command(
    tmp_path: Path, this_month: str
) -> None:
    month = this_month
    admin = accounts.make_user(claims={"admin": True})
    users = [accounts.make_user(uid=f"exp-{n}-{emulator.unique('u')}") for n in range(12)]
    for n, user in enumerate(users):
        body = {"steps": [one_step(cost=f"0.{n + 1:02d}0000001", billable=n % 2 == 0)]}
        assert accounts.record(user, body).status_code == 200
    out = tmp_path / "export.csv"

    pages, token = [], None
    while True:
        page = accounts.result_of("export_usage", admin, {"month": month, "limit": 5, "pageToken": token})
        pages.append(page["rows"])
        if (token := page["nextPageToken"]) is None:
            break
    done = commands.run("export", "--month", month, "--out", str(out))

    assert done.returncode == 0, done.stderr
    with out.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    expected = sorted(
        [u.uid, u.email, f"0.{n + 1:02d}0000001", "1", str(int(n % 2 == 0)), "0"] for n, u in enumerate(users)
    )
    assert [len(rows) for rows in pages] == [5, 5, 2]
    assert [row for rows in pages for row in rows] == expected
    assert table == [["userId", "email", "costUsd", "apiCalls", "billableRuns", "unpricedSteps"], *expected]
    assert "12 users" in done.stderr
