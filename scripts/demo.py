"""Tally demo: simulate 30 days of client traffic through record_steps, sweep, and report.

Run it with the emulator suite up (`make demo` does): creates an admin and a few dozen
users in the Auth emulator, sends Google Maps sessions, LLM chat sessions priced from
token counts and property-data lookups over HTTP, completes idle sessions with the sweep,
then signs in as the admin, calls `usage_analytics` and prints the report. With --serve it
keeps the dashboard at http://127.0.0.1:5000 until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tally.config import Settings
from tally.services.reconcile import reconcile
from tally.services.sessions import sweep_sessions
from tally_dev import accounts, emulator, webhook

ADMIN_EMAIL = "admin@tally.demo"
ADMIN_PASSWORD = "tally-demo-admin"  # noqa: S105 - emulator-only demo account
USER_PASSWORD = "tally-demo-user"  # noqa: S105
# Prices the demo's admin sets with set_price (USD per request). LLM steps are priced by genai-prices.
CATALOG = {
    ("google_maps", "places_autocomplete"): Decimal("0.00283"),
    ("google_maps", "places_details"): Decimal("0.017"),
    ("google_maps", "places_nearby_search"): Decimal("0.032"),
    ("rentcast", "property_lookup"): Decimal("0.05"),
}
LLM_MODELS = {"claude-3.5-sonnet": "anthropic", "gpt-4o-mini": "openai"}
UNKNOWN_MODEL = ("acme_ai", "acme-llm-1")  # no price anywhere: recorded unpriced, shown in the report

console = Console()


@dataclass
class Account:
    """A simulated user and how much they use the app."""

    user: accounts.User
    profile: str

    @property
    def uid(self) -> str:
        """Return the user's uid."""
        return self.user.uid

    @property
    def email(self) -> str:
        """Return the user's email."""
        return self.user.email


@dataclass
class Session:
    """One simulated session: its requests in order (to record_steps or reserve_spend), sent by one worker."""

    user: Account
    bodies: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)

    def add(self, body: dict[str, Any], endpoint: str = "record_steps") -> None:
        """Add a request."""
        self.bodies.append(body)
        self.endpoints.append(endpoint)


@dataclass
class Outcomes:
    """What the simulated backend saw: requests sent, paid calls the gate refused (by reason)."""

    sent: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    resent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


RESENDS = 3  # a request that met a transient failure is sent again, as is, this many times at most


