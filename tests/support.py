"""Helpers shared by the integration tests: emulator endpoints, users with real ID tokens."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import firebase_admin
import requests
from firebase_admin import auth
from google.cloud import firestore

from tally import layout
from tally.config import Settings
from tally.rollup import MonthAggregate
from tally.store import FirestoreStore

PROJECT = os.environ.get("GCLOUD_PROJECT", "demo-tally")
T = TypeVar("T")


def env(name: str) -> str:
    """Return an emulator variable that scripts/with-emulators exports."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run integration tests via ./scripts/with-emulators")
    return value


def admin_app() -> firebase_admin.App:
    """Return the Admin SDK app (talks to the Auth emulator)."""
    try:
        return firebase_admin.get_app()
    except ValueError:
        return firebase_admin.initialize_app(options={"projectId": PROJECT})


def wipe() -> None:
    """Delete every document and every Auth user in the emulators."""
    owner = {"Authorization": "Bearer owner"}
    auth_host = env("FIREBASE_AUTH_EMULATOR_HOST")
    wipe_documents()
    requests.delete(
        f"http://{auth_host}/emulator/v1/projects/{PROJECT}/accounts", headers=owner, timeout=30
    ).raise_for_status()


@dataclass(frozen=True)
class User:
    """An Auth emulator user and a real ID token for it."""

    uid: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """Return the Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


def make_user(*, claims: dict[str, Any] | None = None, uid: str | None = None) -> User:
    """Create a user (with custom claims) and sign in for an ID token."""
    admin_app()
    uid = uid or f"user-{uuid.uuid4().hex[:12]}"
    email = f"{uid}@example.com"
    password = "correct-horse-battery"
    auth.create_user(uid=uid, email=email, password=password)
    if claims:
        auth.set_custom_user_claims(uid, claims)
    response = requests.post(
        f"http://{env('FIREBASE_AUTH_EMULATOR_HOST')}/identitytoolkit.googleapis.com/v1/"
        "accounts:signInWithPassword?key=fake-api-key",
        json={"email": email, "password": password, "returnSecureToken": True},
        timeout=30,
    )
    response.raise_for_status()
    return User(uid=uid, email=email, token=response.json()["idToken"])


def db() -> firestore.Client:
    """Return a Firestore client for the emulator."""
    env("FIRESTORE_EMULATOR_HOST")
    return firestore.Client(project=PROJECT)


def functions_url(name: str) -> str:
    """Return the emulator URL of a function."""
    return f"{env('TALLY_FUNCTIONS_URL')}/{name}"


def this_month() -> str:
    """Return the current UTC month."""
    return datetime.now(UTC).strftime("%Y-%m")


def unique(prefix: str) -> str:
    """Return a unique id with a readable prefix."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def wait_until(predicate: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll until `predicate` returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def store() -> FirestoreStore:
    """Return Tally's store on the emulator, with the configured shard count."""
    return FirestoreStore(db(), shards=Settings.from_env().aggregate_shards)


def unfinalized_sessions() -> int:
    """Count completed sessions the trigger has not finalized yet."""
    return store().count_unfinalized()


def platform_month(month: str) -> MonthAggregate:
    """Add up every platform shard of a month, as it is now."""
    shards = db().collection(layout.PLATFORM_SHARDS).where(filter=firestore.FieldFilter("month", "==", month))
    return MonthAggregate.fold(snap.to_dict() or {} for snap in shards.stream())


def user_month(uid: str, month: str) -> dict[str, Any]:
    """Return a user's month document (breakdowns and totals), {} if none."""
    snap = db().document(layout.user_month_path(uid, month)).get()
    return (snap.to_dict() or {}) if snap.exists else {}


def wait_for_finalizations(timeout: float = 60.0) -> None:
    """Wait until every completed session is finalized, so no trigger writes after a test."""
    wait_until(lambda: unfinalized_sessions() == 0 or None, timeout=timeout, interval=0.2)


def call(name: str, user: User | None, data: Any = None) -> tuple[int, dict[str, Any]]:
    """Call a callable function over HTTP with the callable protocol; return status and body."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = f"Bearer {user.token}"
    response = requests.post(functions_url(name), json={"data": data}, headers=headers, timeout=120)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def wipe_documents() -> None:
    """Delete every document (Auth users stay)."""
    requests.delete(
        f"http://{env('FIRESTORE_EMULATOR_HOST')}/emulator/v1/projects/{PROJECT}/databases/(default)/documents",
        headers={"Authorization": "Bearer owner"},
        timeout=30,
    ).raise_for_status()
