from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally import layout, names
from tally.access import resolve_user
from tally.config import Settings
from tally.documents import plans
from tally.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from tally.names import OTHER
from tally.services.planning import plan_recording
from tally.services.recording import record_steps
from tally.values import (
    Caller,
    Contention,
    CostSource,
    RecordingState,
    RecordRequest,
    SessionRequest,
    SessionState,
    SessionStatus,
    Step,
    StoredStep,
    Units,
    UsageType,
)
from tally.writes import Increment, Op, Write
from tally_dev.memory import MemoryStore

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)
SETTINGS = Settings(max_names=5, max_new_names_per_user=3)
USER = Caller("u")


def make_step(
    op: str, feature: str = "f", provider: str = "p", cost: int = 1000, when: datetime = NOW
) -> Step:
    return Step(op, UsageType.API, feature, provider, cost, False, when)


def request(*ops: str, session: str | None = "s1", complete: bool = False) -> RecordRequest:
    return RecordRequest(
        user_id=None,
        session=SessionRequest(session, None, complete) if session else None,
        steps=tuple(make_step(op) for op in ops),
    )


def state(
    *, status: SessionStatus | None = None, existing: dict[str, str | None] | None = None
) -> RecordingState:
    session = SessionState(status, NOW, None, None, version=object()) if status else None
    stored = {op: StoredStep(rid, None, None) for op, rid in (existing or {}).items()}
    return RecordingState(session=session, existing_steps=stored)


def plan(req: RecordRequest, st: RecordingState) -> object:
    return plan_recording(
        request=req, steps=req.steps, user_id="u", state=st, now=NOW, request_id="r", shard=0
    )


def test_resolve_user_roles() -> None:
    assert resolve_user(Caller("u1"), None) == "u1"
    assert resolve_user(Caller("u1"), "u1") == "u1"
    assert resolve_user(Caller("svc", recorder=True), "u2") == "u2"
    assert resolve_user(Caller("boss", admin=True), "u2") == "u2"
    with pytest.raises(PermissionDenied):
        resolve_user(Caller("u1"), "u2")


def test_first_step_creates_the_session() -> None:
    result = plan_recording(
        request=request("a"),
        steps=request("a").steps,
        user_id="u",
        state=state(),
        now=NOW,
        request_id="r",
        shard=0,
    )

    assert result.commit is not None
    assert result.commit.session_created
    assert (result.recorded, result.duplicates) == (1, 0)


def test_known_steps_are_duplicates_and_nothing_is_written() -> None:
    req = request("a", "b")

    result = plan_recording(
        request=req,
        steps=req.steps,
        user_id="u",
        state=state(status=SessionStatus.ACTIVE, existing={"a": "other", "b": "other"}),
        now=NOW,
        request_id="r",
        shard=0,
    )

    assert result.commit is None
    assert (result.recorded, result.duplicates) == (0, 2)


def test_steps_written_by_this_request_on_an_earlier_attempt_count_as_recorded() -> None:
    req = request("a", "b")

    result = plan_recording(
        request=req,
        steps=req.steps,
        user_id="u",
        state=state(existing={"a": "r"}),
        now=NOW,
        request_id="r",
        shard=0,
    )

    assert result.commit is not None
    assert [s.operation_id for s in result.commit.steps] == ["b"]
    assert (result.recorded, result.duplicates) == (2, 0)


def test_new_step_for_a_completed_session_is_refused() -> None:
    with pytest.raises(FailedPrecondition):
        plan(request("a"), state(status=SessionStatus.COMPLETED))


def test_completing_an_unknown_session_is_not_found() -> None:
    with pytest.raises(NotFound):
        plan(request(complete=True), state())


def test_retried_completion_after_completion_is_a_no_op() -> None:
    req = request("a", complete=True)

    result = plan_recording(
        request=req,
        steps=req.steps,
        user_id="u",
        state=state(status=SessionStatus.COMPLETED, existing={"a": "first-try"}),
        now=NOW,
        request_id="r",
        shard=0,
    )

    assert result.commit is None
    assert result.duplicates == 1


# The service over an in-memory store with Firestore's commit semantics


