"""The seams where money was lost or mispriced (issue 22), end to end through the real functions."""

from __future__ import annotations

from typing import Any

import requests
from google.cloud import firestore

from tally import layout
from tally.timeutil import months_back
from tally_dev import accounts, commands, emulator
from tally_dev.steps import step

BIG_FIELD = 1_048_480  # the user's own field: with it, users/{uid} has no room left for `usage`


def record(user: accounts.User, body: dict[str, Any]) -> dict[str, Any]:
    response = accounts.record(user, body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def reserve(user: accounts.User, rid: str, **estimate: Any) -> dict[str, Any]:
    response = accounts.record(user, {"reservationId": rid, "estimate": estimate}, endpoint="reserve_spend")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def write_own_document_as(user: accounts.User, data: dict[str, str]) -> None:
    """Write the user's own users/{uid} through Firestore's REST API, as the user, under the rules."""
    base = f"http://{emulator.env('FIRESTORE_EMULATOR_HOST')}/v1/projects/{emulator.project()}/databases/(default)/documents"
    fields = {key: {"stringValue": value} for key, value in data.items()}
    response = requests.patch(
        f"{base}/users/{user.uid}", json={"fields": fields}, headers=user.headers, timeout=60
    )
    assert response.status_code == 200, response.text[:300]


def test_a_user_who_fills_their_own_document_is_still_metered_and_gated(this_month: str) -> None:
    user = accounts.make_user()
    admin = accounts.make_user(claims={"admin": True})
    write_own_document_as(user, {"bio": "x" * BIG_FIELD})
    accounts.result_of("set_limits", admin, {"userId": user.uid, "monthlyCostLimit": 1})

    body = record(user, {"steps": [step(cost="0.25"), step(cost="0.25")]})
    view = accounts.result_of("my_usage", user, {})
    refused = reserve(user, "res_big", cost="0.6")
    allowed = reserve(user, "res_fits", cost="0.4")
    report = emulator.reconcile_month(this_month, fix=True)

    assert (body["recorded"], body["usage"]["totalCost"]) == (2, 0.5)
    assert body["warnings"][-1]["field"] == f"users/{user.uid}"
    assert (view["apiCalls"], view["totalCost"], view["limits"]["monthlyCostLimit"]) == (2, 0.5, 1.0)
    assert (refused["allowed"], refused["reason"], allowed["allowed"]) == (False, "MONTHLY_COST_LIMIT", True)
    assert any(d.path == layout.user_path(user.uid) for d in report.differences)
    assert any("does not fit" in line for line in report.unrepaired)
    assert "usage" not in emulator.document(layout.user_path(user.uid))
    assert emulator.document(layout.usage_path(user.uid))["usage"]["lifetime"]["apiCalls"] == 2


def test_an_import_into_a_final_month_reaches_analytics_without_fresh(db: firestore.Client) -> None:
    admin = accounts.make_user(claims={"admin": True})
    month = months_back(emulator.this_month(), 4)[0]  # ended more than 36 days ago: its rollup is final
    before = accounts.result_of("usage_analytics", admin, {"month": month})
    db.document("ApiUsage/legacy-final/operations/op-final-1").set(
        {"feature": "maps", "provider": "google_maps", "cost": 0.75, "timestamp": f"{month}-10T10:00:00Z"}
    )

    imported = commands.run("import-legacy")
    after = accounts.result_of("usage_analytics", admin, {"month": month})

    assert imported.returncode == 0, imported.stderr
    assert before["totals"]["cost"] == 0.0
    assert (after["totals"]["cost"], after["totals"]["apiCalls"]) == (0.75, 1)


def test_an_estimate_nobody_can_price_is_refused_until_an_admin_prices_it() -> None:
    user = accounts.make_user()
    admin = accounts.make_user(claims={"admin": True})
    units = {"model": "acme-support-7b", "inputTokens": 2000, "outputTokens": 500}

    without_provider = reserve(user, "res_a", units=units)
    unpriced = reserve(user, "res_b", units=units, provider="openai", feature="support")
    accounts.result_of(
        "set_price",
        admin,
        {
            "provider": "openai",
            "model": units["model"],
            "effectiveFrom": "2026-01-01",
            "prices": {"inputMTok": 0.3, "outputMTok": 1.2},
        },
    )
    priced = reserve(user, "res_c", units=units, provider="openai", feature="support")

    assert (without_provider["allowed"], without_provider["reason"]) == (False, "UNPRICED")
    assert (unpriced["allowed"], unpriced["reason"]) == (False, "UNPRICED")
    assert (priced["allowed"], priced["reserved"]) == (True, 0.0012)  # 2000 x 0.3 + 500 x 1.2 per million


def test_a_session_completed_outside_tally_is_counted_once(db: firestore.Client, this_month: str) -> None:
    user = accounts.make_user()
    sid = emulator.unique("s")
    record(user, {"session": {"id": sid}, "steps": [step(cost="0.5")]})

    db.document(layout.session_path(user.uid, sid)).update({"status": "completed"})  # e.g. the console
    emulator.wait_until(lambda: emulator.document(layout.session_path(user.uid, sid)).get("finalizedAt"))
    emulator.settle()

    view = accounts.result_of("my_usage", user, {})
    assert view["sessions"] == {"active": 0, "completed": 1}
    platform = emulator.platform_month(this_month).sessions
    assert (platform["completed"], platform["active"]) == (1, 0)
    report = emulator.reconcile_month(this_month, fix=False)
    assert report.differences == []


def test_a_refused_request_admits_no_name_and_uses_no_quota(this_month: str) -> None:
    user = accounts.make_user()
    sid = emulator.unique("s")
    record(user, {"session": {"id": sid, "complete": True}, "steps": [step(cost="0.1")]})
    quota_before = emulator.document(layout.name_quota_path(user.uid, this_month))

    late = accounts.record(user, {"session": {"id": sid}, "steps": [step(cost="0.1", feature="brand_new")]})

    assert late.status_code == 409, late.text
    assert emulator.document(layout.name_quota_path(user.uid, this_month)) == quota_before
    assert not emulator.db().document(layout.name_path("feature", this_month, "brand_new")).get().exists
