"""Every user's totals for a month, page by page (bounded memory, any number of users).

The command line (`make export`) writes them as CSV; the dashboard's download pages
through `export_usage` (admin) and joins the pages. Both neutralise the text cells a
spreadsheet would run as formulas (`csv_cell`); `export_usage` itself returns the values
as they are (JSON is not a spreadsheet).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tally import layout, ports
from tally.documents.months import MonthAggregate
from tally.money import nanos_to_usd
from tally.requests import EXPORT_PAGE_SIZE, ExportIn
from tally.timeutil import month_key
from tally.values import Document

COLUMNS = ("userId", "email", "costUsd", "apiCalls", "billableRuns", "unpricedSteps")
TEXT_COLUMNS = frozenset({"userId", "email"})  # chosen by users; the others are Tally's own figures
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula
PAGE_SIZE = EXPORT_PAGE_SIZE


class ExportStore(Protocol):
    """The store operations the export needs."""

    def month_users(self, *, month: str, limit: int, after: str | None) -> list[Document]: ...


@dataclass(frozen=True)
class Page:
    """One page of rows (no header) and the token of the next page, if any."""

    rows: list[list[str]]
    next_token: str | None


def page(
    store: ExportStore, directory: ports.Directory, *, month: str, after_user: str | None, limit: int
) -> Page:
    """Return the users with usage in the month after `after_user`, by user id."""
    after = layout.user_month_path(after_user, month) if after_user is not None else None
    docs = store.month_users(month=month, limit=limit, after=after)
    emails = directory.emails([str(doc.fields["userId"]) for doc in docs]) if docs else {}
    rows = []
    for doc in docs:
        stored = MonthAggregate.from_document(doc.fields)
        counts = stored.total
        uid = str(doc.fields["userId"])
        rows.append(
            [
                uid,
                emails.get(uid, ""),
                f"{nanos_to_usd(counts.cost_nanos):.9f}",
                str(counts.api_calls),
                str(counts.billable_runs),
                str(stored.unpriced),
            ]
        )
    return Page(rows, rows[-1][0] if len(docs) == limit else None)


def rows(store: ExportStore, directory: ports.Directory, month: str) -> Iterator[list[str]]:
    """Yield the header, then one row per user with usage in the month, by user id."""
    yield list(COLUMNS)
    token: str | None = None
    while True:
        found = page(store, directory, month=month, after_user=token, limit=PAGE_SIZE)
        yield from found.rows
        if (token := found.next_token) is None:
            return


def csv_cell(text: str) -> str:
    """Return a text cell as a spreadsheet must show it: as text, never run as a formula.

    The rule (OWASP, "CSV injection"): a cell starting with `=`, `+`, `-`, `@`, a tab or a
    carriage return would be evaluated by Excel, LibreOffice or Google Sheets (`=HYPERLINK(...)`,
    `+cmd|...`), so it gets a leading single quote, which they show as text. Only text chosen
    by users is written through it (user ids may start with `-`, `+` or `@`; emails, with
    anything); Tally's own figures (amounts as non-negative decimals with 9 places, and counts)
    never start that way and stay numbers. The dashboard's CSV applies the same rule.
    """
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def csv_rows(store: ExportStore, directory: ports.Directory, month: str) -> Iterator[list[str]]:
    """Yield the CSV export of a month: the header, then each user's row with its text cells neutralised."""
    text = [name in TEXT_COLUMNS for name in COLUMNS]
    for row in rows(store, directory, month):
        yield [csv_cell(cell) if is_text else cell for cell, is_text in zip(row, text, strict=True)]


def export_usage(
    *, store: ExportStore, directory: ports.Directory, request: ExportIn, now: datetime
) -> dict[str, Any]:
    """Return one page of every user's totals for a month; follow `nextPageToken`."""
    month = request.month or month_key(now)
    found = page(store, directory, month=month, after_user=request.page_token, limit=request.limit)
    return {
        "month": month,
        "columns": list(COLUMNS),
        "rows": found.rows,
        "nextPageToken": found.next_token,
    }
