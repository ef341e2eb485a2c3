"""Tally benchmarks against the emulator suite; writes docs/benchmarks.md and docs/benchmarks.json.

Run with `make bench` (under scripts/with-emulators). Every figure is measured in the same
run as its baseline and reported as a ratio; absolute numbers are the emulator's, on this
machine, and only meaningful side by side. The emulator does not throttle hot documents,
so the write census measures the shape (writes per document per request) and projects it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import requests
from google.cloud import firestore
from rich.console import Console

from adapters.firestore import FirestoreStore
from tally import layout
from tally.config import Settings
from tally.documents import plans
from tally.forecast import Forecast
from tally.requests import AnalyticsIn, parse_record_request, parse_reserve_request
from tally.services import analytics, mirror, projections
from tally.services.reconcile import reconcile
from tally.services.recording import record_steps
from tally.services.reservations import reserve_spend
from tally.timeutil import month_key
from tally.values import Caller, RecordRequest, SessionRequest, Step, UsageType, UserMonthState
from tally.writes import Increment, Op, Write
from tally_dev import accounts, backtest, bench_scopes, emulator, webhook
from tally_dev.census import Census, Workload, kind_of, owner_of, run
from tally_dev.projection import largest_by_kind, simulate
from tally_dev.sizing import MAX_DOCUMENT_BYTES

ROOT = Path(__file__).resolve().parents[1]
console = Console(stderr=True)
COST = "0.00283"
COST_NANOS = 2_830_000
RATES = (1000, 5000)
SECTIONS = (
    "http",
    "design",
    "census",
    "analytics",
    "analytics-forecast",
    "sizes",
    "gate",
    "reconcile",
    "scopes",
    "forecast",
)


def progress(message: str) -> None:
    console.print(f"[dim]{datetime.now(UTC):%H:%M:%S}[/] {message}")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def step_body(n: int, session: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "steps": [
            {
                "operationId": f"bench_{uuid.uuid4().hex}",
                "usageType": "API",
                "feature": "google_maps_autocomplete",
                "provider": "google_maps",
                "cost": COST,
            }
            for _ in range(n)
        ]
    }
    if session:
        body["session"] = {"id": session}
    return body


def month_totals(db: firestore.Client, uid: str) -> tuple[int, int]:
    usage = (db.collection("users").document(uid).get().to_dict() or {}).get("usage", {})
    month = usage.get("months", {}).get(month_key(datetime.now(UTC)), {})
    return int(month.get("costNanos", 0)), int(month.get("apiCalls", 0))


def run_clients(clients: int, client: Callable[[int], None]) -> float:
    """Run `client(0..clients-1)` concurrently; return the wall time in seconds."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    return time.perf_counter() - started


# 1. The write path over HTTP


def latency(user: accounts.User, steps: int, requests_count: int) -> dict[str, Any]:
    url = emulator.functions_url("record_steps")
    times: list[float] = []
    with requests.Session() as http:
        for n in range(requests_count):
            started = time.perf_counter()
            response = http.post(
                url, json=step_body(steps, f"lat-{steps}-{n % 10}"), headers=user.headers, timeout=60
            )
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return {
        "steps_per_request": steps,
        "requests": requests_count,
        "p50_ms": round(percentile(times, 50), 1),
        "p95_ms": round(percentile(times, 95), 1),
        "p99_ms": round(percentile(times, 99), 1),
    }


def throughput(
    users: list[accounts.User], clients: int, per_client: int, db: firestore.Client
) -> dict[str, Any]:
    """`clients` concurrent clients, each in its own session, round-robin over `users`."""
    url = emulator.functions_url("record_steps")
    before = {u.uid: month_totals(db, u.uid) for u in users}
    failures = 0
    lock = threading.Lock()

    def client(index: int) -> None:
        nonlocal failures
        user = users[index % len(users)]
        session = f"tp-{uuid.uuid4().hex[:10]}"
        with requests.Session() as http:
            for _ in range(per_client):
                response = http.post(url, json=step_body(1, session), headers=user.headers, timeout=120)
                if response.status_code != 200:
                    with lock:
                        failures += 1

    elapsed = run_clients(clients, client)
    sent = clients * per_client
    lost = 0
    for user in users:
        share = sum(per_client for i in range(clients) if users[i % len(users)] is user)
        cost, calls = month_totals(db, user.uid)
        lost += (before[user.uid][1] + share) - calls
        assert cost - before[user.uid][0] == (calls - before[user.uid][1]) * COST_NANOS
    return {
        "clients": clients,
        "users": len(users),
        "requests": sent,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(sent / elapsed, 1),
        "failed_requests": failures,
        "lost_updates": lost,
    }


# 2. The write design against a read-modify-write baseline (in-process, same workload)


def tally_design(db: firestore.Client, clients: int, per_client: int) -> dict[str, Any]:
    store = emulator.store()
    uid = f"bench-tally-{uuid.uuid4().hex[:8]}"
    attempts: list[int] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        session = f"s{index}"
        for n in range(per_client):
            now = datetime.now(UTC)
            step = Step(f"op-{index}-{n}", UsageType.API, "f", "p", COST_NANOS, False, now)
            request = RecordRequest(None, SessionRequest(session, None, False), (step,))
            outcome = record_steps(
                store=store, caller=Caller(uid), request=request, settings=Settings(), now=now
            )
            with lock:
                attempts.append(outcome.attempts)

    elapsed = run_clients(clients, client)
    _, calls = month_totals(db, uid)
    return {
        "design": "tally (preconditions + blind increments)",
        "clients": clients,
        "operations": clients * per_client,
        "seconds": round(elapsed, 2),
        "ops_per_second": round(clients * per_client / elapsed, 1),
        "aborts": sum(a - 1 for a in attempts),
        "failed": 0,
        "lost_updates": clients * per_client - calls,
    }


