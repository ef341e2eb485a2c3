"""No usage lost silently: 409 re-records, on_refused and `refused`, one bad step, clock skew."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally_client import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Refusal,
    Tally,
    TallyError,
    Unavailable,
)
from tally_fakes import FakeTally, error_body


class Collected:
    """An on_refused callback that keeps what it was given (and the thread it ran on)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, Any]], TallyError]] = []
        self.threads: list[str] = []

    def __call__(self, steps: list[dict[str, Any]], error: TallyError) -> None:
        self.calls.append((steps, error))
        self.threads.append(threading.current_thread().name)

    def operation_ids(self) -> list[str]:
        return [step["operationId"] for steps, _ in self.calls for step in steps]


@pytest.fixture
def collected() -> Collected:
    return Collected()


@pytest.fixture
def watched(make_tally: Callable[..., Tally], collected: Collected) -> Tally:
    """Return a Tally client whose on_refused collects what it is given."""
    return make_tally(on_refused=collected)


def _error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tally_client" and r.levelno == logging.ERROR]


# --- on_refused and refused ---------------------------------------------------------------


def test_a_refused_batch_goes_to_on_refused_and_stays_in_refused(
    watched: Tally, fake: FakeTally, collected: Collected, caplog: pytest.LogCaptureFixture
) -> None:
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "not yours"))
    operation_id = watched.record(feature="f", provider="p", cost=1, user_id="someone-else")

    with pytest.raises(PermissionDenied) as caught:
        watched.flush()

    ((steps, error),) = collected.calls
    assert [s["operationId"] for s in steps] == [operation_id]
    assert error is caught.value
    assert (error.user_id, error.session_id) == ("someone-else", None)
    (refusal,) = watched.refused
    assert refusal == Refusal(steps=steps, error=error, user_id="someone-else", session_id=None)
    assert watched.pending == 0
    (record,) = _error_records(caplog)
    assert operation_id in record.getMessage()


def test_a_refusal_is_logged_at_error_level_without_a_callback(
    tally: Tally, fake: FakeTally, caplog: pytest.LogCaptureFixture
) -> None:
    fake.inject("record_steps", 404, error_body("NOT_FOUND", "no such thing"))
    operation_id = tally.record(feature="f", provider="p", cost=1)

    with pytest.raises(NotFound):
        tally.flush()

    (record,) = _error_records(caplog)
    assert "refused 1 step(s)" in record.getMessage()
    assert operation_id in record.getMessage()
    assert [s["operationId"] for r in tally.refused for s in r.steps] == [operation_id]


def test_take_refused_returns_the_refusals_and_forgets_them(tally: Tally, fake: FakeTally) -> None:
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "no"), times=2)
    first = tally.record(feature="f", provider="p", cost=1, user_id="a")
    second = tally.record(feature="f", provider="p", cost=1, user_id="b")

    with pytest.raises(PermissionDenied):
        tally.flush()
    taken = tally.take_refused()

    assert [(r.user_id, r.steps[0]["operationId"]) for r in taken] == [("a", first), ("b", second)]
    assert tally.refused == []
    assert tally.take_refused() == []


def test_refused_keeps_at_most_max_refused_steps_and_logs_what_it_forgets(
    make_tally: Callable[..., Tally], fake: FakeTally, caplog: pytest.LogCaptureFixture
) -> None:
    tally = make_tally(max_refused_steps=2)
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "no"), times=3)
    oldest = tally.record(feature="f", provider="p", cost=1, user_id="a")
    kept = [tally.record(feature="f", provider="p", cost=1, user_id=uid) for uid in ("b", "c")]

    with pytest.raises(PermissionDenied):
        tally.flush()

    assert [r.steps[0]["operationId"] for r in tally.refused] == kept
    assert any("forgotten" in r.getMessage() and oldest in r.getMessage() for r in _error_records(caplog))