def record(
    store: MemoryStore, req: RecordRequest, caller: Caller = USER, now: datetime = NOW
) -> dict[str, Any]:
    outcome = record_steps(
        store=store,
        caller=caller,
        request=req,
        settings=SETTINGS,
        now=now,
        sleep=lambda _: None,
        admitted_cache=names.AdmittedNames(),
        shards=plans.ShardPicker(seed=0),
    )
    return outcome.body


def test_recording_answers_from_the_commits_own_results() -> None:
    store = MemoryStore()

    body = record(store, request("a", "b"))

    assert (body["recorded"], body["duplicates"], body["warnings"]) == (2, 0, [])
    assert body["session"] == {"id": "s1", "status": "active", "stepCount": 2, "totalCost": 0.000002}
    assert body["usage"]["apiCalls"] == 2
    assert body["usage"]["limits"]["held"] == 0.0


def test_a_lost_race_is_retried_and_counted_once() -> None:
    store = MemoryStore()
    losses = iter([True, True, False])

    def rival(writes: Sequence[Write]) -> None:
        if any(w.path.startswith("SessionUsage/") for w in writes) and next(losses, False):
            raise Contention("FailedPrecondition")

    store.before_commit = rival

    outcome = record_steps(
        store=store,
        caller=Caller("u"),
        request=request("a"),
        settings=SETTINGS,
        now=NOW,
        sleep=lambda _: None,
        admitted_cache=names.AdmittedNames(),
    )

    assert outcome.attempts == 3
    assert store.docs[layout.user_path("u")]["usage"]["lifetime"]["apiCalls"] == 1


def test_endless_contention_is_unavailable_and_writes_nothing() -> None:
    store = MemoryStore()

    def always(writes: Sequence[Write]) -> None:
        if any(w.path.startswith("SessionUsage/") for w in writes):
            raise Contention("Aborted")

    store.before_commit = always

    with pytest.raises(Unavailable):
        record(store, request("a"))
    assert layout.step_path("u", "a") not in store.docs


def tight_limits(store: MemoryStore) -> None:
    store.put(
        layout.usage_path("u"), {"usage": {"limits": {"monthlyCostLimitNanos": 1000, "monthlyFreeRuns": 5}}}
    )


def with_a_rival_and_a_broken_fixup(store: MemoryStore) -> None:
    """A concurrent request lands between the read and the commit; the write after the commit fails."""
    rival_done = False

    def hook(writes: Sequence[Write]) -> None:
        nonlocal rival_done
        if any(w.path.startswith("SessionUsage/") for w in writes) and not rival_done:
            rival_done = True
            store.commit(
                [
                    Write(
                        layout.usage_path("u"),
                        Op.MERGE,
                        {
                            "usage": {
                                "months": {"2026-11": {"costNanos": Increment(900), "apiCalls": Increment(1)}}
                            }
                        },
                    )
                ]
            )
        elif len(writes) == 1 and "limitPercent" in writes[0].data:
            raise RuntimeError("injected after the commit")

    store.before_commit = hook


def test_the_commit_itself_carries_the_free_tier_entry() -> None:
    store = MemoryStore()
    tight_limits(store)

    record(store, request("a"))

    assert store.docs[layout.user_month_path("u", "2026-11")]["limitPercent"] == 100.0
    recording = [c for c in store.commits if any(w.path.startswith("SessionUsage/") for w in c)]
    alerts = [c for c in store.commits if any(w.path.startswith(layout.ALERTS) for w in c)]
    assert len(store.commits) == len(recording) + len(alerts) + 3  # 3: admitting the names f and p
    assert len(alerts) == 3  # the commit reached 80 % and 100 % of the cost limit, and its forecast


def test_a_failure_after_the_commit_still_answers() -> None:
    store = MemoryStore()
    tight_limits(store)
    with_a_rival_and_a_broken_fixup(store)

    body = record(store, request("a"))

    assert body["recorded"] == 1
    assert body["usage"]["apiCalls"] == 2
    assert body["usage"]["limits"]["exceeded"] is True
    assert store.docs[layout.user_month_path("u", "2026-11")]["limitPercent"] == 100.0  # the estimate