def rmw_baseline(db: firestore.Client, clients: int, per_client: int) -> dict[str, Any]:
    """Read the user document, add, write it back, in a transaction (the naive design)."""
    ref = db.collection("bench_rmw").document(uuid.uuid4().hex)
    ref.set({"costNanos": 0, "apiCalls": 0})
    tries = 0
    failed = 0
    lock = threading.Lock()

    def add(transaction: firestore.Transaction) -> None:
        nonlocal tries
        with lock:
            tries += 1
        data = ref.get(transaction=transaction).to_dict() or {}
        transaction.update(
            ref, {"costNanos": data["costNanos"] + COST_NANOS, "apiCalls": data["apiCalls"] + 1}
        )

    def client(_: int) -> None:
        nonlocal failed
        for _ in range(per_client):
            try:
                firestore.transactional(add)(db.transaction())
            except Exception:  # noqa: BLE001 - a transaction that gave up counts as failed
                with lock:
                    failed += 1

    elapsed = run_clients(clients, client)
    done = (ref.get().to_dict() or {})["apiCalls"]
    ops = clients * per_client
    return {
        "design": "read-modify-write transaction",
        "clients": clients,
        "operations": ops,
        "seconds": round(elapsed, 2),
        "ops_per_second": round(done / elapsed, 1),
        "aborts": tries - done - failed,
        "failed": failed,
        "lost_updates": ops - failed - done,
    }


# 3. The write census


def census_run(shards: int, workload: Workload, prefix: str) -> tuple[Census, float]:
    """Drive `workload` through the real services on the emulator; count every applied commit."""
    census = Census()
    store = FirestoreStore(emulator.db(), shards=shards, on_commit=census.record)
    warm_up = Workload(users=4, sessions_per_user=1, per_session=1)
    run(store, census, warm_up, now=lambda: datetime.now(UTC), prefix=f"{prefix}-warm", threads=4)
    census.reset()  # steady state: the workload's names are admitted
    seconds = run(store, census, workload, now=lambda: datetime.now(UTC), prefix=prefix, threads=16)
    return census, seconds


def census_row(census: Census, shards: int, seconds: float, rate: int) -> dict[str, Any]:
    path, per_second = census.hottest_shared(rate)
    user_path, per_request = census.hottest_per_user()
    return {
        "shards": shards,
        "rate": rate,
        "requests": census.total_requests,
        "seconds": round(seconds, 1),
        "documents": len(census.writes),
        "shard_writes_per_request": round(census.shard_writes_per_request(), 4),
        "hottest_shared": path,
        "hottest_shared_writes_per_second": round(per_second, 3),
        "hottest_per_user": user_path,
        "hottest_per_user_writes_per_second_at_1_rps": round(per_request, 3),
        "max_transforms_in_a_write": census.max_transforms,
        "kinds": {
            kind: {"documents": documents, "hottest_writes_per_second": round(rate_, 3), "per_user": per_user}
            for kind, (documents, rate_, per_user) in sorted(census.by_kind(rate).items())
        },
    }


def check_workload(requests: int, *, per_session: int) -> Workload:
    """Return a workload of exactly `requests` requests, spread over as many users as divide it."""
    sessions = requests // per_session
    users = next(u for u in (125, 100, 50, 25, 10, 5, 1) if sessions % u == 0)
    return Workload(users=users, sessions_per_user=sessions // users, per_session=per_session)


def census_bench(quick: bool) -> dict[str, Any]:
    default = Settings().aggregate_shards
    workload = Workload(users=50 if quick else 100, sessions_per_user=2 if quick else 5, per_session=4)
    progress(f"census: {workload.requests} requests at the default {default} shards")
    census, seconds = census_run(default, workload, "census-default")
    rows = [census_row(census, default, seconds, rate) for rate in RATES]
    per_request = census.shard_writes_per_request()
    needed = {}
    for rate in RATES:
        shards = math.ceil(rate * per_request)
        # `rate` requests: one second of that load. Round-robin hands each shard an equal
        # share of whole rounds, so the hottest shard's count is the design's, not a remainder's.
        check = check_workload(rate, per_session=workload.per_session)
        progress(f"census: {check.requests} requests at {shards} shards (enough for {rate:,} requests/s?)")
        result, took = census_run(shards, check, f"census-{rate}")
        rows.append(census_row(result, shards, took, rate))
        needed[str(rate)] = shards
    return {
        "rows": rows,
        "needed_shards": needed,
        "shard_writes_per_request": round(per_request, 4),
        "gated": gated_census(quick),
    }


def gated_census(quick: bool) -> dict[str, Any]:
    """Count the writes of a gated call (reserve_spend, then record_steps settling it) per document.

    The SPEC: a gated call writes each of the user's shared documents (users/{uid} and any
    document every request of that user writes) at most twice in all.
    """
    census = Census()
    store = FirestoreStore(emulator.db(), shards=Settings().aggregate_shards, on_commit=census.record)
    settings, backend = Settings(), Caller("census-gate", recorder=True)
    users, calls = (4, 5) if quick else (10, 10)
    progress(f"census: {users * calls} gated calls (reserve, then record settling it)")

    def user(index: int) -> None:
        uid = f"census-gated-{index:03d}-{uuid.uuid4().hex[:6]}"
        for n in range(calls):
            rid = f"res-{n}"
            reserve = parse_reserve_request(
                {"userId": uid, "reservationId": rid, "estimate": {"cost": "0.01"}}
            )
            answer = reserve_spend(
                store=store, caller=backend, request=reserve, settings=settings, now=datetime.now(UTC)
            )
            assert answer["allowed"], answer
            step = {"operationId": f"{uid}-{n}", "usageType": "AI", "feature": "chat", "provider": "openai"}
            body = {"userId": uid, "steps": [{**step, "cost": "0.008", "reservationId": rid}]}
            record_steps(
                store=store,
                caller=backend,
                request=parse_record_request(body, now=datetime.now(UTC)),
                settings=settings,
                now=datetime.now(UTC),
            )
            census.request(uid)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(user, range(users)))
    per_kind: dict[str, float] = {}
    for path, count in census.writes.items():
        owner = owner_of(path)
        if owner is None or "/reservations/" in path or "/steps/" in path:
            continue
        kind = kind_of(path)
        per_kind[kind] = max(per_kind.get(kind, 0.0), count / census.requests[owner])
    return {
        "gated_calls": users * calls,
        "writes_per_gated_call": {kind: round(rate, 3) for kind, rate in sorted(per_kind.items())},
    }


# 4. Analytics at 100, 10,000 and 100,000 users


def combined(writes: list[Write]) -> Write:
    """Return one merge write that adds up every increment of `writes` (all to one document)."""

    def add(into: dict[str, Any], data: Any) -> None:
        for key, value in data.items():
            if isinstance(value, dict):
                add(into.setdefault(key, {}), value)
            elif isinstance(value, Increment) and isinstance(into.get(key), Increment):
                into[key] = Increment(into[key].value + value.value)
            else:
                into[key] = value

    data: dict[str, Any] = {}
    for write in writes:
        add(data, write.data)
    return Write(writes[0].path, Op.MERGE, data)


