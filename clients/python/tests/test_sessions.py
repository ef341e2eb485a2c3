"""Sessions: ids, buffering, completion on exit and on exception."""

from __future__ import annotations

import re

import pytest

from tally_client import InvalidArgument, NotFound, Tally, TallyError, current_session
from tally_fakes import FakeTally, error_body


def test_a_session_sends_its_steps_and_completes_on_exit(tally: Tally, fake: FakeTally) -> None:
    with tally.session(feature="google_maps", user_id="user-1") as session:
        first = session.step(provider="google_maps", cost="0.00283", feature="google_maps_autocomplete")
        second = session.step(provider="google_maps", cost="0.005")
        assert fake.bodies() == []

    (body,) = fake.bodies()
    assert re.fullmatch(r"session_\d{13}_[0-9a-f]{16}", session.id)
    assert body["userId"] == "user-1"
    assert body["session"] == {"id": session.id, "feature": "google_maps", "complete": True}
    assert [s["operationId"] for s in body["steps"]] == [first, second]
    assert [s["feature"] for s in body["steps"]] == ["google_maps_autocomplete", "google_maps"]
    assert session.completed


def test_a_session_is_completed_when_the_block_raises(tally: Tally, fake: FakeTally) -> None:
    class AppError(Exception):
        pass

    def app_code() -> None:
        with tally.session(feature="chat") as session:
            session.step(provider="openai", cost=1)
            raise AppError

    with pytest.raises(AppError):
        app_code()

    (body,) = fake.bodies()
    assert body["session"]["complete"] is True
    assert len(body["steps"]) == 1


def test_a_tally_error_at_exit_does_not_hide_the_blocks_exception(tally: Tally, fake: FakeTally) -> None:
    fake.inject("record_steps", 403, error_body("PERMISSION_DENIED", "not yours"))

    def app_code() -> None:
        with tally.session(feature="chat") as session:
            session.step(provider="openai", cost=1)
            raise KeyError("app bug")

    with pytest.raises(KeyError):
        app_code()

    assert len(fake.bodies()) == 1


def test_a_tally_error_at_a_normal_exit_is_raised(tally: Tally, fake: FakeTally) -> None:
    fake.inject("record_steps", 404, error_body("NOT_FOUND", "no such session"))

    with pytest.raises(NotFound), tally.session(feature="chat") as session:
        session.step(provider="openai", cost=1)


def test_a_session_without_steps_sends_nothing(tally: Tally, fake: FakeTally) -> None:
    with tally.session(feature="chat"):
        pass

    assert fake.received == []


def test_steps_sent_early_then_an_empty_completing_request(tally: Tally, fake: FakeTally) -> None:
    with tally.session(feature="chat") as session:
        session.step(provider="openai", cost=1)
        tally.flush()
        assert fake.bodies()[0]["session"]["complete"] is False

    first, last = fake.bodies()
    assert len(first["steps"]) == 1
    assert last == {"session": {"id": session.id, "feature": "chat", "complete": True}, "steps": []}


def test_a_long_session_completes_with_its_last_batch(tally: Tally, fake: FakeTally) -> None:
    with tally.session(feature="chat") as session:
        for _ in range(150):
            session.step(provider="openai", cost="0.001")

    fake.wait_for(lambda: len(fake.steps()) == 150)
    bodies = fake.bodies()
    assert all(len(b["steps"]) <= 100 for b in bodies)
    assert [b["session"]["complete"] for b in bodies] == [False] * (len(bodies) - 1) + [True]
    assert all(b["session"]["id"] == session.id for b in bodies)


def test_a_session_completion_survives_an_outage(tally: Tally, fake: FakeTally) -> None:
    fake.inject("record_steps", 503, error_body("UNAVAILABLE", "down"), times=4)

    with tally.session(feature="chat") as session:
        operation_id = session.step(provider="openai", cost=1)
    tally.flush()

    last = fake.bodies()[-1]
    assert last["session"] == {"id": session.id, "feature": "chat", "complete": True}
    assert [s["operationId"] for s in last["steps"]] == [operation_id]
    assert len({r.raw for r in fake.received}) == 1


def test_a_step_after_completion_is_refused(tally: Tally) -> None:
    with tally.session(feature="chat") as session:
        session.step(provider="openai", cost=1)

    with pytest.raises(TallyError):
        session.step(provider="openai", cost=1)


def test_a_step_needs_a_feature_when_the_session_has_none(tally: Tally) -> None:
    with tally.session() as session, pytest.raises(InvalidArgument):
        session.step(provider="openai", cost=1)


def test_the_current_session_is_set_inside_the_block_only(tally: Tally) -> None:
    with tally.session(feature="outer") as outer:
        assert current_session() is outer
        with tally.session(feature="inner") as inner:
            assert current_session() is inner
        assert current_session() is outer

    assert current_session() is None


def test_a_given_session_id_is_used(tally: Tally, fake: FakeTally) -> None:
    with tally.session(feature="chat", session_id="session_given_1") as session:
        session.step(provider="openai", cost=1)

    assert fake.bodies()[0]["session"]["id"] == "session_given_1"


def test_session_and_standalone_steps_go_in_separate_requests(tally: Tally, fake: FakeTally) -> None:
    with tally.session(feature="chat") as session:
        session.step(provider="openai", cost=1)
        tally.record(feature="maps", provider="google_maps", cost=1)
    tally.flush()

    assert sorted("session" in body for body in fake.bodies()) == [False, True]
