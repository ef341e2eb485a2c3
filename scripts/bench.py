"""Tally benchmarks against the emulator suite; writes docs/benchmarks.md and docs/benchmarks.json.

Run with `make bench` (under scripts/with-emulators). Every figure is measured in the same
run as its baseline, and reported as a ratio; absolute numbers are the emulator's, on this
machine, and only meaningful side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT / "tests")]

from google.cloud import firestore  # noqa: E402

from tally_dev import accounts, emulator  # noqa: E402
from tally.config import Settings  # noqa: E402
from tally.models import RecordRequest, SessionRequest, Step, UsageType  # noqa: E402
from tally.recording import Caller, record_steps  # noqa: E402
from tally.store import FirestoreStore  # noqa: E402
from tally.timeutil import month_key  # noqa: E402

console = Console(stderr=True)
COST = "0.00283"
COST_NANOS = 2_830_000


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


# 1. Write path over HTTP


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


# 2. The transaction design against a read-modify-write baseline (in-process, same workload)


def tally_design(db: firestore.Client, clients: int, per_client: int) -> dict[str, Any]:
    store = FirestoreStore(db, shards=Settings.from_env().aggregate_shards)
    uid = f"bench-tally-{uuid.uuid4().hex[:8]}"
    attempts: list[int] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        session = f"s{index}"
        for n in range(per_client):
            now = datetime.now(UTC)
            step = Step(f"op-{index}-{n}", UsageType.API, "f", "p", COST_NANOS, False, now, {})
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


# 3. Analytics at scale against two query-time baselines


def seed_users(db: firestore.Client, count: int, start: int) -> None:
    """Record one session of two steps for each new user, through the project's own store."""
    store = FirestoreStore(db, shards=Settings.from_env().aggregate_shards)
    now = datetime.now(UTC)

    def one(index: int) -> None:
        uid = f"bench-user-{index:05d}"
        steps = tuple(
            Step(
                f"seed-{index}-{n}",
                UsageType.AI if n else UsageType.API,
                f"f{index % 7}",
                "p",
                COST_NANOS * (1 + index % 5),
                n == 0,
                now - timedelta(minutes=n),
                {},
            )
            for n in range(2)
        )
        request = RecordRequest(None, SessionRequest(f"s-{index}", None, True), steps)
        record_steps(store=store, caller=Caller(uid), request=request, settings=Settings(), now=now)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(start, count)))


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    reads = fn()
    return (time.perf_counter() - started) * 1000, reads


def analytics_call(admin: accounts.User) -> int:
    status, body = accounts.call("usage_analytics", admin, {"top": 10})
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
    in_month = firestore.FieldFilter("month", "==", month)
    steps = list(db.collection_group("steps").where(filter=in_month).stream())
    totals: dict[str, int] = {}
    for step in steps:
        data = step.to_dict() or {}
        totals[data["feature"]] = totals.get(data["feature"], 0) + int(data["costNanos"])
    return len(sessions) + len(steps)


@dataclass
class Sizes:
    users: list[int]
    repeats: int


