"""Hostile input over HTTP: never a 5xx, always the SPEC's error format, nothing written when rejected."""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import pytest
import requests
from google.cloud import firestore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally_dev import accounts, emulator

TRIED: dict[str, int] = {"record_steps": 0, "callables": 0, "5xx": 0, "partial_writes": 0}

NASTY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "a.b", "a/b", "__x__", "../..", "\u0000", "\u202e", "💸", "x" * 300, "\ud800"]),
)
NASTY_NUMBER = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -0.0, 1000.0000000001, 10**400, "1e999", "NaN", "-Infinity", "0x10", "1_000"]),
)
NASTY_TIME = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["0000-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00", "2026-02-30T00:00:00Z", "now", ""]),
    st.datetimes().map(lambda d: d.isoformat()),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), NASTY_NUMBER, NASTY_TEXT)
ANY_JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NASTY_TEXT, inner, max_size=4),
    max_leaves=20,
)


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def valid_step() -> dict[str, Any]:
    return {
        "operationId": emulator.unique("op"),
        "usageType": "API",
        "feature": "f",
        "provider": "p",
        "cost": "0.01",
    }


def is_invalid_cost(value: object) -> bool:
    if isinstance(value, str | bool) or not isinstance(value, int | float):
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return not 0 <= value <= 1000


NOT_STR = ANY_JSON.filter(lambda v: not isinstance(v, str))
BAD_FIELD = {
    "operationId": NOT_STR
    | st.sampled_from(["", "a b", "a/b", "x" * 129, "é", "\u0000", ".", "..", "__x__"]),
    "usageType": NOT_STR | st.sampled_from(["", "Gpu", "AIUsages", "a i", "\u0000", "API "]),
    "feature": NOT_STR | st.sampled_from(["", "a b", "x" * 101, "é", "a\nb", "💸", "a\\b"]),
    "provider": NOT_STR | st.sampled_from(["", "a b", "x" * 101, "\u202e", "a,b"]),
    "cost": NASTY_NUMBER.filter(is_invalid_cost) | st.sampled_from([True, None, [], {}]),
    "isBillableRun": ANY_JSON.filter(lambda v: not isinstance(v, bool)),
    "timestamp": NASTY_TIME,
}


@st.composite
def hostile_body(draw: st.DrawFn) -> Any:
    """A record_steps body that must be rejected: one part of a valid request made hostile."""
    body: dict[str, Any] = {"steps": [valid_step()], "session": {"id": "s1"}}
    where = draw(st.sampled_from(["step", "step", "step", "session", "top", "whole", "metadata", "steps"]))
    if where == "step":
        field = draw(st.sampled_from(sorted(BAD_FIELD)))
        body["steps"][0][field] = draw(BAD_FIELD[field])
    elif where == "session":
        body["session"] = draw(
            ANY_JSON.filter(lambda v: v is not None and (not isinstance(v, dict) or "id" not in v))
            | st.sampled_from(
                [{"id": "bad id"}, {"id": ""}, {"id": "s", "complete": "yes"}, {"id": "s", "x": 1}]
            )
        )
    elif where == "top":
        body[draw(NASTY_TEXT.filter(lambda k: k not in {"steps", "session", "userId"}))] = draw(ANY_JSON)
    elif where == "whole":
        return draw(ANY_JSON.filter(lambda v: not isinstance(v, dict) or "steps" not in v))
    elif where == "metadata":
        body["steps"][0]["metadata"] = draw(
            st.sampled_from(
                [
                    deep(30),
                    {"big": "x" * 5000},
                    {"": 1},
                    {"__name__": 1},
                    {"n": 2**70},
                    {"l": [[1]]},
                    [1],
                    "m",
                ]
            )
        )
    else:
        body["steps"] = draw(
            st.sampled_from([[], [valid_step()] * 2, [valid_step() for _ in range(101)], {}, "x", None])
        )
    return body


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


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
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


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=ANY_JSON, name=st.sampled_from(["usage_analytics", "my_usage", "set_limits"]))
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