def test_a_retried_request_repairs_the_free_tier_entry() -> None:
    store = MemoryStore()
    tight_limits(store)
    with_a_rival_and_a_broken_fixup(store)
    record(store, request("a"))
    store.before_commit = None

    body = record(store, request("a"))

    assert body["duplicates"] == 1
    assert store.docs[layout.user_month_path("u", "2026-11")]["limitPercent"] == 190.0


def test_new_names_beyond_a_users_quota_go_to_other_with_warnings() -> None:
    store = MemoryStore()
    steps = tuple(make_step(f"op{i}", feature=f"f{i}") for i in range(5))

    body = record(store, RecordRequest(None, None, steps))

    month = store.docs[layout.user_month_path("u", "2026-11")]
    assert set(month["features"]) == {"f0", "f1", "f2", names.OTHER}
    assert set(month["providers"]) == {"p"}
    assert month["features"][names.OTHER]["apiCalls"] == 2
    assert [w["field"] for w in body["warnings"]] == ["steps[3].feature", "steps[4].feature"]
    assert "introduced the maximum" in body["warnings"][0]["problem"]


def test_a_full_month_sends_everyones_new_names_to_other_but_admitted_ones_still_count() -> None:
    store = MemoryStore()
    backend = Caller("svc", recorder=True)
    first = tuple(make_step(f"a{i}", feature=f"f{i}") for i in range(5))  # f0..f4 fill the month
    record(store, RecordRequest("u1", None, first), caller=backend)

    body = record(
        store, RecordRequest("u2", None, (make_step("b1", feature="late"), make_step("b2", "f1"))), backend
    )

    month = store.docs[layout.user_month_path("u2", "2026-11")]
    assert set(month["features"]) == {names.OTHER, "f1"}
    assert [w["field"] for w in body["warnings"]] == ["steps[0].feature"]


def test_a_retry_reports_the_same_warnings() -> None:
    store = MemoryStore()
    req = RecordRequest(None, None, tuple(make_step(f"op{i}", feature=f"f{i}") for i in range(4)))

    first = record(store, req)
    again = record(store, req)

    assert again["duplicates"] == 4
    assert again["warnings"] == first["warnings"]


def test_old_months_leave_the_user_document() -> None:
    store = MemoryStore()
    old = NOW - timedelta(days=34)
    store.put(layout.usage_path("u"), {"usage": {"months": {"2026-07": {"costNanos": 1}}}})
    store.put(layout.user_path("u"), {"usage": {"months": {"2026-07": {"costNanos": 1}}}, "name": "Ada"})

    record(store, RecordRequest(None, None, (make_step("a", when=old), make_step("b"))))

    truth, user = store.docs[layout.usage_path("u")], store.docs[layout.user_path("u")]
    assert set(truth["usage"]["months"]) == set(user["usage"]["months"]) == {"2026-10", "2026-11"}
    assert user["name"] == "Ada"


def test_active_users_count_each_user_once_a_month() -> None:
    store = MemoryStore(shards=2)

    for n in range(3):
        record(store, RecordRequest(None, None, (make_step(f"op{n}"),)))
    record(store, RecordRequest(None, None, (make_step("x"),)), caller=Caller("v"))

    active = sum(
        doc.get("activeUsers", 0)
        for path, doc in store.docs.items()
        if path.startswith(layout.PLATFORM_SHARDS)
    )
    assert active == 2


# A user's own document cannot take their metering down (SPEC v3, users/{userId})


def fill_user_document(store: MemoryStore, uid: str = "u") -> None:
    store.put(layout.user_path(uid), {"bio": "x" * 1_048_450})  # the rest of users/{uid} is the user's


def test_a_full_user_document_still_records_and_counts_every_step() -> None:
    store = MemoryStore()
    fill_user_document(store)

    body = record(store, request("a", "b"))

    assert body["recorded"] == 2
    assert body["usage"]["apiCalls"] == 2
    assert [w["field"] for w in body["warnings"]] == ["users/u"]
    truth = store.docs[layout.usage_path("u")]
    assert truth["usage"]["lifetime"]["apiCalls"] == 2
    assert truth["mirrorStale"] is True
    assert "usage" not in store.docs[layout.user_path("u")]


