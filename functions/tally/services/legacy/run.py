"""One import run of every legacy source: sessions, operations logs, a CSV export."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from tally.config import Settings
from tally.errors import InvalidArgument
from tally.money import MoneyError, usd_to_nanos
from tally.services.legacy.report import ImportReport, MonthlyCheck, Refused
from tally.services.legacy.sessions import SessionImporter
from tally.services.legacy.sources import csv_step, legacy_parts, legacy_step, own_operation_id
from tally.services.legacy.steps import STEPS_PER_COMMIT, Found, ImportStore, pages


class Importer(SessionImporter):
    """One import run of every source."""

    def read_monthly(self) -> None:
        """Read every legacy monthly document (compared at the end, never imported)."""
        for doc in pages(self.store, "monthly"):
            parts = legacy_parts(doc.path, "monthly")
            if parts is None:
                continue
            usage_type, user_id, month = parts
            try:
                legacy = usd_to_nanos(doc.fields.get("totalCost", 0), maximum=Decimal(10**9))
            except MoneyError as exc:
                self.report.refused.append(Refused(doc.path, f"totalCost {exc}"))
                continue
            check = MonthlyCheck(doc.path, user_id, month, usage_type, legacy)
            self._checks[(user_id, month, usage_type)] = check
            self.report.monthly.append(check)

    def run_operations(self) -> None:
        """Import the `ApiUsage|AIUsage/{uid}/operations` logs, user by user."""
        current: str | None = None
        pending: list[Found] = []
        done = 0
        for doc in pages(self.store, "operations"):
            parts = legacy_parts(doc.path, "operations")
            if parts is None:
                continue
            usage_type, user_id, operation = parts
            if user_id != current:
                if current is not None:
                    self.import_steps(current, pending)
                current, pending = user_id, []
            try:
                step = legacy_step(
                    doc.fields,
                    operation=operation,
                    field="operation",
                    now=self.now,
                    usage_type=usage_type.value,
                )
            except InvalidArgument as exc:
                self.report.steps.refused += 1
                self.report.refused.append(Refused(doc.path, exc.message))
            else:
                own = own_operation_id(doc.fields.get("operationId") or operation)
                pending.append(Found(step, doc.path, own))
            done += 1
            self._tick("operations", done)
        if current is not None:
            self.import_steps(current, pending)

    def run_csv(self, rows: Iterable[Mapping[str, str]], name: str) -> None:
        """Import the rows of an `api_usage_log` export, grouped by user (a row's id is not a call's id)."""
        per_user: dict[str, list[Found]] = {}
        for line, row in enumerate(rows, start=2):
            try:
                user_id, step = csv_step(row, line=line, now=self.now)
            except InvalidArgument as exc:
                self.report.steps.refused += 1
                self.report.refused.append(Refused(f"{name}:{line}", exc.message))
                continue
            per_user.setdefault(user_id, []).append(Found(step, f"{name}:{line}"))
            if len(per_user[user_id]) >= STEPS_PER_COMMIT:
                self.import_steps(user_id, per_user.pop(user_id))
            self._tick("CSV rows", line - 1)
        for user_id, found in per_user.items():
            self.import_steps(user_id, found)


def import_legacy(
    *,
    store: ImportStore,
    settings: Settings,
    now: datetime,
    csv_rows: Iterable[Mapping[str, str]] | None = None,
    csv_name: str = "csv",
    dry_run: bool = False,
    progress: Callable[[str, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ImportReport:
    """Import every legacy source; report what was imported, skipped and refused, and the monthly checks."""
    importer = Importer(
        store=store, settings=settings, now=now, dry_run=dry_run, progress=progress, sleep=sleep
    )
    importer.read_monthly()
    try:
        importer.run_sessions()
        importer.run_operations()
        if csv_rows is not None:
            importer.run_csv(csv_rows, csv_name)
    finally:  # months whose analytics were final show what was imported (also after a failed run)
        importer.reopen_months()
    return importer.report