def seed_users(
    store: FirestoreStore,
    start: int,
    stop: int,
    *,
    with_steps: bool,
    per_commit: int = 100,
    complete: bool = True,
) -> None:
    """Write users' documents with the project's own commit builders, 100 users a commit.

    The platform shards' increments are added up and written once per shard. Up to
    `with_steps` users get their sessions and steps too (the query-time baseline reads
    them); beyond that only the documents analytics and the per-user baseline read.
    """
    now = datetime.now(UTC)
    month = month_key(now)

    def chunk(first: int) -> list[Write]:
        writes: list[Write] = []
        shard_writes: list[Write] = []
        for index in range(first, min(first + per_commit, stop)):
            steps = tuple(
                Step(
                    f"seed-{index}-{n}",
                    UsageType.AI if n else UsageType.API,
                    f"f{index % 7}",
                    "p",
                    COST_NANOS * (1 + index % 5),
                    n == 0,
                    now - timedelta(minutes=n),
                )
                for n in range(2)
            )
            commit = plans.RecordingCommit(
                user_id=f"bench-user-{index:06d}",
                request_id="seed",
                now=now,
                steps=steps,
                shard=index % store.shards,
                session_id=f"s-{index}",
                complete=complete,
                user_months={month: UserMonthState(exists=False, active=False)},
            )
            for write in mirror.mirrored(plans.recording_writes(commit)):  # users/{uid}.usage too
                if write.path.startswith(layout.PLATFORM_SHARDS):
                    shard_writes.append(write)
                elif with_steps or not write.path.startswith(layout.SESSION_USAGE):
                    writes.append(write)
        store.commit(writes)
        return shard_writes

    with ThreadPoolExecutor(max_workers=4) as pool:
        shard_writes = [w for part in pool.map(chunk, range(start, stop, per_commit)) for w in part]
    per_shard: dict[str, list[Write]] = {}
    for write in shard_writes:
        per_shard.setdefault(write.path, []).append(write)
    store.commit([combined(group) for group in per_shard.values()])


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    reads = fn()
    return (time.perf_counter() - started) * 1000, reads


def analytics_call(admin: accounts.User, *, fresh: bool = False) -> int:
    status, body = accounts.call("usage_analytics", admin, {"top": 10, "fresh": fresh})
    assert status == 200, body
    reads: int = body["result"]["meta"]["documentsRead"]
    return reads


def baseline_user_documents(db: firestore.Client) -> int:
    """Per-user-document design: read every user document and add up the month."""
    month = month_key(datetime.now(UTC))
    reads = total = 0
    for snap in db.collection("users").stream():
        reads += 1
        total += int(
            ((snap.to_dict() or {}).get("usage", {}).get("months", {}).get(month) or {}).get("costNanos", 0)
        )
    return reads


def baseline_sessions_and_steps(db: firestore.Client) -> int:
    """Query-time design: read every session and every step of the month, and add them up."""
    month = month_key(datetime.now(UTC))
    sessions = list(db.collection_group("sessions").stream())
    steps = list(
        db.collection_group("steps").where(filter=firestore.FieldFilter("month", "==", month)).stream()
    )
    totals: dict[str, int] = {}
    for step in steps:
        data = step.to_dict() or {}
        totals[data["feature"]] = totals.get(data["feature"], 0) + int(data["costNanos"])
    return len(sessions) + len(steps)


@dataclass
class Sizes:
    users: list[int]
    repeats: int
    steps_up_to: int  # users with sessions and steps (the query-time baseline reads them)


def analytics_bench(admin: accounts.User, sizes: Sizes) -> list[dict[str, Any]]:
    db = emulator.db()
    store = emulator.store()
    rows = []
    seeded = 0
    for size in sizes.users:
        progress(f"analytics: seeding users {seeded:,}..{size:,}")
        seed_users(store, seeded, size, with_steps=size <= sizes.steps_up_to)
        seeded = size
        progress(f"analytics: measuring at {size:,} users")
        fold_ms, _ = timed(lambda: analytics_call(admin, fresh=True))  # fold and rank the month now
        tally = [timed(lambda: analytics_call(admin)) for _ in range(sizes.repeats)]
        per_user = [timed(lambda: baseline_user_documents(db)) for _ in range(1 if size >= 10_000 else 3)]
        row: dict[str, Any] = {
            "users": size,
            "tally_documents_read": tally[0][1],
            "tally_ms": round(statistics.median(t for t, _ in tally), 1),
            "fresh_ms": round(fold_ms, 1),
            "user_documents_read": per_user[0][1],
            "user_documents_ms": round(statistics.median(t for t, _ in per_user), 1),
        }
        row["speedup_vs_user_documents"] = round(row["user_documents_ms"] / row["tally_ms"], 1)
        if size <= sizes.steps_up_to:
            per_step = [
                timed(lambda: baseline_sessions_and_steps(db)) for _ in range(1 if size >= 10_000 else 3)
            ]
            row["sessions_and_steps_read"] = per_step[0][1]
            row["sessions_and_steps_ms"] = round(statistics.median(t for t, _ in per_step), 1)
            row["speedup_vs_sessions_and_steps"] = round(row["sessions_and_steps_ms"] / row["tally_ms"], 1)
        rows.append(row)
    return rows


# 5. The largest document of each kind


def size_bench(quick: bool) -> dict[str, Any]:
    months = 24 if quick else 120
    progress(f"sizes: {months} months of worst-case traffic in memory (500 names a month)")
    few = largest_by_kind(simulate(months=months, light_users=5).docs)
    many = largest_by_kind(simulate(months=3, light_users=200).docs)
    rows = []
    for kind, size in sorted(few.items()):
        rows.append(
            {
                "kind": kind,
                "largest_bytes": size.largest,
                "share_of_1_mib": round(size.share_of_limit, 4),
                "largest_with_40x_the_users": many[kind].largest if kind in many else None,
                "example": size.path,
            }
        )
    return {"months": months, "rows": rows}


# 7. Reconcile at 100,000 users


