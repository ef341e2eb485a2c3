"""Tally's command line: `python -m entrypoints.cli COMMAND` (see `--help`).

Works on the emulator when FIRESTORE_EMULATOR_HOST is set, and on the project of the
Application Default Credentials otherwise. Reads the settings the functions are deployed
with (`functions/.env`, `functions/.env.<project>`); variables set in the shell win.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable
from typing import TextIO

from google.cloud import firestore

from adapters import webhooks, wiring
from adapters.firestore import FirestoreStore
from tally import layout
from tally.config import Settings, deployed_environment
from tally.errors import InvalidArgument
from tally.services import export, folding, sweep
from tally.services.legacy import ImportStalled, check_csv_header, import_legacy
from tally.services.migrate import migrate
from tally.services.reconcile import ShardCountMismatch, reconcile
from tally.services.sessions import SWEEP_PAGE_SIZE
from tally.timeutil import month_key, parse_month, utc_now

Command = Callable[[argparse.Namespace, FirestoreStore, Settings], int]


def _month(value: str) -> str:
    try:
        return parse_month(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_sweep(args: argparse.Namespace, store: FirestoreStore, settings: Settings) -> int:
    """Run the sweep once: idle and unfinalized sessions, expired holds, late alerts, due deliveries."""
    result = sweep.run(
        store=store,
        settings=settings,
        now=utc_now(),
        idle_minutes=args.idle_minutes,
        post=webhooks.post_json,
        clock=utc_now,
        page_size=args.page_size,
    )
    sys.stdout.write(result.summary() + "\n")
    return 0


def run_fold(args: argparse.Namespace, store: FirestoreStore, settings: Settings) -> int:
    """Fold a month's platform shards into its rollup now."""
    rollup = folding.fold_ranked(store, args.month, now=utc_now(), version=_rollup_version(store, args.month))
    total = rollup.aggregate.total
    sys.stdout.write(
        f"fold: {args.month} from {store.shards} shards: cost {total.cost_nanos / 1e9:.9f} USD, "
        f"{total.api_calls} calls, {rollup.aggregate.active_users} active users (as of {rollup.as_of})\n"
    )
    return 0


class ProgressBar:
    """A progress bar on standard error (a line every 10 % when it is not a terminal)."""

    def __init__(self, label: str, *, stream: TextIO = sys.stderr) -> None:
        self._label = label
        self._stream = stream
        self._tty = stream.isatty()
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        """Show `done` of `total`."""
        share = done / total if total else 1.0
        if self._tty:
            filled = int(share * 30)
            self._stream.write(f"\r{self._label} [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,}")
            self._stream.flush()
        elif int(share * 10) > self._shown:
            self._shown = int(share * 10)
            self._stream.write(f"{self._label}: {done:,}/{total:,} ({share:.0%})\n")

    def close(self) -> None:
        """End the bar's line."""
        if self._tty:
            self._stream.write("\n")


def run_reconcile(args: argparse.Namespace, store: FirestoreStore, settings: Settings) -> int:
    """Recompute a month's aggregates from its steps; report (and with --fix repair) every difference."""
    bar = ProgressBar(f"reconcile {args.month}")
    report = reconcile(
        store=store,
        month=args.month,
        settings=settings,
        now=utc_now(),
        fix=args.fix,
        progress=bar,
        deep=args.deep,
        claims=wiring.directory(),
    )
    bar.close()
    for difference in report.differences:
        sys.stdout.write(difference.line() + "\n")
    for line in report.unrepaired:
        sys.stdout.write(f"not repaired: {line}\n")
    for line in report.due:
        sys.stdout.write(f"{'raised late' if report.fixed else 'alert'}: {line}\n")
    sys.stdout.write(report.summary() + "\n")
    if report.unmeasured:  # not a complete check: say so in the exit code too
        sys.stderr.write(
            "reconcile: Firebase Auth did not say some users' plan claims (logged); run it again\n"
        )
        return 1
    return 0 if not report.differences or (report.fixed and not report.unrepaired) else 1


