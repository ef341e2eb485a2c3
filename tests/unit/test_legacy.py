import contextlib
import csv
import io
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally import layout
from tally.config import Settings
from tally.documents.months import MonthAggregate
from tally.errors import InvalidArgument
from tally.requests import parse_record_request
from tally.services.legacy import (
    ALREADY_RECORDED,
    ImportReport,
    Skipped,
    check_csv_header,
    import_legacy,
    legacy_operation_id,
)
from tally.services.reconcile import reconcile
from tally.services.recording import record_steps
from tally.services.sessions import Finalized, finalize_session, sweep_sessions
from tally.timeutil import month_key
from tally.values import Caller, Contention
from tally.writes import CommitResult, Write
from tally_dev import legacy_fixtures as legacy
from tally_dev.memory import MemoryStore

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)


def seeded() -> MemoryStore:
    store = MemoryStore()
    for path, data in legacy.documents().items():
        store.put(path, data)
    return store


def run(store: MemoryStore, *, dry_run: bool = False):  # type: ignore[no-untyped-def]
    rows = csv.DictReader(io.StringIO(legacy.CSV))
    return import_legacy(
        store=store, settings=Settings(), now=NOW, csv_rows=rows, csv_name="legacy.csv", dry_run=dry_run
    )


def test_the_import_adds_up_to_the_nano() -> None:
    store = seeded()

    report = run(store)

    assert (report.sessions.imported, report.steps.imported) == (
        legacy.IMPORTED_SESSIONS,
        legacy.IMPORTED_STEPS,
    )
    for (user, month), (cost, calls, billable) in legacy.EXPECTED.items():
        doc = store.docs[layout.user_month_path(user, month)]
        assert (doc["costNanos"], doc["apiCalls"], doc["billableRuns"]) == (cost, calls, billable), (
            user,
            month,
        )
    lifetime = store.docs[layout.user_path(legacy.ADA)]["usage"]["lifetime"]
    assert lifetime["costNanos"] == 12_300_000 + 108_660_000


def test_a_second_run_imports_nothing() -> None:
    store = seeded()
    run(store)
    before = {path: dict(doc) for path, doc in store.docs.items() if path.startswith(layout.USER_MONTHS)}

    again = run(store)

    assert (again.sessions.imported, again.steps.imported) == (0, 0)
    assert again.sessions.skipped == legacy.IMPORTED_SESSIONS
    assert {path: doc for path, doc in store.docs.items() if path.startswith(layout.USER_MONTHS)} == before


def test_refusals_name_their_reason_and_the_rest_imports() -> None:
    report = run(seeded())

    refused = {r.source: r.reason for r in report.refused}
    for source, reason in legacy.REFUSED.items():
        assert reason in refused[source]
    assert (report.sessions.refused, report.steps.refused) == (1, 2)


def test_the_double_count_of_the_old_system_is_flagged() -> None:
    report = run(seeded())

    checks = {c.path: c for c in report.monthly}
    ada = checks[f"ApiUsage/{legacy.ADA}/monthly/2025-10"]
    bob = checks[f"AIUsage/{legacy.BOB}/monthly/2025-10"]
    assert (ada.differs, ada.legacy_nanos - ada.imported_nanos) == (True, 22_660_000)
    assert "counted $0.02266 more" in ada.line()
    assert bob.differs is False


def test_a_dry_run_writes_nothing_and_counts_the_same() -> None:
    store = seeded()
    before = dict(store.versions)

    report = run(store, dry_run=True)

    assert store.versions == before
    assert (report.sessions.imported, report.steps.imported) == (
        legacy.IMPORTED_SESSIONS,
        legacy.IMPORTED_STEPS,
    )
    assert "would import" in report.summary()


