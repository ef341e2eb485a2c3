"""Nothing stays wrong, against the emulators: failed deliveries, damage, reconcile, imports, exports."""

from __future__ import annotations

import csv
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.batch import WriteBatch

from tally import layout
from tally.services.legacy import ALREADY_RECORDED
from tally.services.reconcile import Report
from tally.services.sessions import sweep_sessions
from tally.timeutil import month_key
from tally_dev import accounts, commands, emulator
from tally_dev import legacy_fixtures as legacy
from tally_dev.steps import step


def reconcile_now(month: str, *, fix: bool = False) -> Report:
    """Reconcile a month in-process, as `make reconcile` does (the command line is tested below)."""
    return emulator.reconcile_month(month, fix=fix)


def test_the_reconcile_command_reports_repairs_and_exits_by_what_it_found(
    db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    record(user, {"steps": [step(cost="0.75")]})
    db.document(layout.user_month_path(user.uid, this_month)).update({"costNanos": firestore.Increment(5)})

    found = commands.run("reconcile")
    fixed = commands.run("reconcile", "--month", this_month, "--fix")
    again = commands.run("reconcile")

    assert found.returncode == 1, found.stderr
    assert f"{layout.user_month_path(user.uid, this_month)} costNanos: stored 750000005" in found.stdout
    assert found.stdout.splitlines()[-1].startswith("reconcile: 1 differences")
    assert (fixed.returncode, "repaired" in fixed.stdout) == (0, True)
    assert (again.returncode, again.stdout.strip().split(" (")[0]) == (0, "reconcile: 0 differences")


def record(user: accounts.User, body: dict[str, Any]) -> dict[str, Any]:
    response = accounts.record(user, body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_failed_finalizer_delivery_is_finalized_by_the_sweep(db: firestore.Client, this_month: str) -> None:
    user = accounts.make_user(uid=f"fault-{uuid.uuid4().hex[:12]}")  # their finalizer deliveries fail
    sid = emulator.unique("s")
    record(user, {"session": {"id": sid, "complete": True}, "steps": [step(cost="0.25")]})
    emulator.settle()  # the trigger was delivered, and failed
    before = emulator.document(layout.session_path(user.uid, sid))

    result = sweep_sessions(store=emulator.store(), now=emulator.utc_now(), idle_minutes=30)
    emulator.settle()

    after = emulator.document(layout.session_path(user.uid, sid))
    assert (before["status"], before.get("finalizedAt")) == ("completed", None)
    assert result.finalized == 1
    assert after["summary"]["totalCostNanos"] == 250_000_000
    platform = emulator.platform_month(this_month).sessions
    assert (platform["completed"], platform["active"]) == (1, 0)
    assert emulator.document(layout.user_path(user.uid))["usage"]["sessions"] == {"active": 0, "completed": 1}


def test_a_failure_after_the_commit_still_answers_with_what_was_recorded(this_month: str) -> None:
    user = accounts.make_user(uid=f"fault-{uuid.uuid4().hex[:12]}")  # their work after the commit fails

    body = record(user, {"steps": [step(cost="4.5", billable=True), step(cost="0.5")]})

    assert (body["recorded"], body["duplicates"]) == (2, 0)
    assert body["usage"]["totalCost"] == 5.0
    assert body["usage"]["limits"]["warning"] is True
    assert emulator.user_month(user.uid, this_month)["costNanos"] == 5_000_000_000


def test_reconcile_measures_a_user_against_the_plan_their_claim_names(this_month: str) -> None:
    boss = accounts.make_user(claims={"admin": True})
    plan = emulator.unique("pro")
    accounts.result_of("set_plan", boss, {"plan": plan, "limits": {"monthlyCostLimit": 100}})
    user = accounts.make_user(claims={"tallyPlan": plan})
    record(user, {"steps": [step(cost="4.5"), step(cost="1.5")]})  # $6: past the $5 default, 6 % of $100

    report = reconcile_now(this_month)

    assert (report.differences, report.unmeasured) == ([], 0)


DAMAGE = {
    "usage erased by set() without merge": lambda db, uid, month: db.document(layout.user_path(uid)).set(
        {"app": 1}
    ),
    "a shared aggregate decremented": lambda db, uid, month: db.document(layout.shard_path(month, 5)).set(
        {"costNanos": firestore.Increment(-7)}, merge=True
    ),
    "a user's month deleted": lambda db, uid, month: db.document(layout.user_month_path(uid, month)).delete(),
    "a free-tier entry removed": lambda db, uid, month: db.document(
        layout.user_month_path(uid, month)
    ).update({"limitPercent": firestore.DELETE_FIELD}),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_reconcile_reports_and_repairs_damage(damage: str, db: firestore.Client, this_month: str) -> None:
    admin, user = accounts.make_user(claims={"admin": True}), accounts.make_user()
    sid = emulator.unique("s")
    record(user, {"session": {"id": sid}, "steps": [step(cost="4.5", feature="f.a"), step(cost="0.25")]})
    record(user, {"session": {"id": sid, "complete": True}, "steps": [step(cost="0.001", billable=True)]})
    emulator.wait_for_finalizations()
    assert reconcile_now(this_month).differences == []
    DAMAGE[damage](db, user.uid, this_month)

    found = reconcile_now(this_month)
    fixed = reconcile_now(this_month, fix=True)
    again = reconcile_now(this_month)

    assert found.differences
    assert fixed.fixed
    assert fixed.differences == found.differences
    assert again.differences == []
    assert accounts.result_of("usage_analytics", admin, {"fresh": True})["totals"]["cost"] == 4.751
    assert accounts.result_of("my_usage", user)["totalCost"] == 4.751


def write_legacy(db: firestore.Client) -> None:
    batch = db.batch()
    for path, data in legacy.documents().items():
        batch.set(db.document(path), data)
    batch.commit()


def test_legacy_documents_never_trip_the_finalizer_or_the_sweep(db: firestore.Client) -> None:
    write_legacy(db)
    emulator.settle()  # the trigger was delivered for every legacy session

    swept = sweep_sessions(store=emulator.store(), now=emulator.utc_now(), idle_minutes=0)

    assert (swept.completed, swept.finalized) == (0, 0)
    for sid in (legacy.MAPS_SESSION, legacy.OPEN_SESSION):
        doc = emulator.document(layout.session_path(legacy.ADA, sid))
        assert "summary" not in doc
        assert "tallyShard" not in doc
    assert list(db.collection(layout.PLATFORM_SHARDS).stream()) == []


def test_import_legacy_brings_in_the_old_systems_exactly_once(db: firestore.Client, tmp_path: Path) -> None:
    write_legacy(db)
    export = tmp_path / "legacy.csv"
    export.write_text(legacy.CSV)
    admin = accounts.make_user(claims={"admin": True})

    dry = commands.run("import-legacy", "--csv", str(export), "--dry-run")
    first = commands.run("import-legacy", "--csv", str(export))
    emulator.settle()  # the trigger sees the converted sessions: already finalized, not counted again
    second = commands.run("import-legacy", "--csv", str(export))

    assert dry.returncode == 0, dry.stderr
    assert "would import 3 sessions and 10 steps" in dry.stdout
    assert first.returncode == 0, first.stderr
    assert "imported 3 sessions and 10 steps" in first.stdout
    for source, reason in legacy.REFUSED.items():
        assert any(
            line.startswith(f"refused {source.replace('legacy.csv', str(export))}") and reason in line
            for line in first.stdout.splitlines()
        ), source
    assert f"ApiUsage/{legacy.ADA}/monthly/2025-10: DIFFERS" in first.stdout
    assert "counted $0.02266 more" in first.stdout
    assert "imported 0 sessions and 0 steps" in second.stdout
    for (uid, month), (cost, calls, billable) in legacy.EXPECTED.items():
        doc = emulator.user_month(uid, month)
        assert (doc["costNanos"], doc["apiCalls"], doc["billableRuns"]) == (cost, calls, billable)
    history = accounts.result_of("usage_analytics", admin, {"month": "2025-10"})
    assert history["totals"]["cost"] == (108_660_000 + 60_700_000) / 1e9
    assert history["sessions"]["completed"] == 2  # the maps and the chat sessions (completed on 1 October)
    for month in ("2025-09", "2025-10"):
        assert reconcile_now(month).differences == []


def test_migrate_converts_data_written_before_v2(db: firestore.Client, this_month: str) -> None:
    user = accounts.make_user()
    record(user, {"steps": [step(cost="1.25")]})
    db.document(f"{layout.LEGACY_PLATFORM_MONTHS}/{this_month}-s03").set(
        {"month": this_month, "costNanos": 1_250_000_000, "users": {user.uid: True}}
    )
    db.document(layout.user_month_path(user.uid, this_month)).delete()  # v1 had none

    run = commands.run("migrate")

    assert run.returncode == 0, run.stderr
    assert f"1 months rebuilt ({this_month})" in run.stdout
    assert emulator.user_month(user.uid, this_month)["costNanos"] == 1_250_000_000
    assert list(db.collection(layout.LEGACY_PLATFORM_MONTHS).stream()) == []
    assert reconcile_now(this_month).differences == []


class CommitFaults:
    """Fail one Firestore commit that writes a given user's steps: the nth, before it applies or after."""

    def __init__(self, user_id: str) -> None:
        self.marker = f"/documents/{layout.SESSION_USAGE}/{user_id}/{layout.STEPS}/"
        self.left = 0
        self.error: type[Exception] = gexc.InternalServerError
        self.applied = False
        self.original = WriteBatch.commit

    def arm(self, *, at: int, error: type[Exception], applied: bool) -> None:
        """Fail the `at`-th next commit of the user's steps with `error` (after applying it, if `applied`)."""
        self.left, self.error, self.applied = at, error, applied

    def commit(self, batch: WriteBatch, *args: Any, **kwargs: Any) -> Any:
        """Commit the batch, unless it is the one to fail."""
        names = [pb.update.name for pb in batch._write_pbs]
        if self.left and any(self.marker in name for name in names):
            self.left -= 1
            if not self.left:
                if self.applied:
                    self.original(batch, *args, **kwargs)
                raise self.error("injected by the test")
        return self.original(batch, *args, **kwargs)


LARGE_STEPS = 600  # more documents than one commit holds: commits of 20 steps, the conversion last


def test_an_import_stopped_between_its_commits_and_run_again_ends_whole_and_exact(
    db: firestore.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = f"legacy-{uuid.uuid4().hex[:10]}"
    path, data = legacy.large_session(user, LARGE_STEPS)
    db.document(path).set(data)
    faults = CommitFaults(user)
    monkeypatch.setattr(WriteBatch, "commit", lambda batch, *a, **k: faults.commit(batch, *a, **k))
    steps = db.collection(f"{layout.SESSION_USAGE}/{user}/{layout.STEPS}")

    faults.arm(at=3, error=gexc.InternalServerError, applied=False)  # the run dies at its third commit
    with pytest.raises(gexc.InternalServerError):
        commands.run("import-legacy")
    stopped, stored = emulator.user_month(user, "2025-10"), len(list(steps.stream()))
    faults.arm(at=2, error=gexc.DeadlineExceeded, applied=True)  # an answer lost: retried from a new read
    second = commands.run("import-legacy")
    third = commands.run("import-legacy")

    assert (stored, stopped["apiCalls"], stopped["costNanos"]) == (40, 40, 40 * 1_000_000)
    assert second.returncode == 0, second.stderr
    assert f"imported 1 sessions and {LARGE_STEPS - 40} steps" in second.stdout
    assert "imported 0 sessions and 0 steps" in third.stdout
    month = emulator.user_month(user, "2025-10")
    assert (month["costNanos"], month["apiCalls"], month["billableRuns"]) == legacy.large_session_totals(
        LARGE_STEPS
    )
    assert len(list(steps.stream())) == LARGE_STEPS
    session = emulator.document(path)
    assert "steps" not in session
    assert (session["stats"]["stepCount"], session["summary"]["totalCostNanos"]) == (
        LARGE_STEPS,
        LARGE_STEPS * 1_000_000,
    )
    assert emulator.platform_month("2025-10").total.cost_nanos == LARGE_STEPS * 1_000_000
    assert reconcile_now("2025-10").differences == []


def test_import_legacy_skips_calls_tally_already_recorded(db: firestore.Client) -> None:
    user = accounts.make_user()
    when = emulator.utc_now() - timedelta(hours=1)
    documents, recorded = legacy.dual_written(user.uid, when)
    record(user, {"steps": recorded})  # the app wrote both systems during its migration
    batch = db.batch()
    for path, data in documents.items():
        batch.set(db.document(path), data)
    batch.commit()

    done = commands.run("import-legacy")
    again = commands.run("import-legacy")

    assert done.returncode == 0, done.stderr
    assert "imported 1 sessions and 2 steps" in done.stdout
    assert f"skipped 1 sessions and 3 steps {ALREADY_RECORDED}" in done.stdout
    assert "imported 0 sessions and 0 steps" in again.stdout
    month = emulator.user_month(user.uid, month_key(when))
    assert (month["costNanos"], month["apiCalls"], month["billableRuns"]) == legacy.DUAL_EXPECTED
    mine = accounts.result_of("my_usage", user, {"month": month_key(when)})
    assert (mine["totalCost"], mine["apiCalls"]) == (3.1, 5)
    assert reconcile_now(month_key(when)).differences == []


def test_the_export_command_writes_no_cell_a_spreadsheet_would_run(tmp_path: Path, this_month: str) -> None:
    user = accounts.make_user(
        uid=f"+1555{uuid.uuid4().int % 10**7:07d}", email=f"=cmd-{uuid.uuid4().hex[:8]}@example.com"
    )
    record(user, {"steps": [step(cost="0.25")]})
    out = tmp_path / "export.csv"

    done = commands.run("export", "--month", this_month, "--out", str(out))

    assert done.returncode == 0, done.stderr
    with out.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[1:] == [[f"'{user.uid}", f"'{user.email}", "0.250000000", "1", "0", "0"]]
