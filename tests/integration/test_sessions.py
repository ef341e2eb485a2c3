"""Session lifecycle against the emulators: real trigger delivery, exactly-once, the sweep."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cloudevents.http import CloudEvent
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import Value

import main
from adapters.firestore import FirestoreStore
from tally import layout
from tally.documents.months import SESSION_FIELDS
from tally.services.sessions import Finalized, finalize_session, sweep_sessions
from tally_dev import accounts, commands, emulator

ROOT = Path(__file__).resolve().parents[2]


def store(db: firestore.Client) -> FirestoreStore:
    return emulator.store()


def step(cost: str, *, feature: str = "google_maps_details", **extra: Any) -> dict[str, Any]:
    return {
        "operationId": emulator.unique("op"),
        "usageType": "API",
        "feature": feature,
        "provider": "google_maps",
        "cost": cost,
        **extra,
    }


def record(http: requests.Session, user: accounts.User, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(emulator.functions_url("record_steps"), json=body, headers=user.headers, timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def session_doc(db: firestore.Client, uid: str, session_id: str) -> dict[str, Any]:
    return db.document(f"SessionUsage/{uid}/sessions/{session_id}").get().to_dict() or {}


def finalized(db: firestore.Client, uid: str, session_id: str) -> dict[str, Any] | None:
    doc = session_doc(db, uid, session_id)
    return doc if doc.get("finalizedAt") else None


def user_sessions(db: firestore.Client, uid: str) -> dict[str, int]:
    data = db.collection("users").document(uid).get().to_dict() or {}
    counters: dict[str, int] = data.get("usage", {}).get("sessions", {})
    return counters


def platform_sessions(db: firestore.Client, month: str) -> dict[str, int]:
    sessions = emulator.platform_month(month).sessions
    return {key: sessions[key] for key in SESSION_FIELDS if key in sessions}


def written_event(path: str, before: dict[str, Any] | None, after: dict[str, Any]) -> CloudEvent:
    """Build the CloudEvent Firestore sends for a write of `path` (JSON encoding)."""
    name = f"projects/{emulator.project()}/databases/(default)/documents/{path}"

    def document(data: dict[str, Any]) -> dict[str, Any]:
        fields = {key: json.loads(Value.to_json(value)) for key, value in _helpers.encode_dict(data).items()}
        return {"name": name, "fields": fields}

    payload: dict[str, Any] = {"value": document(after)}
    if before is not None:
        payload["oldValue"] = document(before)
    attributes = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": f"//firestore.googleapis.com/projects/{emulator.project()}/databases/(default)",
        "type": "google.cloud.firestore.document.v1.written",
        "datacontenttype": "application/json",
        "subject": f"documents/{path}",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "location": "us-central1",
        "project": emulator.project(),
        "namespace": "(default)",
        "database": "(default)",
        "document": path,
    }
    return CloudEvent(attributes, json.dumps(payload))


def deliver(event: CloudEvent) -> None:
    """Invoke the deployed trigger function in-process, as the runtime would, with a raw CloudEvent."""
    main.finalize_session(event)  # the decorated function takes the raw event


def test_the_trigger_finalizes_a_completed_session(
    http: requests.Session, db: firestore.Client, capsys: pytest.CaptureFixture[str], this_month: str
) -> None:
    user = accounts.make_user()
    sid = emulator.unique("session")
    record(http, user, {"session": {"id": sid}, "steps": [step("0.00283", feature="maps.autocomplete")] * 1})
    record(http, user, {"session": {"id": sid}, "steps": [step("0.017"), step("0.032", isBillableRun=True)]})

    started = time.perf_counter()
    record(http, user, {"session": {"id": sid, "complete": True}, "steps": []})
    doc = emulator.wait_until(lambda: finalized(db, user.uid, sid), timeout=20, interval=0.02)
    latency = time.perf_counter() - started

    summary = doc["summary"]
    assert summary["stepCount"] == 3
    assert summary["totalCostNanos"] == 51_830_000
    assert summary["totalCost"] == 0.05183
    assert summary["billableRuns"] == 1
    assert summary["durationSeconds"] >= 0
    assert summary["features"]["maps.autocomplete"] == {
        "costNanos": 2_830_000,
        "cost": 0.00283,
        "calls": 1,
        "billableRuns": 0,
    }
    assert summary["providers"]["google_maps"]["calls"] == 3
    assert isinstance(doc["finalizedAt"], datetime)
    assert user_sessions(db, user.uid) == {"active": 0, "completed": 1}
    assert platform_sessions(db, this_month) == {
        "active": 0,
        "completed": 1,
        "stepCount": 3,
        "costNanos": 51_830_000,
        "durationMs": round(summary["durationSeconds"] * 1000),
    }
    with capsys.disabled():
        print(f"\n[measure] completion request sent -> summary visible: {latency:.2f} s")


def test_repeated_and_concurrent_finalization_counts_once(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    sid = emulator.unique("session")
    record(http, user, {"session": {"id": sid}, "steps": [step("0.017")]})
    path = f"SessionUsage/{user.uid}/sessions/{sid}"
    before = session_doc(db, user.uid, sid)

    record(http, user, {"session": {"id": sid, "complete": True}, "steps": []})
    event = written_event(path, before, session_doc(db, user.uid, sid))
    start = threading.Barrier(8)

    def deliver_together(_: int) -> None:
        start.wait()
        deliver(event)

    with ThreadPoolExecutor(max_workers=8) as pool:  # eight deliveries of one event at once...
        list(pool.map(deliver_together, range(8)))
    deliver(event)  # ...and two more, late
    deliver(event)
    emulator.wait_until(lambda: finalized(db, user.uid, sid))
    emulator.wait_for_finalizations()
    emulator.settle()  # let the emulator's own deliveries of every write run too

    assert user_sessions(db, user.uid) == {"active": 0, "completed": 1}
    assert platform_sessions(db, this_month)["completed"] == 1
    assert platform_sessions(db, this_month)["active"] == 0


def test_client_and_sweep_completing_at_once_finalize_once(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    sids = [emulator.unique("session") for _ in range(6)]
    for sid in sids:
        record(http, user, {"session": {"id": sid}, "steps": [step("0.017")]})
    later = datetime.now(UTC) + timedelta(hours=1)  # every session is idle an hour from now

    def client_completes(sid: str) -> dict[str, Any]:
        return record(requests.Session(), user, {"session": {"id": sid, "complete": True}, "steps": []})

    with ThreadPoolExecutor(max_workers=8) as pool:
        sweep = pool.submit(sweep_sessions, store=store(db), now=later, idle_minutes=30)
        clients = list(pool.map(client_completes, sids))
    emulator.wait_for_finalizations()
    emulator.settle()

    assert all(c["session"]["status"] == "completed" for c in clients)
    by = [session_doc(db, user.uid, sid)["completedBy"] for sid in sids]
    assert set(by) <= {"client", "timeout"}
    assert sweep.result().completed == by.count("timeout")
    assert user_sessions(db, user.uid) == {"active": 0, "completed": 6}
    assert platform_sessions(db, this_month)["completed"] == 6


def test_updates_that_are_not_completions_do_nothing(http: requests.Session, db: firestore.Client) -> None:
    user = accounts.make_user()
    sid = emulator.unique("session")
    path = f"SessionUsage/{user.uid}/sessions/{sid}"
    record(http, user, {"session": {"id": sid}, "steps": [step("0.017")]})
    first = session_doc(db, user.uid, sid)

    record(http, user, {"session": {"id": sid}, "steps": [step("0.032")]})
    second_snap = db.document(path).get()
    deliver(written_event(path, first, second_snap.to_dict() or {}))
    emulator.settle()

    assert db.document(path).get().update_time == second_snap.update_time
    assert session_doc(db, user.uid, sid).get("summary") is None
    assert user_sessions(db, user.uid) == {"active": 1}

    record(http, user, {"session": {"id": sid, "complete": True}, "steps": []})
    done = emulator.wait_until(lambda: db.document(path).get() if finalized(db, user.uid, sid) else None)
    emulator.settle()  # the finalizer's own write was delivered as an event too: it must not loop
    own_write = written_event(path, first, done.to_dict() or {})
    deliver(own_write)

    assert db.document(path).get().update_time == done.update_time
    assert user_sessions(db, user.uid) == {"active": 0, "completed": 1}


def test_a_session_with_no_new_steps_finalizes_with_zeros(
    http: requests.Session, db: firestore.Client
) -> None:
    user = accounts.make_user()
    already = step("0.017")
    record(http, user, {"steps": [already]})
    sid = emulator.unique("session")

    result = record(http, user, {"session": {"id": sid, "complete": True}, "steps": [already]})
    doc = emulator.wait_until(lambda: finalized(db, user.uid, sid))

    assert (result["recorded"], result["duplicates"]) == (0, 1)
    assert doc["summary"]["stepCount"] == 0
    assert doc["summary"]["totalCostNanos"] == 0
    assert doc["summary"]["features"] == {}
    assert user_sessions(db, user.uid) == {"active": 0, "completed": 1}


def test_a_session_spanning_a_month_boundary(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    sid = emulator.unique("session")
    late = step("0.5", timestamp=(month_start - timedelta(seconds=1)).isoformat())
    early = step("0.25", timestamp=max(month_start, now - timedelta(minutes=1)).isoformat())

    record(http, user, {"session": {"id": sid, "complete": True}, "steps": [late, early]})
    doc = emulator.wait_until(lambda: finalized(db, user.uid, sid))

    assert doc["summary"]["stepCount"] == 2
    assert doc["summary"]["totalCostNanos"] == 750_000_000
    usage = (db.collection("users").document(user.uid).get().to_dict() or {})["usage"]
    previous = (month_start - timedelta(seconds=1)).strftime("%Y-%m")
    assert usage["months"][previous]["costNanos"] == 500_000_000
    assert usage["months"][this_month]["costNanos"] == 250_000_000
    assert platform_sessions(db, this_month)["costNanos"] == 750_000_000


def backdate(db: firestore.Client, uid: str, sid: str, hours: float) -> None:
    then = datetime.now(UTC) - timedelta(hours=hours)
    db.document(f"SessionUsage/{uid}/sessions/{sid}").update({"createdAt": then, "lastUpdatedAt": then})


def test_the_sweep_completes_only_idle_sessions(http: requests.Session, db: firestore.Client) -> None:
    user = accounts.make_user()
    idle, fresh, done = (emulator.unique(name) for name in ("idle", "fresh", "done"))
    for sid in (idle, fresh, done):
        record(http, user, {"session": {"id": sid, "complete": sid == done}, "steps": [step("0.017")]})
    emulator.wait_until(lambda: finalized(db, user.uid, done))
    backdate(db, user.uid, idle, hours=2)
    backdate(db, user.uid, done, hours=2)
    db.collection("elsewhere").document("x").collection("sessions").document("foreign").set(
        {"status": "active", "lastUpdatedAt": datetime.now(UTC) - timedelta(days=3), "tallyShard": 0}
    )

    result = sweep_sessions(store=store(db), now=datetime.now(UTC), idle_minutes=30)
    doc = emulator.wait_until(lambda: finalized(db, user.uid, idle))

    assert (result.completed, result.finished) == (1, True)
    assert doc["status"] == "completed"
    assert doc["completedBy"] == "timeout"
    assert doc["summary"]["durationSeconds"] == 0.0  # idle time is not session time
    assert session_doc(db, user.uid, fresh)["status"] == "active"
    assert session_doc(db, user.uid, done)["completedBy"] == "client"
    foreign = db.document("elsewhere/x/sessions/foreign").get().to_dict() or {}
    assert foreign["status"] == "active"
    assert user_sessions(db, user.uid) == {"active": 1, "completed": 2}


def test_the_sweep_pages_through_a_backlog(db: firestore.Client, capsys: pytest.CaptureFixture[str]) -> None:
    old = datetime.now(UTC) - timedelta(hours=3)
    batch = db.batch()
    for i in range(150):
        uid, sid = f"backlog-user-{i % 7}", f"backlog-{i:04d}"
        batch.set(
            db.document(layout.session_path(uid, sid)),
            {
                "status": "active",
                "createdAt": old,
                "lastUpdatedAt": old,
                "finalizedAt": None,
                "tallyShard": layout.sweep_shard(uid, sid),
            },
        )
    batch.commit()

    started = time.perf_counter()
    result = sweep_sessions(store=store(db), now=datetime.now(UTC), idle_minutes=30, page_size=4)
    elapsed = time.perf_counter() - started
    emulator.wait_for_finalizations(timeout=120)

    assert (result.completed, result.finished) == (150, True)
    assert result.pages >= 150 // 4
    statuses = {(d.to_dict() or {})["status"] for d in db.collection_group("sessions").stream()}
    assert statuses == {"completed"}
    with capsys.disabled():
        print(f"\n[measure] sweep of 150 idle sessions in pages of 4 over 16 shards: {elapsed:.2f} s")


def test_the_sweep_runs_from_the_command_line(http: requests.Session, db: firestore.Client) -> None:
    user = accounts.make_user()
    sid = emulator.unique("idle")
    record(http, user, {"session": {"id": sid}, "steps": [step("0.017")]})
    backdate(db, user.uid, sid, hours=1)

    run = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "sweep", "--idle-minutes", "30"],
        cwd=ROOT / "functions",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    help_text = commands.run("sweep", "--help")

    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("sweep: completed 1 idle sessions, finalized ")
    assert (help_text.returncode, "--idle-minutes" in help_text.stdout) == (0, True)
    assert emulator.wait_until(lambda: finalized(db, user.uid, sid))["completedBy"] == "timeout"


def test_the_finalizer_service_reports_what_it_found(http: requests.Session, db: firestore.Client) -> None:
    user = accounts.make_user()
    sid = emulator.unique("session")
    record(http, user, {"session": {"id": sid}, "steps": [step("0.017")]})

    active = finalize_session(store=store(db), user_id=user.uid, session_id=sid, now=datetime.now(UTC))
    missing = finalize_session(store=store(db), user_id=user.uid, session_id="nope", now=datetime.now(UTC))

    assert (active, missing) == (Finalized.NOT_COMPLETED, Finalized.MISSING)
