"""Tally demo: simulate 30 days of client traffic through record_steps, sweep, and report.

Run it with the emulator suite up (`make demo` does): creates an admin and a few dozen
users in the Auth emulator, sends Google Maps sessions, LLM chat sessions priced from
token counts and property-data lookups over HTTP, completes idle sessions with the sweep,
then signs in as the admin, calls `usage_analytics` and prints the report. With --serve it
keeps the dashboard at http://127.0.0.1:5000 until Ctrl-C.

The v3 limits (issue 25): the admin sets a `free` and a `pro` plan (`set_plan`) and two teams
(`set_team`), puts every simulated user on a plan (`set_limits`), and scripted users then
call the gate (`reserve_spend`, then `record_steps` or `release_spend`) until it refuses,
each meeting one limit, so that the report's "Refusals by reason" has every reason the
emulator project can give.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tally import layout
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
    ("openai", "dall-e-3"): Decimal("0.04"),  # an image (the scripted users' image_generation)
    ("openai", "dall-e-3-hd"): Decimal("0.08"),
}
LLM_MODELS = {"claude-3.5-sonnet": "anthropic", "gpt-4o-mini": "openai"}
UNKNOWN_MODEL = ("acme_ai", "acme-llm-1")  # no price anywhere: recorded unpriced, shown in the report

# v3 limits (issue 25): the plans and teams the admin sets. Plans leave the monthly budget to the
# `default` plan ($5 and 100 runs unless TALLY_DEFAULT_* say otherwise) unless they set their own.
PLANS: dict[str, dict[str, Any]] = {
    "free": {
        "dailyCostLimit": 0.5,
        "dailyFreeRuns": 5,
        "features": {"image_generation": {"dailyRuns": 3, "dailyCostLimit": 0.2}},
    },
    "pro": {
        "monthlyCostLimit": 50,
        "monthlyFreeRuns": 1000,
        "dailyCostLimit": 10,
        "dailyFreeRuns": 100,
        "features": {"image_generation": {"dailyRuns": 50, "monthlyCostLimit": 2}},
    },
}
TEAMS: dict[str, dict[str, Any]] = {
    "acme": {"monthlyCostLimit": 1.0},
    "globex": {"dailyCostLimit": 0.4, "dailyFreeRuns": 4},
}
PLAN_CLAIM = "tallyPlan"  # TALLY_PLAN_CLAIM of the emulator project (functions/.env.demo-tally)
# Every refusal, in the order the gate checks them (the first that applies is the answer), and its scope.
REASONS = {
    "UNPRICED": "an estimate Tally cannot price",
    "PLATFORM_BUDGET": "platform.month.cost",
    "TEAM_MONTHLY_COST_LIMIT": "team.month.cost",
    "TEAM_DAILY_COST_LIMIT": "team.day.cost",
    "TEAM_RUNS": "team.{month,day}.runs",
    "MONTHLY_COST_LIMIT": "user.month.cost",
    "DAILY_COST_LIMIT": "user.day.cost",
    "FREE_RUNS": "user.month.runs",
    "DAILY_RUNS": "user.day.runs",
    "FEATURE_COST_LIMIT": "feature:<name>.{month,day}.cost",
    "FEATURE_RUNS": "feature:<name>.{month,day}.runs",
}
# PLATFORM_BUDGET needs TALLY_PLATFORM_BUDGET_ENFORCED=true, which the emulator project leaves off.
UNREACHABLE = {
    "PLATFORM_BUDGET": "needs TALLY_PLATFORM_BUDGET_ENFORCED=true, which the emulator project "
    "(functions/.env.demo-tally) leaves off: its platform budget only raises alerts"
}

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


@dataclass(frozen=True)
class PaidCall:
    """A paid call a scripted user's backend makes: the estimate the gate holds, then what it records."""

    feature: str
    provider: str
    usage_type: str
    units: dict[str, Any]  # what one call uses (recorded, priced by Tally)
    estimate: dict[str, Any]  # the units the gate is asked to hold
    billable: bool
    label: str


def _chat_units(tokens_in: int, tokens_out: int, model: str = "claude-3.5-sonnet") -> dict[str, Any]:
    return {"model": model, "inputTokens": tokens_in, "outputTokens": tokens_out}


