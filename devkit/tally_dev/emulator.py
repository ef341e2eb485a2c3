"""The emulator suite that `scripts/with-emulators` started: its endpoints and Tally's documents in it."""

from __future__ import annotations

import functools
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from dotenv import dotenv_values
from google.cloud import firestore

from adapters.directory import AuthDirectory
from adapters.firestore import FirestoreStore
from tally import layout
from tally.config import Settings, deployed_environment
from tally.documents.months import MonthAggregate
from tally.services.reconcile import Report, reconcile
from tally.timeutil import month_end, month_key
from tally.values import SessionStatus

T = TypeVar("T")
OWNER = {"Authorization": "Bearer owner"}  # the emulators' administrator: bypasses rules


def env(name: str) -> str:
    """Return a variable that scripts/with-emulators exports (ports are chosen there)."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run this through ./scripts/with-emulators")
    return value


def use_suite(index: int) -> None:
    """Point this process at the index-th (from 0) suite of those `TALLY_SUITES=N` started."""
    files = env("TALLY_SUITE_ENVS").split(os.pathsep)
    if not 0 <= index < len(files):
        needed = f"suite {index + 1} is needed but {len(files)} started"
        raise RuntimeError(f"{needed}: set TALLY_SUITES to the number of test processes")
    os.environ.update({key: value for key, value in dotenv_values(files[index]).items() if value is not None})


def project() -> str:
    """Return the emulator project id."""
    return os.environ.get("GCLOUD_PROJECT", "demo-tally")


def db() -> firestore.Client:
    """Return the Firestore client for the emulator (one per emulator: a new one costs 30 ms)."""
    return _client(env("FIRESTORE_EMULATOR_HOST"), project())


@functools.cache
def _client(host: str, project: str) -> firestore.Client:
    """Return a new client of the emulator at `host` (the client reads it from the environment)."""
    return firestore.Client(project=project)


# The functions emulator's log lines for an execution that begins and for one that ends.
BEGUN = re.compile(r'.*functions: Beginning execution of "[^"]+"')
ENDED = re.compile(r'.*(functions: Finished "[^"]+" in [0-9.]+ms|Request to function failed: .*)')


@dataclass
class Executions:
    """Function executions the functions emulator has logged as begun and as ended."""

    begun: int = 0
    ended: int = 0
    partial: str = ""

    def read(self, text: str) -> bool:
        """Count the executions in more of the log; return whether any began or ended."""
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()  # a line not written to its end yet
        begun = sum(1 for line in lines if BEGUN.fullmatch(line))
        ended = sum(1 for line in lines if ENDED.fullmatch(line))
        self.begun, self.ended = self.begun + begun, self.ended + ended
        return bool(begun or ended)

    @property
    def running(self) -> int:
        """Return how many executions are under way."""
        return self.begun - self.ended


def settle(quiet: float = 0.5, timeout: float = 30.0) -> None:
    """Wait until every function execution has ended and none has begun for `quiet` seconds.

    For a test that shows a trigger did nothing: the events of its writes were delivered, and
    the functions ran to their end. The emulator log of scripts/with-emulators says so.
    """
    executions = Executions()
    with (Path(env("TALLY_ARTIFACTS")) / "emulators.log").open(encoding="utf-8", errors="replace") as log:
        last = time.monotonic()
        deadline = last + timeout
        while True:
            now = time.monotonic()
            if executions.read(log.read()):
                last = now
            if executions.running <= 0 and now - last >= quiet:
                return
            if now > deadline:
                raise AssertionError(
                    f"{executions.running} function executions still under way after {timeout} s"
                )
            time.sleep(0.05)


def settings() -> Settings:
    """Return the settings the emulator's functions run with (functions/.env files, then the shell)."""
    return Settings.from_env(deployed_environment(project()))


def store(**kwargs: Any) -> FirestoreStore:
    """Return Tally's store on the emulator, with the configured shard count."""
    return FirestoreStore(db(), shards=settings().aggregate_shards, **kwargs)


def functions_url(name: str) -> str:
    """Return the emulator URL of a function."""
    return f"{env('TALLY_FUNCTIONS_URL')}/{name}"


def https_functions() -> list[str]:
    """Return the names of the HTTPS functions the functions emulator serves."""
    url = urlsplit(env("TALLY_FUNCTIONS_URL"))
    response = requests.get(f"{url.scheme}://{url.netloc}/backends", timeout=30)
    response.raise_for_status()
    backends: list[dict[str, Any]] = response.json()["backends"]
    return sorted(t["name"] for b in backends for t in b["functionTriggers"] if "httpsTrigger" in t)


def warm_functions() -> threading.Thread:
    """Start a worker for every HTTPS function now, all at once, in the background.

    The functions emulator starts a function's first worker (a Python process importing the code,
    about 1.4 s of CPU) on its first request; started together they overlap instead of each
    delaying the first test to call its function. The requests are GETs, which every function
    refuses without doing anything.
    """

    def warm() -> None:
        names = https_functions()
        with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
            list(pool.map(lambda name: requests.get(functions_url(name), timeout=120), names))

    thread = threading.Thread(target=warm, name="warm-functions", daemon=True)
    thread.start()
    return thread


def auth_url(path: str) -> str:
    """Return an Identity Toolkit URL on the Auth emulator."""
    return f"http://{env('FIREBASE_AUTH_EMULATOR_HOST')}/identitytoolkit.googleapis.com/v1/{path}"


def wipe_documents(timeout: float = 30.0) -> None:
    """Delete every document (Auth users stay); a large database takes longer (`timeout` seconds)."""
    requests.delete(
        f"http://{env('FIRESTORE_EMULATOR_HOST')}/emulator/v1/projects/{project()}/databases/(default)/documents",
        headers=OWNER,
        timeout=timeout,
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


def wait_until(predicate: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.05) -> T:
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
    """Count Tally's completed sessions the trigger has not finalized yet.

    One query over every sweep shard: the emulator needs no index for it (the sweep, which must
    run in production, reads them a shard at a time).
    """
    query = (
        db()
        .collection_group(layout.SESSIONS)
        .where(filter=firestore.FieldFilter("status", "==", SessionStatus.COMPLETED.value))
        .where(filter=firestore.FieldFilter("finalizedAt", "==", None))
    )
    return sum(1 for snap in query.stream() if layout.session_ids(snap.reference.path) is not None)


def wait_for_finalizations(timeout: float = 60.0) -> None:
    """Wait until every completed session is finalized, so no trigger writes after a test."""
    wait_until(lambda: unfinalized_sessions() == 0 or None, timeout=timeout, interval=0.05)


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


def reconcile_month(month: str, *, fix: bool = False) -> Report:
    """Reconcile a month in-process, as `make reconcile` does: the suite's settings, Auth's plan claims."""
    return reconcile(
        store=store(), month=month, settings=settings(), now=utc_now(), fix=fix, claims=AuthDirectory()
    )