def analytics_bench(db: firestore.Client, admin: accounts.User, sizes: Sizes) -> list[dict[str, Any]]:
    rows = []
    seeded = 0
    for size in sizes.users:
        progress(f"analytics: seeding users {seeded}..{size} through the store")
        seed_users(db, size, seeded)
        seeded = size
        progress(f"analytics: measuring at {size} users")
        tally = [timed(lambda: analytics_call(admin)) for _ in range(sizes.repeats)]
        slow = max(1, sizes.repeats // 2) if size < 10_000 else 1
        per_user = [timed(lambda: baseline_user_documents(db)) for _ in range(slow)]
        per_step = [timed(lambda: baseline_sessions_and_steps(db)) for _ in range(slow)]
        tally_ms = statistics.median(t for t, _ in tally)
        user_ms = statistics.median(t for t, _ in per_user)
        step_ms = statistics.median(t for t, _ in per_step)
        rows.append(
            {
                "users": size,
                "tally_documents_read": tally[0][1],
                "tally_ms": round(tally_ms, 1),
                "user_documents_read": per_user[0][1],
                "user_documents_ms": round(user_ms, 1),
                "sessions_and_steps_read": per_step[0][1],
                "sessions_and_steps_ms": round(step_ms, 1),
                "speedup_vs_user_documents": round(user_ms / tally_ms, 1),
                "speedup_vs_sessions_and_steps": round(step_ms / tally_ms, 1),
            }
        )
    return rows


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
        "Reproduce: `make bench` (about 10 minutes; `make bench BENCH_ARGS=--quick` for a smaller run).",
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
        "The same concurrent one-user workload, in-process against the Firestore emulator (no HTTP): "
        "Tally's commit (plain read, preconditions, blind increments) against a transaction that reads "
        "the user document, adds, and writes it back.",
        "",
        "| design | clients | operations | seconds | ops/s | aborts (retries) | failed | lost updates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["design"]:
        lines.append(
            f"| {row['design']} | {row['clients']} | {row['operations']} | {row['seconds']} | "
            f"{row['ops_per_second']} | {row['aborts']} | {row['failed']} | {row['lost_updates']} |"
        )
    for clients, ratio in results["design_ratios"].items():
        lines.append(f"\nWith {clients} clients Tally's design has {ratio}x the throughput of the baseline.")
    lines += [
        "",
        "## 3. usage_analytics against query-time baselines",
        "",
        "Users seeded through the project's own store code (one completed session of two steps each). "
        "Baselines: reading every user document (the per-user-document design), and reading every "
        "session and its steps. Median of repeated calls.",
        "",
        "| users | Tally docs read | Tally ms | user docs read | user docs ms | speed-up | "
        "sessions+steps read | sessions+steps ms | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["analytics"]:
        lines.append(
            f"| {row['users']:,} | {row['tally_documents_read']} | {row['tally_ms']} | "
            f"{row['user_documents_read']:,} | {row['user_documents_ms']} | "
            f"{row['speedup_vs_user_documents']}x | "
            f"{row['sessions_and_steps_read']:,} | {row['sessions_and_steps_ms']} | "
            f"{row['speedup_vs_sessions_and_steps']}x |"
        )
    lines += ["", "## Targets", ""] + [f"- {line}" for line in results["targets"]] + [""]
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[str]:
    reads = {row["tally_documents_read"] for row in results["analytics"]}
    largest = results["analytics"][-1]
    one_user = [r for r in results["throughput"] if r["users"] == 1]
    scale = one_user[-1]["requests_per_second"] / one_user[0]["requests_per_second"]
    zero = all(r["lost_updates"] == 0 and r["failed_requests"] == 0 for r in results["throughput"])
    tally_rows = [r for r in results["design"] if r["design"].startswith("tally")]
    aborts = sum(r["aborts"] for r in tally_rows)
    return [
        f"documentsRead the same at every size: {'met' if len(reads) == 1 else 'MISSED'} ({sorted(reads)})",
        f"at {largest['users']:,} users at least 20x faster than reading every user document: "
        f"{'met' if largest['speedup_vs_user_documents'] >= 20 else 'MISSED'} "
        f"({largest['speedup_vs_user_documents']}x)",
        f"16 clients of one user at least 4x the throughput of 1: {'met' if scale >= 4 else 'MISSED'} "
        f"({scale:.1f}x)",
        f"zero aborts and zero lost updates: {'met' if zero and aborts == 0 else 'MISSED'} "
        f"(Tally design aborts: {aborts}; HTTP runs all exact: {zero})",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for a try-out)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for benchmarks.md and .json")
    args = parser.parse_args(argv)
    quick = args.quick
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
    progress("write path: warming up (the emulator starts a Python worker per concurrent request at first)")
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

    emulator.wipe_documents()
    sizes = Sizes(users=[100, 1000] if quick else [100, 1000, 10000], repeats=3 if quick else 5)
    results["analytics"] = analytics_bench(db, admin, sizes)
    results["targets"] = targets(results)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "benchmarks.md").write_text(markdown(results))
    for line in results["targets"]:
        progress(line)
    progress(f"wrote {out / 'benchmarks.md'} and {out / 'benchmarks.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
