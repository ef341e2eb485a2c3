from datetime import UTC, datetime

import pytest

from tally.errors import FailedPrecondition, NotFound, PermissionDenied
from tally.models import RecordRequest, SessionRequest, Step, UsageType
from tally.recording import Caller, plan_recording, resolve_user
from tally.store import RecordingState, SessionState, shard_of

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)


def make_step(op: str) -> Step:
    return Step(op, UsageType.API, "f", "p", 1000, False, NOW, {})


def request(*ops: str, session: str | None = "s1", complete: bool = False) -> RecordRequest:
    return RecordRequest(
        user_id=None,
        session=SessionRequest(session, None, complete) if session else None,
        steps=tuple(make_step(op) for op in ops),
    )


def state(*, status: str | None = None, existing: dict[str, str | None] | None = None) -> RecordingState:
    session = SessionState(status, NOW, None, None, version=object()) if status else None
    return RecordingState(session=session, existing_steps=existing or {})


def test_resolve_user_roles() -> None:
    assert resolve_user(Caller("u1"), None) == "u1"
    assert resolve_user(Caller("u1"), "u1") == "u1"
    assert resolve_user(Caller("svc", recorder=True), "u2") == "u2"
    assert resolve_user(Caller("boss", admin=True), "u2") == "u2"
    with pytest.raises(PermissionDenied):
        resolve_user(Caller("u1"), "u2")


def test_first_step_creates_the_session() -> None:
    plan = plan_recording(request=request("a"), user_id="u", state=state(), now=NOW, request_id="r")

    assert plan.commit is not None
    assert plan.commit.session_base is None
    assert (plan.recorded, plan.duplicates) == (1, 0)


def test_known_steps_are_duplicates_and_nothing_is_written() -> None:
    plan = plan_recording(
        request=request("a", "b"),
        user_id="u",
        state=state(status="active", existing={"a": "other", "b": "other"}),
        now=NOW,
        request_id="r",
    )

    assert plan.commit is None
    assert (plan.recorded, plan.duplicates) == (0, 2)


def test_steps_written_by_this_request_on_an_earlier_attempt_count_as_recorded() -> None:
    plan = plan_recording(
        request=request("a", "b"), user_id="u", state=state(existing={"a": "r"}), now=NOW, request_id="r"
    )

    assert plan.commit is not None
    assert [s.operation_id for s in plan.commit.steps] == ["b"]
    assert (plan.recorded, plan.duplicates) == (2, 0)


def test_new_step_for_a_completed_session_is_refused() -> None:
    with pytest.raises(FailedPrecondition):
        plan_recording(
            request=request("a"), user_id="u", state=state(status="completed"), now=NOW, request_id="r"
        )


def test_retried_completion_after_completion_is_a_no_op() -> None:
    plan = plan_recording(
        request=request("a", complete=True),
        user_id="u",
        state=state(status="completed", existing={"a": "first-try"}),
        now=NOW,
        request_id="r",
    )

    assert plan.commit is None
    assert plan.duplicates == 1


def test_completing_an_unknown_session_is_not_found() -> None:
    with pytest.raises(NotFound):
        plan_recording(request=request(complete=True), user_id="u", state=state(), now=NOW, request_id="r")


def test_completing_an_active_session_without_steps_writes_the_completion() -> None:
    plan = plan_recording(
        request=request(complete=True), user_id="u", state=state(status="active"), now=NOW, request_id="r"
    )

    assert plan.commit is not None
    assert plan.commit.complete is True
    assert plan.commit.steps == ()


def test_standalone_steps_have_no_session() -> None:
    plan = plan_recording(
        request=request("a", session=None), user_id="u", state=state(), now=NOW, request_id="r"
    )

    assert plan.commit is not None
    assert plan.commit.session_id is None


def test_shards_are_stable_and_spread() -> None:
    shards = {shard_of(f"user-{i}", 8) for i in range(200)}

    assert shard_of("user-1", 8) == shard_of("user-1", 8)
    assert shards == set(range(8))