def post_resending(
    user: accounts.User, body: dict[str, Any], http: requests.Session, endpoint: str, outcomes: Outcomes
) -> requests.Response:
    """POST like an app does: resend the same body (same operation or reservation ids) after a 5xx.

    Every request is idempotent, so a resend never counts twice. The functions emulator answers
    500 `ECONNRESET` now and then, when it reuses a kept-alive connection that the function's
    worker is closing at that moment.
    """
    for attempt in range(RESENDS + 1):
        try:
            response = accounts.record(user, body, http=http, endpoint=endpoint)
        except requests.ConnectionError:
            if attempt == RESENDS:
                raise
        else:
            if response.status_code < 500 or attempt == RESENDS:
                return response
        with outcomes.lock:
            outcomes.resent += 1
        time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def step(
    op: str,
    when: datetime,
    feature: str,
    provider: str,
    kind: str,
    units: dict[str, Any],
    billable: bool = False,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one step as a client sends it: what it used, for Tally to price."""
    return {
        "operationId": op,
        "usageType": kind,
        "feature": feature,
        "provider": provider,
        "units": units,
        "isBillableRun": billable,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "metadata": metadata or {},
    }


def request_units(model: str) -> dict[str, Any]:
    """Return the units of one API request priced per request."""
    return {"model": model, "requests": 1}


def plan_traffic(rng: random.Random, users: list[Account], days: int, now: datetime) -> list[Session]:
    """Plan every user's sessions over the last `days` days (a realistic, seeded mix)."""
    sessions: list[Session] = []
    serial = 0
    intensity = {"light": 0.5, "regular": 1.3, "heavy": 3.5}
    for user in users:
        for day in range(days, -1, -1):
            for _ in range(_poisson(rng, intensity[user.profile])):
                serial += 1
                start = now - timedelta(days=day, seconds=rng.randint(60, 86_000))
                start = min(start, now - timedelta(minutes=10))
                kind = rng.choices(["maps", "chat", "property"], weights=[5, 4, 1])[0]
                sessions.append(_session(rng, user, kind, start, serial))
    rng.shuffle(sessions)
    return sessions


def _poisson(rng: random.Random, mean: float) -> int:
    count, threshold, product = 0, pow(2.718281828, -mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def _session(rng: random.Random, user: Account, kind: str, start: datetime, serial: int) -> Session:
    session = Session(user)
    sid = f"session_{int(start.timestamp() * 1000)}_{serial:05d}"
    left_idle = rng.random() < 0.15
    when = start
    steps: list[dict[str, Any]] = []
    if kind == "property":  # standalone lookups, no session
        for n in range(rng.randint(1, 2)):
            steps.append(
                step(
                    f"op_{serial}_{n}",
                    when,
                    "property_lookup",
                    "rentcast",
                    "API",
                    request_units("property_lookup"),
                    True,
                    {"address": f"{rng.randint(1, 999)} Main St"},
                )
            )
            when += timedelta(seconds=rng.randint(5, 60))
        session.add({"steps": steps})
        return session
    if kind == "maps":
        for n in range(rng.randint(1, 5)):
            steps.append(
                step(
                    f"op_{serial}_a{n}",
                    when,
                    "google_maps_autocomplete",
                    "google_maps",
                    "ApiUsage",
                    request_units("places_autocomplete"),
                    False,
                    {"input": "55 cours"[: n + 2], "resultCount": 5},
                )
            )
            when += timedelta(seconds=rng.randint(1, 4))
        if rng.random() < 0.8:
            steps.append(
                step(
                    f"op_{serial}_d",
                    when,
                    "google_maps_details",
                    "google_maps",
                    "ApiUsage",
                    request_units("places_details"),
                )
            )
            when += timedelta(seconds=rng.randint(2, 20))
        if rng.random() < 0.5:
            steps.append(
                step(
                    f"op_{serial}_n",
                    when,
                    "google_maps_nearby",
                    "google_maps",
                    "ApiUsage",
                    request_units("places_nearby_search"),
                    True,
                )
            )
        feature = "google_maps"
    else:
        model = rng.choices(list(LLM_MODELS), weights=[2, 3])[0]
        provider = LLM_MODELS[model]
        if rng.random() < 0.02:  # now and then a model nobody priced: recorded, counted as unpriced
            provider, model = UNKNOWN_MODEL
        # The app's backend asks the gate before each LLM call, then records it settling the hold.
        for n in range(rng.randint(1, 6)):
            tokens_in, tokens_out = rng.randint(200, 6000), rng.randint(50, 1500)
            cached = rng.randint(0, tokens_in) if n else 0  # later turns reuse the cached conversation
            units = {"model": model, "inputTokens": tokens_in - cached, "outputTokens": tokens_out}
            if cached:
                units["cacheReadTokens"] = cached
            reservation = f"res_{serial}_{n}"
            estimate: dict[str, Any] = {
                "units": {"model": model, "inputTokens": 6000, "outputTokens": 1500},
                "provider": provider,
                "isBillableRun": n == 0,
            }
            session.add(
                {"reservationId": reservation, "estimate": estimate, "ttlSeconds": 120}, "reserve_spend"
            )
            call = step(f"op_{serial}_t{n}", when, model, provider, "AIUsage", units, n == 0)
            call["reservationId"] = reservation
            body = {"session": {"id": sid, "feature": "llm_chat"}, "steps": [call]}
            session.add(body)
            when += timedelta(seconds=rng.randint(10, 120))
        if not left_idle:
            session.add({"session": {"id": sid, "complete": True}, "steps": []})
        return session
    # Clients send a session's first step, then the rest; most complete it at the end.
    session.add({"session": {"id": sid, "feature": feature}, "steps": steps[:1]})
    if len(steps) > 1:
        session.add({"session": {"id": sid, "complete": not left_idle}, "steps": steps[1:]})
    elif not left_idle:
        session.add({"session": {"id": sid, "complete": True}, "steps": []})
    return session


def send(http_pool: dict[int, requests.Session], session: Session, outcomes: Outcomes) -> int:
    """Send one session's requests in order; return how many.

    Once the gate refuses a paid call, the app makes no further call in that conversation; it
    completes the session only if one was started.
    """
    http = http_pool.setdefault(threading.get_ident(), requests.Session())
    sent = 0
    refused = started = False
    for body, endpoint in zip(session.bodies, session.endpoints, strict=True):
        completion = endpoint == "record_steps" and not body["steps"]
        if (refused and not completion) or (completion and refused and not started):
            continue  # the paid call was never made
        response = post_resending(session.user.user, body, http, endpoint, outcomes)
        if response.status_code != 200:
            raise RuntimeError(f"{endpoint} answered {response.status_code}: {response.text}")
        sent += 1
        started = started or endpoint == "record_steps"
        answer = response.json()
        if endpoint == "reserve_spend" and not answer["allowed"]:
            refused = True
            with outcomes.lock:
                outcomes.refused[answer["reason"]] = outcomes.refused.get(answer["reason"], 0) + 1
    return sent


def wait_for_finalizations(timeout: float = 300) -> None:
    """Wait until the trigger has summarized every completed session (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    with console.status("waiting for finalize_session to summarize completed sessions...") as status:
        while (left := emulator.unfinalized_sessions()) and time.monotonic() < deadline:
            status.update(f"waiting for finalize_session: {left} completed sessions left to summarize")
            time.sleep(0.5)


def usd(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def sparkline(values: list[float]) -> str:
    blocks = "▁▂▃▄▅▆▇█"
    top = max(values, default=0) or 1
    return "".join(blocks[min(7, int(v / top * 7.999))] if v else " " for v in values)


def named_table(title: str, rows: list[dict[str, Any]], key: str = "name", limit: int = 8) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column(key)
    table.add_column("cost", justify="right")
    table.add_column("calls", justify="right")
    table.add_column("billable", justify="right")
    for row in rows[:limit]:
        table.add_row(str(row[key]), usd(row["cost"]), f"{row['apiCalls']:,}", f"{row['billableRuns']:,}")
    return table


def report(result: dict[str, Any], emails: dict[str, str]) -> None:
    totals = result["totals"]
    ai, api = totals["byType"]["AI"], totals["byType"]["API"]
    console.rule(f"[bold]Tally: platform usage for {result['month']}")
    console.print(
        f"Total cost [bold]{usd(totals['cost'])}[/]   AI {usd(ai['cost'])} / API {usd(api['cost'])}   "
        f"calls {totals['apiCalls']:,}   billable runs {totals['billableRuns']:,}   "
        f"active users {totals['activeUsers']}"
    )
    console.print(named_table("Top features", result["features"]))
    console.print(named_table("Providers", result["providers"]))
    if totals["unpricedSteps"]:
        models = ", ".join(f"{row['provider']}/{row['model']} ({row['steps']})" for row in result["unpriced"])
        console.print(
            f"[yellow]Unpriced: {totals['unpricedSteps']} steps recorded at $0, no price known for: "
            f"{models}. Add one with set_price.[/]"
        )
    top_users = [{**row, "user": emails.get(row["userId"], row["userId"])} for row in result["topUsers"]]
    console.print(named_table("Top users", top_users, key="user"))
    free = Table(title="Free tier: users at or over 80% of a limit", title_justify="left")
    for column in ("user", "cost used", "cost limit", "runs used", "free runs", "percent"):
        free.add_column(column, justify="left" if column == "user" else "right")
    for row in result["freeTier"][:10]:
        free.add_row(
            emails.get(row["userId"], row["userId"]),
            usd(row["costUsed"]),
            usd(row["monthlyCostLimit"]),
            str(row["runsUsed"]),
            str(row["monthlyFreeRuns"]),
            f"{row['percent']:.0f}%",
        )
    console.print(free)
    s = result["sessions"]
    console.print(
        f"Sessions: {s['completed']:,} completed, {s['active']} active; average cost {usd(s['avgCost'])}, "
        f"{s['avgSteps']:.1f} steps, {s['avgDurationSeconds']:.0f} s"
    )
    daily = [d["cost"] for d in result["daily"]]
    console.print(f"Daily cost {result['daily'][0]['date']} → {result['daily'][-1]['date']}:")
    console.print(f"  [cyan]{sparkline(daily)}[/]  peak {usd(max(daily, default=0))}/day")
    history = ", ".join(f"{h['month']} {usd(h['cost'])}" for h in result["history"] if h["cost"])
    console.print(f"History: {history}")
    meta = result["meta"]
    console.print(f"[dim]documents read: {meta['documentsRead']}, generated {meta['generatedAt']}[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the dashboard up until Ctrl-C (default: yes)",
    )
    parser.add_argument("--users", type=int, default=36, help="number of simulated users (default 36)")
    parser.add_argument("--days", type=int, default=30, help="days of traffic to simulate (max 34)")
    parser.add_argument("--seed", type=int, default=2026, help="random seed")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 500 or not 1 <= args.days <= 34:
        parser.error("--users must be 1-500 and --days 1-34")
    started = time.monotonic()
    emails: dict[str, str] = {}

    def delivered(delivery: webhook.Delivery) -> None:
        body = delivery.body
        who = emails.get(str(body.get("userId")), "the platform")
        verdict = "signature verified" if delivery.signature_valid else "BAD SIGNATURE"
        console.print(
            f"[magenta]webhook[/] alert {body['month']} {body['kind']} {body['threshold']}% for {who} "
            f"(used {body['used']} of {body['limit']}): {verdict}"
        )

    receiver = webhook.from_environment(on_delivery=delivered)
    rng = random.Random(args.seed)  # noqa: S311 - simulated traffic, not crypto
    now = datetime.now(UTC)

    with requests.Session() as http, console.status("creating the admin and users in the Auth emulator..."):
        admin = accounts.make_user(
            claims={"admin": True}, email=ADMIN_EMAIL, password=ADMIN_PASSWORD, http=http
        )
        profiles = ["heavy"] * 3 + ["regular"] * (args.users // 2) + ["light"] * args.users
        users = [
            Account(
                accounts.make_user(email=f"user{n + 1:02d}@tally.demo", password=USER_PASSWORD, http=http),
                profiles[n],
            )
            for n in range(args.users)
        ]
    for (provider, model), price in CATALOG.items():
        accounts.result_of(
            "set_price",
            admin,
            {
                "provider": provider,
                "model": model,
                "effectiveFrom": (now - timedelta(days=40)).date().isoformat(),
                "prices": {"request": str(price)},
            },
        )
    # Users with their own budgets: the free-tier table has something to show, and the gate refuses
    # some of their calls once a budget is spent.
    budgets = [
        {"userId": users[0].uid, "monthlyCostLimit": 2.5, "monthlyFreeRuns": 40},
        {"userId": users[1].uid, "monthlyCostLimit": 0.4},
        {"userId": users[2].uid, "monthlyFreeRuns": 6},
        {"userId": users[3].uid, "monthlyCostLimit": 0.5},
    ]
    for budget in budgets:
        accounts.result_of("set_limits", admin, budget)
    emails.update({u.uid: u.email for u in users})
    console.print(f"Created 1 admin and {len(users)} users ({ADMIN_EMAIL} is the admin).")

    sessions = plan_traffic(rng, users, args.days, now)
    total_requests = sum(len(s.bodies) for s in sessions)
    columns = (TextColumn("[bold]requests"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    pool: dict[int, requests.Session] = {}
    outcomes = Outcomes()
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(max_workers=8) as workers:
        task = progress.add_task("seeding", total=total_requests)
        futures = [workers.submit(send, pool, session, outcomes) for session in sessions]
        for future in as_completed(futures):
            outcomes.sent += (done := future.result())
            progress.advance(task, done)
    refusals = ", ".join(f"{count} for {reason}" for reason, count in sorted(outcomes.refused.items()))
    console.print(
        f"Sent {outcomes.sent:,} requests ({len(sessions):,} sessions) over {args.days} days; "
        f"the budget gate refused {sum(outcomes.refused.values())} paid calls ({refusals or 'none'}); "
        f"{outcomes.resent} resent after a transient failure."
    )

    store = emulator.store()
    swept = sweep_sessions(store=store, now=datetime.now(UTC) + timedelta(minutes=1), idle_minutes=0)
    console.print(
        f"Sweep: completed {swept.completed} idle sessions (demo threshold 0 minutes, since the "
        f"simulated sessions were all recorded just now)."
    )
    wait_for_finalizations()
    time.sleep(2)  # the last alerts' deliveries
    receiver.close()
    result = accounts.result_of("usage_analytics", admin, {"top": 10, "fresh": True})
    report(result, {u.uid: u.email for u in users})
    console.print(
        f"Alerts: {len(result['alerts'])} raised this month (the 20 latest listed by usage_analytics); "
        f"the demo's webhook receiver verified {sum(d.signature_valid for d in receiver.deliveries)} of "
        f"{len(receiver.deliveries)} deliveries."
    )
    with console.status("reconciling the month against its steps..."):
        checking = time.monotonic()
        check = reconcile(
            store=store, month=result["month"], settings=Settings.from_env(), now=datetime.now(UTC), fix=False
        )
    console.print(f"[bold]{check.summary()}[/] [dim](in {time.monotonic() - checking:.1f} s)[/]")
    console.print(f"[dim]demo ready in {time.monotonic() - started:.0f} s[/]")

    if args.serve:
        hosting = os.environ.get("TALLY_HOSTING_URL", "http://127.0.0.1:5000")
        console.print(f"\n[bold green]Dashboard: {hosting}[/]")
        console.print(f"  admin page: sign in as {ADMIN_EMAIL} / {ADMIN_PASSWORD}")
        console.print(f"  a user's own live page: sign in as {users[4].email} / {USER_PASSWORD}")
        console.print("Press Ctrl-C to stop the emulators.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            console.print("stopping...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