def test_imported_sessions_are_finalized_once_and_legacy_ones_never_trip_the_lifecycle() -> None:
    store = seeded()
    untouched = finalize_session(store=store, user_id=legacy.ADA, session_id=legacy.MAPS_SESSION, now=NOW)
    swept = sweep_sessions(store=store, now=NOW, idle_minutes=30)

    run(store)
    again = finalize_session(store=store, user_id=legacy.ADA, session_id=legacy.MAPS_SESSION, now=NOW)

    assert untouched is Finalized.NOT_TALLYS
    assert (swept.completed, swept.finalized) == (0, 0)
    assert again is Finalized.ALREADY_FINALIZED
    session = store.docs[layout.session_path(legacy.ADA, legacy.MAPS_SESSION)]
    assert "steps" not in session
    assert session["summary"]["totalCostNanos"] == 22_660_000
    assert session["summary"]["durationSeconds"] == 10.206
    assert store.docs[layout.session_path(legacy.ADA, legacy.OPEN_SESSION)]["status"] == "active"
    assert layout.step_path(legacy.BOB, legacy_operation_id("usage_1760960001000_ok01")) not in store.docs


def test_reconcile_agrees_with_the_import() -> None:
    store = seeded()
    run(store)

    for month in ("2025-09", "2025-10"):
        assert reconcile(store=store, month=month, settings=Settings(), now=NOW, fix=False).differences == []


def test_a_csv_without_the_required_columns_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgument, match=r"missing required column\(s\): cost"):
        check_csv_header(["id", "user_id", "timestamp", "service"])


# A run stopped at any commit, and run again


LARGE_USER = "legacy-carol"
LARGE_STEPS = 180  # each with its own feature name: a shard would take 540 transforms in one commit


class Crash(Exception):
    """The process died (or lost its connection) at a commit."""


class FailingStore(MemoryStore):
    """The kit's in-memory store, failing its Nth commit: before it applies, or after (its answer lost)."""

    def __init__(self, *, fail_at: int, error: type[Exception], applied: bool) -> None:
        super().__init__()
        self.fail_at, self.error, self.applied = fail_at, error, applied
        self.seen = 0
        self.failed = False

    def commit(self, writes: Sequence[Write]) -> CommitResult:
        self.seen += 1
        if self.seen != self.fail_at:
            return super().commit(writes)
        self.failed = True
        if self.applied:
            super().commit(writes)
        raise self.error(f"injected at commit {self.seen}")


def with_large_session(store: MemoryStore) -> MemoryStore:
    path, data = legacy.large_session(LARGE_USER, LARGE_STEPS, features=LARGE_STEPS)
    store.put(path, data)
    store.put(f"ApiUsage/{LARGE_USER}/operations/usage_after", {**data["steps"][0], "operationId": "after"})
    return store


def quiet_run(store: MemoryStore) -> ImportReport:
    return import_legacy(store=store, settings=Settings(), now=NOW, sleep=lambda _: None)


NAME_BOOKKEEPING = {layout.NAMES, layout.NAME_COUNTS, layout.NAME_QUOTAS}  # a lost slot is allowed


def outcome(store: MemoryStore) -> tuple[dict[str, Any], dict[str, MonthAggregate]]:
    """Return every document Tally counts with (the platform's shards added up per month)."""
    docs = {
        path: doc
        for path, doc in store.docs.items()
        if path.split("/")[0] not in NAME_BOOKKEEPING | {layout.PLATFORM_SHARDS}
    }
    shards: dict[str, list[dict[str, Any]]] = {}
    for path, doc in store.docs.items():
        if path.startswith(f"{layout.PLATFORM_SHARDS}/"):
            shards.setdefault(doc["month"], []).append(doc)
    return docs, {month: MonthAggregate.fold(found) for month, found in shards.items()}


def differences(store: MemoryStore) -> list[str]:
    """Return what reconcile finds between the aggregates and the step documents."""
    return [
        str(difference)
        for month in ("2025-10",)
        for difference in reconcile(
            store=store, month=month, settings=Settings(), now=NOW, fix=False
        ).differences
    ]


