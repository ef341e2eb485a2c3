import csv
import io
from datetime import UTC, datetime

import pytest

from tally import layout
from tally.config import Settings
from tally.errors import InvalidArgument
from tally.legacy import check_csv_header, import_legacy, legacy_operation_id
from tally.reconcile import reconcile
from tally.sessions import Finalized, finalize_session, sweep_sessions
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
