"""Import the usage kept by the earlier hand-rolled systems that Tally replaces (seeds 000 and 003).

Sources, all in the same Firestore project except the CSV:
- `SessionUsage/{uid}/sessions/{id}` documents with an embedded `steps` array (ISO-string or
  Timestamp dates, `usageType` in any spelling, float costs, `status` completed or not);
- `ApiUsage|AIUsage/{uid}/operations/{id}` logs, one step each;
- rows of a Postgres `api_usage_log` export (CSV; columns in the README).

Every legacy step becomes a Tally step whose `operationId` is derived from its legacy id
(`legacy-<id>`), so a step found in two sources, or imported twice, is counted once. A
legacy session becomes a Tally session at the same path, converted in the same commit as
its steps (only if unchanged since read), completed ones finalized once. A session with an
unreadable step is refused whole. The legacy monthly documents are not imported (that
would count twice); they are compared with what the imported steps add up to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from tally import layout, plans
from tally.config import Settings
from tally.errors import InvalidArgument
from tally.models import is_user_id, parse_step
from tally.money import MoneyError, nanos_to_usd, usd_to_nanos
from tally.recording import RecordingStore, counted, limits_of, month_usage, recording_state
from tally.timeutil import month_key
from tally.values import Caller, Contention, Document, Step, UsageType
from tally.writes import Write, batches, check_commit, merged

PAGE_SIZE = 300
STEPS_PER_COMMIT = 20  # at most 20 distinct names of a kind per commit, as for a request
LEGACY_KINDS = {"ApiUsage": UsageType.API, "AIUsage": UsageType.AI}
CSV_REQUIRED = ("id", "user_id", "timestamp", "service", "cost")
CSV_OPTIONAL = ("endpoint", "input_tokens", "output_tokens", "usage_type", "billable")
IMPORTER = Caller("tally-import-legacy", recorder=True)
_ID_RE = re.compile(r"[A-Za-z0-9_\-.]{1,128}")
_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n", ""}


class ImportStore(RecordingStore, Protocol):
    """The store operations the import needs."""

    def collection_group(self, *, group: str, limit: int, after: str | None) -> list[Document]: ...


@dataclass(frozen=True)
class Refused:
    """Something not imported, and why."""

    source: str
    reason: str


@dataclass
class MonthlyCheck:
    """A legacy monthly total beside what the imported steps add up to."""

    path: str
    user_id: str
    month: str
    usage_type: UsageType
    legacy_nanos: int
    imported_nanos: int = 0
    operations: set[str] = field(default_factory=set)

    @property
    def differs(self) -> bool:
        """Return whether the legacy total is not what its steps add up to."""
        return self.legacy_nanos != self.imported_nanos

    def line(self) -> str:
        """Return the report line."""
        legacy, imported = nanos_to_usd(self.legacy_nanos), nanos_to_usd(self.imported_nanos)
        if not self.differs:
            return f"{self.path}: ${legacy:.9g}, the imported steps add up to the same"
        gap = nanos_to_usd(abs(self.legacy_nanos - self.imported_nanos))
        more = "more" if self.legacy_nanos > self.imported_nanos else "less"
        return (
            f"{self.path}: DIFFERS: legacy says ${legacy:.9g}, the imported steps add up to ${imported:.9g} "
            f"(the old system counted ${gap:.9g} {more})"
        )


@dataclass
class Counted:
    """Counts of one kind of thing imported."""

    imported: int = 0
    skipped: int = 0  # already imported
    refused: int = 0


@dataclass
class ImportReport:
    """What an import did (or, with `dry_run`, would do)."""

    dry_run: bool
    sessions: Counted = field(default_factory=Counted)
    steps: Counted = field(default_factory=Counted)
    refused: list[Refused] = field(default_factory=list)
    monthly: list[MonthlyCheck] = field(default_factory=list)

    def summary(self) -> str:
        """Return the summary line."""
        verb = "would import" if self.dry_run else "imported"
        flagged = sum(1 for check in self.monthly if check.differs)
        return (
            f"import-legacy: {verb} {self.sessions.imported} sessions and {self.steps.imported} steps; "
            f"skipped {self.sessions.skipped} sessions and {self.steps.skipped} steps already imported; "
            f"refused {self.sessions.refused} sessions and {self.steps.refused} steps; "
            f"{flagged} of {len(self.monthly)} legacy monthly totals differ"
        )


def legacy_operation_id(raw: object) -> str:
    """Return the Tally operationId of a legacy id (stable: the same legacy id, the same step)."""
    candidate = f"legacy-{raw}"
    if _ID_RE.fullmatch(candidate):
        return candidate
    return f"legacy-{layout.digest(str(raw))[:40]}"


def _plain(value: object) -> object:
    """Return a legacy value in the form the edge validation reads (Timestamps as ISO strings)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def _instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo else None
    return None


