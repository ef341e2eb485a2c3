"""record_steps through HTTP against the emulators, with real ID tokens."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from google.cloud import firestore

from tally.documents import counters
from tally_dev import accounts, emulator

URL = "record_steps"
MAPS_PRICES = {"autocomplete": "0.00283", "details": "0.017", "nearby": "0.032"}


def record(http: requests.Session, user: accounts.User, body: dict[str, Any]) -> requests.Response:
    return http.post(emulator.functions_url(URL), json=body, headers=user.headers, timeout=60)


def maps_step(kind: str, *, billable: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "operationId": emulator.unique("usage"),
        "usageType": "ApiUsage",
        "feature": f"google_maps_{kind}",
        "provider": "google_maps",
        "cost": float(MAPS_PRICES[kind]),
        "isBillableRun": billable,
        **extra,
    }


def usage_of(db: firestore.Client, uid: str) -> dict[str, Any]:
    usage: dict[str, Any] = (db.collection("users").document(uid).get().to_dict() or {}).get("usage", {})
    return usage


def platform_month(db: firestore.Client, month: str) -> dict[str, int]:
    return counters.fields(emulator.platform_month(month).total)


def all_documents(db: firestore.Client) -> list[str]:
    paths: list[str] = []

    def walk(collection: firestore.CollectionReference) -> None:
        for ref in collection.list_documents():
            if ref.get().exists:
                paths.append(ref.path)
            for sub in ref.collections():
                walk(sub)

    for top in db.collections():
        walk(top)
    return paths


def test_maps_search_session_matches_to_the_nano(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    session_id = emulator.unique("session")
    steps = [
        maps_step("autocomplete", metadata={"input": "55 cours", "resultCount": 5}),
        maps_step("autocomplete"),
        maps_step("autocomplete"),
        maps_step("details"),
        maps_step("nearby", billable=True),
    ]

    responses = [
        record(http, user, {"session": {"id": session_id, "feature": "google_maps"}, "steps": [step]})
        for step in steps
    ]
    done = record(http, user, {"session": {"id": session_id, "complete": True}, "steps": []})

    assert [r.status_code for r in responses] == [200] * 5
    assert done.status_code == 200, done.text
    expected_nanos = 3 * 2_830_000 + 17_000_000 + 32_000_000
    body = done.json()
    assert body["recorded"] == 0
    assert body["session"] == {"id": session_id, "status": "completed", "stepCount": 5, "totalCost": 0.05749}
    assert body["usage"]["totalCost"] == 0.05749
    assert body["usage"]["apiCalls"] == 5
    assert body["usage"]["billableRuns"] == 1
    assert body["usage"]["limits"]["costRemaining"] == 4.94251
    assert body["usage"]["limits"]["freeRunsRemaining"] == 99
    month = usage_of(db, user.uid)["months"][this_month]
    assert (month["costNanos"], month["apiCalls"], month["billableRuns"]) == (expected_nanos, 5, 1)
    assert month["byType"] == {"API": {"costNanos": expected_nanos, "apiCalls": 5, "billableRuns": 1}}
    month = emulator.user_month(user.uid, this_month)
    assert (month["costNanos"], month["apiCalls"], month["billableRuns"]) == (expected_nanos, 5, 1)
    assert month["features"]["google_maps_autocomplete"] == {
        "costNanos": 8_490_000,
        "apiCalls": 3,
        "billableRuns": 0,
    }
    assert month["features"]["google_maps_nearby"] == {
        "costNanos": 32_000_000,
        "apiCalls": 1,
        "billableRuns": 1,
    }
    assert month["providers"] == {
        "google_maps": {"costNanos": expected_nanos, "apiCalls": 5, "billableRuns": 1}
    }
    assert usage_of(db, user.uid)["lifetime"] == {
        "costNanos": expected_nanos,
        "apiCalls": 5,
        "billableRuns": 1,
    }
    session = db.document(f"SessionUsage/{user.uid}/sessions/{session_id}").get().to_dict() or {}
    assert session["status"] == "completed"
    assert session["completedBy"] == "client"
    assert session["feature"] == "google_maps"
    assert session["stats"]["stepCount"] == 5
    assert session["stats"]["costNanos"] == expected_nanos
    assert isinstance(session["createdAt"], datetime)
    assert isinstance(session["completedAt"], datetime)
    step_docs = list(db.collection(f"SessionUsage/{user.uid}/steps").stream())
    assert sorted(d.id for d in step_docs) == sorted(s["operationId"] for s in steps)
    assert all(isinstance((d.to_dict() or {})["timestamp"], datetime) for d in step_docs)
    assert platform_month(db, this_month) == {"costNanos": expected_nanos, "apiCalls": 5, "billableRuns": 1}


def test_the_same_request_sent_twice_counts_once(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    body = {"session": {"id": emulator.unique("s")}, "steps": [maps_step("details"), maps_step("nearby")]}

    first = record(http, user, body)
    second = record(http, user, body)

    assert (first.json()["recorded"], first.json()["duplicates"]) == (2, 0)
    assert (second.json()["recorded"], second.json()["duplicates"]) == (0, 2)
    assert second.json()["usage"]["totalCost"] == 0.049
    assert usage_of(db, user.uid)["months"][this_month]["apiCalls"] == 2
    assert platform_month(db, this_month)["apiCalls"] == 2


def test_retry_after_completion_is_not_counted_again(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    body = {"session": {"id": emulator.unique("s"), "complete": True}, "steps": [maps_step("details")]}

    first = record(http, user, body)
    retry = record(http, user, body)

    assert first.json()["session"]["status"] == "completed"
    assert retry.status_code == 200
    assert (retry.json()["recorded"], retry.json()["duplicates"]) == (0, 1)
    assert usage_of(db, user.uid)["months"][this_month]["costNanos"] == 17_000_000


@pytest.mark.parametrize("with_session", [True, False], ids=["session", "standalone"])
def test_one_operation_sent_fifty_times_concurrently_counts_once(
    db: firestore.Client, with_session: bool, this_month: str
) -> None:
    user = accounts.make_user()
    body: dict[str, Any] = {"steps": [maps_step("nearby", billable=True)]}
    if with_session:
        body["session"] = {"id": emulator.unique("s")}

    def send(_: int) -> requests.Response:
        return requests.post(emulator.functions_url(URL), json=body, headers=user.headers, timeout=120)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(send, range(50)))

    assert [r.status_code for r in responses] == [200] * 50
    assert sum(r.json()["recorded"] for r in responses) == 1
    assert sum(r.json()["duplicates"] for r in responses) == 49
    month = usage_of(db, user.uid)["months"][this_month]
    assert (month["costNanos"], month["apiCalls"], month["billableRuns"]) == (32_000_000, 1, 1)
    assert platform_month(db, this_month) == {"costNanos": 32_000_000, "apiCalls": 1, "billableRuns": 1}


def test_eight_concurrent_clients_of_one_user_lose_nothing(
    db: firestore.Client, capsys: pytest.CaptureFixture[str], this_month: str
) -> None:
    user = accounts.make_user()
    clients, steps_each = 8, 25

    def client(index: int) -> list[int]:
        session_id = emulator.unique(f"client{index}")
        statuses = []
        with requests.Session() as http:
            for n in range(steps_each):
                body = {
                    "session": {"id": session_id, "complete": n == steps_each - 1},
                    "steps": [maps_step("autocomplete", billable=n % 5 == 0)],
                }
                statuses.append(record(http, user, body).status_code)
        return statuses

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        statuses = [s for result in pool.map(client, range(clients)) for s in result]
    elapsed = time.perf_counter() - started

    total = clients * steps_each
    assert statuses == [200] * total
    month = usage_of(db, user.uid)["months"][this_month]
    assert month["apiCalls"] == total
    assert month["costNanos"] == total * 2_830_000
    assert month["billableRuns"] == clients * 5
    emulator.wait_for_finalizations()
    assert usage_of(db, user.uid)["sessions"] == {"active": 0, "completed": clients}
    assert platform_month(db, this_month)["costNanos"] == total * 2_830_000
    # Lock waits would take ~2 s each; 200 steps finishing in seconds shows no serialization.
    assert elapsed < 60
    with capsys.disabled():
        print(
            f"\n[measure] 8 clients x 25 steps of one user: {elapsed:.2f} s ({total / elapsed:.0f} steps/s)"
        )


def test_a_batch_with_one_bad_step_writes_nothing(http: requests.Session, db: firestore.Client) -> None:
    user = accounts.make_user()
    good = maps_step("details")
    bad = maps_step("nearby") | {"cost": -0.5}

    response = record(
        http, user, {"session": {"id": emulator.unique("s")}, "steps": [good, bad, maps_step("details")]}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == "steps[1].cost: must be >= 0"
    assert error["details"] == [{"field": "steps[1].cost", "problem": "must be >= 0"}]
    assert all_documents(db) == []


def test_legacy_usage_type_forms_land_in_two_types(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    forms = ["ai", "AIUsage", "AI", "api", "Api", "ApiUsage", "APIUsage", "API"]
    steps = [maps_step("details") | {"usageType": form} for form in forms]

    response = record(http, user, {"steps": steps})

    assert response.status_code == 200, response.text
    by_type = usage_of(db, user.uid)["months"][this_month]["byType"]
    assert by_type["AI"]["apiCalls"] == 3
    assert by_type["API"]["apiCalls"] == 5
    stored = {
        (d.to_dict() or {})["usageType"] for d in db.collection(f"SessionUsage/{user.uid}/steps").stream()
    }
    assert stored == {"AI", "API"}


def test_iso_and_epoch_timestamps_and_a_step_in_the_previous_month(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    now = datetime.now(UTC)
    first_of_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month_step = first_of_month - timedelta(hours=1)
    previous_month = last_month_step.strftime("%Y-%m")
    iso = maps_step("details", timestamp=(now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"))
    epoch = maps_step("details", timestamp=int((now - timedelta(minutes=2)).timestamp() * 1000))
    late = maps_step("nearby", timestamp=last_month_step.isoformat())

    response = record(http, user, {"steps": [iso, epoch, late]})

    assert response.status_code == 200, response.text
    assert response.json()["usage"]["month"] == this_month
    assert response.json()["usage"]["totalCost"] == 0.034
    months = usage_of(db, user.uid)["months"]
    assert months[previous_month]["costNanos"] == 32_000_000
    assert months[this_month]["costNanos"] == 34_000_000
    assert platform_month(db, previous_month)["costNanos"] == 32_000_000
    late_doc = db.document(f"SessionUsage/{user.uid}/steps/{late['operationId']}").get().to_dict() or {}
    assert late_doc["timestamp"] == last_month_step
    assert late_doc["month"] == previous_month


def test_a_new_session_with_only_last_month_steps_keeps_this_months_breakdowns(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    now = datetime.now(UTC)
    last_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=1)
    record(http, user, {"session": {"id": emulator.unique("s")}, "steps": [maps_step("details")]})

    late = maps_step("nearby", timestamp=last_month.isoformat())
    response = record(http, user, {"session": {"id": emulator.unique("s")}, "steps": [late]})

    assert response.status_code == 200, response.text
    assert usage_of(db, user.uid)["months"][this_month]["byType"] == {
        "API": {"costNanos": 17_000_000, "apiCalls": 1, "billableRuns": 0}
    }
    month = emulator.user_month(user.uid, this_month)
    assert month["features"] == {
        "google_maps_details": {"costNanos": 17_000_000, "apiCalls": 1, "billableRuns": 0}
    }
    current = emulator.platform_month(this_month)
    assert current.by_type["API"].api_calls == 1
    assert current.sessions["active"] == 2


def test_a_feature_named_with_a_dot_is_one_name(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    step = {
        "operationId": emulator.unique("llm"),
        "usageType": "AI",
        "feature": "claude-3.5-sonnet",
        "provider": "anthropic",
        "cost": "0.0123",
    }

    response = record(http, user, {"session": {"id": emulator.unique("chat")}, "steps": [step]})

    assert response.status_code == 200, response.text
    features = emulator.user_month(user.uid, this_month)["features"]
    assert features == {"claude-3.5-sonnet": {"costNanos": 12_300_000, "apiCalls": 1, "billableRuns": 0}}
    assert "claude-3.5-sonnet" in emulator.platform_month(this_month).features


def test_a_thousand_tenths_total_exactly_one_hundred(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    last: requests.Response | None = None

    for batch in range(10):
        steps = [
            {
                "operationId": f"tenth_{batch}_{i}",
                "usageType": "AI",
                "feature": "tiny",
                "provider": "p",
                "cost": 0.1,
            }
            for i in range(100)
        ]
        last = record(http, user, {"steps": steps})
        assert last.status_code == 200, last.text

    assert last is not None
    assert last.json()["usage"]["totalCost"] == 100.0
    assert usage_of(db, user.uid)["months"][this_month]["costNanos"] == 100 * 10**9
    assert usage_of(db, user.uid)["lifetime"]["costNanos"] == 100 * 10**9


def test_other_fields_of_the_user_document_are_untouched(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    app_fields = {"displayName": "Ada", "plan": {"tier": "pro", "seats": 3}, "tags": ["a", "b"]}
    db.collection("users").document(user.uid).set(app_fields)

    record(http, user, {"steps": [maps_step("details")]})
    record(http, user, {"steps": [maps_step("nearby")]})

    stored = db.collection("users").document(user.uid).get().to_dict() or {}
    assert {k: v for k, v in stored.items() if k != "usage"} == app_fields
    assert stored["usage"]["months"][this_month]["apiCalls"] == 2


def test_recorders_and_admins_record_for_another_user(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    target = accounts.make_user()
    recorder = accounts.make_user(claims={"recorder": True})
    admin = accounts.make_user(claims={"admin": True})

    by_recorder = record(http, recorder, {"userId": target.uid, "steps": [maps_step("details")]})
    by_admin = record(http, admin, {"userId": target.uid, "steps": [maps_step("details")]})

    assert (by_recorder.status_code, by_admin.status_code) == (200, 200)
    assert by_admin.json()["usage"]["apiCalls"] == 2
    assert usage_of(db, target.uid)["months"][this_month]["apiCalls"] == 2
    assert usage_of(db, recorder.uid) == {}


def error_of(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["message"]
    return error


def test_error_statuses_follow_the_spec(http: requests.Session, db: firestore.Client) -> None:
    user = accounts.make_user()
    other = accounts.make_user()
    url = emulator.functions_url(URL)
    body = {"steps": [maps_step("details")]}

    no_token = http.post(url, json=body, timeout=30)
    garbage = http.post(url, json=body, headers={"Authorization": "Bearer not-a-token"}, timeout=30)
    for_other = record(http, user, {"userId": other.uid, **body})
    unknown = record(http, user, {"session": {"id": "never-seen", "complete": True}, "steps": []})
    wrong_method = http.get(url, headers=user.headers, timeout=30)
    not_json = http.post(
        url, data="steps=1", headers=user.headers | {"Content-Type": "text/plain"}, timeout=30
    )
    malformed = http.post(
        url, data="{", headers=user.headers | {"Content-Type": "application/json"}, timeout=30
    )
    too_big = http.post(
        url,
        data=b'{"steps": [], "pad": "' + b"x" * (256 * 1024) + b'"}',
        headers=user.headers | {"Content-Type": "application/json"},
        timeout=30,
    )

    assert error_of(no_token, 401)["status"] == "UNAUTHENTICATED"
    assert error_of(garbage, 401)["status"] == "UNAUTHENTICATED"
    assert error_of(for_other, 403) == {
        "status": "PERMISSION_DENIED",
        "message": "userId: only recorder or admin callers may record for another user",
    }
    assert error_of(unknown, 404)["status"] == "NOT_FOUND"
    assert "never-seen" in error_of(unknown, 404)["message"]
    assert error_of(wrong_method, 405)["message"] == "method GET is not allowed; use POST"
    assert error_of(not_json, 415)["message"] == "Content-Type must be application/json"
    malformed_error = error_of(malformed, 400)
    assert malformed_error["status"] == "INVALID_ARGUMENT"
    assert malformed_error["details"][0]["field"] == "body"
    assert error_of(too_big, 413)["message"] == "request body must be at most 262144 bytes"
    assert all_documents(db) == []


def test_a_new_step_for_a_completed_session_is_refused(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    session = {"id": emulator.unique("s")}
    record(http, user, {"session": session | {"complete": True}, "steps": [maps_step("details")]})

    again = record(http, user, {"session": session, "steps": [maps_step("nearby")]})
    complete_again = record(http, user, {"session": session | {"complete": True}, "steps": []})

    error = error_of(again, 409)
    assert error["status"] == "FAILED_PRECONDITION"
    assert session["id"] in error["message"]
    assert complete_again.status_code == 200
    assert usage_of(db, user.uid)["months"][this_month]["apiCalls"] == 1


def test_validation_errors_name_the_field(http: requests.Session, db: firestore.Client) -> None:
    user = accounts.make_user()
    cases = {
        "steps[0].usageType": maps_step("details") | {"usageType": "Cpu"},
        "steps[0].timestamp": maps_step("details") | {"timestamp": "2000-01-01T00:00:00Z"},
        "steps[0].feature": maps_step("details") | {"feature": "has space"},
        "steps[0].cost": maps_step("details") | {"cost": "NaN"},
    }

    for field, step in cases.items():
        error = error_of(record(http, user, {"steps": [step]}), 400)
        assert error["details"][0]["field"] == field
        assert error["message"].startswith(f"{field}: ")
    assert all_documents(db) == []


def test_cors_preflight_is_answered(http: requests.Session) -> None:
    response = http.options(
        emulator.functions_url(URL),
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=30,
    )

    assert response.status_code in {200, 204}
    assert response.headers["Access-Control-Allow-Origin"] in {"*", "https://app.example.com"}
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
