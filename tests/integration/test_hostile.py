"""Hostile input over HTTP: never a 5xx, always the SPEC's error format, nothing written when rejected."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests
from google.cloud import firestore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally_dev import accounts, emulator
from tally_dev.hostile import ANY_JSON, hostile_body, valid_step

TRIED: dict[str, int] = {"record_steps": 0, "callables": 0, "5xx": 0, "partial_writes": 0}


def fingerprint(db: firestore.Client) -> list[tuple[str, Any]]:
    """Every document path with its update time."""
    found: list[tuple[str, Any]] = []

    def walk(collection: firestore.CollectionReference) -> None:
        for snap in collection.stream():
            found.append((snap.reference.path, snap.update_time))
        for ref in collection.list_documents():
            for sub in ref.collections():
                walk(sub)

    for top in db.collections():
        walk(top)
    return sorted(found, key=lambda item: item[0])


def check_rejected(response: requests.Response, before: list[tuple[str, Any]], db: firestore.Client) -> None:
    if response.status_code >= 500:
        TRIED["5xx"] += 1
    assert response.status_code < 500, response.text
    assert response.status_code != 200, response.text
    error = response.json()["error"]
    assert isinstance(error["status"], str)
    assert error["status"]
    assert isinstance(error["message"], str)
    assert error["message"]
    after = fingerprint(db)
    if after != before:
        TRIED["partial_writes"] += 1
    assert after == before


def post_raw(user: accounts.User, data: bytes, content_type: str = "application/json") -> requests.Response:
    return requests.post(
        emulator.functions_url("record_steps"),
        data=data,
        headers=user.headers | {"Content-Type": content_type},
        timeout=60,
    )


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=hostile_body())
def test_hostile_record_steps_bodies_are_rejected_cleanly(body: Any) -> None:
    if not HOSTILE_USER:  # one user for every example of this test (the wipe runs per test)
        HOSTILE_USER.append(accounts.make_user())
    user = HOSTILE_USER[0]
    db = emulator.db()
    before = fingerprint(db)

    response = post_raw(user, json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass"))
    TRIED["record_steps"] += 1

    check_rejected(response, before, db)


HOSTILE_USER: list[accounts.User] = []


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b'{"steps": [], "steps": []}', "application/json", 400),
        (b'{"steps": [{"cost": NaN}]}', "application/json", 400),
        (b"\xff\xfe\x00", "application/json", 400),
        (b"[" * 100_000, "application/json", 400),
        (b'{"steps": []}', "text/plain", 415),
        (b'{"steps": []}', "application/x-www-form-urlencoded", 415),
        (b'{"steps": []}', "", 415),
        (b'{"pad": "' + b"x" * 300_000 + b'"}', "application/json", 413),
    ],
)
def test_malformed_transport_is_rejected(
    data: bytes, content_type: str, status: int, db: firestore.Client
) -> None:
    user = accounts.make_user()
    before = fingerprint(db)

    response = post_raw(user, data, content_type)
    TRIED["record_steps"] += 1

    assert response.status_code == status
    check_rejected(response, before, db)


def forged_token(user: accounts.User, **claims: Any) -> str:
    """Re-sign nothing: change an emulator ID token's claims (the emulator issues unsigned tokens)."""
    header, payload, signature = user.token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{header}.{encoded}.{signature}"


def test_garbage_expired_and_foreign_tokens_are_refused(db: firestore.Client) -> None:
    user = accounts.make_user()
    other = accounts.make_user()
    body = json.dumps({"steps": [valid_step()]}).encode()
    now = int(time.time())
    tokens = {
        "garbage": "abc.def.ghi",
        "empty": "",
        "expired": forged_token(user, exp=now - 3600, iat=now - 7200),
        "wrong audience": forged_token(user, aud="another-project"),
        "not yet valid": forged_token(user, iat=now + 3600),
    }
    before = fingerprint(db)

    for name, token in tokens.items():
        response = requests.post(
            emulator.functions_url("record_steps"),
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=60,
        )
        TRIED["record_steps"] += 1
        assert response.status_code == 401, name
        check_rejected(response, before, db)
    for_other = post_raw(user, json.dumps({"userId": other.uid, "steps": [valid_step()]}).encode())
    TRIED["record_steps"] += 1
    assert for_other.status_code == 403
    check_rejected(for_other, before, db)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=ANY_JSON,
    name=st.sampled_from(["usage_analytics", "my_usage", "set_limits", "set_price", "export_usage"]),
)
def test_hostile_callable_data_never_fails_internally(data: Any, name: str) -> None:
    if not HOSTILE_ADMIN:
        HOSTILE_ADMIN.append(accounts.make_user(claims={"admin": True}))
    response = requests.post(
        emulator.functions_url(name),
        data=json.dumps({"data": data}, allow_nan=True).encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {HOSTILE_ADMIN[0].token}"},
        timeout=60,
    )
    TRIED["callables"] += 1

    if response.status_code >= 500:
        TRIED["5xx"] += 1
    assert response.status_code < 500, response.text
    body = response.json()
    assert ("result" in body) != ("error" in body)


HOSTILE_ADMIN: list[accounts.User] = []


def test_report_hostile_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(
            f"\n[measure] hostile inputs: {TRIED['record_steps']} to record_steps, "
            f"{TRIED['callables']} to callables; 5xx responses: {TRIED['5xx']}; "
            f"partial writes: {TRIED['partial_writes']}"
        )
