from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally import layout
from tally.documents.sessions import summarize
from tally.services.sessions import Finalized, finalize_session, sweep_sessions
from tally.values import Contention, SessionRecord
from tally.writes import Write
from tally_dev.memory import MemoryStore

CREATED = datetime(2026, 10, 31, 23, 50, tzinfo=UTC)


def session_data(**data: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": "completed",
        "createdAt": CREATED,
        "lastUpdatedAt": CREATED + timedelta(minutes=20, milliseconds=500),
        "completedAt": CREATED + timedelta(minutes=20, milliseconds=500),
        "finalizedAt": None,
        "tallyShard": layout.sweep_shard("u1", "s1"),
        "stats": {
            "stepCount": 3,
            "costNanos": 8_490_000,
            "billableRuns": 1,
            "features": {"claude-3.5-sonnet": {"costNanos": 8_000_000, "apiCalls": 2, "billableRuns": 1}},
            "providers": {"anthropic": {"costNanos": 8_490_000, "apiCalls": 3, "billableRuns": 1}},
            "firstStepAt": CREATED,
            "lastStepAt": CREATED + timedelta(minutes=20, milliseconds=500),
        },
    }
    base.update(data)
    return base


def record(**data: Any) -> SessionRecord:
    return SessionRecord("u1", "s1", session_data(**data), version="v1")


def test_summary_of_a_session_across_midnight_and_a_month_boundary() -> None:
    summary = summarize(record())

    assert summary.step_count == 3
    assert summary.cost_nanos == 8_490_000
    assert summary.duration_ms == 20 * 60_000 + 500
    assert summary.created_month == "2026-10"
    assert summary.completed_month == "2026-11"
    assert summary.features["claude-3.5-sonnet"] == {
        "costNanos": 8_000_000,
        "cost": 0.008,
        "calls": 2,
        "billableRuns": 1,
    }
    document = summary.document()
    assert document["totalCost"] == 0.00849
    assert document["durationSeconds"] == 1200.5


def test_summary_of_a_session_with_no_steps() -> None:
    summary = summarize(record(stats={}, lastUpdatedAt=CREATED, completedAt=CREATED))

    assert (summary.step_count, summary.cost_nanos, summary.duration_ms) == (0, 0, 0)
    assert summary.features == {}


def test_timeout_duration_stops_at_the_last_step() -> None:
    summary = summarize(record(completedAt=CREATED + timedelta(hours=2), completedBy="timeout"))

    assert summary.duration_ms == 20 * 60_000 + 500


def test_steps_recorded_in_one_batch_after_the_fact_keep_their_real_duration() -> None:
    later = CREATED + timedelta(days=3)
    stats = {**session_data()["stats"], "firstStepAt": CREATED, "lastStepAt": CREATED + timedelta(seconds=95)}

    summary = summarize(record(createdAt=later, lastUpdatedAt=later, completedAt=later, stats=stats))

    assert summary.duration_ms == 95_000


def store_with_session(**data: Any) -> MemoryStore:
    store = MemoryStore()
    path = layout.session_path("u1", "s1")
    store.put(path, session_data(**data))
    return store


def shard_sessions(store: MemoryStore) -> dict[str, int]:
    totals: dict[str, int] = {}
    for path, doc in store.docs.items():
        if path.startswith(layout.PLATFORM_SHARDS):
            for key, value in doc.get("sessions", {}).items():
                totals[key] = totals.get(key, 0) + value
    return totals


def test_finalizing_twice_commits_once() -> None:
    store = store_with_session()

    first = finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)
    second = finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)

    assert (first, second) == (Finalized.FINALIZED, Finalized.ALREADY_FINALIZED)
    assert shard_sessions(store) == {
        "completed": 1,
        "stepCount": 3,
        "costNanos": 8_490_000,
        "durationMs": 1_200_500,
        "active": -1,
    }
    assert store.docs[layout.session_path("u1", "s1")]["summary"]["stepCount"] == 3


def test_losing_the_race_to_another_finalizer_is_not_a_second_count() -> None:
    store = store_with_session()
    rival_done = False

    def rival(writes: Sequence[Write]) -> None:
        nonlocal rival_done
        if not rival_done:
            rival_done = True
            finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)

    store.before_commit = rival

    outcome = finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)

    assert outcome is Finalized.ALREADY_FINALIZED
    assert shard_sessions(store)["completed"] == 1