def legacy_step(
    raw: object, *, operation: object, field: str, now: datetime, usage_type: str | None = None
) -> Step:
    """Validate one legacy step as `record_steps` would (any age); raise InvalidArgument naming the field."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument.field(field, "must be an object")
    data = {
        "operationId": legacy_operation_id(raw.get("operationId") or operation),
        "usageType": raw.get("usageType") or usage_type,
        "feature": raw.get("feature"),
        "provider": raw.get("provider"),
        "cost": raw.get("cost"),
        "isBillableRun": raw.get("isBillableRun", False),
        "timestamp": _plain(raw.get("timestamp")),
        "metadata": raw.get("metadata") or {},
    }
    return parse_step({k: v for k, v in data.items() if v is not None}, now=now, field=field, any_age=True)


def csv_step(row: Mapping[str, str], *, line: int, now: datetime) -> tuple[str, Step]:
    """Return the user and the step of one `api_usage_log` row; raise InvalidArgument naming the column."""
    field = f"line {line}"
    tokens = {name: (row.get(f"{name}_tokens") or "").strip() for name in ("input", "output")}
    for name, text in tokens.items():
        if text and not text.isdigit():
            raise InvalidArgument.field(f"{field}.{name}_tokens", "must be a whole number")
    billable = (row.get("billable") or "").strip().lower()
    if billable not in _TRUE | _FALSE:
        raise InvalidArgument.field(f"{field}.billable", "must be true or false")
    when = (row.get("timestamp") or "").strip()
    try:  # Postgres exports `2025-10-14 10:04:09.794+00`; a time without a zone is UTC
        instant = datetime.fromisoformat(when)
    except ValueError:
        raise InvalidArgument.field(f"{field}.timestamp", "must be an ISO-8601 date and time") from None
    instant = instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
    usage_type = (row.get("usage_type") or "").strip() or ("AI" if any(tokens.values()) else "API")
    service = (row.get("service") or "").strip()
    metadata: dict[str, Any] = {"legacyId": row.get("id")}
    metadata.update({f"{name}Tokens": int(text) for name, text in tokens.items() if text})
    data = {
        "operationId": legacy_operation_id(f"pg-{(row.get('id') or '').strip()}"),
        "usageType": usage_type,
        "feature": (row.get("endpoint") or "").strip() or service,
        "provider": service,
        "cost": (row.get("cost") or "").strip(),
        "isBillableRun": billable in _TRUE,
        "timestamp": instant.isoformat(),
        "metadata": metadata,
    }
    user = (row.get("user_id") or "").strip()
    if not is_user_id(user):
        raise InvalidArgument.field(
            f"{field}.user_id", "must be a user id (1-128 characters, no / or spaces)"
        )
    return user, parse_step(data, now=now, field=field, any_age=True)


def check_csv_header(columns: Sequence[str] | None) -> None:
    """Refuse a CSV without the required columns (naming them)."""
    missing = [name for name in CSV_REQUIRED if name not in (columns or ())]
    if missing:
        raise InvalidArgument.field("csv", f"missing required column(s): {', '.join(missing)}")


def _fits(writes: Sequence[Write]) -> bool:
    """Return whether writes fit one commit (at most 450 documents, 500 transforms each)."""
    try:
        check_commit(writes)
    except ValueError:
        return False
    return len(writes) <= 450


def _pages(store: ImportStore, group: str) -> Iterator[Document]:
    after: str | None = None
    while page := store.collection_group(group=group, limit=PAGE_SIZE, after=after):
        yield from page
        if len(page) < PAGE_SIZE:
            return
        after = page[-1].path


def _legacy_parts(path: str, leaf: str) -> tuple[UsageType, str, str] | None:
    parts = path.split("/")
    if len(parts) == 4 and parts[0] in LEGACY_KINDS and parts[2] == leaf:
        return LEGACY_KINDS[parts[0]], parts[1], parts[3]
    return None


def is_legacy_session(doc: Document) -> bool:
    """Return whether a document at a session path is an earlier system's (with its steps inside)."""
    return (
        layout.session_ids(doc.path) is not None
        and "tallyShard" not in doc.fields
        and isinstance(doc.fields.get("steps"), list)
    )


