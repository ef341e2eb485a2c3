from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from entrypoints import callables
from tally.errors import InvalidArgument, PermissionDenied
from tally.services import export
from tally.values import Caller
from tally_dev.memory import MemoryStore, record_one

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)


class Emails:
    def __init__(self) -> None:
        self.asked: list[int] = []

    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        self.asked.append(len(user_ids))
        return {uid: f"{uid}@example.com" for uid in user_ids if uid != "u-2"}


def seed(store: MemoryStore, user: str, cost: int, *, when: datetime = NOW) -> None:
    record_one(store, user, cost, when=when, now=NOW)


def test_export_one_row_per_user_of_the_month_over_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    for n in range(7):
        seed(store, f"u-{n}", 1_000_000_001 * (n + 1))
    seed(store, "u-old", 5, when=datetime(2026, 10, 3, tzinfo=UTC))
    directory = Emails()
    monkeypatch.setattr(export, "PAGE_SIZE", 3)

    table = list(export.rows(store, directory, "2026-11"))

    assert table[0] == list(export.COLUMNS)
    assert [row[0] for row in table[1:]] == [f"u-{n}" for n in range(7)]
    assert table[1] == ["u-0", "u-0@example.com", "1.000000001", "1", "1", "0"]
    assert table[3][1] == ""
    assert table[7][2] == "7.000000007"
    assert directory.asked == [3, 3, 1]


def test_export_of_an_empty_month_is_the_header() -> None:
    assert list(export.rows(MemoryStore(), Emails(), "2026-11")) == [list(export.COLUMNS)]


def test_export_usage_pages_by_token_for_admins_only() -> None:
    store = MemoryStore()
    for n in range(3):
        seed(store, f"u-{n}", 10 + n)
    admin = Caller("boss", admin=True)

    first = callables.export_usage(
        store=store, directory=Emails(), caller=admin, data={"month": "2026-11", "limit": 2}, now=NOW
    )
    second = callables.export_usage(
        store=store,
        directory=Emails(),
        caller=admin,
        data={"limit": 2, "pageToken": first["nextPageToken"]},
        now=NOW,
    )

    assert [row[0] for row in first["rows"]] == ["u-0", "u-1"]
    assert first["nextPageToken"] == "u-1"
    assert [row[0] for row in second["rows"]] == ["u-2"]
    assert second["nextPageToken"] is None
    assert second["columns"] == list(export.COLUMNS)


@pytest.mark.parametrize(
    ("data", "field"),
    [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"month": "2026-13"}, "month"), ({"x": 1}, "x")],
)
def test_export_usage_names_the_bad_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        callables.export_usage(
            store=MemoryStore(), directory=Emails(), caller=Caller("boss", admin=True), data=data, now=NOW
        )


def test_export_usage_is_for_admins() -> None:
    with pytest.raises(PermissionDenied):
        callables.export_usage(
            store=MemoryStore(), directory=Emails(), caller=Caller("u-1"), data={}, now=NOW
        )


# Cells a spreadsheet would run as formulas


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+15551234567", "'+15551234567"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("ada@example.com", "ada@example.com"),
        ("user-1", "user-1"),
        ("", ""),
    ],
)
def test_csv_cell_neutralises_what_a_spreadsheet_would_run(text: str, written: str) -> None:
    assert export.csv_cell(text) == written


class ChosenEmails:
    def __init__(self, emails: dict[str, str]) -> None:
        self.chosen = emails

    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        return {uid: self.chosen[uid] for uid in user_ids if uid in self.chosen}


def test_the_csv_export_neutralises_user_text_and_keeps_figures_numbers() -> None:
    store = MemoryStore()
    for user in ("+15551234567", "-dash", "@team", "plain"):
        seed(store, user, 1_500_000_000)
    directory = ChosenEmails({"plain": "=cmd|' /C calc'!A0@example.com", "@team": "team@example.com"})

    table = list(export.csv_rows(store, directory, "2026-11"))

    assert table == [
        list(export.COLUMNS),
        ["'+15551234567", "", "1.500000000", "1", "1", "0"],
        ["'-dash", "", "1.500000000", "1", "1", "0"],
        ["'@team", "team@example.com", "1.500000000", "1", "1", "0"],
        ["plain", "'=cmd|' /C calc'!A0@example.com", "1.500000000", "1", "1", "0"],
    ]
    assert (
        list(export.rows(store, directory, "2026-11"))[1][0] == "+15551234567"
    )  # the values stay as they are