PAID_CALLS = {
    "image": PaidCall(
        "image_generation",
        "openai",
        "AIUsage",
        request_units("dall-e-3"),
        request_units("dall-e-3"),
        billable=True,
        label="images",
    ),
    "image_hd": PaidCall(
        "image_generation",
        "openai",
        "AIUsage",
        request_units("dall-e-3-hd"),
        request_units("dall-e-3-hd"),
        billable=True,
        label="HD images",
    ),
    # a follow-up turn over a long document (not a billable run): about $0.14, $0.15 held
    "long_chat": PaidCall(
        "llm_chat",
        "anthropic",
        "AIUsage",
        _chat_units(28_000, 3_500),
        _chat_units(30_000, 4_000),
        billable=False,
        label="long chats",
    ),
    "nearby": PaidCall(
        "google_maps_nearby",
        "google_maps",
        "ApiUsage",
        request_units("places_nearby_search"),
        request_units("places_nearby_search"),
        billable=True,
        label="map searches",
    ),
    "lookup": PaidCall(
        "property_lookup",
        "rentcast",
        "API",
        request_units("property_lookup"),
        request_units("property_lookup"),
        billable=True,
        label="lookups",
    ),
    "unknown_model": PaidCall(
        "llm_chat",
        UNKNOWN_MODEL[0],
        "AIUsage",
        _chat_units(2_000, 500, UNKNOWN_MODEL[1]),
        _chat_units(2_000, 500, UNKNOWN_MODEL[1]),
        billable=False,
        label=f"a chat with {UNKNOWN_MODEL[1]}",
    ),
}


@dataclass(frozen=True)
class Turn:
    """A scripted user's calls of one kind: up to `calls` of them, until the gate refuses one."""

    call: str  # a key of PAID_CALLS
    calls: int
    expect: str | None = None  # the refusal this turn shows (None: every call fits)
    cancel: tuple[int, ...] = ()  # these calls (1-based) are cancelled once allowed: the hold is released


@dataclass(frozen=True)
class Scripted:
    """A scripted user: how they get their limits (set_limits data, a claim) and their calls, in order."""

    name: str
    limits: dict[str, Any]
    turns: tuple[Turn, ...]
    claims: dict[str, Any] | None = None

    @property
    def email(self) -> str:
        """Return the user's email."""
        return f"{self.name}@tally.demo"


# Each group runs in order (a team's story needs it); the groups run at once. Every user here is
# new, so each meets the limit it is there for, whatever the simulated traffic did.
SCRIPTS: tuple[tuple[Scripted, ...], ...] = (
    # 3 images a day on free; one is cancelled (released), so the 5th reservation is the 4th run
    (Scripted("free.images", {"plan": "free"}, (Turn("image", 6, "FEATURE_RUNS", cancel=(2,)),)),),
    # HD images at $0.08: the third passes free's $0.20 a day of image_generation
    (Scripted("free.hd", {"plan": "free"}, (Turn("image_hd", 4, "FEATURE_COST_LIMIT"),)),),
    (Scripted("free.chat", {"plan": "free"}, (Turn("long_chat", 8, "DAILY_COST_LIMIT"),)),),
    # $0.032 billable searches: the 6th passes free's 5 runs a day before its $0.50
    (Scripted("free.maps", {"plan": "free"}, (Turn("nearby", 8, "DAILY_RUNS"),)),),
    # own overrides over the plan: a month capped at $0.30, or at 3 runs
    (
        Scripted(
            "free.capped",
            {"plan": "free", "monthlyCostLimit": 0.3},
            (Turn("long_chat", 6, "MONTHLY_COST_LIMIT"),),
        ),
    ),
    (Scripted("free.trial", {"plan": "free", "monthlyFreeRuns": 3}, (Turn("lookup", 6, "FREE_RUNS"),)),),
    # no plan assigned: the tallyPlan claim makes them pro (5 images: more than free's 3), then a
    # model nobody priced: the gate fails closed
    (
        Scripted(
            "pro.claim",
            {},
            (Turn("image", 5), Turn("unknown_model", 1, "UNPRICED")),
            claims={PLAN_CLAIM: "pro"},
        ),
    ),
    # two pro members chat at once against acme's $1.00 a month
    (
        Scripted(
            "acme.ana", {"plan": "pro", "teamId": "acme"}, (Turn("long_chat", 8, "TEAM_MONTHLY_COST_LIMIT"),)
        ),
    ),
    (
        Scripted(
            "acme.ben", {"plan": "pro", "teamId": "acme"}, (Turn("long_chat", 8, "TEAM_MONTHLY_COST_LIMIT"),)
        ),
    ),
    # globex: cy's lookups use the team's 4 billable runs a day, then di's chats pass its $0.40 a day
    (
        Scripted("globex.cy", {"plan": "pro", "teamId": "globex"}, (Turn("lookup", 6, "TEAM_RUNS"),)),
        Scripted(
            "globex.di",
            {"plan": "free", "teamId": "globex"},
            (Turn("long_chat", 4, "TEAM_DAILY_COST_LIMIT"),),
        ),
    ),
)