class CountingStore(FirestoreStore):
    """The Firestore store, counting the documents its reads bill and the age of every snapshot read."""

    def __init__(self, client: firestore.Client, *, shards: int) -> None:
        super().__init__(client, shards=shards)
        self.documents_read = 0
        self.oldest_snapshot_seconds = 0.0
        self._lock = threading.Lock()

    def _billed(self, documents: int, read_time: datetime | None) -> None:
        with self._lock:
            self.documents_read += documents
            if read_time is not None:
                age = (datetime.now(UTC) - read_time).total_seconds()
                self.oldest_snapshot_seconds = max(self.oldest_snapshot_seconds, age)

    def read(self, paths: Any, *, read_time: datetime | None = None, fields: Any = None) -> Any:
        found = super().read(paths, read_time=read_time, fields=fields)
        self._billed(len(found), read_time)  # a missing document read by id is billed too
        return found

    def month_steps(self, **kwargs: Any) -> Any:
        found = super().month_steps(**kwargs)
        self._billed(max(1, len(found)), kwargs.get("read_time"))  # a query bills at least one read
        return found

    def user_month_steps(self, **kwargs: Any) -> Any:
        found = super().user_month_steps(**kwargs)
        self._billed(max(1, len(found)), kwargs.get("read_time"))
        return found

    def month_users(self, **kwargs: Any) -> Any:
        found = super().month_users(**kwargs)
        self._billed(max(1, len(found)), kwargs.get("read_time"))
        return found

    def month_sessions(self, **kwargs: Any) -> Any:
        found = super().month_sessions(**kwargs)
        self._billed(max(1, len(found)), kwargs.get("read_time"))
        return found

    def user_holds(self, **kwargs: Any) -> Any:
        found = super().user_holds(**kwargs)
        self._billed(max(1, len(found)), kwargs.get("read_time"))
        return found

    def count_month_steps(self, **kwargs: Any) -> int:
        count = super().count_month_steps(**kwargs)
        self._billed(1 + count // 1000, kwargs.get("read_time"))  # an aggregation: one read per 1,000 entries
        return count

    def user_lifetime(self, **kwargs: Any) -> Any:
        found = super().user_lifetime(**kwargs)
        self._billed(2, kwargs.get("read_time"))  # two aggregation queries
        return found

    def user_session_counts(self, **kwargs: Any) -> Any:
        found = super().user_session_counts(**kwargs)
        self._billed(2, kwargs.get("read_time"))
        return found


class AnalyticsCountingStore(CountingStore):
    """The counting store, counting the ranking's queries too (a fold with a ranking runs them)."""

    def top_users(self, **kwargs: Any) -> Any:
        found = super().top_users(**kwargs)
        self._billed(max(1, len(found)), kwargs.get("read_time"))
        return found

    def free_tier(self, **kwargs: Any) -> Any:
        found = super().free_tier(**kwargs)
        self._billed(max(1, len(found)), kwargs.get("read_time"))
        return found

    def month_alerts(self, **kwargs: Any) -> Any:
        found = super().month_alerts(**kwargs)
        self._billed(max(1, len(found)), None)
        return found


class NoDirectory:
    """No emails: the directory is Firebase Auth, whose lookups are not Firestore reads."""

    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        return {}


STUBBED = Forecast(0, 0, 0, None, "stubbed out by the bench")


def analytics_in_process(*, fresh: bool, forecasting: bool, now: datetime) -> dict[str, Any]:
    """Run usage_analytics in this process on the emulator's data, with forecasting or stubbed out."""
    store = AnalyticsCountingStore(emulator.db(), shards=emulator.settings().aggregate_shards)
    with ExitStack() as stack:
        stubs = []
        if not forecasting:  # in the bench only: the services' forecasting answers a constant
            stubs = [
                stack.enter_context(mock.patch.object(projections, "project", return_value=STUBBED)),
                stack.enter_context(mock.patch.object(projections, "run_rate_month_end", return_value=0.0)),
            ]
        started = time.perf_counter()
        answer = analytics.usage_analytics(
            store=store,
            directory=NoDirectory(),
            request=AnalyticsIn(top=10, fresh=fresh),
            settings=emulator.settings(),
            now=now,
        )
        ms = (time.perf_counter() - started) * 1000
    return {
        "fresh": fresh,
        "forecasting": forecasting,
        "documents_read": answer["meta"]["documentsRead"],
        "store_documents_read": store.documents_read,
        "ms": round(ms, 1),
        "forecast": answer["forecast"],
        "stub_calls": sum(stub.call_count for stub in stubs),
    }


def analytics_forecast_bench(admin: accounts.User, quick: bool) -> dict[str, Any]:
    """usage_analytics' documents read with forecasting and with it stubbed out, at the same data."""
    users = 100 if quick else 1000
    progress(f"analytics-forecast: seeding {users:,} users")
    seed_users(emulator.store(), 0, users, with_steps=False)
    analytics_call(admin, fresh=True)  # fold and rank the month
    deployed = analytics_call(admin)
    now = datetime.now(UTC)  # one instant for every in-process call: the same rollup, young
    progress("analytics-forecast: in process, with forecasting and with it stubbed out")
    rows = [
        analytics_in_process(fresh=fresh, forecasting=forecasting, now=now)
        for fresh in (False, True)
        for forecasting in (True, False, True)
    ]
    pairs = [[r for r in rows if r["fresh"] is fresh] for fresh in (False, True)]
    return {
        "users": users,
        "deployed_documents_read": deployed,
        "rows": rows,
        "unchanged": all(
            len({(r["documents_read"], r["store_documents_read"]) for r in pair}) == 1 for pair in pairs
        )
        and deployed == pairs[0][0]["documents_read"],
    }


def analytics_forecast_markdown(result: dict[str, Any]) -> list[str]:
    """Return the report of usage_analytics' reads with and without forecasting."""
    lines = [
        f"`meta.documentsRead` of `usage_analytics` with forecasting and without it, at the same data "
        f"({result['users']:,} seeded users): the deployed callable (with forecasting) read "
        f"{result['deployed_documents_read']}; then the service ran in the bench's process against the "
        "same emulator data, at one instant, with forecasting, with it stubbed out (the bench patches "
        "`projections.project` and `projections.run_rate_month_end` to return constants: no production "
        "switch), and with it again. `store reads` counts the documents the store's reads and queries "
        "returned (a query bills at least one); `fresh` folds the shards and ranks the month first.",
        "",
        "| fresh | forecasting | documentsRead | store reads | ms | platform monthEnd |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        shown = row["forecast"]["monthEnd"] if row["forecasting"] else f"stubbed ({row['stub_calls']} calls)"
        lines.append(
            f"| {'yes' if row['fresh'] else 'no'} | {'with' if row['forecasting'] else 'without'} | "
            f"{row['documents_read']} | {row['store_documents_read']} | {row['ms']} | {shown} |"
        )
    lines += [
        "",
        f"documentsRead unchanged by forecasting: {verdict(result['unchanged'])}. The forecasts are "
        "computed from the rollups the answer reads anyway (the platform's daily breakdown and its months' "
        "totals, the top users' and teams' month totals), so a build without forecasting reads the same "
        "documents.",
    ]
    return lines


def reconcile_bench(quick: bool) -> list[dict[str, Any]]:
    """Reconcile a month of 10,000 and 100,000 users (two steps and an open session each) on the emulator."""
    rows = []
    seeded = 0
    month = month_key(datetime.now(UTC))
    for size in [1000] if quick else [10_000, 100_000]:
        progress(f"reconcile: seeding users {seeded:,}..{size:,} with their steps and sessions")
        # Open sessions: 100,000 completed ones would keep the finalizer trigger busy during the run.
        seed_users(emulator.store(), seeded, size, with_steps=True, per_commit=50, complete=False)
        seeded = size
        store = CountingStore(emulator.db(), shards=Settings().aggregate_shards)
        progress(f"reconcile: checking {month} at {size:,} users")
        started = time.perf_counter()
        report = reconcile(store=store, month=month, settings=Settings(), now=datetime.now(UTC), fix=False)
        seconds = time.perf_counter() - started
        rows.append(
            {
                "users": report.users,
                "steps": report.steps,
                "differences": len(report.differences),
                "seconds": round(seconds, 1),
                "ms_per_user": round(seconds * 1000 / max(1, report.users), 2),
                "documents_read": store.documents_read,
                "documents_read_per_user": round(store.documents_read / max(1, report.users), 2),
                "oldest_snapshot_seconds": round(store.oldest_snapshot_seconds, 1),
            }
        )
        progress(f"reconcile: {report.summary()} in {seconds:.1f} s")
    return rows


# Output


# 6. Pricing and the budget gate over HTTP (issues 12 and 13)

COLD_BASE = (
    "import time; t = time.perf_counter(); import tally.services.recording; print(time.perf_counter() - t)"
)
COLD_PRICED = (
    "import time; t = time.perf_counter(); import tally.services.recording; "
    "from datetime import UTC, datetime; from tally import pricing; from tally.values import Units; "
    "pricing.price(provider='openai', units=Units('gpt-4o-mini', 1000, 100), "
    "at=datetime.now(UTC), book=None); "
    "print(time.perf_counter() - t)"
)


def cold_start(repeats: int) -> dict[str, Any]:
    """Time a fresh interpreter's imports, without and with a first genai-prices price."""

    def once(code: str) -> float:
        done = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        )
        return float(done.stdout.strip()) * 1000

    base = statistics.median(once(COLD_BASE) for _ in range(repeats))
    priced = statistics.median(once(COLD_PRICED) for _ in range(repeats))
    return {
        "repeats": repeats,
        "import_recording_ms": round(base, 1),
        "import_and_first_price_ms": round(priced, 1),
        "pricing_cold_start_ms": round(priced - base, 1),
    }


PRICED_BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "cost given (baseline)": lambda: {"cost": COST},
    "units, admins' catalog": lambda: {"units": {"model": "bench-model", "requests": 1}},
    "units, genai-prices": lambda: {
        "units": {"model": "gpt-4o-mini", "inputTokens": 900, "outputTokens": 120}
    },
    "units, unpriced model": lambda: {"units": {"model": "bench-unknown-llm", "inputTokens": 900}},
}