def test_a_callback_that_raises_does_not_break_the_client(
    make_tally: Callable[..., Tally], fake: FakeTally, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(steps: list[dict[str, Any]], error: TallyError) -> None:
        raise RuntimeError("the app's callback has a bug")

    tally = make_tally(on_refused=broken)
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "no"))
    tally.record(feature="f", provider="p", cost=1, user_id="a")
    sent = tally.record(feature="f", provider="p", cost=1, user_id="b")

    with pytest.raises(PermissionDenied):
        tally.flush()
    later = tally.record(feature="f", provider="p", cost=1)
    tally.flush()

    assert list(fake.recorded) == [sent, later]
    assert len(tally.refused) == 1
    assert any("on_refused callback raised" in r.getMessage() for r in caplog.records)


def test_a_refusal_does_not_stop_the_other_batches_of_the_flush(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "no"))
    refused = watched.record(feature="f", provider="p", cost=1, user_id="a")
    sent = watched.record(feature="f", provider="p", cost=1, user_id="b")

    with pytest.raises(PermissionDenied):
        watched.flush()

    assert collected.operation_ids() == [refused]
    assert list(fake.recorded) == [sent]
    assert watched.pending == 0


@pytest.mark.parametrize(
    ("http_status", "status", "message", "error_type"),
    [
        (
            403,
            "PERMISSION_DENIED",
            "userId: only recorder or admin callers may record for another user",
            PermissionDenied,
        ),
        (404, "NOT_FOUND", "no such function", NotFound),
        (409, "FAILED_PRECONDITION", "session s1 was written by an earlier system", FailedPrecondition),
        (415, "UNSUPPORTED_MEDIA_TYPE", "not JSON", TallyError),
    ],
)
def test_other_4xx_go_to_on_refused(
    watched: Tally,
    fake: FakeTally,
    collected: Collected,
    http_status: int,
    status: str,
    message: str,
    error_type: type[TallyError],
) -> None:
    fake.inject("record_steps", http_status, error_body(status, message))
    with watched.session(feature="chat", session_id="s1") as session:
        operation_id = session.step(provider="openai", cost=1)

        with pytest.raises(error_type):
            watched.flush()

    ((steps, error),) = collected.calls
    assert [s["operationId"] for s in steps] == [operation_id]
    assert (error.http_status, error.status, error.session_id) == (http_status, status, "s1")
    assert operation_id not in fake.recorded


def test_a_second_401_goes_to_on_refused(
    make_tally: Callable[..., Tally], fake: FakeTally, collected: Collected
) -> None:
    fake.valid_tokens = {"never"}
    tally = make_tally(on_refused=collected)
    operation_id = tally.record(feature="f", provider="p", cost=1)

    with pytest.raises(TallyError):
        tally.flush()

    assert collected.operation_ids() == [operation_id]
    assert collected.calls[0][1].http_status == 401


def test_an_outage_keeps_the_steps_and_never_calls_on_refused(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    fake.inject("record_steps", 503, error_body("UNAVAILABLE", "down"), times=4)
    operation_id = watched.record(feature="f", provider="p", cost=1)

    with pytest.raises(Unavailable):
        watched.flush()
    watched.flush()

    assert collected.calls == []
    assert watched.refused == []
    assert list(fake.recorded) == [operation_id]
    assert {s["operationId"] for s in fake.steps()} == {operation_id}


def test_the_background_thread_hands_refusals_over_without_retrying_them(
    make_tally: Callable[..., Tally], fake: FakeTally, collected: Collected, caplog: pytest.LogCaptureFixture
) -> None:
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "no"))
    tally = make_tally(on_refused=collected, flush_interval=0.05)

    operation_id = tally.record(feature="f", provider="p", cost=1)

    fake.wait_for(lambda: len(collected.calls) == 1)
    assert collected.operation_ids() == [operation_id]
    assert collected.threads == ["tally-flush"]
    assert len(fake.received) == 1
    assert not any("kept for the next one" in r.getMessage() for r in caplog.records)