@dataclass
class Played:
    """What a scripted user's calls got from the gate."""

    scripted: Scripted
    reserved: int = 0
    recorded: int = 0
    released: int = 0
    refused: list[tuple[str, str | None]] = field(default_factory=list)  # (reason, the one expected)


def _answer(
    user: accounts.User, body: dict[str, Any], http: requests.Session, endpoint: str, outcomes: Outcomes
) -> dict[str, Any]:
    response = post_resending(user, body, http, endpoint, outcomes)
    if response.status_code != 200:
        raise RuntimeError(f"{endpoint} answered {response.status_code}: {response.text}")
    answer: dict[str, Any] = response.json()
    return answer


def play(
    http_pool: dict[int, requests.Session],
    group: tuple[Scripted, ...],
    users: dict[str, accounts.User],
    outcomes: Outcomes,
) -> list[Played]:
    """Play scripted users in order: each call reserved, then recorded or released, until one is refused."""
    http = http_pool.setdefault(threading.get_ident(), requests.Session())
    played: list[Played] = []
    for scripted in group:
        user, result = users[scripted.name], Played(scripted)
        for t, turn in enumerate(scripted.turns):
            paid = PAID_CALLS[turn.call]
            for n in range(1, turn.calls + 1):
                reservation = f"v3_{t}_{n}"
                estimate: dict[str, Any] = {
                    "units": paid.estimate,
                    "provider": paid.provider,
                    "isBillableRun": paid.billable,
                    "feature": paid.feature,
                }
                body = {"reservationId": reservation, "estimate": estimate, "ttlSeconds": 120}
                answer = _answer(user, body, http, "reserve_spend", outcomes)
                result.reserved += 1
                if not answer["allowed"]:
                    result.refused.append((answer["reason"], turn.expect))
                    with outcomes.lock:
                        outcomes.sent += 1
                        outcomes.refused[answer["reason"]] = outcomes.refused.get(answer["reason"], 0) + 1
                    break  # the call is not made
                if n in turn.cancel:  # the user cancelled before the call: give the hold back
                    _answer(user, {"reservationId": reservation}, http, "release_spend", outcomes)
                    result.released += 1
                else:
                    when = datetime.now(UTC) - timedelta(seconds=1)
                    call = step(
                        f"op_v3_{t}_{n}",
                        when,
                        paid.feature,
                        paid.provider,
                        paid.usage_type,
                        paid.units,
                        paid.billable,
                    )
                    call["reservationId"] = reservation
                    _answer(user, {"steps": [call]}, http, "record_steps", outcomes)
                    result.recorded += 1
                with outcomes.lock:
                    outcomes.sent += 2
            else:
                if turn.expect is not None:
                    result.refused.append(("(none)", turn.expect))
        played.append(result)
    return played


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


def limit_usd(value: float) -> str:
    """Return a limit in USD (limits are set in cents at most)."""
    return f"${value:,.2f}"


def window_text(limits: dict[str, Any], cost: str, runs: str, runs_unit: str = "runs") -> str:
    """Return a window's cost and runs limits (`-`: none)."""
    parts = ([limit_usd(limits[cost])] if cost in limits else []) + (
        [f"{limits[runs]} {runs_unit}"] if runs in limits else []
    )
    return ", ".join(parts) or "-"


def plans_table(plans: list[dict[str, Any]], assigned: Counter[str], claimed: Counter[str]) -> Table:
    """Return the plans `list_plans` gives (month, day and feature limits) and how many users are on each."""
    table = Table(title="Plans (list_plans)", title_justify="left", caption_justify="left")
    for column in ("plan", "users", "a month", "a day", "features"):
        table.add_column(
            column,
            justify="right" if column == "users" else "left",
            no_wrap=column == "plan",
            overflow="fold",
        )
    for plan in plans:
        name, limits = plan["plan"], plan["limits"]
        features = "; ".join(
            f"{feature}: {window_text(own, 'dailyCostLimit', 'dailyRuns')} a day"
            + (
                f", {window_text(own, 'monthlyCostLimit', 'monthlyRuns')} a month"
                if set(own) & {"monthlyCostLimit", "monthlyRuns"}
                else ""
            )
            for feature, own in limits.get("features", {}).items()
        )
        users = f"{assigned[name]}" + (f" + {claimed[name]} by claim" if claimed[name] else "")
        table.add_row(
            name,
            users if name != "default" else "-",
            window_text(limits, "monthlyCostLimit", "monthlyFreeRuns"),
            window_text(limits, "dailyCostLimit", "dailyFreeRuns"),
            features or "-",
        )
    table.caption = "default fills what a plan leaves unset; a user's own overrides come first."
    return table