def llm_step(provider: str, **priced: Any) -> dict[str, Any]:
    return {
        "operationId": f"bench_{uuid.uuid4().hex}",
        "usageType": "AI",
        "feature": "chat",
        "provider": provider,
        **priced,
    }


def gate_bench(admin: accounts.User, quick: bool) -> dict[str, Any]:
    """Latency of priced vs unpriced steps and of reserve_spend vs record_steps, interleaved; concurrency."""
    user = accounts.make_user()
    accounts.result_of("set_limits", admin, {"userId": user.uid, "monthlyCostLimit": 1_000_000})
    accounts.result_of(
        "set_price",
        admin,
        {
            "provider": "bench",
            "model": "bench-model",
            "effectiveFrom": "2020-01-01",
            "prices": {"request": 0.002},
        },
    )
    rounds = 40 if quick else 150
    times: dict[str, list[float]] = {name: [] for name in [*PRICED_BODIES, "reserve_spend", "settle"]}
    with requests.Session() as http:

        def timed_post(name: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
            started = time.perf_counter()
            response = accounts.record(user, body, http=http, endpoint=endpoint)
            times[name].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer

        for _ in range(3):  # warm-up: genai-prices imported in the workers the emulator starts
            for name, priced in PRICED_BODIES.items():
                timed_post(name, "record_steps", {"steps": [llm_step("openai", **priced())]})
        times = {name: [] for name in times}
        for n in range(rounds):
            for name, priced in PRICED_BODIES.items():
                provider = "bench" if "catalog" in name else "openai"
                timed_post(name, "record_steps", {"steps": [llm_step(provider, **priced())]})
            reservation = f"res_bench_{n}_{uuid.uuid4().hex[:8]}"
            decision = timed_post(
                "reserve_spend", "reserve_spend", {"reservationId": reservation, "estimate": {"cost": 0.01}}
            )
            assert decision["allowed"], decision
            step = llm_step("openai", cost=COST, reservationId=reservation)
            timed_post("settle", "record_steps", {"steps": [step]})
    baseline = percentile(times["cost given (baseline)"], 50)
    rows = [
        {
            "call": name,
            "requests": len(values),
            "p50_ms": round(percentile(values, 50), 1),
            "p95_ms": round(percentile(values, 95), 1),
            "p50_vs_cost_given": round(percentile(values, 50) / baseline, 2),
        }
        for name, values in times.items()
    ]
    return {"rounds": rounds, "latency": rows, "concurrency": gate_concurrency(admin, quick)}


def concurrent_reservations(
    user: accounts.User, clients: int, estimate: dict[str, Any]
) -> tuple[list[dict[str, Any]], float]:
    """Send `clients` reservations of `estimate` at once (a barrier releases them); return the answers."""
    barrier = threading.Barrier(clients)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        body = {"reservationId": f"res_c{index}_{uuid.uuid4().hex[:8]}", "estimate": estimate}
        with requests.Session() as http:
            barrier.wait()
            response = http.post(
                emulator.functions_url("reserve_spend"), json=body, headers=user.headers, timeout=600
            )
        assert response.status_code == 200, response.text
        with lock:
            answers.append(response.json())

    seconds = run_clients(clients, client)
    return answers, seconds


def gate_concurrency(admin: accounts.User, quick: bool) -> list[dict[str, Any]]:
    """Many concurrent reservations against a small limit: how many were admitted."""
    results = []
    clients = 24  # concurrent reservations (scripts/with-emulators: up to 4 per CPU in one worker)
    warm = accounts.make_user()  # start the workers first, so the barrier releases real contention
    accounts.result_of("set_limits", admin, {"userId": warm.uid, "monthlyCostLimit": 1_000_000})
    concurrent_reservations(warm, clients, {"cost": 0.001})
    for kind, limits, estimate, fits in (
        ("cost", {"monthlyCostLimit": 1.0}, {"cost": 0.1}, 10),
        ("runs", {"monthlyFreeRuns": 5}, {"cost": 0.001, "isBillableRun": True}, 5),
    ):
        user = accounts.make_user()
        accounts.result_of("set_limits", admin, {"userId": user.uid, **limits})
        answers, seconds = concurrent_reservations(user, clients, estimate)
        allowed = sum(a["allowed"] for a in answers)
        results.append(
            {
                "limit": kind,
                "concurrent_reservations": clients,
                "fit_within_limit": fits,
                "allowed": allowed,
                "refused": clients - allowed,
                "over_admitted": max(0, allowed - fits),
                "seconds": round(seconds, 2),
            }
        )
    return results


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Tally benchmarks",
        "",
        f"Measured {results['generated_at']} on the Firebase Emulator Suite (not production Firestore), "
        f"on {machine['cpus']} CPU cores, {machine['platform']}, Python {machine['python']}. "
        "Each figure is compared with its baseline measured in the same run; absolute numbers are the "
        "emulator's and only meaningful side by side. Raw results: [`benchmarks.json`](benchmarks.json).",
        "",
        *[f"> {note}" for note in results.get("notes", [])],
        *([""] if results.get("notes") else []),
        "Reproduce: `make bench` (`make bench BENCH_ARGS=--quick` for a smaller run).",
        "",
        "## 1. record_steps over HTTP",
        "",
        "| steps per request | requests | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results["latency"]:
        lines.append(
            f"| {row['steps_per_request']} | {row['requests']} | "
            f"{row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} |"
        )
    lines += [
        "",
        "Throughput, each client in its own session, one step per request; after every run the users' "
        "totals are read back and compared with what was sent:",
        "",
        "| clients | users | requests | seconds | requests/s | vs 1 client | failed | lost updates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = results["throughput"][0]["requests_per_second"]
    for row in results["throughput"]:
        lines.append(
            f"| {row['clients']} | {row['users']} | {row['requests']} | {row['seconds']} | "
            f"{row['requests_per_second']} | {row['requests_per_second'] / base:.1f}x | "
            f"{row['failed_requests']} | {row['lost_updates']} |"
        )
    lines += [
        "",
        "## 2. The write design against a read-modify-write transaction",
        "",
        "The same concurrent one-user workload, in-process against the Firestore emulator (no HTTP).",
        "",
        "| design | clients | operations | seconds | ops/s | aborts (retries) | failed | lost updates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["design"]:
        lines.append(
            f"| {row['design']} | {row['clients']} | {row['operations']} | {row['seconds']} | "
            f"{row['ops_per_second']} | {row['aborts']} | {row['failed']} | {row['lost_updates']} |"
        )
    for clients, times in results["design_ratios"].items():
        lines.append(f"\nWith {clients} clients Tally's design has {times}x the throughput of the baseline.")
    census = results["census"]
    lines += [
        "",
        "## 3. Write census: writes per document, projected to a platform rate",
        "",
        "Sessions of 4 requests (one step each, the last completes the session, the finalizer runs) from "
        "many users, through the real services against the emulator; every applied commit's documents "
        "are counted after a warm-up (the month's names admitted). A document's projected rate is its "
        "share of the requests times the platform rate. Firestore sustains about 1 write/s per document.",
        "",
        f"Platform-shard writes per request: {census['shard_writes_per_request']} (one per request, one "
        "more per finalized session).",
        "",
        "| shards | platform rate | requests | hottest shared document | its writes/s | hottest per-user "
        "document | its writes/s at 1 request/s of its user |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in census["rows"]:
        lines.append(
            f"| {row['shards']:,} | {row['rate']:,}/s | {row['requests']:,} | `{row['hottest_shared']}` | "
            f"{row['hottest_shared_writes_per_second']} | `{row['hottest_per_user']}` | "
            f"{row['hottest_per_user_writes_per_second_at_1_rps']} |"
        )
    lines += [
        "",
        "Per document kind at the default shard count: a shared document at 1,000 requests/s on the "
        "platform, a per-user document at 1 request/s of its user (sessions of 4 requests: a session "
        "document takes its 4 requests' writes and the finalizer's):",
        "",
        "| kind | shared or per user | documents written | hottest document's writes/s |",
        "| --- | --- | --- | --- |",
    ]
    for kind, row in census["rows"][0]["kinds"].items():
        who = "per user" if row["per_user"] else "shared"
        lines.append(f"| `{kind}` | {who} | {row['documents']:,} | {row['hottest_writes_per_second']} |")
    gated = census["gated"]
    lines += [
        "",
        f"A gated call (`reserve_spend`, then `record_steps` settling it; {gated['gated_calls']} calls "
        "through the real services): writes per call to each of the user's shared documents "
        "(the SPEC: at most 2):",
        "",
        "| document kind | writes per gated call |",
        "| --- | --- |",
        *[f"| `{kind}` | {rate} |" for kind, rate in gated["writes_per_gated_call"].items()],
    ]
    lines += [
        "",
        "## 4. usage_analytics at scale",
        "",
        "Users seeded with the project's own commit builders (one completed session of two steps each; "
        "sessions and steps only up to 10,000 users, where the query-time baseline still runs). "
        "Baselines: reading every user document, and reading every session and step. Median of repeated "
        "calls, measured after a fold (a rollup under 60 s old, which holds the month's ranking). "
        '`fresh` is one call with `"fresh": true`, which folds the shards and ranks the month: its '
        "two indexed queries are answered from the index in production, but the emulator scans the "
        "collection, so on the emulator that time grows with users (at most once a minute, and only "
        "while somebody reads).",
        "",
        "| users | Tally docs read | Tally ms | fresh ms | user docs read | user docs ms | speed-up | "
        "sessions+steps read | sessions+steps ms | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["analytics"]:
        lines.append(
            f"| {row['users']:,} | {row['tally_documents_read']} | {row['tally_ms']} | "
            f"{row.get('fresh_ms', '-')} | "
            f"{row['user_documents_read']:,} | {row['user_documents_ms']} | "
            f"{row['speedup_vs_user_documents']}x | "
            f"{row.get('sessions_and_steps_read', '-')} | {row.get('sessions_and_steps_ms', '-')} | "
            f"{ratio(row.get('speedup_vs_sessions_and_steps'))} |"
        )
    if "analytics_forecast" in results:
        lines += ["", *analytics_forecast_markdown(results["analytics_forecast"])]
    sizes = results["sizes"]
    lines += [
        "",
        "## 5. The largest document of each kind",
        "",
        f"{sizes['months']} months of worst-case traffic through the real services on the in-memory store: "
        "every month admits 500 feature and 500 provider names of 100 characters (and sends more, which "
        "go to `(other)`), one session passes its name cap, a step carries the largest metadata, sessions "
        "are finalized and months folded, each rollup's ranking filled to its bound (100 top users and "
        "50 free-tier rows, 128-character ids). Sizes follow Firestore's storage rules. No document holds "
        "anything per user beyond counters and that bounded ranking, so sizes do not depend on the "
        "number of users (the last "
        "column repeats the run with 40 times the users): the same at 1,000,000 monthly active users.",
        "",
        "| document kind | largest (bytes) | share of 1 MiB | with 40x the users |",
        "| --- | --- | --- | --- |",
    ]
    for row in sizes["rows"]:
        lines.append(
            f"| `{row['kind']}` | {row['largest_bytes']:,} | {row['share_of_1_mib']:.1%} | "
            f"{row['largest_with_40x_the_users'] or '-':,} |"
        )
    lines += ["", "`users/{id}` is Tally's `usage` map only; the app's own fields come on top.", ""]
    gate, cold = results["gate"], results["cold_start"]
    lines += [
        "## 6. Pricing and the budget gate",
        "",
        f"Cold start of pricing, fresh interpreters (median of {cold['repeats']}): importing the recording "
        f"service takes {cold['import_recording_ms']} ms; with genai-prices imported and a first price "
        f"computed, {cold['import_and_first_price_ms']} ms, so pricing's cold start is "
        f"{cold['pricing_cold_start_ms']} ms, paid once per instance by the first step with `units` only.",
        "",
        f"Warm latency over HTTP, {gate['rounds']} rounds, the calls interleaved in each round (one step "
        "per request; `settle` is a `record_steps` whose step carries the `reservationId` just granted):",
        "",
        "| call | requests | p50 ms | p95 ms | p50 vs cost given |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in gate["latency"]:
        lines.append(
            f"| {row['call']} | {row['requests']} | {row['p50_ms']} | {row['p95_ms']} | "
            f"{row['p50_vs_cost_given']}x |"
        )
    lines += [
        "",
        "Concurrent reservations of one user, all released at once by a barrier, against a small limit:",
        "",
        "| limit | concurrent reservations | fit within the limit | allowed | refused | over-admitted |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in gate["concurrency"]:
        lines.append(
            f"| {row['limit']} | {row['concurrent_reservations']} | {row['fit_within_limit']} | "
            f"{row['allowed']} | {row['refused']} | {row['over_admitted']} |"
        )
    lines.append("")
    lines += [
        "## 7. reconcile at 100,000 users",
        "",
        "`reconcile --month M` (no `--fix`) on a month whose users each have two steps and an "
        "open session, in-process against the emulator. Documents read counts what "
        "Firestore would bill (a missing document read by id and an empty query count one; an "
        "aggregation one per 1,000 entries). The oldest snapshot is the age of the oldest "
        "`read_time` any read used when it was made: production serves one for an hour only.",
        "",
        "| users | steps | differences | seconds | ms per user | documents read | per user "
        "| oldest snapshot (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["reconcile"]:
        lines.append(
            f"| {row['users']:,} | {row['steps']:,} | {row['differences']} | {row['seconds']} | "
            f"{row['ms_per_user']} | {row['documents_read']:,} | {row['documents_read_per_user']} | "
            f"{row['oldest_snapshot_seconds']} |"
        )
    lines += [
        "",
        "The emulator answers every query by scanning its collection group (production reads an "
        "index), so its per-page queries cost more as the month grows; the time per user here is "
        "an upper bound of the shape, not production's.",
        "",
    ]
    if "scopes" in results:
        lines += [bench_scopes.markdown(results["scopes"])]
    lines += ["## Targets", ""] + [f"- {line}" for line in results["targets"]] + [""]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value}x"


def targets(results: dict[str, Any]) -> list[str]:
    analytics = results["analytics"]
    reads = {row["tally_documents_read"] for row in analytics}
    small, largest = analytics[0], analytics[-1]
    one_user = [r for r in results["throughput"] if r["users"] == 1]
    scale = one_user[-1]["requests_per_second"] / one_user[0]["requests_per_second"]
    zero = all(r["lost_updates"] == 0 and r["failed_requests"] == 0 for r in results["throughput"])
    census = results["census"]["rows"]
    default = census[0]
    largest_doc = max(results["sizes"]["rows"], key=lambda r: r["largest_bytes"])
    checks = [r for r in census if r["shards"] != default["shards"]]
    gated = results["census"]["gated"]["writes_per_gated_call"]
    rec = results["reconcile"][-1]
    forecasting = results.get("analytics_forecast")
    return [
        f"documentsRead the same at every size: {'met' if len(reads) == 1 else 'MISSED'} ({sorted(reads)})",
        *(
            [
                f"documentsRead unchanged by forecasting: {verdict(forecasting['unchanged'])} "
                f"({', '.join(str(r['documents_read']) for r in forecasting['rows'])})"
            ]
            if forecasting
            else []
        ),
        f"latency at {largest['users']:,} users within 1.5x of {small['users']:,}: "
        f"{'met' if largest['tally_ms'] <= 1.5 * small['tally_ms'] else 'MISSED'} "
        f"({largest['tally_ms']} ms vs {small['tally_ms']} ms)",
        f"at {largest['users']:,} users at least 100x faster than reading every user document: "
        f"{verdict(largest['speedup_vs_user_documents'] >= 100)} ({largest['speedup_vs_user_documents']}x)",
        f"hottest shared document at the default {default['shards']} shards: `{default['hottest_shared']}`, "
        f"{default['hottest_shared_writes_per_second']} writes/s at 1,000 requests/s",
        *[
            f"{r['shards']:,} shards keep every shared document at or under 1 write/s at "
            f"{r['rate']:,} requests/s: {verdict(r['hottest_shared_writes_per_second'] <= 1)} "
            f"({r['hottest_shared_writes_per_second']})"
            for r in checks
        ],
        f"hottest per-user document at 1 request/s of its user: `{default['hottest_per_user']}`, "
        f"{default['hottest_per_user_writes_per_second_at_1_rps']} writes/s",
        f"every document kind under 1 MiB: {verdict(largest_doc['largest_bytes'] < MAX_DOCUMENT_BYTES)} "
        f"(largest: `{largest_doc['kind']}`, {largest_doc['largest_bytes']:,} bytes, "
        f"{largest_doc['share_of_1_mib']:.1%})",
        f"16 clients of one user at least 4x the throughput of 1: {verdict(scale >= 4)} ({scale:.1f}x)",
        f"zero lost updates: {'met' if zero else 'MISSED'}",
        *[
            f"{r['concurrent_reservations']} concurrent reservations against the {r['limit']} limit admit "
            f"exactly what fits ({r['fit_within_limit']}): {verdict(r['allowed'] == r['fit_within_limit'])} "
            f"({r['allowed']} allowed)"
            for r in results["gate"]["concurrency"]
        ],
        f"a gated call writes each of the user's shared documents at most twice: "
        f"{verdict(max(gated.values()) <= 2)} ({gated})",
        f"reconcile at {rec['users']:,} users finds 0 differences: {verdict(rec['differences'] == 0)}; "
        f"its oldest snapshot is under one hour: {verdict(rec['oldest_snapshot_seconds'] < 3600)} "
        f"({rec['oldest_snapshot_seconds']} s; the run took {rec['seconds']} s)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for a try-out)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for benchmarks.md and .json")
    parser.add_argument(
        "--only",
        choices=list(SECTIONS),
        action="append",
        help="run only these sections (repeatable; the report needs all)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite benchmarks.md from the benchmarks.json in --out"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        saved = json.loads((Path(args.out) / "benchmarks.json").read_text())
        (Path(args.out) / "benchmarks.md").write_text(markdown(saved))
        return 0
    quick = args.quick
    only = set(args.only or SECTIONS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = emulator.db()
    emulator.wipe()
    user = accounts.make_user()
    admin = accounts.make_user(claims={"admin": True})
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "emulator": True,
    }
    if "http" in only:
        progress(
            "write path: warming up (the emulator starts Python workers as concurrent requests need them)"
        )
        latency(user, 1, 5)
        throughput([user], 16, 3, db)
        results["latency"] = []
        for steps in (1, 10):
            progress(f"write path: latency with {steps} step(s) per request")
            results["latency"].append(latency(user, steps, 60 if quick else 200))
        results["throughput"] = []
        per_client = 10 if quick else 25
        for clients in (1, 4, 16):
            progress(f"write path: {clients} client(s) of one user")
            results["throughput"].append(throughput([user], clients, per_client, db))
        many = [accounts.make_user() for _ in range(16)]
        progress("write path: 16 clients of 16 users")
        results["throughput"].append(throughput(many, 16, per_client, db))
    if "design" in only:
        results["design"] = []
        results["design_ratios"] = {}
        for clients in (1, 4, 8):
            progress(f"design: Tally vs read-modify-write, {clients} client(s)")
            ours = tally_design(db, clients, 5 if quick else 10)
            theirs = rmw_baseline(db, clients, 3 if quick else 5)
            results["design"] += [ours, theirs]
            results["design_ratios"][clients] = round(
                ours["ops_per_second"] / max(theirs["ops_per_second"], 0.01), 1
            )
    if "census" in only:
        emulator.wipe_documents()
        results["census"] = census_bench(quick)
    if "analytics" in only:
        emulator.wipe_documents(timeout=900)
        sizes = Sizes(users=[100, 1000] if quick else [100, 10_000, 100_000], repeats=5, steps_up_to=10_000)
        results["analytics"] = analytics_bench(admin, sizes)
    if "analytics-forecast" in only:
        emulator.wipe_documents(timeout=900)
        results["analytics_forecast"] = analytics_forecast_bench(admin, quick)
        (out / "benchmarks-analytics-forecast.json").write_text(
            json.dumps(results["analytics_forecast"], indent=2) + "\n"
        )
        (out / "benchmarks-analytics-forecast.md").write_text(
            "\n".join(
                [
                    "# Tally benchmarks: usage_analytics' reads with and without forecasting",
                    "",
                    *analytics_forecast_markdown(results["analytics_forecast"]),
                    "",
                ]
            )
        )
    if "sizes" in only:
        results["sizes"] = size_bench(quick)
    if "reconcile" in only:
        emulator.wait_for_finalizations(timeout=900)  # the analytics' sessions: no trigger left running
        emulator.wipe_documents(timeout=900)
        results["reconcile"] = reconcile_bench(quick)
    if "gate" in only:
        emulator.wipe_documents(timeout=900)  # after 100,000 users: minutes on 2 cores
        receiver = webhook.from_environment()  # the alerts the gate's users raise are delivered here
        progress("pricing: cold start in fresh interpreters")
        results["cold_start"] = cold_start(3 if quick else 7)
        progress("pricing and the gate: interleaved latency, then concurrent reservations")
        results["gate"] = gate_bench(admin, quick)
        receiver.close()
    if "forecast" in only:  # pure: synthetic traces with known outcomes, no emulator needed
        progress("forecast: backtest of the month-end projection and the anomaly rule")
        results["forecast"] = backtest.bench()
        (out / "benchmarks-forecast.json").write_text(json.dumps(results["forecast"], indent=2) + "\n")
        (out / "benchmarks-forecast.md").write_text(backtest.markdown(results["forecast"]))
    if "scopes" in only:
        emulator.wipe_documents(timeout=900)
        progress("scopes: a team's write census, 100 concurrent reservations, latency with five scopes")
        results["scopes"] = bench_scopes.bench(admin, quick)
        (out / "benchmarks-scopes.json").write_text(json.dumps(results["scopes"], indent=2) + "\n")
        (out / "benchmarks-scopes.md").write_text(
            "# Tally benchmarks: scopes\n\n" + bench_scopes.markdown(results["scopes"])
        )
    if only == set(SECTIONS):
        results["targets"] = targets(results)
        (out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")  # first: the run is kept
        (out / "benchmarks.md").write_text(markdown(results))
        for line in results["targets"]:
            progress(line)
        progress(f"wrote {out / 'benchmarks.md'} and {out / 'benchmarks.json'}")
    else:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
