"""The emulator suite that `scripts/with-emulators` started: its endpoints and Tally's documents in it."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from google.cloud import firestore

from tally import layout
from tally.config import Settings, deployed_environment
from tally.rollup import MonthAggregate
from tally.store import FirestoreStore
from tally.timeutil import month_end, month_key

T = TypeVar("T")
OWNER = {"Authorization": "Bearer owner"}  # the emulators' administrator: bypasses rules


def env(name: str) -> str:
    """Return a variable that scripts/with-emulators exports (ports are chosen there)."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run this through ./scripts/with-emulators")
    return value


def project() -> str:
    """Return the emulator project id."""
    return os.environ.get("GCLOUD_PROJECT", "demo-tally")


def db() -> firestore.Client:
    """Return a Firestore client for the emulator."""
    env("FIRESTORE_EMULATOR_HOST")
    return firestore.Client(project=project())


def settings() -> Settings:
    """Return the settings the emulator's functions run with (functions/.env files, then the shell)."""
    return Settings.from_env(deployed_environment(project()))


def store(**kwargs: Any) -> FirestoreStore:
    """Return Tally's store on the emulator, with the configured shard count."""
    return FirestoreStore(db(), shards=settings().aggregate_shards, **kwargs)


def functions_url(name: str) -> str:
    """Return the emulator URL of a function."""
    return f"{env('TALLY_FUNCTIONS_URL')}/{name}"


def auth_url(path: str) -> str:
    """Return an Identity Toolkit URL on the Auth emulator."""
    return f"http://{env('FIREBASE_AUTH_EMULATOR_HOST')}/identitytoolkit.googleapis.com/v1/{path}"


def wipe_documents() -> None:
    """Delete every document (Auth users stay)."""
    requests.delete(
        f"http://{env('FIRESTORE_EMULATOR_HOST')}/emulator/v1/projects/{project()}/databases/(default)/documents",
        headers=OWNER,
        timeout=30,
    ).raise_for_status()


def wipe() -> None:
    """Delete every document and every Auth user in the emulators."""
    wipe_documents()
    requests.delete(
        f"http://{env('FIREBASE_AUTH_EMULATOR_HOST')}/emulator/v1/projects/{project()}/accounts",
        headers=OWNER,
        timeout=30,
    ).raise_for_status()


def utc_now() -> datetime:
    """Return the current instant (aware UTC)."""
    return datetime.now(UTC)


def this_month() -> str:
    """Return the current UTC month."""
    return datetime.now(UTC).strftime("%Y-%m")


def settled_month(margin: timedelta = timedelta(minutes=2)) -> str:
    """Return the current UTC month, first waiting out its last `margin` (a test then stays in one month)."""
    now = datetime.now(UTC)
    left = month_end(month_key(now)) - now
    if left < margin:
        time.sleep(left.total_seconds() + 0.1)
    return this_month()


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


def unfinalized_sessions() -> int:
    """Count completed sessions the trigger has not finalized yet."""
    return store().count_unfinalized()


def wait_for_finalizations(timeout: float = 60.0) -> None:
    """Wait until every completed session is finalized, so no trigger writes after a test."""
    wait_until(lambda: unfinalized_sessions() == 0 or None, timeout=timeout, interval=0.2)


def platform_month(month: str) -> MonthAggregate:
    """Add up every platform shard of a month, as it is now."""
    shards = db().collection(layout.PLATFORM_SHARDS).where(filter=firestore.FieldFilter("month", "==", month))
    return MonthAggregate.fold(snap.to_dict() or {} for snap in shards.stream())


def user_month(uid: str, month: str) -> dict[str, Any]:
    """Return a user's month document (breakdowns and totals), {} if none."""
    snap = db().document(layout.user_month_path(uid, month)).get()
    return (snap.to_dict() or {}) if snap.exists else {}


def document(path: str) -> dict[str, Any]:
    """Return a document's fields, {} if it does not exist."""
    snap = db().document(path).get()
    return (snap.to_dict() or {}) if snap.exists else {}