def teams_table(teams: dict[str, dict[str, Any]], members: dict[str, list[str]]) -> Table:
    """Return each team's members and scopes as an admin's `my_usage` of a member shows them."""
    table = Table(
        title="Teams (their scopes in an admin's my_usage of a member)",
        title_justify="left",
        caption_justify="left",
    )
    for column in ("team", "members", "scope", "used", "held", "limit", "left"):
        table.add_column(
            column,
            justify="left" if column in ("team", "members", "scope") else "right",
            no_wrap=column == "scope",
            overflow="fold",
        )
    usage = []
    for team_id, team in teams.items():
        for n, scope in enumerate(team["scopes"]):
            cost = scope["scope"].endswith(".cost")
            shown = [
                usd(scope[key]) if cost else str(scope[key]) for key in ("used", "held", "limit", "remaining")
            ]
            first = n == 0
            table.add_row(
                team_id if first else "",
                "\n".join(members[team_id]) if first else "",
                scope["scope"],
                *shown,
                end_section=n == len(team["scopes"]) - 1,
            )
        used = team["usage"]
        usage.append(
            f"{team_id} {usd(used['monthCost'])} and {used['monthRuns']} runs this month, "
            f"{usd(used['dayCost'])} and {used['dayRuns']} today"
        )
    table.caption = "Recorded: " + "; ".join(usage) + "."
    return table


def scripted_table(played: list[Played]) -> tuple[Table, list[str]]:
    """Return what each scripted user's calls got from the gate, and the refusals not as expected."""
    table = Table(
        title="Scripted users (reserve_spend, then record_steps or release_spend)", title_justify="left"
    )
    for column in ("user", "limits", "calls", "allowed", "refused"):
        table.add_column(
            column,
            justify="right" if column == "allowed" else "left",
            no_wrap=column in ("user", "refused"),
            overflow="fold",
        )
    unexpected: list[str] = []
    for p in played:
        scripted, limits = p.scripted, p.scripted.limits
        plan = limits.get("plan") or f"{(scripted.claims or {}).get(PLAN_CLAIM)} by claim"
        own = (
            window_text(limits, "monthlyCostLimit", "monthlyFreeRuns", "runs")
            if set(limits) & {"monthlyCostLimit", "monthlyFreeRuns"}
            else ""
        )
        source = (
            plan
            + (f" + own {own}/month" if own else "")
            + (f", team {limits['teamId']}" if "teamId" in limits else "")
        )
        refused = ", ".join(
            reason if reason == expected else f"[red]{reason} (!)[/]" for reason, expected in p.refused
        )
        unexpected += [
            f"{scripted.name}: {reason}, not {expected or 'allowed'}"
            for reason, expected in p.refused
            if reason != expected
        ]
        allowed = f"{p.recorded + p.released}" + (f" ({p.released} released)" if p.released else "")
        table.add_row(
            scripted.name,
            source,
            ", ".join(PAID_CALLS[t.call].label for t in scripted.turns),
            allowed,
            refused or "-",
        )
    return table, unexpected


