"""Bench section 7 (issue 25): the gate over every scope — a team's write census, over-admission, latency.

Run alone with `make bench BENCH_ARGS="--only scopes"`: it writes docs/benchmarks-scopes.md
and .json (the full run writes them too).
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests

from adapters.firestore import FirestoreStore
from tally.config import Settings
from tally.requests import SetLimitsIn, SetTeamIn, parse_data, parse_record_request, parse_reserve_request
from tally.services import teams, users
from tally.services.recording import record_steps
from tally.services.reservations import reserve_spend
from tally.values import Caller
from tally_dev import accounts, emulator
from tally_dev.census import Census, kind_of, owner_of

RATE = 50  # requests/s of the whole team (the SPEC's scale rule: 1,000 members)
SLICES = 64


def team_census(quick: bool) -> dict[str, Any]:
    """Count writes per document over members' gated calls; project the shared ones to 50 requests/s."""
    census = Census()
    settings = Settings(team_slices=SLICES, aggregate_shards=SLICES)
    store = FirestoreStore(emulator.db(), shards=SLICES, on_commit=census.record)
    team_id, backend = f"bench-team-{uuid.uuid4().hex[:6]}", Caller("bench-scopes", recorder=True)
    now = datetime.now(UTC)
    teams.set_team(
        store=store,
        request=parse_data(SetTeamIn, {"teamId": team_id, "limits": {"monthlyCostLimit": 1_000_000}}),
        settings=settings,
        now=now,
    )
    members = [f"bench-member-{n:04d}-{uuid.uuid4().hex[:4]}" for n in range(100 if quick else 400)]
    for uid in members:
        data = {"userId": uid, "teamId": team_id, "monthlyCostLimit": 1000}
        users.set_limits(store=store, request=parse_data(SetLimitsIn, data), settings=settings, now=now)
    census.reset()

    def gated(uid: str) -> None:
        rid = f"res-{uuid.uuid4().hex[:10]}"
        body = {"userId": uid, "reservationId": rid, "estimate": {"cost": "0.01", "feature": "chat"}}
        answer = reserve_spend(
            store=store,
            caller=backend,
            request=parse_reserve_request(body),
            settings=settings,
            now=datetime.now(UTC),
        )
        assert answer["allowed"], answer
        census.request(uid)
        step = {"operationId": f"op-{rid}", "usageType": "AI", "feature": "chat", "provider": "openai"}
        record = {"userId": uid, "steps": [{**step, "cost": "0.008", "reservationId": rid}]}
        record_steps(
            store=store,
            caller=backend,
            request=parse_record_request(record, now=datetime.now(UTC)),
            settings=settings,
            now=datetime.now(UTC),
        )
        census.request(uid)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(gated, members))
    seconds = time.perf_counter() - started
    total = census.total_requests
    kinds: dict[str, float] = {}
    for path, count in census.writes.items():
        if owner_of(path) is None and "/reservations/" not in path:
            kind = kind_of(path)
            kinds[kind] = max(kinds.get(kind, 0.0), count / total * RATE)
    team_docs = {kind: rate for kind, rate in kinds.items() if "Team" in kind}
    return {
        "members": len(members),
        "requests": total,
        "slices": SLICES,
        "seconds": round(seconds, 1),
        "hottest_writes_per_second_at_50_rps": {k: round(rate, 3) for k, rate in sorted(kinds.items())},
        "hottest_team_document_writes_per_second": round(max(team_docs.values(), default=0.0), 3),
    }


def _reserve_at_once(users_: list[accounts.User], clients: int, cost: float) -> list[dict[str, Any]]:
    barrier, lock, answers = threading.Barrier(clients), threading.Lock(), []

    def client(index: int) -> None:
        user = users_[index % len(users_)]
        body = {"reservationId": f"res_t{index}_{uuid.uuid4().hex[:8]}", "estimate": {"cost": cost}}
        with requests.Session() as http:
            barrier.wait()
            response = http.post(
                emulator.functions_url("reserve_spend"), json=body, headers=user.headers, timeout=600
            )
        assert response.status_code == 200, response.text
        with lock:
            answers.append(response.json())

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def team_admission(admin: accounts.User) -> dict[str, Any]:
    """100 concurrent reservations by 10 members against a team limit that fits 50: how many were admitted."""
    team_id = f"bench-{uuid.uuid4().hex[:8]}"
    accounts.result_of("set_team", admin, {"teamId": team_id, "limits": {"monthlyCostLimit": 2.5}})
    members = accounts.make_users(10)
    for member in members:
        accounts.result_of("set_limits", admin, {"userId": member.uid, "teamId": team_id})
    started = time.perf_counter()
    answers = _reserve_at_once(members, 100, 0.05)
    allowed = sum(a["allowed"] for a in answers)
    return {
        "concurrent_reservations": 100,
        "members": 10,
        "fit_within_limit": 50,
        "allowed": allowed,
        "over_admitted": max(0, allowed - 50),
        "under_admitted": max(0, 50 - allowed),
        "reasons": sorted({str(a["reason"]) for a in answers if not a["allowed"]}),
        "seconds": round(time.perf_counter() - started, 2),
    }