FAULTS = {
    "a transient error, the commit not applied": (Contention, False),
    "a commit applied, its answer lost": (Contention, True),
    "a crash before a commit applied": (Crash, False),
    "a crash after a commit applied": (Crash, True),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_import_stopped_at_any_commit_and_run_again_ends_whole_and_exact(fault: str) -> None:
    clean = with_large_session(MemoryStore())
    quiet_run(clean)
    expected = outcome(clean)
    error, applied = FAULTS[fault]
    wrong: list[str] = []
    faults = 0

    for fail_at in itertools.count(1):
        store = FailingStore(fail_at=fail_at, error=error, applied=applied)
        with_large_session(store)
        with contextlib.suppress(Crash):
            quiet_run(store)
        if not store.failed:
            break
        faults += 1
        if error is Crash:  # the run stopped: every commit so far is whole, and a run again ends it
            wrong += [f"commit {fail_at}, stopped: {d}" for d in differences(store)]
            quiet_run(store)
        again = quiet_run(store)
        if outcome(store) != expected:
            wrong.append(f"commit {fail_at}: the totals differ from a clean import's")
        if (again.sessions.imported, again.steps.imported) != (0, 0):
            wrong.append(f"commit {fail_at}: the import was not done (a last run imported more)")

    assert faults > LARGE_STEPS // 20  # every commit of the large session was failed once
    assert wrong == []


# Calls an app wrote to both systems during its migration


DUAL_USER = "dual-writer"
WHEN = NOW - timedelta(hours=1)


def dual_written() -> MemoryStore:
    """Return a store where Tally recorded some calls itself, and the legacy system has them all."""
    store = MemoryStore()
    docs, steps = legacy.dual_written(DUAL_USER, WHEN)
    record_steps(
        store=store,
        caller=Caller(DUAL_USER),
        request=parse_record_request({"steps": steps}, now=NOW),
        settings=Settings(),
        now=NOW,
    )
    for path, data in docs.items():
        store.put(path, data)
    return store


def test_a_legacy_call_tally_already_recorded_is_skipped_never_counted_twice() -> None:
    store = dual_written()

    report = import_legacy(store=store, settings=Settings(), now=NOW)

    month = store.docs[layout.user_month_path(DUAL_USER, month_key(WHEN))]
    assert (month["costNanos"], month["apiCalls"], month["billableRuns"]) == legacy.DUAL_EXPECTED
    assert (report.sessions.imported, report.steps.imported) == (1, 2)
    assert (report.sessions.recorded, report.steps.recorded) == (1, 3)
    sessions = f"SessionUsage/{DUAL_USER}/sessions"
    assert set(report.skipped) == {
        Skipped(f"{sessions}/{legacy.DUAL_SESSION} steps[0]", ALREADY_RECORDED),
        Skipped(f"{sessions}/{legacy.DUAL_RECORDED_SESSION} steps[0]", ALREADY_RECORDED),
        Skipped(f"{sessions}/{legacy.DUAL_RECORDED_SESSION}", ALREADY_RECORDED),
        Skipped(f"ApiUsage/{DUAL_USER}/operations/dual_op_3", ALREADY_RECORDED),
    }
    assert f"skipped 1 sessions and 3 steps {ALREADY_RECORDED}" in report.summary()
    converted = store.docs[layout.session_path(DUAL_USER, legacy.DUAL_SESSION)]
    assert (converted["stats"]["stepCount"], converted["stats"]["costNanos"]) == (1, 500_000_000)
    assert "steps" in store.docs[layout.session_path(DUAL_USER, legacy.DUAL_RECORDED_SESSION)]
    assert (
        reconcile(store=store, month=month_key(WHEN), settings=Settings(), now=NOW, fix=False).differences
        == []
    )


def test_a_dry_run_skips_what_tally_recorded_too() -> None:
    store = dual_written()

    dry = import_legacy(store=store, settings=Settings(), now=NOW, dry_run=True)
    real = import_legacy(store=store, settings=Settings(), now=NOW)

    assert (dry.sessions.imported, dry.steps.imported, dry.steps.recorded) == (1, 2, 3)
    assert (real.sessions.imported, real.steps.imported, real.steps.recorded) == (1, 2, 3)
