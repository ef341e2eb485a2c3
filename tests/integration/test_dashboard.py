"""The admin dashboard in a real browser: Debian's headless Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tally_dev import accounts, emulator

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
]
PASSWORD = "correct-horse-battery"  # the password accounts.make_user gives every user


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    yield context.new_page()
    context.close()


def sign_in(page: Page, user: accounts.User) -> None:
    page.goto(emulator.env("TALLY_HOSTING_URL"))
    page.fill("#email", user.email)
    page.fill("#password", PASSWORD)
    page.click("#sign-in button[type=submit]")


def seed(users: list[accounts.User]) -> None:
    now = datetime.now(UTC)
    with requests.Session() as http:
        for index, user in enumerate(users):
            steps = [
                {
                    "operationId": emulator.unique("op"),
                    "usageType": "AI" if n % 2 else "ApiUsage",
                    "feature": ["claude-3.5-sonnet", "google_maps_nearby", "property_lookup"][n % 3],
                    "provider": ["anthropic", "google_maps", "rentcast"][n % 3],
                    "cost": f"{0.0123 * (index + 1) * (n + 1):.6f}",
                    "isBillableRun": n % 3 == 1,
                    "timestamp": (now - timedelta(minutes=5 + n)).isoformat(),
                }
                for n in range(3 + index)
            ]
            body = {"session": {"id": emulator.unique("s"), "complete": index != 1}, "steps": steps}
            response = http.post(
                emulator.functions_url("record_steps"), json=body, headers=user.headers, timeout=60
            )
            assert response.status_code == 200, response.text


def value(page: Page, test_id: str) -> float:
    raw = page.get_attribute(f'[data-testid="{test_id}"]', "data-value")
    assert raw is not None
    return float(raw)


def table_rows(page: Page, test_id: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        f'[data-testid="{test_id}"] tbody tr:not(.empty-row)',
        "rows => rows.map(r => Object.fromEntries([...r.cells].map(c => [c.dataset.key, c.dataset.value])))",
    )
    return rows


def as_strings(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, str]]:
    return [{key: _js(row[key]) for key in keys} for row in rows]


def _js(raw: Any) -> str:
    """Python's shortest float repr equals JavaScript's String(number), except for integral floats."""
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw)


def test_the_dashboard_shows_exactly_what_the_callable_returns(page: Page) -> None:
    admin = accounts.make_user(claims={"admin": True})
    users = [accounts.make_user() for _ in range(3)]
    seed(users)
    status, _ = accounts.call("set_limits", admin, {"userId": users[2].uid, "monthlyCostLimit": 0.2})
    assert status == 200
    emulator.wait_for_finalizations()
    month = datetime.now(UTC).strftime("%Y-%m")
    expected = accounts.call("usage_analytics", admin, {"month": month, "top": 10})[1]["result"]

    sign_in(page, admin)
    page.wait_for_selector('[data-testid="total-cost"][data-value]', timeout=30_000)

    totals = expected["totals"]
    assert value(page, "total-cost") == totals["cost"]
    assert value(page, "ai-cost") == totals["byType"]["AI"]["cost"]
    assert value(page, "api-cost") == totals["byType"]["API"]["cost"]
    assert value(page, "api-calls") == totals["apiCalls"]
    assert value(page, "billable-runs") == totals["billableRuns"]
    assert value(page, "active-users") == totals["activeUsers"] == 3
    assert page.text_content('[data-testid="api-calls"]') == f"{totals['apiCalls']:,}"
    keys = ["name", "cost", "apiCalls", "billableRuns"]
    assert table_rows(page, "features") == as_strings(expected["features"], keys)
    assert table_rows(page, "providers") == as_strings(expected["providers"], keys)
    user_keys = ["userId", "cost", "apiCalls", "billableRuns"]
    assert table_rows(page, "top-users") == as_strings(expected["topUsers"], user_keys)
    free_keys = ["userId", "costUsed", "monthlyCostLimit", "runsUsed", "monthlyFreeRuns", "percent"]
    assert table_rows(page, "free-tier") == as_strings(expected["freeTier"], free_keys)
    assert len(expected["freeTier"]) == 1
    sessions = page.eval_on_selector_all(
        '[data-testid="sessions"] dd', "dds => dds.map(d => d.dataset.value)"
    )
    s = expected["sessions"]
    assert sessions == [
        _js(v) for v in (s["active"], s["completed"], s["avgCost"], s["avgSteps"], s["avgDurationSeconds"])
    ]
    bars = page.eval_on_selector_all("#daily-chart rect", "rects => rects.map(r => r.dataset.value)")
    assert bars == [_js(d["cost"]) for d in expected["daily"]]
    history = page.eval_on_selector_all("#history-chart rect", "rects => rects.map(r => r.dataset.value)")
    assert history == [_js(h["cost"]) for h in expected["history"]]
    assert page.is_hidden('[data-testid="denied"]')
    assert page.is_hidden("#sign-in")
    screenshot = os.environ.get("TALLY_SCREENSHOT")
    page.screenshot(
        path=screenshot or str(Path(emulator.env("TALLY_ARTIFACTS")) / "dashboard.png"), full_page=True
    )


def test_a_non_admin_sees_the_permission_message(page: Page) -> None:
    user = accounts.make_user()

    sign_in(page, user)
    page.wait_for_selector('[data-testid="denied"]:not([hidden])', timeout=30_000)

    assert "not an admin" in (page.text_content('[data-testid="denied"]') or "")
    assert page.is_hidden("#dashboard")
    assert page.is_hidden("#sign-in")


def test_an_empty_month_says_so(page: Page) -> None:
    admin = accounts.make_user(claims={"admin": True})

    sign_in(page, admin)
    page.wait_for_selector('[data-testid="empty"]:not([hidden])', timeout=30_000)
    page.fill('[data-testid="month"]', "2025-01")
    page.dispatch_event('[data-testid="month"]', "change")
    page.wait_for_function("document.querySelector('[data-testid=meta]').textContent.startsWith('2025-01')")

    assert page.is_visible('[data-testid="empty"]')
    assert value(page, "total-cost") == 0


def test_a_wrong_password_is_reported(page: Page) -> None:
    user = accounts.make_user()

    page.goto(emulator.env("TALLY_HOSTING_URL"))
    page.fill("#email", user.email)
    page.fill("#password", "wrong-password")
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('Sign-in failed')", timeout=30_000)

    assert page.is_visible("#sign-in")
