"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, on the emulators.

Two pages in one app: admins (custom claim `admin`) get the platform's month, a drill-down into any
user (with their plan and team), plans, teams, the price catalog and a CSV export; every other user
gets their own month, updated live from the documents the security rules let them read, and every
limit that applies to them. Every number shown is checked against the callable that owns it
(`usage_analytics`, `my_usage`, `list_prices`, `list_plans`) or against the stored documents.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud.firestore import FieldFilter
from playwright.sync_api import Browser, Page, Request, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tally_dev import accounts, emulator
from tally_dev.steps import step

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Flags for a closed network: no background connections, no first-run work.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=site-per-process,Translate,OptimizationHints,MediaRouter,PaintHolding",
    "--renderer-process-limit=1",
    "--disable-dev-shm-usage",
]
WAIT = 30_000  # ms: the first call of a function on the emulator can be slow
NAMES = ["ada", "grace", "alan", "edsger", "barbara", "donald", "margaret", "ken", "frances", "john"]
NAMES += ["radia", "tim"]
FEATURES = [
    ("google_maps_autocomplete", "google_maps", "ApiUsage"),
    ("claude-3.5-sonnet", "anthropic", "AI"),
    ("property_lookup", "rentcast", "api"),
]


# ---- browser ----


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert errors == [], f"errors in the page: {errors}"


def open_app(page: Page, query: str = "") -> None:
    page.goto(emulator.env("TALLY_HOSTING_URL") + "/" + query)


def sign_in(page: Page, user: accounts.User, query: str = "") -> None:
    open_app(page, query)
    page.fill('[data-testid="email"]', user.email)
    page.fill('[data-testid="password"]', user.password)
    page.click('[data-testid="sign-in-submit"]')


def wait_state(page: Page, test_id: str, *states: str) -> str:
    """Wait until a view's status element is in one of `states`; return it."""
    try:
        page.wait_for_function(
            "([id, states]) => states.includes("
            'document.querySelector(`[data-testid="${id}"]`)?.dataset.state)',
            arg=[test_id, list(states)],
            timeout=WAIT,
        )
    except PlaywrightTimeoutError:
        shown = page.evaluate(
            "ids => ids.map(id => { const e = document.querySelector(`[data-testid='${id}']`);"
            " return `${id}: ${e?.dataset.state} ${JSON.stringify(e?.textContent ?? '')}`; })",
            [test_id, "app-status"],
        )
        raise AssertionError(f"not {' or '.join(states)} in time: {'; '.join(shown)}") from None
    state = page.get_attribute(f'[data-testid="{test_id}"]', "data-state")
    assert state is not None
    return state


def wait_form(page: Page, test_id: str) -> str:
    """Wait until a form's message says saved or error; return which, with the message on error."""
    selector = f'[data-testid="{test_id}"]'
    page.wait_for_selector(f'{selector}[data-state="saved"], {selector}[data-state="error"]', timeout=WAIT)
    state = page.get_attribute(selector, "data-state")
    return "saved" if state == "saved" else f"{state}: {page.text_content(selector)}"


def wait_value(page: Page, selector: str, expected: object, timeout: float = WAIT) -> None:
    """Wait until the element's data-value is `expected` (as JavaScript writes it)."""
    page.wait_for_function(
        "([s, v]) => document.querySelector(s)?.dataset.value === v",
        arg=[selector, _js(expected)],
        timeout=timeout,
    )


def wait_rows(page: Page, selector: str, count: int, timeout: float = WAIT) -> None:
    """Wait until a table shows `count` rows."""
    page.wait_for_function(
        "([s, n]) => document.querySelectorAll(`${s} tbody tr:not(.empty-row)`).length === n",
        arg=[selector, count],
        timeout=timeout,
    )


def analytics_requests(page: Page) -> list[dict[str, Any]]:
    """The data of every usage_analytics call the page makes, from now on."""
    seen: list[dict[str, Any]] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/usage_analytics"):
            seen.append((request.post_data_json or {}).get("data") or {})

    page.on("request", record)
    return seen


def settle(page: Page) -> None:
    """Let the page paint twice (charts react to the mouse on the next animation frame)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


# ---- reading the page ----


def value(page: Page, selector: str) -> str:
    raw = page.get_attribute(selector, "data-value")
    assert raw is not None, selector
    return raw


def tid(test_id: str, scope: str = "") -> str:
    inner = f'[data-testid="{test_id}"]'
    return f'[data-testid="{scope}"] {inner}' if scope else inner


def table_rows(page: Page, selector: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        f"{selector} tbody tr:not(.empty-row)",
        "rows => rows.map(r => Object.fromEntries([...r.cells].map(c => [c.dataset.key, c.dataset.value])))",
    )
    return rows


def row_keys(page: Page, selector: str) -> list[str]:
    keys: list[str] = page.eval_on_selector_all(
        f"{selector} tbody tr:not(.empty-row)", "rows => rows.map(r => r.dataset.key)"
    )
    return keys


def _js(raw: Any) -> str:
    """Python's shortest float repr equals JavaScript's String(number), except for integral floats."""
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw)


def as_strings(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, str]]:
    return [{key: _js(row[key]) for key in keys} for row in rows]


USAGE_KEYS = ["name", "cost", "apiCalls", "billableRuns"]


def user_view(page: Page, scope: str) -> dict[str, Any]:
    """Every number of the user view (user page or drill-down) under `scope`, as the page holds them."""
    shown: dict[str, Any] = {
        name: value(page, tid(name, scope))
        for name in (
            "u-cost",
            "u-calls",
            "u-runs",
            "u-ai-cost",
            "u-api-cost",
            "u-lifetime-cost",
            "u-lifetime-calls",
            "u-unpriced-steps",
            "cost-used",
            "cost-held",
            "cost-limit",
            "cost-remaining",
            "runs-used",
            "runs-held",
            "runs-limit",
            "runs-remaining",
            "u-sessions-active",
            "u-sessions-completed",
        )
    }
    status = tid("limit-status", scope)
    shown["exceeded"] = page.get_attribute(status, "data-exceeded")
    shown["warning"] = page.get_attribute(status, "data-warning")
    shown["features"] = table_rows(page, tid("u-features", scope))
    shown["providers"] = table_rows(page, tid("u-providers", scope))
    return shown


def expected_view(usage: dict[str, Any]) -> dict[str, Any]:
    """The same numbers from a my_usage answer."""
    limits = usage["limits"]
    return {
        "u-cost": _js(usage["totalCost"]),
        "u-calls": _js(usage["apiCalls"]),
        "u-runs": _js(usage["billableRuns"]),
        "u-ai-cost": _js(usage["byType"]["AI"]["cost"]),
        "u-api-cost": _js(usage["byType"]["API"]["cost"]),
        "u-lifetime-cost": _js(usage["lifetime"]["cost"]),
        "u-lifetime-calls": _js(usage["lifetime"]["apiCalls"]),
        "u-unpriced-steps": _js(usage["unpricedSteps"]),
        "cost-used": _js(usage["totalCost"]),
        "cost-held": _js(limits["held"]),
        "cost-limit": _js(limits["monthlyCostLimit"]),
        "cost-remaining": _js(limits["costRemaining"]),
        "runs-used": _js(usage["billableRuns"]),
        "runs-held": _js(limits["heldRuns"]),
        "runs-limit": _js(limits["monthlyFreeRuns"]),
        "runs-remaining": _js(limits["freeRunsRemaining"]),
        "u-sessions-active": _js(usage["sessions"]["active"]),
        "u-sessions-completed": _js(usage["sessions"]["completed"]),
        "exceeded": _js(limits["exceeded"]),
        "warning": _js(limits["warning"]),
        "features": as_strings(usage["features"], USAGE_KEYS),
        "providers": as_strings(usage["providers"], USAGE_KEYS),
    }


def sessions_of(uid: str) -> list[tuple[str, str, str, str]]:
    """A user's sessions, newest first: (id, steps, cost, status) as the page's table holds them."""
    docs = (
        emulator.db().collection(f"SessionUsage/{uid}/sessions").order_by("createdAt", direction="DESCENDING")
    )
    rows = []
    for snap in docs.stream():
        data = snap.to_dict() or {}
        summary, stats = data.get("summary") or {}, data.get("stats") or {}
        nanos = summary.get("totalCostNanos", stats.get("costNanos", 0))
        steps = summary.get("stepCount", stats.get("stepCount", 0))
        rows.append((snap.id, _js(steps), _js(round(nanos / 1e9, 9)), data["status"]))
    return rows


def shown_sessions(page: Page, scope: str) -> list[tuple[str, str, str, str]]:
    selector = tid("u-session-list", scope)
    keys = row_keys(page, selector)
    rows = table_rows(page, selector)
    return [(key, row["steps"], row["cost"], row["status"]) for key, row in zip(keys, rows, strict=True)]


def alerts_of(uid: str, month: str) -> list[dict[str, str]]:
    docs = [
        snap.to_dict() or {}
        for snap in emulator.db()
        .collection("TallyAlerts")
        .where(filter=FieldFilter("userId", "==", uid))
        .where(filter=FieldFilter("month", "==", month))
        .stream()
    ]
    docs.sort(key=lambda d: d["createdAt"], reverse=True)
    return as_strings(docs, ["kind", "threshold", "used", "limit"])


def shown_alerts(page: Page, selector: str) -> list[dict[str, str]]:
    return [{k: row[k] for k in ("kind", "threshold", "used", "limit")} for row in table_rows(page, selector)]


SCOPE_KEYS = ["scope", "used", "held", "limit", "remaining"]
TEAM_USAGE_KEYS = ["monthCost", "monthRuns", "dayCost", "dayRuns"]
PLAN_LIMIT_KEYS = ["monthlyCostLimit", "monthlyFreeRuns", "dailyCostLimit", "dailyFreeRuns"]


def shown_scopes(page: Page, selector: str) -> list[dict[str, str]]:
    """The scope rows of a list (`limits.scopes` or a team's), each figure as the page holds it."""
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        f"{selector} li[data-scope]",
        "items => items.map(i => ({scope: i.dataset.scope, ...Object.fromEntries("
        "[...i.querySelectorAll('[data-key]')].map(e => [e.dataset.key, e.dataset.value]))}))",
    )
    return rows