# --- a session completed meanwhile (409) ------------------------------------------------------


def test_a_step_of_a_session_completed_meanwhile_is_recorded_as_standalone(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    with watched.session(feature="chat", user_id="user-1", session_id="session_swept_1") as session:
        first = session.step(provider="openai", cost="0.5")
        watched.flush()
        fake.completed_sessions.add(session.id)  # the server's idle sweep completes it
        late = session.step(provider="openai", cost="0.25", metadata={"turn": 2})
        watched.flush()
        later = session.step(provider="openai", cost="0.125")

    refused_body, standalone, without_a_409 = fake.bodies()[1:]
    assert refused_body["session"]["id"] == session.id
    assert "session" not in standalone
    assert standalone["userId"] == "user-1"
    (step,) = standalone["steps"]
    assert step["operationId"] == late
    assert step["metadata"] == {"sessionId": session.id, "turn": 2}
    assert step["feature"] == "chat"
    assert step["cost"] == "0.25"
    assert fake.recorded[first]["_session"] == session.id
    assert fake.recorded[late]["_session"] is None
    assert [s["operationId"] for s in without_a_409["steps"]] == [later]
    assert "session" not in without_a_409
    assert fake.recorded[later]["metadata"] == {"sessionId": session.id}
    assert collected.calls == []
    assert watched.refused == []
    assert watched.pending == 0


def test_every_later_batch_of_a_completed_session_goes_standalone_without_another_409(
    tally: Tally, fake: FakeTally
) -> None:
    fake.completed_sessions.add("session_swept_2")
    session = tally.session(feature="chat", session_id="session_swept_2")
    ids = [session.step(provider="openai", cost="0.01") for _ in range(150)]

    tally.flush()

    bodies = fake.bodies()  # (the background thread may send the first full batch)
    assert [("session" in b) for b in bodies] == [True] + [False] * (len(bodies) - 1)
    assert sum(len(b["steps"]) for b in bodies[1:]) == 150
    assert sorted(fake.recorded) == sorted(ids)
    assert all(fake.recorded[i]["metadata"] == {"sessionId": "session_swept_2"} for i in ids)


def test_a_re_record_hit_by_an_outage_stays_queued_as_standalone(tally: Tally, fake: FakeTally) -> None:
    completed = "session session_swept_4 is completed; it accepts no new steps"
    fake.inject("record_steps", 409, error_body("FAILED_PRECONDITION", completed))
    fake.inject("record_steps", 503, error_body("UNAVAILABLE", "down"), times=4)
    session = tally.session(feature="chat", session_id="session_swept_4")
    operation_id = session.step(provider="openai", cost=1)

    with pytest.raises(Unavailable):
        tally.flush()
    assert tally.pending == 1
    tally.flush()

    last = fake.bodies()[-1]
    assert "session" not in last
    assert last["steps"][0]["operationId"] == operation_id
    assert fake.recorded[operation_id]["metadata"] == {"sessionId": "session_swept_4"}
    assert tally.pending == 0


def test_the_re_recorded_metadata_keeps_the_session_id_within_4_kib(tally: Tally, fake: FakeTally) -> None:
    fake.completed_sessions.add("session_full_1")
    session = tally.session(feature="chat", session_id="session_full_1")
    metadata = {"a": "x" * 2000, "b": "y" * 2000, "c": "z" * 60}  # 4082 bytes: no room for the session id
    operation_id = session.step(provider="openai", cost=1, metadata=metadata)

    tally.flush()

    kept = fake.recorded[operation_id]["metadata"]
    assert len(json.dumps(kept, separators=(",", ":")).encode()) <= 4096
    assert kept == {
        "sessionId": "session_full_1",
        "metadataTruncated": True,
        "a": "x" * 2000,
        "b": "y" * 2000,
    }


def test_an_apps_own_session_id_in_metadata_is_kept(tally: Tally, fake: FakeTally) -> None:
    fake.completed_sessions.add("session_tally_1")
    session = tally.session(feature="chat", session_id="session_tally_1")
    operation_id = session.step(provider="openai", cost=1, metadata={"sessionId": "app-conversation-9"})

    tally.flush()

    assert fake.recorded[operation_id]["metadata"] == {
        "tallySessionId": "session_tally_1",
        "sessionId": "app-conversation-9",
    }


def test_a_refused_standalone_re_record_goes_to_on_refused(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    completed = "session session_swept_3 is completed; it accepts no new steps"
    fake.inject("record_steps", 409, error_body("FAILED_PRECONDITION", completed))
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "no"))
    session = watched.session(feature="chat", session_id="session_swept_3")
    operation_id = session.step(provider="openai", cost=1)

    with pytest.raises(PermissionDenied):
        watched.flush()

    ((steps, error),) = collected.calls
    assert steps[0]["operationId"] == operation_id
    assert steps[0]["metadata"] == {"sessionId": "session_swept_3"}
    assert error.session_id is None
    assert fake.recorded == {}


