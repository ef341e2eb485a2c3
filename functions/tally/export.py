"""Every user's totals for a month, as CSV rows, page by page (bounded memory, any number of users)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from tally.money import nanos_to_usd
from tally.usage import Counts
from tally.values import Document

COLUMNS = ("userId", "email", "costUsd", "apiCalls", "billableRuns", "unpricedSteps")
PAGE_SIZE = 500


class ExportStore(Protocol):
    """The store operations the export needs."""

    def month_users(self, *, month: str, limit: int, after: str | None) -> list[Document]: ...


class Directory(Protocol):
    """Emails of users, where known."""

    def emails(self, user_ids: Sequence[str]) -> dict[str, str]: ...


def rows(store: ExportStore, directory: Directory, month: str) -> Iterator[list[str]]:
    """Yield the header, then one row per user with usage in the month, by user id."""
    yield list(COLUMNS)
    after: str | None = None
    while page := store.month_users(month=month, limit=PAGE_SIZE, after=after):
        emails = directory.emails([str(doc.fields["userId"]) for doc in page])
        for doc in page:
            counts = Counts.from_fields(doc.fields)
            uid = str(doc.fields["userId"])
            yield [
                uid,
                emails.get(uid, ""),
                f"{nanos_to_usd(counts.cost_nanos):.9f}",
                str(counts.api_calls),
                str(counts.billable_runs),
                str(int(doc.fields.get("unpricedSteps", 0))),
            ]
        if len(page) < PAGE_SIZE:
            return
        after = page[-1].path