def refusals_table(traffic: dict[str, int], scripted: dict[str, int]) -> tuple[Table, list[str]]:
    """Return the refusals by reason, in the gate's order, and the reasons that never occurred."""
    table = Table(
        title="Refusals by reason (in the gate's order)", title_justify="left", caption_justify="left"
    )
    for column in ("reason", "scope", "traffic", "scripted", "total"):
        table.add_column(
            column,
            justify="left" if column in ("reason", "scope") else "right",
            no_wrap=column != "scope",
            overflow="fold",
        )
    missing = []
    extra = sorted((set(traffic) | set(scripted)) - set(REASONS))  # a reason this demo does not know yet
    for reason in [*REASONS, *extra]:
        seen, planned = traffic.get(reason, 0), scripted.get(reason, 0)
        if reason in UNREACHABLE and not seen + planned:
            table.add_row(f"[dim]{reason}[/]", f"[dim]{REASONS[reason]}[/]", "-", "-", "[dim]off[/]")
            table.caption = f"{reason}: {UNREACHABLE[reason]}."
            continue
        if not seen + planned:
            missing.append(reason)
        total = f"[bold]{seen + planned}[/]" if seen + planned else "[red]0[/]"
        table.add_row(reason, REASONS.get(reason, "?"), str(seen), str(planned), total)
    table.add_row(
        "all",
        "",
        str(sum(traffic.values())),
        str(sum(scripted.values())),
        str(sum(traffic.values()) + sum(scripted.values())),
        end_section=True,
    )
    return table, missing


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
        # The body names the month and kind; a v3 alert's scope, window and team are in its document.
        alert = emulator.document(layout.alert_path(delivery.alert_id)) if delivery.alert_id else {}
        team = alert.get("teamId")
        who = f"team {team}" if team else emails.get(str(body.get("userId")), "the platform")
        what = (
            f"{alert['window']} {alert['scope']}" if alert.get("scope") else f"{body['month']} {body['kind']}"
        )
        verdict = "signature verified" if delivery.signature_valid else "BAD SIGNATURE"
        console.print(
            f"[magenta]webhook[/] alert {what} {body['threshold']}% for {who} "
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
    # v3: the plans and teams, then every simulated user on a plan (the budgets above are their own
    # overrides over it), and the scripted users (one on pro through its tallyPlan claim).
    for plan, limits in PLANS.items():
        accounts.result_of("set_plan", admin, {"plan": plan, "limits": limits})
    for team, limits in TEAMS.items():
        accounts.result_of("set_team", admin, {"teamId": team, "limits": limits})
    scripted = [one for group in SCRIPTS for one in group]
    with ThreadPoolExecutor(max_workers=8) as workers:
        made = workers.map(
            lambda one: accounts.make_user(claims=one.claims, email=one.email, password=USER_PASSWORD),
            scripted,
        )
        scripted_users = {one.name: user for one, user in zip(scripted, made, strict=True)}
        own = {budget["userId"]: budget for budget in budgets}
        assignments = [
            {**own.get(u.uid, {}), "userId": u.uid, "plan": "free" if u.profile == "light" else "pro"}
            for u in users
        ] + [{**one.limits, "userId": scripted_users[one.name].uid} for one in scripted if one.limits]
        list(workers.map(lambda data: accounts.result_of("set_limits", admin, data), assignments))
    assigned = Counter(str(data["plan"]) for data in assignments if "plan" in data)
    claimed = Counter(
        str((one.claims or {})[PLAN_CLAIM]) for one in scripted if PLAN_CLAIM in (one.claims or {})
    )
    members = {team: [one for one in scripted if one.limits.get("teamId") == team] for team in TEAMS}
    emails.update({u.uid: u.email for u in users})
    emails.update({user.uid: user.email for user in scripted_users.values()})
    console.print(f"Created 1 admin and {len(users)} users ({ADMIN_EMAIL} is the admin).")
    teamed = ", ".join(f"{team} ({len(them)} members)" for team, them in members.items())
    console.print(
        f"Plans: {', '.join(f'{plan} ({assigned[plan]} users)' for plan in PLANS)}, "
        f"{sum(claimed.values())} more on pro through their {PLAN_CLAIM} claim; teams {teamed}; "
        f"{len(scripted)} scripted users to meet each limit."
    )

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

    scripted_outcomes = Outcomes()
    with (
        console.status("scripted users: plans, teams and feature limits at the gate..."),
        ThreadPoolExecutor(max_workers=8) as workers,
    ):
        groups = workers.map(lambda group: play(pool, group, scripted_users, scripted_outcomes), SCRIPTS)
        played = [one for group in groups for one in group]
    console.print(
        f"Scripted users: {scripted_outcomes.sent} requests; "
        f"{sum(p.recorded for p in played)} calls recorded, {sum(p.released for p in played)} released, "
        f"{sum(scripted_outcomes.refused.values())} refused; {scripted_outcomes.resent} resent after a "
        "transient failure."
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
    report(result, emails)
    console.print(plans_table(accounts.result_of("list_plans", admin, {})["plans"], assigned, claimed))
    teams = {  # an admin's my_usage of a member shows the member's team
        team: accounts.result_of("my_usage", admin, {"userId": scripted_users[them[0].name].uid})["team"]
        for team, them in members.items()
    }
    console.print(teams_table(teams, {team: [one.name for one in them] for team, them in members.items()}))
    table, unexpected = scripted_table(played)
    console.print(table)
    if unexpected:  # a limit or price changed under the script (e.g. genai-prices): say so, run on
        console.print(f"[red](!) refused otherwise than scripted: {'; '.join(unexpected)}.[/]")
    table, missing = refusals_table(outcomes.refused, scripted_outcomes.refused)
    console.print(table)
    if missing:
        console.print(f"[red]No refusal for {', '.join(missing)}.[/]")
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