# --- one bad step never takes its batch down ----------------------------------------------


def test_one_bad_step_is_removed_and_the_others_are_resent(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    ids = [watched.record(feature="f", provider="p", cost=1, user_id="user-1") for _ in range(3)]
    fake.bad_operations[ids[1]] = ("units.model", "must be 1-100 characters")

    with pytest.raises(InvalidArgument) as caught:
        watched.flush()

    first, second = fake.bodies()
    assert [s["operationId"] for s in first["steps"]] == ids
    assert [s["operationId"] for s in second["steps"]] == [ids[0], ids[2]]
    assert second["steps"] == [first["steps"][0], first["steps"][2]]
    assert list(fake.recorded) == [ids[0], ids[2]]
    assert collected.operation_ids() == [ids[1]]
    assert caught.value.details[0]["field"] == "steps[1].units.model"
    assert [s["operationId"] for s in caught.value.steps] == [ids[1]]
    assert watched.pending == 0


def test_several_bad_steps_are_all_removed(watched: Tally, fake: FakeTally, collected: Collected) -> None:
    ids = [watched.record(feature="f", provider="p", cost=1) for _ in range(5)]
    fake.bad_operations[ids[0]] = ("cost", "must be >= 0")
    fake.bad_operations[ids[3]] = ("metadata", "must be at most 4096 bytes")

    with pytest.raises(InvalidArgument):
        watched.flush()

    assert len(fake.received) == 2
    assert list(fake.recorded) == [ids[1], ids[2], ids[4]]
    assert collected.operation_ids() == [ids[0], ids[3]]


def test_a_bad_step_in_a_completing_batch_still_completes_the_session(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    with pytest.raises(InvalidArgument), watched.session(feature="chat") as session:  # noqa: PT012
        bad = session.step(provider="openai", cost=1)
        good = session.step(provider="openai", cost=2)
        fake.bad_operations[bad] = ("cost", "must be <= 1000")

    last = fake.bodies()[-1]
    assert last["session"]["complete"] is True
    assert [s["operationId"] for s in last["steps"]] == [good]
    assert session.id in fake.completed_sessions
    assert collected.operation_ids() == [bad]


@pytest.mark.parametrize(
    "details",
    [
        [],
        [{"field": "userId", "problem": "must be a Firebase Auth uid"}],
        [{"field": "steps[0].cost", "problem": "must be >= 0"}, {"field": "session.id", "problem": "bad"}],
        [{"field": "steps[7].cost", "problem": "must be >= 0"}],
    ],
)
def test_a_400_that_names_no_step_of_the_batch_refuses_the_whole_batch(
    watched: Tally, fake: FakeTally, collected: Collected, details: list[dict[str, str]]
) -> None:
    fake.inject("record_steps", 400, error_body("INVALID_ARGUMENT", "bad request", details))
    ids = [watched.record(feature="f", provider="p", cost=1) for _ in range(2)]

    with pytest.raises(InvalidArgument):
        watched.flush()

    assert len(fake.received) == 1
    assert collected.operation_ids() == ids
    assert watched.pending == 0


def test_a_413_splits_the_batch_instead_of_refusing_it(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    fake.inject(
        "record_steps", 413, error_body("PAYLOAD_TOO_LARGE", "request body must be at most 262144 bytes")
    )
    ids = [watched.record(feature="f", provider="p", cost=1) for _ in range(10)]

    watched.flush()

    assert [len(b["steps"]) for b in fake.bodies()] == [10, 5, 5]
    assert list(fake.recorded) == ids
    assert collected.calls == []


# --- clock skew ------------------------------------------------------------------------------


def test_a_timestamp_the_client_made_is_resent_by_the_servers_clock(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    fake.check_timestamps = True
    fake.clock_offset = -600.0  # this machine's clock is 10 minutes ahead of the server's
    operation_id = watched.record(feature="f", provider="p", cost=1)

    watched.flush()

    first, second = (b["steps"][0] for b in fake.bodies())
    assert first["operationId"] == second["operationId"] == operation_id
    skew = datetime.fromisoformat(first["timestamp"]) - datetime.fromisoformat(second["timestamp"])
    assert abs(skew - timedelta(minutes=10)) < timedelta(seconds=5)
    assert list(fake.recorded) == [operation_id]
    assert collected.calls == []


def test_once_the_servers_clock_is_known_new_steps_are_stamped_by_it(tally: Tally, fake: FakeTally) -> None:
    fake.check_timestamps = True
    fake.clock_offset = -600.0
    tally.record(feature="f", provider="p", cost=1)
    tally.flush()

    operation_id = tally.record(feature="f", provider="p", cost=1)
    tally.flush()

    assert len(fake.received) == 3
    stamped = datetime.fromisoformat(fake.recorded[operation_id]["timestamp"])
    assert abs(stamped - fake.now()) < timedelta(seconds=5)


def test_a_small_clock_difference_changes_nothing(tally: Tally, fake: FakeTally) -> None:
    fake.clock_offset = 30.0
    tally.record(feature="f", provider="p", cost=1)
    tally.flush()

    before = datetime.now(UTC)
    operation_id = tally.record(feature="f", provider="p", cost=1)
    tally.flush()

    stamped = datetime.fromisoformat(fake.recorded[operation_id]["timestamp"])
    assert abs(stamped - before) < timedelta(seconds=2)


def test_without_a_readable_date_a_refused_client_timestamp_is_resent_without_one(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    fake.check_timestamps = True
    fake.clock_offset = -600.0
    fake.date_header = "not a date"
    operation_id = watched.record(feature="f", provider="p", cost=1)

    watched.flush()

    assert "timestamp" in fake.bodies()[0]["steps"][0]
    assert "timestamp" not in fake.recorded[operation_id]
    assert collected.calls == []


def test_an_app_given_timestamp_in_the_future_goes_to_on_refused(
    watched: Tally, fake: FakeTally, collected: Collected
) -> None:
    fake.check_timestamps = True
    future = datetime.now(UTC) + timedelta(minutes=10)
    given = watched.record(feature="f", provider="p", cost=1, timestamp=future)
    stamped = watched.record(feature="f", provider="p", cost=1)

    with pytest.raises(InvalidArgument):
        watched.flush()

    assert collected.operation_ids() == [given]
    assert list(fake.recorded) == [stamped]
    assert len(fake.received) == 2


# --- shutting down ---------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_close_from_a_sigterm_handler_sends_what_is_queued(tally: Tally, fake: FakeTally) -> None:
    def on_sigterm(signum: int, frame: object) -> None:
        tally.close()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        operation_id = tally.record(feature="f", provider="p", cost=1)

        os.kill(os.getpid(), signal.SIGTERM)

    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(fake.recorded) == [operation_id]
    assert tally.pending == 0