def test_a_stale_mirror_is_rewritten_whole_once_the_document_fits_again() -> None:
    store = MemoryStore()
    fill_user_document(store)
    record(store, request("a"))
    store.put(layout.user_path("u"), {"bio": "short again"})

    body = record(store, request("b"), now=NOW + timedelta(minutes=2))

    assert body["warnings"] == []
    truth, user = store.docs[layout.usage_path("u")], store.docs[layout.user_path("u")]
    assert user["usage"] == truth["usage"]
    assert truth["usage"]["lifetime"]["apiCalls"] == 2
    assert (truth["mirrorStale"], user["bio"]) == (False, "short again")


def test_a_mirror_that_does_not_fit_is_tried_again_at_most_once_a_minute() -> None:
    store = MemoryStore()
    fill_user_document(store)
    record(store, request("a"))

    record(store, request("b"), now=NOW + timedelta(seconds=20))

    attempts = [c for c in store.commits if any(w.path == layout.user_path("u") for w in c)]
    assert attempts == []  # the failed ones were not applied; none was tried within the minute
    assert store.docs[layout.usage_path("u")]["usage"]["lifetime"]["apiCalls"] == 2


def test_every_commit_writes_the_mirror_or_marks_it_stale() -> None:
    store = MemoryStore()

    record(store, request("a"))
    record(store, request("b", complete=True))

    for commit in store.commits:
        truth = [w for w in commit if w.path == layout.usage_path("u") and "usage" in w.data]
        mirrored = [w for w in commit if w.path == layout.user_path("u")]
        assert len(mirrored) == len(truth)
        for t, m in zip(truth, mirrored, strict=True):
            assert m.data["usage"] == t.data["usage"]


# A refused request writes nothing (SPEC v3, record_steps errors)


def test_a_refused_request_admits_no_name_and_uses_no_quota() -> None:
    store = MemoryStore()
    record(store, request("a", complete=True))
    before = {
        path for path in store.docs if path.startswith((layout.NAMES, layout.NAME_COUNTS, layout.NAME_QUOTAS))
    }
    late = RecordRequest(None, SessionRequest("s1", None, False), (make_step("b", feature="brand-new"),))

    with pytest.raises(FailedPrecondition):
        record(store, late)

    after = {
        path for path in store.docs if path.startswith((layout.NAMES, layout.NAME_COUNTS, layout.NAME_QUOTAS))
    }
    assert after == before
    quota = store.docs[layout.name_quota_path("u", "2026-11")]
    assert quota["feature"] == 1  # only `f`, from the first request


def test_contention_admitting_names_is_unavailable_not_internal() -> None:
    store = MemoryStore()

    def contend(writes: Sequence[Write]) -> None:
        if any(w.path.startswith(layout.NAME_QUOTAS) for w in writes):
            raise Contention("Aborted")

    store.before_commit = contend

    with pytest.raises(Unavailable):
        record(store, request("a"))


def test_the_unpriced_breakdown_admits_provider_and_model_pairs_up_to_the_bound() -> None:
    store = MemoryStore()
    recorder = Caller("svc", recorder=True)
    for n in range(4):  # 4 requests of 4 providers x 5 models: 80 pairs, each admitted name alone fits
        steps = tuple(
            replace(
                make_step(f"op{n}-{p}-{m}", provider=f"prov{p}"),
                cost_nanos=0,
                cost_source=CostSource.UNPRICED,
                units=Units(f"model-{n}-{m}", input_tokens=10),
            )
            for p in range(4)
            for m in range(5)
        )
        record(store, RecordRequest("u", None, steps), caller=recorder)

    models = store.docs[layout.user_month_path("u", "2026-11")]["unpricedModels"]
    pairs = [(p, m) for p, named in models.items() for m in named if m != OTHER]
    assert 0 < len(pairs) <= SETTINGS.max_names
    assert sum(n for named in models.values() for n in named.values()) == 80