def shown_figures(page: Page, selector: str) -> dict[str, str]:
    """The figures (data-key: data-value) under `selector`: a team's usage or limits."""
    figures: dict[str, str] = page.eval_on_selector_all(
        f"{selector} [data-key]", "es => Object.fromEntries(es.map(e => [e.dataset.key, e.dataset.value]))"
    )
    return figures


def shown_plans(page: Page) -> list[dict[str, Any]]:
    """The plans table: each plan's limits as the page holds them (features as the JSON it keeps)."""
    return [
        {"plan": row["plan"], **{k: row[k] for k in PLAN_LIMIT_KEYS}, "features": json.loads(row["features"])}
        for row in table_rows(page, tid("plans-table"))
    ]


def expected_plans(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same from list_plans' answer."""
    return [
        {
            "plan": p["plan"],
            **{k: _js(p["limits"].get(k)) for k in PLAN_LIMIT_KEYS},
            "features": p["limits"].get("features", {}),
        }
        for p in plans
    ]


def team_card(team_id: str) -> str:
    return f'[data-testid="team"][data-team-id="{team_id}"]'


# ---- checks every page gets ----


def assert_no_serious_accessibility_violation(page: Page) -> None:
    """Run axe-core (npm) in the page: no serious or critical violation."""
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    serious = [
        (v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:5])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == [], serious


def assert_nothing_overflows(page: Page) -> None:
    """The page never scrolls sideways, and no card, panel or chart is wider than its box."""
    page.wait_for_timeout(300)  # charts follow their box on the next resize observation
    widths = page.evaluate(
        """() => ({
          page: document.scrollingElement.scrollWidth, viewport: innerWidth,
          boxes: [...document.querySelectorAll('.panel, .card, .chart-box, .notice, header.top')]
            .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
            .map(e => `${e.className} ${e.dataset.testid || ''}: ${e.scrollWidth} > ${e.clientWidth}`),
        })"""
    )
    assert widths["page"] <= widths["viewport"], widths
    assert widths["boxes"] == [], widths


def check_layout(page: Page) -> None:
    """No overflow at 1280 px and at 390 px, then back to 1280 px."""
    assert_nothing_overflows(page)
    page.set_viewport_size({"width": 390, "height": 900})
    assert_nothing_overflows(page)
    page.set_viewport_size({"width": 1280, "height": 1000})


def screenshot(page: Page, name: str) -> None:
    """docs/dashboard.png (admin) and docs/user-page.png: TALLY_SCREENSHOT names the admin one (the
    user page goes beside it); TALLY_SCREENSHOT_DIR names the folder; otherwise the run's artifacts."""
    admin_path = os.environ.get("TALLY_SCREENSHOT")
    folder = os.environ.get("TALLY_SCREENSHOT_DIR")
    if admin_path:
        path = Path(admin_path) if name == "dashboard" else Path(admin_path).with_name(f"{name}.png")
    else:
        path = Path(folder or emulator.env("TALLY_ARTIFACTS")) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = false; })")
    page.mouse.move(0, 0)
    page.screenshot(path=str(path), full_page=True)


# ---- data ----


def when(minutes_ago: float) -> str:
    """An instant this month (never before its first second), `minutes_ago` before now."""
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(now - timedelta(minutes=minutes_ago), start).isoformat().replace("+00:00", "Z")


def people(count: int) -> list[accounts.User]:
    emails = [f"{NAMES[i % len(NAMES)]}{i // len(NAMES) or ''}@example.com" for i in range(count)]
    return accounts.make_users(count, emails=emails)


def seed_user(
    user: accounts.User,
    index: int,
    *,
    steps: int = 3,
    complete: bool = True,
    unpriced: bool = False,
    days_ago: int = 0,
    http: requests.Session | None = None,
) -> Decimal:
    """Record one session of `steps` steps for `user` (`days_ago`, within this month); return its cost."""
    body_steps = []
    total = Decimal(0)
    for n in range(steps):
        feature, provider, kind = FEATURES[(index + n) % len(FEATURES)]
        cost = Decimal("0.0123") * (index + 1) * (n + 1)
        total += cost
        body_steps.append(
            step(
                feature=feature,
                provider=provider,
                usage_type=kind,
                cost=str(cost),
                billable=n % 3 == 1,
                timestamp=when(days_ago * 1440 + 40 - 7 * n),
            )
        )
    if unpriced:
        body_steps.append(
            step(
                feature="chat",
                provider="openai",
                usage_type="AI",
                cost=None,
                units={"model": "gpt-unlisted-1", "inputTokens": 1200, "outputTokens": 300},
                timestamp=when(2),
            )
        )
    body = {
        "session": {"id": emulator.unique("session"), "feature": "demo", "complete": complete},
        "steps": body_steps,
    }
    response = accounts.record(user, body, http=http)
    assert response.status_code == 200, response.text
    return total


def reserve(user: accounts.User, cost: str, billable: bool = True) -> None:
    body = {
        "reservationId": emulator.unique("res"),
        "estimate": {"cost": cost, "isBillableRun": billable},
        "ttlSeconds": 600,
    }
    response = accounts.record(user, body, endpoint="reserve_spend")
    assert response.status_code == 200, response.text
    assert response.json()["allowed"] is True, response.text


# ---- the admin page ----