class Importer:
    """One import run."""

    def __init__(
        self,
        *,
        store: ImportStore,
        settings: Settings,
        now: datetime,
        dry_run: bool,
        progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.now = now
        self.report = ImportReport(dry_run=dry_run)
        self._progress = progress
        self._shards = plans.ShardPicker()
        self._checks: dict[tuple[str, str, UsageType], MonthlyCheck] = {}
        self._planned: set[tuple[str, str]] = set()  # dry run: steps it would have imported

    def _tick(self, what: str, count: int) -> None:
        if self._progress is not None:
            self._progress(what, count)

    # The legacy monthly totals are read first, so each imported step can be set beside its month.

    def read_monthly(self) -> None:
        """Read every legacy monthly document (compared at the end, never imported)."""
        for doc in _pages(self.store, "monthly"):
            parts = _legacy_parts(doc.path, "monthly")
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

    def _tally_monthly(self, user_id: str, step: Step) -> None:
        check = self._checks.get((user_id, month_key(step.timestamp), step.usage_type))
        if check is not None and step.operation_id not in check.operations:
            check.operations.add(step.operation_id)
            check.imported_nanos += step.cost_nanos

    # Writing

    def _commit(
        self,
        user_id: str,
        steps: Sequence[Step],
        session_id: str | None = None,
        session: Callable[[tuple[Step, ...]], list[Write]] | None = None,
    ) -> int:
        """Import steps (and convert their session) in one commit; return how many steps were new."""
        if self.report.dry_run:
            counted_steps = tuple(steps)  # admitting names would write: a dry run only counts
        else:
            counted_steps, _ = counted(
                store=self.store, caller=IMPORTER, steps=steps, settings=self.settings, now=self.now
            )
        months = sorted({month_key(s.timestamp) for s in counted_steps})
        paths = [layout.step_path(user_id, s.operation_id) for s in counted_steps]
        paths += [layout.user_path(user_id)] + [layout.user_month_path(user_id, m) for m in months]
        state = recording_state(
            self.store.read(paths),
            user_id=user_id,
            session_id=None,
            operation_ids=[s.operation_id for s in counted_steps],
            months=months,
        )
        new = tuple(s for s in counted_steps if s.operation_id not in state.existing_steps)
        if self.report.dry_run:  # remember what this run would write, as a real run finds it written
            new = tuple(s for s in new if (user_id, s.operation_id) not in self._planned)
            self._planned.update((user_id, s.operation_id) for s in new)
            return len(new)
        step_writes: list[Write] = []
        if new:
            commit = plans.RecordingCommit(
                user_id=user_id,
                request_id="import-legacy",
                now=self.now,
                steps=new,
                shard=self._shards.next(self.store.shards),
                user_months=state.user_months,
                stale_months=plans.stale_months(state.usage, self.now),
                limits=limits_of(state.usage, self.settings),
                months_before={m: month_usage(state.usage, m) for m in months},
                step_session_id=session_id,
            )
            step_writes = plans.recording_writes(commit)
        session_writes = session(counted_steps) if session is not None else []
        writes = merged(step_writes + session_writes)
        if _fits(writes):
            self.store.commit(writes)
        else:  # a very large legacy session: its steps first, its conversion last (a rerun completes it)
            for part in batches(step_writes):
                self.store.commit(part)
            if session_writes:
                self.store.commit(merged(session_writes))
        return len(new)

    def import_session(self, doc: Document) -> None:
        """Import one legacy session with its steps, or refuse it whole."""
        ids = layout.session_ids(doc.path)
        assert ids is not None
        user_id, session_id = ids
        data = doc.fields
        try:
            steps = [
                legacy_step(raw, operation=f"{session_id}-{index}", field=f"steps[{index}]", now=self.now)
                for index, raw in enumerate(data["steps"])
            ]
        except InvalidArgument as exc:
            self.report.sessions.refused += 1
            self.report.refused.append(Refused(doc.path, exc.message))
            return
        times = [s.timestamp for s in steps]
        created = _instant(data.get("createdAt")) or min(times, default=self.now)
        last = _instant(data.get("lastUpdatedAt")) or max(times, default=created)
        completed_at = None
        if str(data.get("status", "")).lower() == "completed":
            completed_at = _instant(data.get("completedAt")) or max([last, *times])
        feature = data.get("feature") if isinstance(data.get("feature"), str) else None

        def convert(counted_steps: tuple[Step, ...]) -> list[Write]:
            session = plans.ImportedSession(
                user_id=user_id,
                session_id=session_id,
                version=doc.version,
                feature=feature,
                created_at=created,
                last_at=last,
                completed_at=completed_at,
                steps=counted_steps,
                source=doc.path,
            )
            return plans.imported_session_writes(
                session, now=self.now, shard=self._shards.next(self.store.shards)
            )

        try:
            new = self._commit(user_id, steps, session_id, convert)
        except Contention:  # changed meanwhile (another import converted it): it is no longer legacy
            self.report.sessions.skipped += 1
            return
        self.report.sessions.imported += 1
        self.report.steps.imported += new
        self.report.steps.skipped += len(steps) - new
        for step in steps:
            self._tally_monthly(user_id, step)

    def import_steps(self, user_id: str, steps: Sequence[Step]) -> None:
        """Import standalone steps of one user, a commit per 20."""
        for start in range(0, len(steps), STEPS_PER_COMMIT):
            chunk = steps[start : start + STEPS_PER_COMMIT]
            new = self._commit(user_id, chunk)
            self.report.steps.imported += new
            self.report.steps.skipped += len(chunk) - new
            for step in chunk:
                self._tally_monthly(user_id, step)

    def run_sessions(self) -> None:
        """Import every legacy session (Tally's own sessions are passed over)."""
        done = 0
        for doc in _pages(self.store, layout.SESSIONS):
            if layout.session_ids(doc.path) is None:
                continue
            if not is_legacy_session(doc):
                if doc.fields.get("importedFrom"):
                    self.report.sessions.skipped += 1
                continue
            self.import_session(doc)
            done += 1
            self._tick("sessions", done)

    def run_operations(self) -> None:
        """Import the `ApiUsage|AIUsage/{uid}/operations` logs, user by user."""
        current: str | None = None
        pending: list[Step] = []
        done = 0
        for doc in _pages(self.store, "operations"):
            parts = _legacy_parts(doc.path, "operations")
            if parts is None:
                continue
            usage_type, user_id, operation = parts
            if user_id != current:
                if current is not None:
                    self.import_steps(current, pending)
                current, pending = user_id, []
            try:
                pending.append(
                    legacy_step(
                        doc.fields,
                        operation=operation,
                        field="operation",
                        now=self.now,
                        usage_type=usage_type.value,
                    )
                )
            except InvalidArgument as exc:
                self.report.steps.refused += 1
                self.report.refused.append(Refused(doc.path, exc.message))
            done += 1
            self._tick("operations", done)
        if current is not None:
            self.import_steps(current, pending)

    def run_csv(self, rows: Iterable[Mapping[str, str]], name: str) -> None:
        """Import the rows of an `api_usage_log` export, grouped by user."""
        per_user: dict[str, list[Step]] = {}
        for line, row in enumerate(rows, start=2):
            try:
                user_id, step = csv_step(row, line=line, now=self.now)
            except InvalidArgument as exc:
                self.report.steps.refused += 1
                self.report.refused.append(Refused(f"{name}:{line}", exc.message))
                continue
            per_user.setdefault(user_id, []).append(step)
            if len(per_user[user_id]) >= STEPS_PER_COMMIT:
                self.import_steps(user_id, per_user.pop(user_id))
            self._tick("CSV rows", line - 1)
        for user_id, steps in per_user.items():
            self.import_steps(user_id, steps)


def import_legacy(
    *,
    store: ImportStore,
    settings: Settings,
    now: datetime,
    csv_rows: Iterable[Mapping[str, str]] | None = None,
    csv_name: str = "csv",
    dry_run: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> ImportReport:
    """Import every legacy source; report what was imported, skipped and refused, and the monthly checks."""
    importer = Importer(store=store, settings=settings, now=now, dry_run=dry_run, progress=progress)
    importer.read_monthly()
    importer.run_sessions()
    importer.run_operations()
    if csv_rows is not None:
        importer.run_csv(csv_rows, csv_name)
    return importer.report
