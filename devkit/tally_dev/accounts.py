"""Users in the Auth emulator with real ID tokens, and calls made as them."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from tally_dev.emulator import OWNER, auth_url, functions_url, project

PASSWORD = "correct-horse-battery"  # noqa: S105 - emulator-only accounts


@dataclass(frozen=True)
class User:
    """An Auth emulator user and a real ID token for it."""

    uid: str
    email: str
    token: str
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        """Return the Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


def sign_in(email: str, password: str = PASSWORD, *, http: requests.Session | None = None) -> str:
    """Sign in with email and password; return a fresh ID token."""
    response = (http or requests).post(
        auth_url("accounts:signInWithPassword?key=fake-api-key"),
        json={"email": email, "password": password, "returnSecureToken": True},
        timeout=30,
    )
    response.raise_for_status()
    token: str = response.json()["idToken"]
    return token


def make_user(
    *,
    claims: dict[str, Any] | None = None,
    uid: str | None = None,
    email: str | None = None,
    password: str = PASSWORD,
    http: requests.Session | None = None,
) -> User:
    """Create a user (with custom claims) through the Auth emulator's REST API and sign in."""
    client = http or requests.Session()
    uid = uid or f"user-{uuid.uuid4().hex[:12]}"
    email = email or f"{uid}@example.com"
    created = client.post(
        auth_url(f"projects/{project()}/accounts"),
        json={"localId": uid, "email": email, "password": password},
        headers=OWNER,
        timeout=30,
    )
    created.raise_for_status()
    if claims:
        client.post(
            auth_url(f"projects/{project()}/accounts:update"),
            json={"localId": uid, "customAttributes": json.dumps(claims)},
            headers=OWNER,
            timeout=30,
        ).raise_for_status()
    return User(uid=uid, email=email, token=sign_in(email, password, http=client), password=password)


def make_users(count: int, *, emails: list[str] | None = None) -> list[User]:
    """Create `count` users at once (with these emails, in order), as make_user does."""
    chosen: list[str | None] = list(emails) if emails is not None else [None] * count
    if len(chosen) != count:
        raise ValueError(f"{count} users need {count} emails, not {len(chosen)}")
    with ThreadPoolExecutor(max_workers=min(count, 8) or 1) as pool:
        return list(pool.map(lambda email: make_user(email=email), chosen))


def call(name: str, user: User | None, data: Any = None) -> tuple[int, dict[str, Any]]:
    """Call a callable function with the callable protocol; return the HTTP status and body."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = f"Bearer {user.token}"
    response = requests.post(functions_url(name), json={"data": data}, headers=headers, timeout=120)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def result_of(name: str, user: User, data: Any = None) -> dict[str, Any]:
    """Call a callable and return its result; fail with the error otherwise."""
    status, body = call(name, user, data)
    if status != 200:
        raise AssertionError(f"{name} answered {status}: {body}")
    result: dict[str, Any] = body["result"]
    return result


def record(
    user: User, body: dict[str, Any], *, http: requests.Session | None = None, endpoint: str = "record_steps"
) -> requests.Response:
    """POST a body to record_steps (or another HTTPS endpoint) as `user`."""
    return (http or requests).post(functions_url(endpoint), json=body, headers=user.headers, timeout=120)
