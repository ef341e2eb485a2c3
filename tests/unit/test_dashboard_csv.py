"""The dashboard's CSV download (web/src/data.js), run by Node: no cell runs as a spreadsheet formula."""

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
# Builds the CSV from pages as `export_usage` answers them, as the admin page does.
SCRIPT = """
import { exportMonthCsv } from "./web/src/data.js";
const pages = JSON.parse(process.env.TALLY_PAGES);
const result = await exportMonthCsv(async () => pages.shift(), "2026-11", { pageSize: 2 });
process.stdout.write(JSON.stringify(result));
"""

pytestmark = pytest.mark.skipif(
    NODE is None or not (ROOT / "node_modules" / "firebase").is_dir(),
    reason="needs Node and the dashboard's packages (make setup)",
)


def dashboard_csv(pages: list[dict[str, Any]]) -> tuple[list[list[str]], int]:
    """Return the rows of the CSV the dashboard builds from these pages, and its user count."""
    assert NODE is not None
    done = subprocess.run(  # noqa: S603 - a fixed script
        [NODE, "--no-warnings", "--input-type=module", "-e", SCRIPT],
        cwd=ROOT,
        env={**os.environ, "TALLY_PAGES": json.dumps(pages)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    return list(csv.reader(io.StringIO(result["text"], newline=""))), int(result["users"])


def test_the_dashboard_csv_neutralises_user_text_and_keeps_figures_numbers() -> None:
    columns = ["userId", "email", "costUsd", "apiCalls", "billableRuns", "unpricedSteps"]
    pages = [
        {
            "columns": columns,
            "rows": [
                [
                    "+15551234567",
                    '=HYPERLINK("http://evil.example")@example.com',
                    "1.500000000",
                    "3",
                    "1",
                    "0",
                ],
                ["-dash", "@team@example.com", "0.000000001", "1", "0", "0"],
            ],
            "nextPageToken": "-dash",
        },
        {
            "columns": columns,
            "rows": [["plain", "ada@example.com", "2.000000000", "2", "2", "1"]],
            "nextPageToken": None,
        },
    ]

    table, users = dashboard_csv(pages)

    assert users == 3
    assert table == [
        columns,
        ["'+15551234567", '\'=HYPERLINK("http://evil.example")@example.com', "1.500000000", "3", "1", "0"],
        ["'-dash", "'@team@example.com", "0.000000001", "1", "0", "0"],
        ["plain", "ada@example.com", "2.000000000", "2", "2", "1"],
    ]
