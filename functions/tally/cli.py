"""Command line: `python -m tally.cli sweep` runs the idle-session sweep once."""

from __future__ import annotations

import argparse
import os
import sys

from google.cloud import firestore

from tally.config import Settings
from tally.sessions import SWEEP_PAGE_SIZE, sweep_idle_sessions
from tally.store import FirestoreStore
from tally.timeutil import utc_now


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the command."""
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m tally.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser(
        "sweep",
        help="complete active sessions idle longer than the idle time (the trigger then finalizes them)",
        description="Uses FIRESTORE_EMULATOR_HOST when set, else Application Default Credentials.",
    )
    sweep.add_argument(
        "--idle-minutes",
        type=int,
        default=settings.session_idle_minutes,
        help="idle time in minutes (default: TALLY_SESSION_IDLE_MINUTES or 30)",
    )
    sweep.add_argument("--page-size", type=int, default=SWEEP_PAGE_SIZE, help="sessions per page")
    sweep.add_argument("--project", default=os.environ.get("GCLOUD_PROJECT"), help="Firebase project id")
    args = parser.parse_args(argv)
    if args.idle_minutes < 0 or args.page_size < 1:
        parser.error("--idle-minutes must be >= 0 and --page-size >= 1")
    store = FirestoreStore(firestore.Client(project=args.project), shards=settings.aggregate_shards)
    result = sweep_idle_sessions(
        store=store, now=utc_now(), idle_minutes=args.idle_minutes, page_size=args.page_size
    )
    sys.stdout.write(
        f"sweep: completed {result.completed} of {result.examined} idle sessions in {result.pages} page(s)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
