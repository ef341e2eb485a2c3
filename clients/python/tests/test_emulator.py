"""Integration against the real Tally functions on the Firebase emulators.

Skipped unless TALLY_FUNCTIONS_URL and FIREBASE_AUTH_EMULATOR_HOST are set (as
`./scripts/with-emulators` exports them). Every test uses fresh users (no data is
deleted) and reads the outcome back through the `my_usage` callable.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tally_client import (
    BudgetExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Tally,
    TallyError,
    recorder_token,
)

FUNCTIONS_URL = os.environ.get("TALLY_FUNCTIONS_URL", "").rstrip("/")
AUTH_HOST = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST", "")
PROJECT = os.environ.get("GCLOUD_PROJECT", "demo-tally")

pytestmark = [
    pytest.mark.emulator,
    pytest.mark.skipif(
        not (FUNCTIONS_URL and AUTH_HOST),
        reason="needs TALLY_FUNCTIONS_URL and FIREBASE_AUTH_EMULATOR_HOST (run under scripts/with-emulators)",
    ),
]


@dataclass
class User:
    """An Auth emulator user with a current ID token."""

    uid: str
    email: str
    password: str
    token: str

    def id_token(self) -> str:
        """Return the ID token (the callable Tally is given)."""
        return self.token


def _identitytoolkit(
    path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = requests.post(
        f"http://{AUTH_HOST}/identitytoolkit.googleapis.com/v1/{path}", json=body, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def make_user(claims: dict[str, Any] | None = None) -> User:
    """Sign up a fresh user in the Auth emulator (with custom claims) and sign in for an ID token."""
    email = f"client-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct-horse-battery"
    signed_up = _identitytoolkit(
        "accounts:signUp?key=fake", {"email": email, "password": password, "returnSecureToken": True}
    )
    uid = signed_up["localId"]
    token = signed_up["idToken"]
    if claims:
        _identitytoolkit(
            f"projects/{PROJECT}/accounts:update",
            {"localId": uid, "customAttributes": json.dumps(claims)},
            headers={"Authorization": "Bearer owner"},
        )
        signed_in = _identitytoolkit(
            "accounts:signInWithPassword?key=fake",
            {"email": email, "password": password, "returnSecureToken": True},
        )
        token = signed_in["idToken"]
    return User(uid=uid, email=email, password=password, token=token)


def call(name: str, user: User, data: dict[str, Any]) -> dict[str, Any]:
    """Call a callable function with the callable protocol and return its result."""
    response = requests.post(
        f"{FUNCTIONS_URL}/{name}",
        json={"data": data},
        headers={"Authorization": f"Bearer {user.token}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def my_usage(user: User) -> dict[str, Any]:
    """Return the user's current month through `my_usage`."""
    return call("my_usage", user, {})


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.25)


@pytest.fixture
def user() -> User:
    return make_user()


@pytest.fixture
def open_tally() -> Iterator[Callable[..., Tally]]:
    made: list[Tally] = []

    def factory(user: User, url: str = FUNCTIONS_URL, **options: Any) -> Tally:
        settings: dict[str, Any] = {"flush_interval": None, "backoff_base": 0.05, "timeout": 60.0}
        settings.update(options)
        tally = Tally(url, id_token=user.id_token, **settings)
        made.append(tally)
        return tally

    yield factory
    for tally in made:
        tally.close()