def scope_latency(admin: accounts.User, quick: bool) -> dict[str, Any]:
    """Return reserve_spend's median latency, one limited scope vs five (day, feature, team), interleaved."""
    one, five = accounts.make_user(), accounts.make_user()
    accounts.result_of("set_limits", admin, {"userId": one.uid, "monthlyCostLimit": 1_000_000})
    team_id = f"bench-lat-{uuid.uuid4().hex[:6]}"
    accounts.result_of("set_team", admin, {"teamId": team_id, "limits": {"monthlyCostLimit": 1_000_000}})
    accounts.result_of(
        "set_limits",
        admin,
        {
            "userId": five.uid,
            "teamId": team_id,
            "monthlyCostLimit": 1_000_000,
            "dailyCostLimit": 1_000_000,
            "features": {"chat": {"dailyRuns": 1_000_000, "monthlyCostLimit": 1_000_000}},
        },
    )
    times: dict[str, list[float]] = {"one scope": [], "five scopes": []}
    with requests.Session() as http:
        for n in range(5 + (40 if quick else 150)):
            for name, user in (("one scope", one), ("five scopes", five)):
                body = {
                    "reservationId": f"lat_{n}_{uuid.uuid4().hex[:6]}",
                    "estimate": {"cost": 0.001, "feature": "chat"},
                }
                started = time.perf_counter()
                response = accounts.record(user, body, http=http, endpoint="reserve_spend")
                assert response.status_code == 200, response.text
                assert response.json()["allowed"], response.text
                if n >= 5:  # warm-up
                    times[name].append((time.perf_counter() - started) * 1000)
    p50 = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    return {
        "rounds": len(times["one scope"]),
        "p50_ms": {name: round(value, 1) for name, value in p50.items()},
        "ratio": round(p50["five scopes"] / p50["one scope"], 2),
        "team_slices": Settings().team_slices,
    }


def bench(admin: accounts.User, quick: bool) -> dict[str, Any]:
    """Run the section."""
    return {
        "census": team_census(quick),
        "admission": team_admission(admin),
        "latency": scope_latency(admin, quick),
    }


def markdown(results: dict[str, Any]) -> str:
    """Return the section's report."""
    census, admission, latency = results["census"], results["admission"], results["latency"]
    hottest = census["hottest_team_document_writes_per_second"]
    lines = [
        "## 7. The gate over every scope: teams (issue 25)",
        "",
        f"Census: {census['members']} members of one team, one gated call each (reserve_spend, then "
        f"record_steps settling it: {census['requests']} requests), {census['slices']} slices, through the "
        f"services on the emulator; each shared document's share of the writes, at {RATE} requests/s:",
        "",
        "| document kind | hottest writes/s at 50 requests/s |",
        "| --- | --- |",
        *[f"| `{kind}` | {rate} |" for kind, rate in census["hottest_writes_per_second_at_50_rps"].items()],
        "",
        f"- every team document at or under 1 write/s: {'met' if hottest <= 1 else 'MISSED'} ({hottest})",
        f"- {admission['concurrent_reservations']} concurrent reservations by {admission['members']} members "
        f"against a team limit that fits {admission['fit_within_limit']}: {admission['allowed']} allowed, "
        f"over-admitted {admission['over_admitted']}, under-admitted {admission['under_admitted']} "
        f"(refusals: {', '.join(admission['reasons'])}; {admission['seconds']} s)",
        f"- reserve_spend p50 with five scopes vs one ({latency['rounds']} interleaved rounds): "
        f"{latency['p50_ms']['five scopes']} ms vs {latency['p50_ms']['one scope']} ms, "
        f"{latency['ratio']}x (target <= 1.3x: {'met' if latency['ratio'] <= 1.3 else 'MISSED'}; "
        f"the team's {latency['team_slices']} slices are read in one round trip after the hold's commit)",
        "",
    ]
    return "\n".join(lines)