@pytest.mark.parametrize(("data", "outcome"), [({"status": "active"}, Finalized.NOT_COMPLETED)])
def test_nothing_to_finalize(data: dict[str, Any], outcome: Finalized) -> None:
    store = store_with_session(**data)

    assert finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED) is outcome
    assert (
        finalize_session(store=MemoryStore(), user_id="u1", session_id="s1", now=CREATED) is Finalized.MISSING
    )
    assert shard_sessions(store) == {}


def test_a_failed_finalization_is_completed_by_the_sweep() -> None:
    store = store_with_session()
    store.before_commit = lambda writes: (_ for _ in ()).throw(Contention("crash"))
    with pytest.raises(Contention):
        finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)
    store.before_commit = None

    result = sweep_sessions(store=store, now=CREATED + timedelta(hours=1), idle_minutes=30)

    assert (result.completed, result.finalized) == (0, 1)
    assert shard_sessions(store)["completed"] == 1


def idle_store(count: int) -> MemoryStore:
    store = MemoryStore()
    for n in range(count):
        path = layout.session_path(f"u{n}", f"s{n}")
        store.put(
            path,
            {
                "status": "active",
                "createdAt": CREATED,
                "lastUpdatedAt": CREATED,
                "finalizedAt": None,
                "tallyShard": layout.sweep_shard(f"u{n}", f"s{n}"),
                "stats": {},
            },
        )
    return store


def test_sweep_walks_every_page_of_every_shard_and_finalizes_what_it_completed() -> None:
    store = idle_store(250)
    now = CREATED + timedelta(hours=1)

    result = sweep_sessions(store=store, now=now, idle_minutes=30, page_size=10)

    assert (result.completed, result.finalized, result.finished) == (250, 250, True)
    assert all(doc["completedBy"] == "timeout" for doc in store.docs.values() if "completedBy" in doc)
    assert store.docs[layout.usage_path("u7")]["usage"]["sessions"] == {"active": -1, "completed": 1}
    assert store.docs[layout.user_path("u7")]["usage"] == store.docs[layout.usage_path("u7")]["usage"]


def test_sweep_leaves_sessions_idle_for_less_than_the_idle_time() -> None:
    store = idle_store(3)

    result = sweep_sessions(store=store, now=CREATED + timedelta(minutes=29), idle_minutes=30)

    assert (result.completed, result.examined) == (0, 0)


def test_sweep_stops_before_its_deadline_and_says_so() -> None:
    store = idle_store(100)
    clock = iter([100.0, 10.0])

    result = sweep_sessions(
        store=store,
        now=CREATED + timedelta(hours=1),
        idle_minutes=30,
        page_size=5,
        seconds_left=lambda: next(clock),
    )

    assert (result.pages, result.finished) == (2, False)
    assert 0 < result.completed < 100


def test_a_session_completed_by_a_writer_that_is_not_tally_is_counted_once() -> None:
    store = MemoryStore()
    store.put(
        layout.session_path("u1", "s1"), session_data(completedBy=None, completedAt=None)
    )  # the console
    store.put(layout.usage_path("u1"), {"usage": {"sessions": {"active": 1}}})

    outcomes = [finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED) for _ in range(3)]

    assert outcomes == [Finalized.FINALIZED, Finalized.ALREADY_FINALIZED, Finalized.ALREADY_FINALIZED]
    assert store.docs[layout.usage_path("u1")]["usage"]["sessions"] == {"active": 0, "completed": 1}
    assert store.docs[layout.user_path("u1")]["usage"]["sessions"] == {"active": -1, "completed": 1}
    assert store.docs[layout.session_path("u1", "s1")]["completedAt"] == CREATED + timedelta(
        minutes=20, milliseconds=500
    )


def test_a_session_tally_completed_is_not_counted_again_by_its_finalization() -> None:
    store = MemoryStore()
    store.put(layout.session_path("u1", "s1"), session_data(completedBy="client"))

    finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)

    assert layout.usage_path("u1") not in store.docs