class _FlakyProxy(BaseHTTPRequestHandler):
    """Forward POSTs to Tally; for the first `failures` requests, forward and then answer 503 anyway."""

    server: _ProxyServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {
            key: value
            for key, value in self.headers.items()
            if key.lower() in {"authorization", "content-type", "x-firebase-appcheck"}
        }
        upstream = requests.post(f"{self.server.target}{self.path}", data=body, headers=headers, timeout=60)
        with self.server.lock:
            self.server.bodies.append(body)
            fail = self.server.failures > 0
            if fail:
                self.server.failures -= 1
        status, payload = (
            (503, b'{"error":{"status":"UNAVAILABLE","message":"injected"}}')
            if fail
            else (
                upstream.status_code,
                upstream.content,
            )
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _ProxyServer(ThreadingHTTPServer):
    target: str
    failures: int
    bodies: list[bytes]
    lock: threading.Lock


@pytest.fixture
def flaky_proxy() -> Iterator[_ProxyServer]:
    server = _ProxyServer(("127.0.0.1", 0), _FlakyProxy)
    server.target = FUNCTIONS_URL
    server.failures = 1
    server.bodies = []
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_standalone_steps_are_recorded(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)
    tally.record(feature="google_maps_autocomplete", provider="google_maps", cost="0.25")
    tally.record(feature="google_maps_autocomplete", provider="google_maps", cost=0.5, is_billable_run=True)

    responses = tally.flush()

    assert [r["recorded"] for r in responses] == [2]
    usage = my_usage(user)
    assert usage["totalCost"] == 0.75
    assert usage["apiCalls"] == 2
    assert usage["billableRuns"] == 1
    assert usage["features"][0]["name"] == "google_maps_autocomplete"


def test_a_session_is_recorded_and_completed(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)

    with tally.session(feature="google_maps") as session:
        session.step(provider="google_maps", cost="0.125", feature="google_maps_autocomplete")
        session.step(provider="google_maps", cost="0.125", feature="google_maps_details")
    response = session.complete()

    assert response is None  # already completed on exit
    usage = my_usage(user)
    assert usage["totalCost"] == 0.25
    assert usage["apiCalls"] == 2
    wait_until(lambda: my_usage(user)["sessions"]["completed"] == 1)
    assert my_usage(user)["sessions"]["active"] == 0


def test_an_exception_still_completes_the_session(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)

    def app_code() -> None:
        with tally.session(feature="chat") as session:
            session.step(provider="openai", cost="0.5")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        app_code()

    wait_until(lambda: my_usage(user)["sessions"]["completed"] == 1)
    assert my_usage(user)["totalCost"] == 0.5


def test_150_steps_over_21_features_are_batched_and_all_counted(
    user: User, open_tally: Callable[..., Tally]
) -> None:
    # A recorder, so that the per-user cap on new names (20 a month) does not fold a feature into (other).
    tally = open_tally(make_user({"recorder": True}))
    for n in range(150):
        tally.record(
            feature=f"feature_{n % 21}", provider=f"provider_{n % 3}", cost="0.0625", user_id=user.uid
        )

    responses = tally.flush()  # (a full batch may already have gone out from the background thread)

    assert tally.pending == 0
    assert all(r.get("warnings", []) == [] for r in responses)
    usage = my_usage(user)
    assert usage["apiCalls"] == 150
    assert usage["totalCost"] == 9.375
    assert sorted(f["name"] for f in usage["features"]) == sorted(f"feature_{n}" for n in range(21))


def test_a_retry_after_a_503_is_counted_once(
    user: User, open_tally: Callable[..., Tally], flaky_proxy: _ProxyServer
) -> None:
    tally = open_tally(user, url=f"http://127.0.0.1:{flaky_proxy.server_address[1]}")
    for _ in range(3):
        tally.record(feature="chat", provider="openai", cost="0.5")

    responses = tally.flush()

    assert len(flaky_proxy.bodies) == 2
    assert flaky_proxy.bodies[0] == flaky_proxy.bodies[1]
    assert responses[0]["recorded"] == 0
    assert responses[0]["duplicates"] == 3
    usage = my_usage(user)
    assert usage["apiCalls"] == 3
    assert usage["totalCost"] == 1.5


def test_a_retried_session_completion_is_counted_once(
    user: User, open_tally: Callable[..., Tally], flaky_proxy: _ProxyServer
) -> None:
    tally = open_tally(user, url=f"http://127.0.0.1:{flaky_proxy.server_address[1]}")

    with tally.session(feature="chat") as session:
        session.step(provider="openai", cost="0.25")

    assert len(flaky_proxy.bodies) == 2
    usage = my_usage(user)
    assert usage["apiCalls"] == 1
    assert usage["totalCost"] == 0.25
    wait_until(lambda: my_usage(user)["sessions"]["completed"] == 1)


def test_a_recorder_records_for_another_user(user: User, open_tally: Callable[..., Tally]) -> None:
    backend = make_user({"recorder": True})
    tally = open_tally(backend)

    tally.record(feature="chat", provider="openai", cost="0.5", user_id=user.uid)
    tally.flush()

    assert my_usage(user)["totalCost"] == 0.5
    assert my_usage(backend)["totalCost"] == 0


def test_an_invalid_step_raises_the_servers_error(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)
    tally.record(feature="chat", provider="openai", cost=1, timestamp=datetime.now(UTC) - timedelta(days=40))

    with pytest.raises(InvalidArgument) as caught:
        tally.flush()

    assert caught.value.http_status == 400
    assert caught.value.details[0]["field"] == "steps[0].timestamp"
    assert tally.pending == 0
    assert my_usage(user)["apiCalls"] == 0


def test_a_units_step_is_priced_or_counted_unpriced(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)
    units = {"model": "gpt-4o", "inputTokens": 1000, "outputTokens": 200, "cacheReadTokens": 0, "requests": 1}
    tally.record(feature="chat", provider="openai", units=units)

    try:
        tally.flush()
    except InvalidArgument as exc:
        if any("units" in d.get("field", "") or "cost" in d.get("field", "") for d in exc.details):
            pytest.skip(f"this server does not price units yet: {exc}")
        raise

    usage = my_usage(user)
    assert usage["apiCalls"] == 1
    assert usage["byType"]["AI"]["apiCalls"] == 1
    assert usage["totalCost"] >= 0


def test_a_backend_with_only_the_admin_sdk_and_recorder_token_records_for_another_user(user: User) -> None:
    firebase_admin = pytest.importorskip("firebase_admin")
    from firebase_admin import auth

    app = firebase_admin.initialize_app(options={"projectId": PROJECT}, name=f"admin-{uuid.uuid4().hex}")
    recorder_uid = f"backend-{uuid.uuid4().hex[:12]}"
    try:
        id_token = recorder_token(app=app, uid=recorder_uid)
        with Tally(FUNCTIONS_URL, id_token=id_token, flush_interval=None, timeout=60.0) as tally:
            tally.record(feature="chat", provider="openai", cost="0.5", user_id=user.uid)
            tally.flush()
            own = tally.my_usage()

        assert my_usage(user)["totalCost"] == 0.5
        assert own["totalCost"] == 0
        assert auth.get_user(recorder_uid, app=app).custom_claims == {"recorder": True}
    finally:
        firebase_admin.delete_app(app)


# --- nothing lost at the seams (clients v3) -----------------------------------------------


def test_a_step_for_a_session_completed_meanwhile_is_recorded_standalone(
    user: User, open_tally: Callable[..., Tally]
) -> None:
    tally = open_tally(user)
    session = tally.session(feature="chat")
    session.step(provider="openai", cost="0.25")
    session.flush()
    completed = requests.post(  # another path completes the session, as the idle sweep does
        f"{FUNCTIONS_URL}/record_steps",
        json={"session": {"id": session.id, "complete": True}, "steps": []},
        headers={"Authorization": f"Bearer {user.token}"},
        timeout=60,
    )
    assert completed.status_code == 200, completed.text
    session.step(provider="openai", cost="0.5", metadata={"turn": 2})

    responses = tally.flush()

    assert responses[-1]["session"] is None
    assert responses[-1]["recorded"] == 1
    assert tally.refused == []
    assert tally.pending == 0
    usage = my_usage(user)
    assert usage["apiCalls"] == 2
    assert usage["totalCost"] == 0.75


def test_one_bad_step_goes_to_on_refused_and_the_others_are_recorded(
    user: User, open_tally: Callable[..., Tally]
) -> None:
    handed: list[tuple[list[dict[str, Any]], TallyError]] = []
    tally = open_tally(user, on_refused=lambda steps, error: handed.append((steps, error)))
    tally.record(feature="chat", provider="openai", cost="0.25")
    bad = tally.record(
        feature="chat", provider="openai", cost="0.5", timestamp=datetime.now(UTC) - timedelta(days=40)
    )
    tally.record(feature="chat", provider="openai", cost="0.125")

    with pytest.raises(InvalidArgument):
        tally.flush()

    ((steps, error),) = handed
    assert [s["operationId"] for s in steps] == [bad]
    assert error.details[0]["field"] == "steps[1].timestamp"
    assert [r.steps[0]["operationId"] for r in tally.take_refused()] == [bad]
    usage = my_usage(user)
    assert usage["apiCalls"] == 2
    assert usage["totalCost"] == 0.375


def test_a_forbidden_batch_goes_to_on_refused(user: User, open_tally: Callable[..., Tally]) -> None:
    other = make_user()
    handed: list[tuple[list[dict[str, Any]], TallyError]] = []
    tally = open_tally(user, on_refused=lambda steps, error: handed.append((steps, error)))
    operation_id = tally.record(feature="chat", provider="openai", cost="0.5", user_id=other.uid)

    with pytest.raises(PermissionDenied):
        tally.flush()

    ((steps, error),) = handed
    assert [s["operationId"] for s in steps] == [operation_id]
    assert (error.http_status, error.user_id) == (403, other.uid)
    assert my_usage(other)["apiCalls"] == 0


def test_101_steps_are_all_counted(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)
    for _ in range(101):
        tally.record(feature="chat", provider="openai", cost="0.01")

    tally.flush()  # (the first 100 may already have gone out from the background thread)

    assert tally.pending == 0
    assert tally.refused == []
    usage = my_usage(user)
    assert usage["apiCalls"] == 101
    assert usage["totalCost"] == 1.01


def test_21_models_in_one_flush_are_all_counted(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)
    for n in range(21):
        units = {"model": f"client-model-{n}", "inputTokens": 10, "outputTokens": 1}
        tally.record(feature="chat", provider="openai", cost="0.125", units=units)

    responses = tally.flush()

    assert len(responses) == 2
    assert tally.refused == []
    usage = my_usage(user)
    assert usage["apiCalls"] == 21
    assert usage["totalCost"] == 2.625


# --- the gate (reserve_spend, v2): skipped while the server has no reserve_spend --------


def _reserve_or_skip(tally: Tally, **options: Any) -> Any:
    try:
        return tally.reserve(**options)
    except NotFound:
        pytest.skip("reserve_spend is not deployed on this server")


def test_a_reservation_is_settled_by_the_recorded_step(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)

    with _reserve_or_skip(tally, estimate="0.5", is_billable_run=True, ttl_seconds=60) as reservation:
        assert reservation.allowed
        reservation.record(feature="chat", provider="openai", cost="0.25", is_billable_run=True)

    usage = my_usage(user)
    assert usage["totalCost"] == 0.25
    assert usage["billableRuns"] == 1
    assert usage["limits"].get("held", 0) == 0
    assert usage["limits"].get("heldRuns", 0) == 0


def test_a_reservation_over_the_limit_is_refused(user: User, open_tally: Callable[..., Tally]) -> None:
    admin = make_user({"admin": True})
    call("set_limits", admin, {"userId": user.uid, "monthlyCostLimit": 0.5, "monthlyFreeRuns": 100})
    tally = open_tally(user)

    with pytest.raises(BudgetExceeded) as caught:
        _reserve_or_skip(tally, estimate="0.75")

    assert caught.value.reason == "MONTHLY_COST_LIMIT"
    assert caught.value.usage["month"] == my_usage(user)["month"]


def test_a_failed_block_releases_its_hold(user: User, open_tally: Callable[..., Tally]) -> None:
    tally = open_tally(user)
    reservation = _reserve_or_skip(tally, estimate="0.5", ttl_seconds=600)
    assert my_usage(user)["limits"].get("held") == 0.5

    with pytest.raises(RuntimeError), reservation:
        raise RuntimeError("the provider call failed")

    usage = my_usage(user)
    assert usage["limits"].get("held", 0) == 0
    assert usage["totalCost"] == 0
