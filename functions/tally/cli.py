"""Tally's command line: `python -m tally.cli COMMAND` (see `--help`).

Works on the emulator when FIRESTORE_EMULATOR_HOST is set, and on the project of the
Application Default Credentials otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from google.cloud import firestore

from tally import folding, layout
from tally.config import Settings
from tally.sessions import SWEEP_PAGE_SIZE, sweep_sessions
from tally.store import FirestoreStore
from tally.timeutil import month_key, parse_month, utc_now

Command = Callable[[argparse.Namespace, FirestoreStore, Settings], int]


def _month(value: str) -> str:
    try:
        return parse_month(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_sweep(args: argparse.Namespace, store: FirestoreStore, settings: Settings) -> int:
    """Complete idle sessions and finalize unfinalized ones, once."""
    result = sweep_sessions(
        store=store, now=utc_now(), idle_minutes=args.idle_minutes, page_size=args.page_size
    )
    sys.stdout.write(
        f"sweep: completed {result.completed} idle sessions, finalized {result.finalized}; "
        f"examined {result.examined} in {result.pages} page(s)\n"
    )
    return 0


def run_fold(args: argparse.Namespace, store: FirestoreStore, settings: Settings) -> int:
    """Fold a month's platform shards into its rollup now."""
    rollup = folding.fold(store, args.month, now=utc_now(), version=_rollup_version(store, args.month))
    total = rollup.aggregate.total
    sys.stdout.write(
        f"fold: {args.month} from {store.shards} shards: cost {total.cost_nanos / 1e9:.9f} USD, "
        f"{total.api_calls} calls, {rollup.aggregate.active_users} active users (as of {rollup.as_of})\n"
    )
    return 0


def _rollup_version(store: FirestoreStore, month: str) -> object:
    path = layout.rollup_path(month)
    return store.read([path])[path].version


def parser(settings: Settings) -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    root = argparse.ArgumentParser(prog="python -m tally.cli", description=__doc__)
    root.add_argument("--project", default=os.environ.get("GCLOUD_PROJECT"), help="Firebase project id")
    commands = root.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser(
        "sweep",
        help="complete idle sessions (the trigger then finalizes them) and finalize unfinalized ones",
    )
    sweep.add_argument(
        "--idle-minutes",
        type=int,
        default=settings.session_idle_minutes,
        help="idle time in minutes (default: TALLY_SESSION_IDLE_MINUTES or 30)",
    )
    sweep.add_argument("--page-size", type=int, default=SWEEP_PAGE_SIZE, help="sessions per page")
    sweep.set_defaults(run=run_sweep)

    fold = commands.add_parser("fold", help="fold a month's platform shards into its rollup now")
    fold.add_argument(
        "--month", type=_month, default=month_key(utc_now()), help="YYYY-MM (default: this month)"
    )
    fold.set_defaults(run=run_fold)
    return root


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the command."""
    settings = Settings.from_env()
    args = parser(settings).parse_args(argv)
    if getattr(args, "idle_minutes", 0) < 0 or getattr(args, "page_size", 1) < 1:
        parser(settings).error("--idle-minutes must be >= 0 and --page-size >= 1")
    store = FirestoreStore(firestore.Client(project=args.project), shards=settings.aggregate_shards)
    run: Command = args.run
    return run(args, store, settings)


if __name__ == "__main__":
    sys.exit(main())