def test_the_admin_page_shows_exactly_what_usage_analytics_returns(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    users = people(12)

    def seed(index: int) -> Decimal:
        return seed_user(
            users[index],
            index,
            steps=2 + index % 3,
            complete=index != 1,
            unpriced=index == 3,
            days_ago=(index * 5) % 11,  # a few days of this month (the 1st, early in a month)
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        costs = dict(zip((user.uid for user in users), pool.map(seed, range(len(users))), strict=True))
    accounts.result_of("set_limits", admin, {"userId": users[2].uid, "monthlyCostLimit": 0.1})
    price = {
        "provider": "anthropic",
        "model": "claude-3-5-haiku",
        "prices": {"inputMTok": 0.8, "outputMTok": 4},
    }
    accounts.result_of("set_price", admin, price)
    emulator.wait_for_finalizations()
    expected = accounts.result_of("usage_analytics", admin, {"month": month, "top": 10, "fresh": True})
    requested = analytics_requests(page)

    sign_in(page, admin)
    assert wait_state(page, "overview-status", "ready") == "ready"
    # The refresh button asks for an exact-now answer, and the page shows when its data is from.
    generated = page.get_attribute(tid("as-of"), "data-generated-at")
    page.click(tid("refresh"))
    page.wait_for_function(
        "g => document.querySelector('[data-testid=\"as-of\"]').dataset.generatedAt !== g", arg=generated
    )
    assert requested[0] == {"month": month, "top": 10, "fresh": False}
    assert requested[-1] == {"month": month, "top": 10, "fresh": True}
    as_of = page.get_attribute(tid("as-of"), "data-as-of")
    assert as_of is not None
    assert abs(datetime.fromisoformat(as_of).timestamp() - time.time()) < 60
    assert "Data as of" in (page.text_content(tid("as-of")) or "")

    totals = expected["totals"]
    assert value(page, tid("total-cost")) == _js(totals["cost"])
    assert value(page, tid("ai-cost")) == _js(totals["byType"]["AI"]["cost"])
    assert value(page, tid("api-cost")) == _js(totals["byType"]["API"]["cost"])
    assert value(page, tid("api-calls")) == _js(totals["apiCalls"])
    assert value(page, tid("billable-runs")) == _js(totals["billableRuns"])
    assert value(page, tid("active-users")) == _js(totals["activeUsers"]) == "12"
    assert value(page, tid("unpriced-count")) == _js(totals["unpricedSteps"]) == "1"
    assert page.text_content(tid("api-calls")) == f"{totals['apiCalls']:,}"
    assert page.get_attribute(tid("total-cost"), "title") == f"${Decimal(str(totals['cost'])).normalize():f}"
    assert table_rows(page, tid("features")) == as_strings(expected["features"], USAGE_KEYS)
    assert table_rows(page, tid("providers")) == as_strings(expected["providers"], USAGE_KEYS)
    # Users are shown by email (the uid is the cell's value and the link's title).
    top = expected["topUsers"]
    assert len(top) == 10
    top_keys = ["userId", "cost", "apiCalls", "billableRuns"]
    assert [{k: row[k] for k in top_keys} for row in table_rows(page, tid("top-users"))] == as_strings(
        top, top_keys
    )  # (monthEnd moves with the clock: test_the_admin_page_shows_where_the_month_is_heading checks it)
    shown_emails = page.eval_on_selector_all(
        f"{tid('top-users')} tbody a", "links => links.map(a => a.textContent)"
    )
    assert shown_emails == [row["email"] for row in top]
    free_keys = ["userId", "costUsed", "monthlyCostLimit", "runsUsed", "monthlyFreeRuns", "percent"]
    assert len(expected["freeTier"]) == 1
    assert table_rows(page, tid("free-tier")) == as_strings(expected["freeTier"], free_keys)
    assert page.text_content(f"{tid('free-tier')} tbody a") == users[2].email
    # The month's alerts, the unpriced steps and their models.
    assert expected["alerts"], "set_limits below the usage raises an alert"
    alert_keys = ["userId", "kind", "threshold", "used", "limit"]
    shown_month_alerts = table_rows(page, tid("alerts"))
    assert [{k: row[k] for k in alert_keys} for row in shown_month_alerts] == as_strings(
        expected["alerts"], alert_keys
    )
    assert [row["createdAt"] for row in shown_month_alerts] == [
        datetime.fromisoformat(a["createdAt"]).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for a in expected["alerts"]
    ]
    assert page.is_visible(tid("unpriced"))
    models = page.eval_on_selector_all(
        f"{tid('unpriced-models')} li", "items => items.map(i => ({...i.dataset}))"
    )
    assert models == [{k: _js(v) for k, v in m.items()} for m in expected["unpriced"]]
    assert models == [{"provider": "openai", "model": "gpt-unlisted-1", "steps": "1"}]
    # Sessions, with the average duration from the steps' own timestamps (not 0 s).
    s = expected["sessions"]
    sessions = page.eval_on_selector_all(f"{tid('sessions')} dd", "dds => dds.map(d => d.dataset.value)")
    assert sessions == [
        _js(s[k]) for k in ("active", "completed", "avgCost", "avgSteps", "avgDurationSeconds")
    ]
    assert s["avgDurationSeconds"] > 0
    assert page.text_content(f"{tid('sessions')} dd:last-of-type") != "0 s"
    # The charts' numbers, and their values on hover.
    daily = table_rows(page, tid("daily-data"))
    assert [(r["label"], r["value"], r["detail"]) for r in daily] == [
        (d["date"], _js(d["cost"]), _js(d["apiCalls"])) for d in expected["daily"]
    ]
    history = table_rows(page, tid("history-data"))
    assert [(r["label"], r["value"]) for r in history] == [
        (h["month"], _js(h["cost"])) for h in expected["history"]
    ]
    busiest = max(range(len(expected["daily"])), key=lambda i: expected["daily"][i]["cost"])
    tip = hover_bar(page, "daily", busiest)
    assert tip["label"] == expected["daily"][busiest]["date"]
    assert tip["value"] == _js(expected["daily"][busiest]["cost"]) != "0"
    assert f"{expected['daily'][busiest]['apiCalls']} calls" in tip["text"]
    tip = hover_bar(page, "history", 11)
    assert (tip["label"], tip["value"]) == (month, _js(totals["cost"]))
    assert page.get_attribute(f"{tid('daily-chart')} canvas", "role") == "img"

    # The CSV: every user of the month (also those outside the top 10), exact totals.
    with page.expect_download() as download_info:
        page.click(tid("export-csv"))
    download = download_info.value
    assert download.suggested_filename == f"tally-usage-{month}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert [list(row) for row in rows[:1]] == [
        ["userId", "email", "costUsd", "apiCalls", "billableRuns", "unpricedSteps"]
    ]
    assert sorted(row["userId"] for row in rows) == sorted(u.uid for u in users)
    outside_top = {u.uid for u in users} - {row["userId"] for row in top}
    assert len(outside_top) == 2
    emails = {u.uid: u.email for u in users}  # every user's, also outside the top list
    for row in rows:
        stored = emulator.user_month(row["userId"], month)
        assert Decimal(row["costUsd"]) == costs[row["userId"]] == Decimal(stored["costNanos"]) / 10**9
        assert int(row["apiCalls"]) == stored["apiCalls"]
        assert int(row["billableRuns"]) == stored["billableRuns"]
        assert int(row["unpricedSteps"]) == stored.get("unpricedSteps", 0)
        assert row["email"] == emails.get(row["userId"], "")
    assert sum(Decimal(row["costUsd"]) for row in rows) == Decimal(str(totals["cost"]))
    assert sum(int(row["apiCalls"]) for row in rows) == totals["apiCalls"]
    assert value(page, tid("export-status")) == "12"
    # The price catalog (list_prices).
    wait_state(page, "prices-status", "ready")
    shown_prices = table_rows(page, tid("prices-table"))
    assert [
        (p["provider"], p["model"], p["inputMTok"], p["outputMTok"], p["request"]) for p in shown_prices
    ] == [("anthropic", "claude-3-5-haiku", "0.8", "4", "")]

    check_layout(page)
    assert_no_serious_accessibility_violation(page)
    screenshot(page, "dashboard")


def hover_bar(page: Page, chart: str, index: int) -> dict[str, str]:
    """Move the mouse over bar `index` of a chart (found by bisection); return its tooltip."""
    page.locator(tid(f"{chart}-chart")).scroll_into_view_if_needed()
    box = page.locator(tid(f"{chart}-chart")).bounding_box()
    assert box is not None
    low, high = box["x"], box["x"] + box["width"] - 1
    y = box["y"] + box["height"] / 2
    for _ in range(40):
        middle = (low + high) / 2
        page.mouse.move(middle, y)
        settle(page)
        shown = page.evaluate(
            "id => { const t = document.querySelector(`[data-testid='${id}']`);"
            " return t.hidden ? null : {...t.dataset, text: t.textContent}; }",
            f"{chart}-tip",
        )
        if shown is None:
            low = middle + 1  # left of the plot (the axis): go right
            continue
        at = int(shown["index"])
        if at == index:
            return shown  # type: ignore[no-any-return]
        if at < index:
            low = middle + 1
        else:
            high = middle - 1
    raise AssertionError(f"no tooltip for bar {index} of the {chart} chart")


def test_the_drill_down_shows_my_usage_and_sets_the_users_limits(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    ada, grace = people(2)
    with requests.Session() as http:
        for n in range(12):  # more sessions than a page holds
            seed_user(ada, n % 4, steps=1 + n % 2, complete=n != 11, http=http)
        seed_user(grace, 1, http=http)
    reserve(ada, "0.05")
    accounts.result_of(
        "set_limits", admin, {"userId": ada.uid, "monthlyCostLimit": 0.5, "monthlyFreeRuns": 6}
    )
    emulator.wait_for_finalizations()

    sign_in(page, admin)
    wait_state(page, "overview-status", "ready")
    link = f'{tid("top-users")} a[href="#user/{ada.uid}"]'
    assert page.text_content(link) == ada.email
    page.click(link)
    wait_state(page, "drill-status", "ready")
    assert page.text_content(tid("drill-title")) == ada.email
    assert page.url.endswith(f"#user/{ada.uid}")
    page.wait_for_function("() => !document.querySelector('[data-testid=\"sessions-older\"]').disabled")

    expected = accounts.result_of("my_usage", admin, {"userId": ada.uid, "month": month})
    assert (expected["limits"]["held"], expected["limits"]["heldRuns"]) == (0.05, 1)
    assert user_view(page, "drilldown") == expected_view(expected)
    # Her sessions, newest first, ten at a time.
    sessions = sessions_of(ada.uid)
    assert len(sessions) == 12
    assert shown_sessions(page, "drilldown") == sessions[:10]
    page.click(tid("sessions-older"))
    wait_value(page, tid("sessions-page", "drilldown"), 2)
    assert shown_sessions(page, "drilldown") == sessions[10:]
    assert page.is_disabled(tid("sessions-older"))
    page.click(tid("sessions-newer"))
    wait_value(page, tid("sessions-page", "drilldown"), 1)
    assert shown_sessions(page, "drilldown") == sessions[:10]
    # Her alerts (the lowered limits raised some).
    alerts = alerts_of(ada.uid, month)
    assert alerts
    assert shown_alerts(page, tid("u-alerts", "drilldown")) == alerts

    # Setting her limits from the page.
    assert page.input_value(tid("limit-cost-input")) == "0.5"
    assert page.input_value(tid("limit-runs-input")) == "6"
    page.fill(tid("limit-cost-input"), "7.25")
    page.fill(tid("limit-runs-input"), "250")
    page.click(tid("limits-save"))
    assert wait_form(page, "limits-message") == "saved"
    wait_value(page, tid("cost-limit", "drilldown"), 7.25)
    after = accounts.result_of("my_usage", admin, {"userId": ada.uid, "month": month})
    assert after["limits"]["monthlyCostLimit"] == 7.25
    assert after["limits"]["monthlyFreeRuns"] == 250
    assert user_view(page, "drilldown") == expected_view(after)
    check_layout(page)
    assert_no_serious_accessibility_violation(page)
    # Grace's month is untouched; back to every user.
    assert accounts.result_of("my_usage", grace, {})["limits"]["monthlyCostLimit"] == 5.0
    page.click(tid("drill-back"))
    wait_state(page, "overview-status", "ready")
    assert page.is_visible(tid("overview"))
    assert page.is_hidden(tid("drilldown"))


def test_adding_a_price_shows_in_list_prices(page: Page) -> None:
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    (ada,) = people(1)
    seed_user(ada, 0, unpriced=True)
    accounts.result_of(
        "set_price",
        admin,
        {
            "provider": "anthropic",
            "model": "claude-old",
            "effectiveFrom": "2026-01-01",
            "prices": {"inputMTok": 3},
        },
    )

    sign_in(page, admin)
    wait_state(page, "overview-status", "ready")
    wait_state(page, "prices-status", "ready")
    listed = accounts.result_of("list_prices", admin)["prices"]
    price_keys = ["provider", "model", "effectiveFrom"]
    assert [{k: r[k] for k in price_keys} for r in table_rows(page, tid("prices-table"))] == as_strings(
        listed, price_keys
    )
    # The unpriced model's "add a price" fills the form.
    page.click(f'{tid("unpriced-models")} li[data-model="gpt-unlisted-1"] button')
    assert page.input_value(tid("price-provider")) == "openai"
    assert page.input_value(tid("price-model")) == "gpt-unlisted-1"
    today = datetime.now(UTC).date().isoformat()
    assert page.input_value(tid("price-from")) == today
    page.fill(tid("price-input"), "1.25")
    page.fill(tid("price-output"), "5")
    page.fill(tid("price-request"), "0.00283")
    page.click(tid("price-save"))
    assert wait_form(page, "price-message") == "saved"
    wait_state(page, "prices-status", "ready")

    listed = accounts.result_of("list_prices", admin)["prices"]
    assert listed[0]["provider"] == "openai"
    assert listed[0]["model"] == "gpt-unlisted-1"
    assert listed[0]["effectiveFrom"] == today
    assert listed[0]["prices"] == {"inputMTok": 1.25, "outputMTok": 5.0, "request": 0.00283}
    shown = table_rows(page, tid("prices-table"))
    assert len(shown) == len(listed) == 2
    assert shown[0]["model"] == "gpt-unlisted-1"
    assert (shown[0]["inputMTok"], shown[0]["outputMTok"], shown[0]["request"]) == ("1.25", "5", "0.00283")
    assert shown[0]["cacheReadMTok"] == ""
    # A refused price says why and adds nothing.
    page.fill(tid("price-provider"), "bad provider!")
    page.fill(tid("price-input"), "1")
    page.click(tid("price-save"))
    assert wait_form(page, "price-message").startswith("error: Not added: provider")
    assert len(accounts.result_of("list_prices", admin)["prices"]) == 2


# ---- plans and teams ----


def test_a_plan_made_on_the_page_is_what_list_plans_returns(page: Page) -> None:
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")

    sign_in(page, admin)
    wait_state(page, "plans-status", "ready")
    assert row_keys(page, tid("plans-table")) == ["default"]
    assert shown_plans(page) == expected_plans(accounts.result_of("list_plans", admin, {})["plans"])
    page.fill(tid("plan-name"), "pro")
    page.fill(tid("plan-monthly-cost"), "50")
    page.fill(tid("plan-daily-cost"), "2.5")
    page.fill(tid("plan-daily-runs"), "20")
    for name, limits in (
        ("image_generation", {"monthlyCostLimit": "2", "dailyRuns": "10"}),
        ("chat", {"dailyCostLimit": "0.25"}),
    ):
        page.click(tid("plan-add-feature"))
        row = f'{tid("plan-features")} [data-testid="plan-feature"]:last-child'
        page.fill(f'{row} [data-key="name"]', name)
        for key, text in limits.items():
            page.fill(f'{row} [data-key="{key}"]', text)
    page.click(tid("plan-save"))
    assert wait_form(page, "plan-message") == "saved"
    wait_rows(page, tid("plans-table"), 2)

    listed = accounts.result_of("list_plans", admin, {})["plans"]
    assert [p["plan"] for p in listed] == ["default", "pro"]
    assert listed[1]["limits"] == {
        "monthlyCostLimit": 50.0,
        "dailyCostLimit": 2.5,
        "dailyFreeRuns": 20,
        "features": {
            "chat": {"dailyCostLimit": 0.25},
            "image_generation": {"monthlyCostLimit": 2.0, "dailyRuns": 10},
        },
    }
    assert shown_plans(page) == expected_plans(listed)

    # Edit it: the form holds the plan; a changed field and a removed feature are what set_plan stores.
    page.click(f'{tid("plans-table")} tr[data-key="pro"] button')
    assert page.text_content(tid("plan-form-title")) == "Edit plan pro"
    assert [
        page.input_value(tid(f"plan-{f}"))
        for f in ("name", "monthly-cost", "monthly-runs", "daily-cost", "daily-runs")
    ] == [
        "pro",
        "50",
        "",
        "2.5",
        "20",
    ]
    features = f'{tid("plan-features")} [data-testid="plan-feature"]'
    assert page.eval_on_selector_all(f'{features} [data-key="name"]', "es => es.map(e => e.value)") == [
        "chat",
        "image_generation",
    ]
    page.fill(tid("plan-daily-runs"), "30")
    page.click(f"{features}:first-child button")  # remove "chat"
    page.click(tid("plan-save"))
    assert wait_form(page, "plan-message") == "saved"
    wait_value(page, f'{tid("plans-table")} tr[data-key="pro"] td[data-key="dailyFreeRuns"]', 30)
    listed = accounts.result_of("list_plans", admin, {})["plans"]
    assert listed[1]["limits"] == {
        "monthlyCostLimit": 50.0,
        "dailyCostLimit": 2.5,
        "dailyFreeRuns": 30,
        "features": {"image_generation": {"monthlyCostLimit": 2.0, "dailyRuns": 10}},
    }
    assert shown_plans(page) == expected_plans(listed)

    # A plan set_plan refuses: its problems are named next to the form, on the fields they are about.
    page.click(tid("plan-clear"))
    page.fill(tid("plan-name"), "bad plan")
    page.click(tid("plan-add-feature"))
    page.fill(f'{features} [data-key="name"]', "image gen")
    page.fill(f'{features} [data-key="dailyRuns"]', "3")
    page.click(tid("plan-save"))
    message = wait_form(page, "plan-message")
    assert message.startswith("error: Not saved: "), message
    assert "Plan name: must be 1-100 characters" in message
    assert "Feature 1: must be 1-100 characters" in message
    assert page.get_attribute(tid("plan-name"), "aria-invalid") == "true"
    assert page.get_attribute(f'{features} [data-key="name"]', "aria-invalid") == "true"
    described = page.get_attribute(tid("plan-name"), "aria-describedby")
    assert described == page.get_attribute(tid("plan-message"), "id")
    assert [p["plan"] for p in accounts.result_of("list_plans", admin, {})["plans"]] == ["default", "pro"]
    # Fixed, it is saved, and the marks go.
    page.fill(tid("plan-name"), "lite")
    page.fill(f'{features} [data-key="name"]', "image_gen")
    page.click(tid("plan-save"))
    assert wait_form(page, "plan-message") == "saved"
    assert page.get_attribute(tid("plan-name"), "aria-invalid") is None
    wait_rows(page, tid("plans-table"), 3)
    listed = accounts.result_of("list_plans", admin, {})["plans"]
    assert {"plan": "lite", "limits": {"features": {"image_gen": {"dailyRuns": 3}}}} in listed
    assert shown_plans(page) == expected_plans(listed)
    assert_no_serious_accessibility_violation(page)


def test_a_team_made_on_the_page_shows_its_members_usage_and_scopes(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    ada, grace = people(2)

    sign_in(page, admin)
    assert wait_state(page, "teams-status", "empty") == "empty"
    page.fill(tid("team-id"), "acme")
    page.fill(tid("team-monthly-cost"), "1")
    page.fill(tid("team-monthly-runs"), "100")
    page.fill(tid("team-daily-cost"), "0.5")
    page.click(tid("team-save"))
    assert wait_form(page, "team-message") == "saved"
    card = team_card("acme")
    page.wait_for_selector(card, timeout=WAIT)
    assert "No members yet" in (page.text_content(card) or "")
    assert emulator.document("TallyTeams/acme")["limits"] == {
        "monthlyCostLimitNanos": 1_000_000_000,
        "monthlyFreeRuns": 100,
        "dailyCostLimitNanos": 500_000_000,
    }
    # Edit it: a day's runs and a member; then a second member. (A member's my_usage keeps a team's
    # limits for up to 30 s, so they change before the page's first my_usage for the team.)
    page.click(f"{card} .panel-head button")
    assert page.text_content(tid("team-form-title")) == "Edit team acme"
    assert [
        page.input_value(tid(f"team-{f}"))
        for f in ("id", "monthly-cost", "monthly-runs", "daily-cost", "daily-runs")
    ] == ["acme", "1", "100", "0.5", ""]
    page.fill(tid("team-daily-runs"), "10")
    page.fill(tid("team-member"), ada.uid)
    page.click(tid("team-save"))
    assert wait_form(page, "team-message") == "saved"
    members = f'{card} [data-testid="team-members"]'
    page.wait_for_selector(f'{members} li[data-user-id="{ada.uid}"]', timeout=WAIT)
    assert page.input_value(tid("team-member")) == ""
    page.fill(tid("team-member"), grace.uid)
    page.click(tid("team-save"))
    assert wait_form(page, "team-message") == "saved"
    page.wait_for_selector(f'{members}[data-count="2"]', timeout=WAIT)
    assert page.eval_on_selector_all(f"{members} li", "ls => ls.map(l => l.dataset.userId)") == sorted(
        [ada.uid, grace.uid]
    )
    # What the members record (and hold) while members is the team's.
    with requests.Session() as http:
        seed_user(ada, 0, http=http)
        seed_user(grace, 1, steps=2, http=http)
    reserve(grace, "0.05")
    expected = accounts.result_of("my_usage", admin, {"userId": ada.uid, "month": month})["team"]
    grace_sees = accounts.result_of("my_usage", grace, {})["team"]
    projected, seen = expected.pop("forecast"), grace_sees.pop("forecast")  # moves with the clock
    assert expected == grace_sees
    assert seen["monthEnd"] == pytest.approx(projected["monthEnd"], rel=1e-3)
    assert expected["usage"]["monthCost"] > 0
    assert [s["scope"] for s in expected["scopes"]] == [
        "team.month.cost",
        "team.day.cost",
        "team.month.runs",
        "team.day.runs",
    ]
    page.click(tid("refresh"))
    wait_value(
        page, f'{card} [data-testid="team-usage"] dd[data-key="monthCost"]', expected["usage"]["monthCost"]
    )
    assert shown_figures(page, f'{card} [data-testid="team-usage"]') == {
        k: _js(expected["usage"][k]) for k in TEAM_USAGE_KEYS
    }
    assert shown_scopes(page, f'{card} [data-testid="team-scopes"]') == as_strings(
        expected["scopes"], SCOPE_KEYS
    )
    assert shown_figures(page, f'{card} [data-testid="team-limits"]') == {
        k: _js(v) for k, v in expected["limits"].items()
    }
    assert expected["limits"] == {
        "monthlyCostLimit": 1.0,
        "monthlyFreeRuns": 100,
        "dailyCostLimit": 0.5,
        "dailyFreeRuns": 10,
    }
    # The same team, with a member's own month, in that member's drill-down.
    page.click(f'{members} a[href="#user/{grace.uid}"]')
    wait_state(page, "drill-status", "ready")
    page.wait_for_selector(
        f'{tid("u-team", "drilldown")}[data-team-id="acme"]', state="attached", timeout=WAIT
    )
    assert shown_scopes(page, tid("u-team-scopes", "drilldown")) == as_strings(expected["scopes"], SCOPE_KEYS)
    assert page.input_value(tid("assign-team")) == "acme"
    page.click(tid("drill-back"))
    wait_state(page, "teams-status", "ready")
    check_layout(page)
    assert_no_serious_accessibility_violation(page)


def test_the_drill_down_assigns_a_plan_and_a_team_and_shows_every_scope(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    (ada,) = people(1)
    seed_user(ada, 0)
    plan = {
        "dailyCostLimit": 2,
        "dailyFreeRuns": 5,
        "features": {"google_maps_autocomplete": {"dailyRuns": 10, "monthlyCostLimit": 1}},
    }
    accounts.result_of("set_plan", admin, {"plan": "pro", "limits": plan})
    accounts.result_of(
        "set_team", admin, {"teamId": "acme", "limits": {"monthlyCostLimit": 10, "dailyFreeRuns": 50}}
    )
    emulator.wait_for_finalizations()

    sign_in(page, admin)
    wait_state(page, "overview-status", "ready")
    page.click(f'{tid("top-users")} a[href="#user/{ada.uid}"]')
    wait_state(page, "drill-status", "ready")
    page.wait_for_selector(f"{tid('u-scopes', 'drilldown')} li[data-scope]", timeout=WAIT)
    before = accounts.result_of("my_usage", admin, {"userId": ada.uid, "month": month})
    assert [s["scope"] for s in before["limits"]["scopes"]] == [
        "user.month.cost",
        "user.month.runs",
    ]  # the default plan
    assert shown_scopes(page, tid("u-scopes", "drilldown")) == as_strings(
        before["limits"]["scopes"], SCOPE_KEYS
    )
    assert before["team"] is None
    assert page.is_hidden(tid("u-team", "drilldown"))
    assert (page.input_value(tid("assign-plan")), page.input_value(tid("assign-team"))) == ("", "")

    # Assign the plan and the team from the page.
    page.wait_for_selector(f'{tid("assign-plan")} option[value="pro"]', state="attached", timeout=WAIT)
    page.wait_for_selector(f'{tid("assign-team")} option[value="acme"]', state="attached", timeout=WAIT)
    page.select_option(tid("assign-plan"), "pro")
    page.select_option(tid("assign-team"), "acme")
    page.click(tid("assign-save"))
    assert wait_form(page, "assign-message") == "saved"
    page.wait_for_selector(f'{tid("u-scopes", "drilldown")} li[data-scope="user.day.cost"]', timeout=WAIT)
    stored = emulator.document(f"TallyUserLimits/{ada.uid}")
    assert (stored["plan"], stored["teamId"]) == ("pro", "acme")
    after = accounts.result_of("my_usage", admin, {"userId": ada.uid, "month": month})
    assert [s["scope"] for s in after["limits"]["scopes"]] == [
        "user.month.cost",
        "user.day.cost",
        "user.month.runs",
        "user.day.runs",
        "feature:google_maps_autocomplete.month.cost",
        "feature:google_maps_autocomplete.day.runs",
    ]
    assert shown_scopes(page, tid("u-scopes", "drilldown")) == as_strings(
        after["limits"]["scopes"], SCOPE_KEYS
    )
    assert page.is_visible(tid("u-team", "drilldown"))
    assert page.text_content(tid("u-team-id", "drilldown")) == "acme"
    assert shown_figures(page, tid("u-team-usage", "drilldown")) == {
        k: _js(after["team"]["usage"][k]) for k in TEAM_USAGE_KEYS
    }
    assert shown_scopes(page, tid("u-team-scopes", "drilldown")) == as_strings(
        after["team"]["scopes"], SCOPE_KEYS
    )
    assert user_view(page, "drilldown") == expected_view(after)
    check_layout(page)
    assert_no_serious_accessibility_violation(page)

    # A reload reads the assignment back; removing both (null) goes back to the default plan, no team.
    page.reload()
    wait_state(page, "drill-status", "ready")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"assign-plan\"]').value === 'pro'", timeout=WAIT
    )
    assert page.input_value(tid("assign-team")) == "acme"
    page.select_option(tid("assign-plan"), "")
    page.select_option(tid("assign-team"), "")
    page.click(tid("assign-save"))
    assert wait_form(page, "assign-message") == "saved"
    page.wait_for_selector(f'{tid("u-scopes", "drilldown")}[data-count="2"]', timeout=WAIT)
    stored = emulator.document(f"TallyUserLimits/{ada.uid}")
    assert "plan" not in stored
    assert "teamId" not in stored
    cleared = accounts.result_of("my_usage", admin, {"userId": ada.uid, "month": month})
    assert cleared["team"] is None
    assert shown_scopes(page, tid("u-scopes", "drilldown")) == as_strings(
        cleared["limits"]["scopes"], SCOPE_KEYS
    )
    assert page.is_hidden(tid("u-team", "drilldown"))


# ---- forecasts and anomalies (issue 26) ----


def put_alert(month: str, **fields: Any) -> dict[str, Any]:
    """Write an alert document as Tally does (alerts.Alert.document's shape), already delivered."""
    now = datetime.now(UTC)
    alert_id = emulator.unique("alert")
    document = {
        "alertId": alert_id,
        "userId": None,
        "teamId": None,
        "month": month,
        "threshold": 100,
        "createdAt": now,
        "raisedBy": "test",
        "late": False,
        "deliveredAt": now,
        "attempts": 1,
        "nextAttemptAt": None,
        "tallyShard": 0,
        **fields,
    }
    emulator.db().document(f"TallyAlerts/{alert_id}").set(document)
    return document


def money_text(*values: float) -> Any:
    """The page's money format for amounts shown together (format.js usd and moneyDigits)."""
    digits = 4 if any(v and abs(v) < 1 for v in values) else 2
    return lambda v: f"${v:,.{digits}f}"


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def analytics_answers(page: Page) -> list[Any]:
    """The usage_analytics responses the page receives, from now on (read their JSON later)."""
    seen: list[Any] = []
    page.on("response", lambda r: seen.append(r) if r.url.endswith("/usage_analytics") else None)
    return seen


def shown_answer(page: Page, responses: list[Any]) -> dict[str, Any]:
    """The usage_analytics answer the page shows (the one its as-of says it was generated at)."""
    generated = page.get_attribute(tid("as-of"), "data-generated-at")
    for response in reversed(responses):
        if response.request.method == "POST" and response.ok:
            result: dict[str, Any] = response.json()["result"]
            if result["meta"]["generatedAt"] == generated:
                return result
    raise AssertionError(f"no usage_analytics answer generated at {generated}")


def test_the_admin_page_shows_where_the_month_is_heading(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    now = datetime.now(UTC)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    ada, grace, alan = people(3)
    accounts.result_of("set_team", admin, {"teamId": "acme", "limits": {"monthlyCostLimit": 10}})
    accounts.result_of("set_limits", admin, {"userId": grace.uid, "teamId": "acme"})
    with requests.Session() as http:
        for index, user in enumerate((ada, grace, alan)):
            for days_ago in (2, 1, 0):
                seed_user(user, index, days_ago=days_ago, http=http)
    day = max(now - timedelta(days=1), now.replace(day=1)).date().isoformat()
    anomaly = put_alert(month, kind="anomaly", scope="platform.day.cost", window=day, used=2.5, limit=0.4)
    emulator.wait_for_finalizations()
    accounts.result_of("usage_analytics", admin, {"month": month, "top": 10, "fresh": True})
    responses = analytics_answers(page)

    sign_in(page, admin)
    wait_state(page, "overview-status", "ready")
    answer = shown_answer(page, responses)
    forecast = answer["forecast"]
    assert forecast["monthEnd"] >= answer["totals"]["cost"] > 0
    # Top users and teams: their projected month-end (the run rate the answer gives).
    head = page.eval_on_selector_all(f"{tid('top-users')} thead th", "ths => ths.map(t => t.textContent)")
    assert head[-1] == "Projected month-end"
    top_keys = ["userId", "cost", "monthEnd"]
    assert [{k: r[k] for k in top_keys} for r in table_rows(page, tid("top-users"))] == as_strings(
        answer["topUsers"], top_keys
    )
    assert all(row["monthEnd"] >= row["cost"] > 0 for row in answer["topUsers"])
    assert len(answer["topTeams"]) == 1
    assert row_keys(page, tid("top-teams")) == ["acme"]
    team_keys = ["teamId", "cost", "monthEnd"]
    assert [{k: r[k] for k in team_keys} for r in table_rows(page, tid("top-teams"))] == as_strings(
        answer["topTeams"], team_keys
    )
    # The daily chart: the projection to month end, in words and in its numbers.
    assert page.is_visible(tid("daily-forecast"))
    figures = shown_figures(page, tid("daily-forecast"))
    assert {k: figures[k] for k in ("monthEnd", "low", "high")} == {
        k: _js(forecast[k]) for k in ("monthEnd", "low", "high")
    }
    daily = table_rows(page, tid("daily-data"))
    today = datetime.fromisoformat(answer["meta"]["generatedAt"]).day
    spent = sum(d["cost"] for d in answer["daily"][:today])
    assert abs(float(daily[today - 1]["cumulative"]) - spent) < 1e-6
    assert all(row["projected"] == "" for row in daily[:today])
    if today < len(daily):  # (not on the month's last day: no day is left)
        left = len(daily) - today
        per_day = (forecast["monthEnd"] - spent) / left
        assert all(abs(float(row["projected"]) - per_day) < 1e-6 for row in daily[today:])
        assert abs(float(daily[-1]["cumulative"]) - forecast["monthEnd"]) < 1e-6
        low, high = (float(v) for v in daily[-1]["range"].split(".."))
        assert abs(low - forecast["low"]) < 1e-6
        assert abs(high - forecast["high"]) < 1e-6
    caption = page.text_content(f"{tid('daily-data')} caption") or ""
    assert caption.startswith("Projected: ")
    assert "by month end (80% interval" in caption
    # An anomaly (written as the backend writes it) reads as one.
    alerts = table_rows(page, tid("alerts"))
    shown = next(row for row in alerts if row["kind"] == "anomaly")
    listed = next(a for a in answer["alerts"] if a["kind"] == "anomaly")
    fmt = money_text(2.5, 0.4)
    if "window" in listed:  # (usage_analytics lists an alert's scope and window from v3 on)
        assert shown["scope"] == anomaly["scope"]
        assert shown["details"] == f"Anomaly on {day} in the platform's cost: {fmt(2.5)} vs usual {fmt(0.4)}"
    else:
        assert shown["details"].startswith("Anomaly")
        assert shown["details"].endswith(f"{fmt(2.5)} vs usual {fmt(0.4)}")
    check_layout(page)
    assert_no_serious_accessibility_violation(page)


# ---- the user page ----


def test_the_user_page_shows_my_usage_and_changes_live(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    ada, grace = people(2)
    with requests.Session() as http:
        for n in range(3):
            seed_user(ada, n, steps=2 + n, unpriced=n == 0, http=http)
        seed_user(grace, 5, http=http)
    reserve(ada, "0.1")
    accounts.result_of("set_limits", admin, {"userId": ada.uid, "monthlyCostLimit": 0.6})
    emulator.wait_for_finalizations()

    sign_in(page, ada)
    assert wait_state(page, "user-status", "ready") == "ready"
    page.wait_for_selector(f'{tid("live")}[data-state="live"]', timeout=WAIT)
    assert page.is_hidden(tid("admin-page"))
    expected = accounts.result_of("my_usage", ada, {"month": month})
    assert (expected["limits"]["held"], expected["unpricedSteps"]) == (0.1, 1)
    assert user_view(page, "user-page") == expected_view(expected)
    wait_rows(page, tid("u-session-list", "user-page"), 3)
    assert shown_sessions(page, "user-page") == sessions_of(ada.uid)
    assert shown_alerts(page, tid("u-alerts", "user-page")) == alerts_of(ada.uid, month) != []
    assert page.is_visible(tid("u-unpriced", "user-page"))

    # A step recorded while the page is open shows within seconds, without a reload.
    calls = int(value(page, tid("u-calls", "user-page")))
    started = time.monotonic()
    response = accounts.record(
        ada,
        {
            "session": {"id": emulator.unique("session"), "feature": "chat", "complete": True},
            "steps": [step(feature="chat", provider="openai", usage_type="AI", cost="0.25", billable=True)],
        },
    )
    assert response.status_code == 200, response.text
    wait_value(page, tid("u-calls", "user-page"), calls + 1, timeout=5_000)
    elapsed = time.monotonic() - started
    print(f"\n[measure] the user page showed a recorded step {elapsed:.2f} s after record_steps was sent")
    emulator.wait_for_finalizations()
    expected = accounts.result_of("my_usage", ada, {"month": month})
    assert expected["limits"]["exceeded"] is True  # 0.25 more went over the $0.60 limit
    wait_value(page, tid("u-sessions-completed", "user-page"), expected["sessions"]["completed"])
    assert user_view(page, "user-page") == expected_view(expected)
    wait_rows(page, tid("u-session-list", "user-page"), 4)
    assert shown_sessions(page, "user-page") == sessions_of(ada.uid)
    wait_rows(page, tid("u-alerts", "user-page"), len(alerts_of(ada.uid, month)))
    assert shown_alerts(page, tid("u-alerts", "user-page")) == alerts_of(ada.uid, month)
    assert page.get_attribute(tid("limit-status", "user-page"), "data-value") == "exceeded"

    check_layout(page)
    assert_no_serious_accessibility_violation(page)
    screenshot(page, "user-page")


def test_a_new_user_sees_their_first_step_arrive(page: Page) -> None:
    (ada,) = people(1)

    sign_in(page, ada)
    assert wait_state(page, "user-status", "empty") == "empty"
    assert "Nothing recorded" in (page.text_content(tid("user-status")) or "")
    page.wait_for_selector(f'{tid("live")}[data-state="live"]', timeout=WAIT)
    assert value(page, tid("u-calls", "user-page")) == "0"
    assert value(page, tid("cost-limit", "user-page")) == "5"  # the default limit, from my_usage

    seed_user(ada, 2, steps=2)
    wait_state(page, "user-status", "ready")
    wait_value(page, tid("u-calls", "user-page"), 2, timeout=5_000)
    emulator.wait_for_finalizations()
    wait_value(page, tid("u-sessions-completed", "user-page"), 1)
    assert user_view(page, "user-page") == expected_view(accounts.result_of("my_usage", ada, {}))


def test_the_user_page_shows_day_feature_and_team_limits(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    ada, grace = people(2)
    plan = {"dailyCostLimit": 1, "dailyFreeRuns": 3, "features": {"chat": {"dailyRuns": 5}}}
    accounts.result_of("set_plan", admin, {"plan": "daily", "limits": plan})
    accounts.result_of(
        "set_team", admin, {"teamId": "crew", "limits": {"dailyCostLimit": 2, "monthlyFreeRuns": 20}}
    )
    accounts.result_of("set_limits", admin, {"userId": ada.uid, "plan": "daily", "teamId": "crew"})
    accounts.result_of("set_limits", admin, {"userId": grace.uid, "teamId": "crew"})
    with requests.Session() as http:
        seed_user(ada, 0, http=http)
        seed_user(grace, 1, http=http)
    chat = step(feature="chat", provider="openai", usage_type="AI", cost="0.05", billable=True)
    assert accounts.record(ada, {"steps": [chat]}).status_code == 200
    emulator.wait_for_finalizations()

    sign_in(page, ada)
    wait_state(page, "user-status", "ready")
    page.wait_for_selector(f'{tid("u-scopes", "user-page")} li[data-scope="user.day.cost"]', timeout=WAIT)
    expected = accounts.result_of("my_usage", ada, {"month": month})
    assert [s["scope"] for s in expected["limits"]["scopes"]] == [
        "user.month.cost",
        "user.day.cost",
        "user.month.runs",
        "user.day.runs",
        "feature:chat.day.runs",
    ]
    assert shown_scopes(page, tid("u-scopes", "user-page")) == as_strings(
        expected["limits"]["scopes"], SCOPE_KEYS
    )
    assert page.text_content(tid("u-team-id", "user-page")) == "crew"
    assert shown_figures(page, tid("u-team-usage", "user-page")) == {
        k: _js(expected["team"]["usage"][k]) for k in TEAM_USAGE_KEYS
    }
    assert shown_scopes(page, tid("u-team-scopes", "user-page")) == as_strings(
        expected["team"]["scopes"], SCOPE_KEYS
    )
    assert user_view(page, "user-page") == expected_view(expected)  # the month's own parts as before

    # A step recorded while the page is open: the scopes follow (my_usage is asked again).
    page.wait_for_selector(f'{tid("live")}[data-state="live"]', timeout=WAIT)
    assert accounts.record(ada, {"steps": [{**chat, "cost": "0.25"}]}).status_code == 200
    now = accounts.result_of("my_usage", ada, {"month": month})
    day_cost = f'{tid("u-scopes", "user-page")} li[data-scope="user.day.cost"] [data-key="used"]'
    wait_value(
        page, day_cost, next(s["used"] for s in now["limits"]["scopes"] if s["scope"] == "user.day.cost")
    )
    assert shown_scopes(page, tid("u-scopes", "user-page")) == as_strings(now["limits"]["scopes"], SCOPE_KEYS)
    assert shown_scopes(page, tid("u-team-scopes", "user-page")) == as_strings(
        now["team"]["scopes"], SCOPE_KEYS
    )
    check_layout(page)
    assert_no_serious_accessibility_violation(page)

    # A past month has no day, feature or team scopes.
    page.fill(tid("month"), "2025-01")
    page.wait_for_selector(f'{tid("u-scopes-panel", "user-page")}[data-month="2025-01"]', timeout=WAIT)
    assert page.get_attribute(tid("u-scopes", "user-page"), "data-count") == "0"
    assert page.is_hidden(tid("u-team", "user-page"))


def test_the_user_page_says_where_the_month_is_heading(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    (ada,) = people(1)
    with requests.Session() as http:
        for days_ago in (3, 2, 1, 0):
            seed_user(ada, 4, days_ago=days_ago, http=http)
    accounts.result_of("set_limits", admin, {"userId": ada.uid, "monthlyCostLimit": 4})
    emulator.wait_for_finalizations()
    expected = accounts.result_of("my_usage", ada, {"month": month})
    forecast, limit = expected["forecast"], expected["limits"]["monthlyCostLimit"]
    assert limit == 4.0
    assert forecast["monthEnd"] >= expected["totalCost"] > 0
    alert = put_alert(
        month,
        userId=ada.uid,
        kind="forecast",
        scope="user.month.cost",
        window=month,
        used=forecast["monthEnd"],
        limit=limit,
    )

    sign_in(page, ada)
    wait_state(page, "user-status", "ready")
    pace = tid("u-pace", "user-page")
    page.wait_for_selector(pace, timeout=WAIT)
    figures = shown_figures(page, pace)
    # the page asked my_usage a moment later: the projection moved with the time of day
    assert float(figures["monthEnd"]) == pytest.approx(forecast["monthEnd"], rel=1e-3)
    # "At this pace: $X by month end (limit $Y, reached around the 24th)", from the page's forecast.
    fmt = money_text(float(figures["monthEnd"]), limit)
    words = f"At this pace: {fmt(float(figures['monthEnd']))} by month end (limit {fmt(limit)}"
    if figures.get("exceedsOn"):
        day = int(figures["exceedsOn"][8:])
        words += f", reached {'on' if day <= datetime.now(UTC).day else 'around'} the {ordinal(day)}"
    assert page.text_content(pace) == words + ")"
    assert figures["limit"] == _js(limit)
    assert figures.get("exceedsOn") == (forecast["exceedsOn"] or None)
    # The daily chart: the month document's days, then the projection.
    page.wait_for_selector(tid("u-daily-panel", "user-page"), timeout=WAIT)
    days = emulator.user_month(ada.uid, month)["days"]
    daily = table_rows(page, tid("u-daily-data", "user-page"))
    assert {row["label"]: row["value"] for row in daily if row["value"] != "0"} == {
        date: _js(round(fields["costNanos"] / 1e9, 9)) for date, fields in days.items()
    }
    assert shown_figures(page, tid("u-daily-forecast", "user-page"))["limit"] == _js(limit)
    # The forecast alert, in words.
    wait_rows(page, tid("u-alerts", "user-page"), len(alerts_of(ada.uid, month)))
    row = next(r for r in table_rows(page, tid("u-alerts", "user-page")) if r["kind"] == "forecast")
    fmt = money_text(alert["used"], limit)
    assert row["details"] == (
        f"Forecast: user.month.cost — projected {fmt(alert['used'])} by month end vs limit {fmt(limit)}"
    )
    check_layout(page)
    assert_no_serious_accessibility_violation(page)

    # A past month: its forecast is its total, so no "at this pace".
    page.fill(tid("month"), "2025-01")
    page.wait_for_selector(f'{pace}[data-month="2025-01"]', state="attached", timeout=WAIT)
    assert page.is_hidden(pace)


# ---- states ----


def callable_error(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "status": status,
        "headers": {"Access-Control-Allow-Origin": "*"},
        "content_type": "application/json",
        "json": {"error": {"status": code, "message": message}},
    }


def test_loading_error_and_permission_states(page: Page) -> None:
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    held: list[Route] = []
    answer: dict[str, Any] = {}

    def analytics(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
        elif answer:
            route.fulfill(**answer)
        else:
            held.append(route)  # answered later: the page shows that it is loading

    page.route("**/usage_analytics", analytics)
    sign_in(page, admin)
    assert wait_state(page, "overview-status", "loading") == "loading"
    assert "Loading" in (page.text_content(tid("overview-status")) or "")
    assert page.is_hidden(tid("overview-content"))
    answer.update(callable_error(500, "INTERNAL", "the analytics failed"))
    for route in held:
        route.fulfill(**answer)
    assert wait_state(page, "overview-status", "error") == "error"
    assert "the analytics failed" in (page.text_content(tid("overview-status")) or "")

    answer.update(callable_error(403, "PERMISSION_DENIED", "admins only"))
    page.fill(tid("month"), "2025-02")
    assert wait_state(page, "overview-status", "denied") == "denied"
    assert "admin claim" in (page.text_content(tid("overview-status")) or "")
    assert page.is_hidden(tid("overview-content"))


def test_an_empty_month_says_so(page: Page) -> None:
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")

    sign_in(page, admin)
    wait_state(page, "overview-status", "empty")
    page.fill(tid("month"), "2025-01")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"meta\"]').dataset.month === '2025-01'"
    )

    assert wait_state(page, "overview-status", "empty") == "empty"
    assert "No usage was recorded in January 2025" in (page.text_content(tid("overview-status")) or "")
    assert value(page, tid("total-cost")) == "0"
    assert page.text_content(tid("total-cost")) == "$0.00"
    assert page.is_hidden(tid("unpriced"))


def test_a_late_answer_for_an_earlier_month_is_ignored(page: Page) -> None:
    month = emulator.settled_month()  # (the test stays in one month)
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    (ada,) = people(1)
    seed_user(ada, 0)
    slow: list[Route] = []

    def analytics(route: Route) -> None:
        data = (route.request.post_data_json or {}).get("data") or {}
        if data.get("month") == "2025-03":
            slow.append(route)  # held back until the later request has been answered
        else:
            route.continue_()

    page.route("**/usage_analytics", analytics)
    sign_in(page, admin)
    wait_state(page, "overview-status", "ready")
    page.fill(tid("month"), "2025-03")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"overview-status\"]').dataset.state === 'loading'"
    )
    page.fill(tid("month"), month)
    wait_state(page, "overview-status", "ready")
    assert slow  # (filling the month input fires its change event; each change asks once)
    held, late = [route.request for route in slow], []

    def finished(request: Request) -> None:
        if request in held:
            late.append(request)

    page.on("requestfinished", finished)
    for route in slow:
        route.continue_()  # the answers for 2025-03 arrive last
    for _ in range(WAIT // 20):  # (Playwright delivers events while it waits)
        if len(late) == len(held):
            break
        page.wait_for_timeout(20)
    assert len(late) == len(held), "the held answers never arrived"
    settle(page)  # the page has had the late answers

    assert page.get_attribute(tid("meta"), "data-month") == month
    assert value(page, tid("api-calls")) == "3"
    assert wait_state(page, "overview-status", "ready") == "ready"


def test_the_admin_page_refreshes_itself(page: Page) -> None:
    admin = accounts.make_user(claims={"admin": True}, email="admin@example.com")
    calls = analytics_requests(page)

    sign_in(page, admin, "?refresh=1")
    wait_state(page, "overview-status", "empty")
    generated = page.get_attribute(tid("as-of"), "data-generated-at")
    page.wait_for_function(
        "g => document.querySelector('[data-testid=\"as-of\"]').dataset.generatedAt !== g",
        arg=generated,
        timeout=10_000,
    )
    assert len(calls) >= 2


def test_a_wrong_password_is_reported(page: Page) -> None:
    user = accounts.make_user()

    open_app(page)
    page.fill(tid("email"), user.email)
    page.fill(tid("password"), "wrong-password")
    page.click(tid("sign-in-submit"))
    page.wait_for_selector(f'{tid("sign-in-error")}:has-text("Sign-in failed")', timeout=WAIT)

    assert page.is_visible(tid("sign-in"))
    assert page.is_hidden(tid("admin-page"))
    assert page.is_hidden(tid("user-page"))