def run_import_legacy(args: argparse.Namespace, store: FirestoreStore, settings: Settings) -> int:
    """Import the earlier systems' usage; report what was imported, skipped and refused."""
    counts: dict[str, int] = {}

    def progress(what: str, done: int) -> None:
        counts[what] = done
        if done % 100 == 0:
            sys.stderr.write(f"import-legacy: {done:,} {what} read\n")

    rows = None
    handle = None
    if args.csv is not None:
        handle = open(args.csv, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
        reader = csv.DictReader(handle)
        try:
            check_csv_header(reader.fieldnames)
        except InvalidArgument as exc:
            sys.stderr.write(f"import-legacy: {args.csv}: {exc.message}\n")
            handle.close()
            return 2
        rows = reader
    try:
        report = import_legacy(
            store=store,
            settings=settings,
            now=utc_now(),
            csv_rows=rows,
            csv_name=args.csv or "csv",
            dry_run=args.dry_run,
            progress=progress,
        )
    except ImportStalled as exc:
        sys.stderr.write(f"import-legacy: {exc}\n")
        return 1
    finally:
        if handle is not None:
            handle.close()
    for refused in report.refused:
        sys.stdout.write(f"refused {refused.source}: {refused.reason}\n")
    for skipped in report.skipped:
        sys.stdout.write(f"skipped {skipped.source}: {skipped.reason}\n")
    for check in report.monthly:
        sys.stdout.write(check.line() + "\n")
    sys.stdout.write(report.summary() + "\n")
    return 0


def run_migrate(args: argparse.Namespace, store: FirestoreStore, settings: Settings) -> int:
    """Bring data written before v2 to the v2 layout."""

    def say(line: str) -> None:
        sys.stderr.write(f"migrate: {line}\n")

    report = migrate(store=store, settings=settings, now=utc_now(), progress=say, claims=wiring.directory())
    sys.stdout.write(report.summary() + "\n")
    return 0


def run_export(args: argparse.Namespace, store: FirestoreStore, settings: Settings) -> int:
    """Write every user's totals for a month as CSV (standard output, or --out); no cell runs as a formula."""
    handle = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    writer = csv.writer(handle)
    count = -1
    try:
        for count, row in enumerate(export.csv_rows(store, wiring.directory(), args.month)):
            writer.writerow(row)
            if count and count % 1000 == 0:
                sys.stderr.write(f"export: {count:,} users\n")
    finally:
        if handle is not sys.stdout:
            handle.close()
    sys.stderr.write(f"export: {max(count, 0):,} users of {args.month}\n")
    return 0


def _rollup_version(store: FirestoreStore, month: str) -> object:
    path = layout.rollup_path(month)
    return store.read([path])[path].version


def parser(settings: Settings) -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    root = argparse.ArgumentParser(prog="python -m entrypoints.cli", description=__doc__)
    root.add_argument("--project", default=os.environ.get("GCLOUD_PROJECT"), help="Firebase project id")
    commands = root.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser(
        "sweep",
        help="complete idle sessions, finalize unfinalized ones, end expired holds, raise late alerts, "
        "retry due webhook deliveries",
    )
    sweep.add_argument(
        "--idle-minutes",
        type=int,
        default=settings.session_idle_minutes,
        help="idle time in minutes (default: TALLY_SESSION_IDLE_MINUTES or 30)",
    )
    sweep.add_argument("--page-size", type=int, default=SWEEP_PAGE_SIZE, help="sessions per page")
    sweep.set_defaults(run=run_sweep)

    check = commands.add_parser(
        "reconcile",
        help="recompute a month's totals from the step documents and report every difference",
        description="Exit status: 0 when nothing differs (or --fix repaired it all), 1 when something does.",
    )
    check.add_argument(
        "--month", type=_month, default=month_key(utc_now()), help="YYYY-MM (default: this month)"
    )
    check.add_argument("--fix", action="store_true", help="repair the aggregates so they match the steps")
    check.add_argument(
        "--deep",
        action="store_true",
        help="also recompute every user's lifetime totals and completed sessions (a few queries per user)",
    )
    check.set_defaults(run=run_reconcile)

    legacy = commands.add_parser(
        "import-legacy",
        help="import the usage kept by the earlier hand-rolled systems (idempotent)",
        description=(
            "Reads SessionUsage/{uid}/sessions documents with embedded steps, the ApiUsage|AIUsage/{uid}/"
            "operations logs and, with --csv, an export of a Postgres api_usage_log table (columns: "
            "id,user_id,timestamp,service,cost and optionally endpoint,input_tokens,output_tokens,"
            "usage_type,billable). A second run imports nothing."
        ),
    )
    legacy.add_argument("--csv", help="a CSV export of api_usage_log to import too")
    legacy.add_argument("--dry-run", action="store_true", help="report what would be imported; write nothing")
    legacy.set_defaults(run=run_import_legacy)

    upgrade = commands.add_parser(
        "migrate",
        help="convert data written before v2 to the v2 layout (idempotent)",
        description="Gives old sessions a sweep shard, tidies users/{uid}.usage, rebuilds every month of the "
        "old TallyPlatformMonths documents from the steps (reconcile --fix), then deletes the old documents.",
    )
    upgrade.set_defaults(run=run_migrate)

    dump = commands.add_parser("export", help="write every user's totals for a month as CSV")
    dump.add_argument(
        "--month", type=_month, default=month_key(utc_now()), help="YYYY-MM (default: this month)"
    )
    dump.add_argument("--out", help="the CSV file to write (default: standard output)")
    dump.set_defaults(run=run_export)

    fold = commands.add_parser("fold", help="fold a month's platform shards into its rollup now")
    fold.add_argument(
        "--month", type=_month, default=month_key(utc_now()), help="YYYY-MM (default: this month)"
    )
    fold.set_defaults(run=run_fold)
    return root


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the command."""
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument("--project", default=os.environ.get("GCLOUD_PROJECT"))
    settings = Settings.from_env(deployed_environment(project.parse_known_args(argv)[0].project))
    args = parser(settings).parse_args(argv)
    if getattr(args, "idle_minutes", 0) < 0 or getattr(args, "page_size", 1) < 1:
        parser(settings).error("--idle-minutes must be >= 0 and --page-size >= 1")
    store = FirestoreStore(firestore.Client(project=args.project), shards=settings.aggregate_shards)
    if args.project:  # the Admin SDK (Auth: emails, plan claims) of the same project
        os.environ["GCLOUD_PROJECT"] = os.environ["GOOGLE_CLOUD_PROJECT"] = args.project
    run: Command = args.run
    try:
        return run(args, store, settings)
    except ShardCountMismatch as exc:
        sys.stderr.write(f"{args.command}: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
