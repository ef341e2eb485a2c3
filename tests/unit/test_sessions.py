from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally.sessions import Finalized, finalize_session, summarize, sweep_idle_sessions
from tally.store import Contention, IdleSession, SessionRecord, SessionSummary

CREATED = datetime(2026, 10, 31, 23, 50, tzinfo=UTC)


def record(**data: Any) -> SessionRecord:
    base: dict[str, Any] = {
        "status": "completed",
        "createdAt": CREATED,
        "lastUpdatedAt": CREATED + timedelta(minutes=20, milliseconds=500),
        "completedAt": CREATED + timedelta(minutes=20, milliseconds=500),
        "finalizedAt": None,
        "stats": {
            "stepCount": 3,
            "costNanos": 8_490_000,
            "billableRuns": 1,
            "features": {"claude-3.5-sonnet": {"costNanos": 8_000_000, "apiCalls": 2, "billableRuns": 1}},
            "providers": {"anthropic": {"costNanos": 8_490_000, "apiCalls": 3, "billableRuns": 1}},
        },
    }
    base.update(data)
    return SessionRecord("u1", "s1", base, version="v1")


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


def test_timeout_duration_stops_at_the_last_activity() -> None:
    summary = summarize(record(completedAt=CREATED + timedelta(hours=2), completedBy="timeout"))

    assert summary.duration_ms == 20 * 60_000 + 500


class FakeStore:
    """An in-memory session store that loses the first `races` commits to a rival finalizer."""

    def __init__(self, rec: SessionRecord | None, races: int = 0) -> None:
        self.rec = rec
        self.races = races
        self.commits: list[SessionSummary] = []

    def read_session(self, *, user_id: str, session_id: str) -> SessionRecord | None:
        return self.rec

    def commit_finalization(self, *, record: SessionRecord, summary: SessionSummary, now: datetime) -> None:
        assert self.rec is not None
        if self.races:
            self.races -= 1
            self.rec = replace(self.rec, data={**self.rec.data, "finalizedAt": now}, version="v2")
            raise Contention("lost")
        self.commits.append(summary)
        self.rec = replace(self.rec, data={**self.rec.data, "finalizedAt": now}, version="v2")

    def idle_sessions(self, *, cutoff: datetime, limit: int, after: Any | None) -> list[IdleSession]:
        raise NotImplementedError

    def complete_sessions(self, sessions: list[IdleSession], *, now: datetime) -> int:
        raise NotImplementedError


def test_finalizing_twice_commits_once() -> None:
    store = FakeStore(record())

    first = finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)
    second = finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)

    assert (first, second) == (Finalized.FINALIZED, Finalized.ALREADY_FINALIZED)
    assert len(store.commits) == 1


def test_losing_the_race_to_another_finalizer_is_not_a_second_count() -> None:
    store = FakeStore(record(), races=1)

    outcome = finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED)

    assert outcome is Finalized.ALREADY_FINALIZED
    assert store.commits == []


@pytest.mark.parametrize(
    ("rec", "outcome"),
    [(None, Finalized.MISSING), (record(status="active"), Finalized.NOT_COMPLETED)],
)
def test_nothing_to_finalize(rec: SessionRecord | None, outcome: Finalized) -> None:
    store = FakeStore(rec)

    assert finalize_session(store=store, user_id="u1", session_id="s1", now=CREATED) is outcome
    assert store.commits == []


class PagedStore(FakeStore):
    def __init__(self, idle: int) -> None:
        super().__init__(None)
        self.idle = [IdleSession(f"SessionUsage/u/sessions/s{i}", True, "v", cursor=i) for i in range(idle)]
        self.cutoffs: list[datetime] = []

    def idle_sessions(self, *, cutoff: datetime, limit: int, after: Any | None) -> list[IdleSession]:
        self.cutoffs.append(cutoff)
        start = 0 if after is None else after + 1
        return self.idle[start : start + limit]

    def complete_sessions(self, sessions: list[IdleSession], *, now: datetime) -> int:
        return len(sessions)


def test_sweep_walks_every_page() -> None:
    store = PagedStore(idle=1050)
    now = datetime(2026, 11, 21, tzinfo=UTC)

    result = sweep_idle_sessions(store=store, now=now, idle_minutes=30, page_size=100)

    assert (result.completed, result.examined, result.pages, result.finished) == (1050, 1050, 11, True)
    assert set(store.cutoffs) == {now - timedelta(minutes=30)}


def test_sweep_stops_before_its_deadline_and_says_so() -> None:
    store = PagedStore(idle=1000)
    clock = iter([100.0, 10.0])

    result = sweep_idle_sessions(
        store=store, now=CREATED, idle_minutes=30, page_size=100, seconds_left=lambda: next(clock)
    )

    assert (result.completed, result.pages, result.finished) == (200, 2, False)
