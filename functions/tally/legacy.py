"""Import the usage kept by the earlier hand-rolled systems that Tally replaces (seeds 000 and 003).

Sources, all in the same Firestore project except the CSV:
- `SessionUsage/{uid}/sessions/{id}` documents with an embedded `steps` array (ISO-string or
  Timestamp dates, `usageType` in any spelling, float costs, `status` completed or not);
- `ApiUsage|AIUsage/{uid}/operations/{id}` logs, one step each;
- rows of a Postgres `api_usage_log` export (CSV; columns in the README).

Every legacy step becomes a Tally step whose `operationId` is derived from its legacy id
(`legacy-<id>`), so a step found in two sources, or imported twice, is counted once. A
legacy step whose own id (the embedded step's `operationId`, or the operations log's
document id) is the `operationId` of a step Tally already recorded for that user, as when
an app wrote both systems during its migration, is skipped as already recorded: both
paths are read in the same round trip. The legacy monthly documents are not imported
(that would count twice); they are compared with what the legacy steps add up to.

Nothing is ever half-counted: every commit holds step documents together with the
increments they make, atomically. A legacy session becomes a Tally session at the same
path, converted (only if unchanged since read, completed ones finalized once) in the same
commit as its steps when they fit one; a larger one is imported in commits of
`STEPS_PER_COMMIT` steps, each with its own counts, and converted last. A run interrupted
between those commits leaves the session a legacy one, with each step it imported counted
once; a run again skips those steps by id, imports the rest and converts it. A commit that
loses a race or meets a transient error is planned again from a new read. A session with
an unreadable step is refused whole.
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from tally import admission, layout, mirror, planning, plans, ports
from tally.config import Settings
from tally.documents import months as month_doc
from tally.documents import sessions as session_doc
from tally.documents import usage as usage_doc
from tally.errors import InvalidArgument
from tally.fields import is_user_id
from tally.money import MoneyError, nanos_to_usd, usd_to_nanos
from tally.requests import parse_step
from tally.timeutil import month_key
from tally.values import Caller, Contention, Document, RecordingState, Step, UsageType
from tally.writes import Write, check_commit, merged

PAGE_SIZE = 300
STEPS_PER_COMMIT = 20  # at most 20 distinct names of a kind per commit, as for a request
LEGACY_KINDS = {"ApiUsage": UsageType.API, "AIUsage": UsageType.AI}
CSV_REQUIRED = ("id", "user_id", "timestamp", "service", "cost")
CSV_OPTIONAL = ("endpoint", "input_tokens", "output_tokens", "usage_type", "billable")
ATTEMPTS = 8  # tries of one commit that loses a race or meets a transient error, each from a new read
BACKOFF_SECONDS = 0.05  # the first retry's longest wait; each next one doubles
IMPORTER = Caller("tally-import-legacy", recorder=True)
REQUEST_ID = "import-legacy"  # the requestId of every step the import writes
ALREADY_RECORDED = "already recorded by Tally (the same operationId)"
_ID_RE = re.compile(r"[A-Za-z0-9_\-.]{1,128}")
_RESERVED_RE = re.compile(r"__.*__")
_T = TypeVar("_T")
_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n", ""}


class ImportStore(ports.DocumentStore, Protocol):
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


@dataclass(frozen=True)
class Skipped:
    """Something not imported because Tally already counts it, and why (each is also in the counts)."""

    source: str
    reason: str


@dataclass
class Counted:
    """Counts of one kind of thing imported."""

    imported: int = 0
    skipped: int = 0  # already imported
    refused: int = 0
    recorded: int = 0  # skipped: Tally itself already recorded it (the same operationId)


@dataclass
class ImportReport:
    """What an import did (or, with `dry_run`, would do)."""

    dry_run: bool
    sessions: Counted = field(default_factory=Counted)
    steps: Counted = field(default_factory=Counted)
    refused: list[Refused] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # what Tally already recorded, by source
    monthly: list[MonthlyCheck] = field(default_factory=list)

    def summary(self) -> str:
        """Return the summary line."""
        verb = "would import" if self.dry_run else "imported"
        flagged = sum(1 for check in self.monthly if check.differs)
        recorded = (
            f"skipped {self.sessions.recorded} sessions and {self.steps.recorded} steps {ALREADY_RECORDED}; "
            if self.sessions.recorded or self.steps.recorded
            else ""
        )
        return (
            f"import-legacy: {verb} {self.sessions.imported} sessions and {self.steps.imported} steps; "
            f"skipped {self.sessions.skipped} sessions and {self.steps.skipped} steps already imported; "
            f"{recorded}"
            f"refused {self.sessions.refused} sessions and {self.steps.refused} steps; "
            f"{flagged} of {len(self.monthly)} legacy monthly totals differ"
        )

    def skip_recorded(self, source: str, *, session: bool = False) -> None:
        """Report something skipped because Tally itself already recorded it."""
        (self.sessions if session else self.steps).recorded += 1
        self.skipped.append(Skipped(source, ALREADY_RECORDED))


def legacy_operation_id(raw: object) -> str:
    """Return the Tally operationId of a legacy id (stable: the same legacy id, the same step)."""
    candidate = f"legacy-{raw}"
    if _ID_RE.fullmatch(candidate):
        return candidate
    return f"legacy-{layout.digest(str(raw))[:40]}"


def own_operation_id(raw: object) -> str | None:
    """Return the id an app gave a legacy call, if Tally could have recorded the call under it (else None)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    text = str(raw)
    if not _ID_RE.fullmatch(text) or text in {".", ".."} or _RESERVED_RE.fullmatch(text):
        return None
    return text


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
    return ports.documents(
        lambda after: store.collection_group(group=group, limit=PAGE_SIZE, after=after), size=PAGE_SIZE
    )


def _legacy_parts(path: str, leaf: str) -> tuple[UsageType, str, str] | None:
    parts = path.split("/")
    if len(parts) == 4 and parts[0] in LEGACY_KINDS and parts[2] == leaf:
        return LEGACY_KINDS[parts[0]], parts[1], parts[3]
    return None


def is_legacy_session(doc: Document) -> bool:
    """Return whether a document at a session path is an earlier system's (with its steps inside)."""
    return (
        layout.session_ids(doc.path) is not None
        and not session_doc.is_tally_session(doc.fields)
        and isinstance(doc.fields.get("steps"), list)
    )


class ImportStalled(RuntimeError):
    """A commit kept losing races or meeting transient errors; what was committed is whole (run again)."""


@dataclass(frozen=True)
class Found:
    """A legacy step to import: the step, where it was read, and the id its app gave the call."""

    step: Step
    source: str
    own_id: str | None = None  # the call's own id, when Tally could have recorded it under that id

    @property
    def operation_id(self) -> str:
        """Return the Tally operationId the step is imported under."""
        return self.step.operation_id


@dataclass(frozen=True)
class _Read:
    """A user's state as read for some steps, and which of them Tally itself recorded already."""

    state: RecordingState
    recorded: frozenset[str]  # operationIds (legacy-...) of calls Tally recorded under their own ids

    def new(self, found: Iterable[Found]) -> list[Found]:
        """Return the steps neither imported nor recorded by Tally yet."""
        return [
            f
            for f in found
            if f.operation_id not in self.state.existing_steps and f.operation_id not in self.recorded
        ]


@dataclass
class _Progress:
    """What importing one session has done so far, over its attempts (operationIds)."""

    created: set[str] = field(default_factory=set)
    recorded: set[str] = field(default_factory=set)


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.settings = settings
        self.now = now
        self.report = ImportReport(dry_run=dry_run)
        self._progress = progress
        self._sleep = sleep
        self._shards = plans.ShardPicker()
        self._checks: dict[tuple[str, str, UsageType], MonthlyCheck] = {}
        self._planned: set[tuple[str, str]] = set()  # dry run: steps it would have imported
        self._months: set[str] = set()  # months whose platform shards this run wrote

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
        self._months.add(month_key(step.timestamp))  # reopened at the end, also when imported earlier
        check = self._checks.get((user_id, month_key(step.timestamp), step.usage_type))
        if check is not None and step.operation_id not in check.operations:
            check.operations.add(step.operation_id)
            check.imported_nanos += step.cost_nanos

    # Writing

    def _retrying(self, what: str, attempt: Callable[[], _T]) -> _T:
        """Run an attempt (each reads anew) until no commit of it loses a race or meets a transient error."""
        return ports.retrying(
            attempt,
            attempts=ATTEMPTS,
            sleep=self._sleep,
            backoff=BACKOFF_SECONDS,
            exhausted=lambda: ImportStalled(
                f"{what}: {ATTEMPTS} commits in a row lost a race or met a transient error; "
                "everything committed is whole: run the import again"
            ),
        )

    def _counted(self, found: Sequence[Found]) -> list[Found]:
        """Return the steps with the names they count under (a dry run admits none: that would write)."""
        if self.report.dry_run:
            return list(found)
        steps, _ = admission.counted(
            store=self.store,
            caller=IMPORTER,
            steps=[f.step for f in found],
            settings=self.settings,
            now=self.now,
        )
        return [replace(f, step=s) for f, s in zip(found, steps, strict=True)]

    def _read(self, user_id: str, found: Sequence[Found]) -> _Read:
        """Read in one round trip the steps, the ones Tally may have under the calls' own ids, the user's."""
        months = sorted({month_key(f.step.timestamp) for f in found})
        own = {f.operation_id: layout.step_path(user_id, f.own_id) for f in found if f.own_id is not None}
        paths = [layout.step_path(user_id, f.operation_id) for f in found]
        paths += [*own.values(), layout.usage_path(user_id)]
        paths += [layout.user_month_path(user_id, m) for m in months]
        docs = self.store.read(paths)
        state = planning.recording_state(
            docs,
            user_id=user_id,
            session_id=None,
            operation_ids=[f.operation_id for f in found],
            months=months,
        )
        recorded = frozenset(
            op
            for op, path in own.items()
            if docs[path].exists and docs[path].fields.get("requestId") != REQUEST_ID  # not one it imported
        )
        return _Read(state, recorded)

    def _writes(
        self, user_id: str, steps: Sequence[Step], state: RecordingState, session_id: str | None
    ) -> list[Write]:
        """Return the writes creating steps together with every increment they make (none without steps)."""
        if not steps:
            return []
        months = sorted({month_key(s.timestamp) for s in steps})
        commit = plans.RecordingCommit(
            user_id=user_id,
            request_id=REQUEST_ID,
            now=self.now,
            steps=tuple(steps),
            shard=self._shards.next(self.store.shards),
            user_months=state.user_months,
            stale_months=usage_doc.stale_months(state.usage, self.now),
            limits=usage_doc.limits_of(state.usage, self.settings),
            months_before={m: usage_doc.month_usage(state.usage, m) for m in months},
            step_session_id=session_id,
        )
        return plans.recording_writes(commit)

    def _commit(self, writes: Sequence[Write], state: RecordingState) -> None:
        """Apply writes in one atomic commit with the user's usage mirror; raise Contention if not applied."""
        mirror.commit(self.store, writes, stale=mirror.MirrorState.of(state.truth).stale)
        self._months.update(str(w.data["month"]) for w in writes if w.path.startswith(layout.PLATFORM_SHARDS))

    def reopen_months(self) -> None:
        """Reopen the rollups of the final months this run wrote, once (see `month_doc.reopen_writes`)."""
        writes = month_doc.reopen_writes(self._months, now=self.now)
        if writes and not self.report.dry_run:
            self._retrying("reopening the analytics of final months", lambda: self.store.commit(writes))

    def _planned_new(self, user_id: str, new: Sequence[Found]) -> set[str]:
        """Return what a dry run would create, remembering it (a real run finds it written)."""
        fresh = {f.operation_id for f in new if (user_id, f.operation_id) not in self._planned}
        self._planned.update((user_id, op) for op in fresh)
        return fresh

    def _store_steps(
        self, user_id: str, found: Sequence[Found], session_id: str | None
    ) -> tuple[set[str], frozenset[str]]:
        """Create the new ones of at most STEPS_PER_COMMIT steps with their counts, in one atomic commit.

        Return the steps it created and those Tally had recorded itself. A commit that loses a
        race or meets a transient error is planned again from a new read, so steps created
        meanwhile (by a commit whose answer was lost, or by another import) are never counted twice.
        """
        tried: set[str] = set()

        def attempt() -> tuple[set[str], frozenset[str]]:
            read = self._read(user_id, found)
            new = read.new(found)
            created = tried & set(read.state.existing_steps)  # by an earlier attempt whose answer was lost
            if self.report.dry_run:
                return self._planned_new(user_id, new), read.recorded
            if new:
                tried.update(f.operation_id for f in new)
                self._commit(self._writes(user_id, [f.step for f in new], read.state, session_id), read.state)
            return created | {f.operation_id for f in new}, read.recorded - created

        return self._retrying(found[0].source if found else user_id, attempt)

    def _report_steps(
        self, user_id: str, found: Sequence[Found], created: set[str], recorded: Iterable[str]
    ) -> None:
        """Count steps imported, skipped as imported before, and skipped as recorded by Tally."""
        already = set(recorded) - created
        self.report.steps.imported += len(created)
        for f in found:
            if f.operation_id in already:
                self.report.skip_recorded(f.source)
            elif f.operation_id not in created:
                self.report.steps.skipped += 1
            self._tally_monthly(user_id, f.step)

    # Sessions

    def _session_steps(self, doc: Document) -> list[Found]:
        """Return a legacy session's steps; raise InvalidArgument naming the first unreadable one."""
        ids = layout.session_ids(doc.path)
        assert ids is not None
        steps = doc.fields["steps"]
        return [
            Found(
                legacy_step(raw, operation=f"{ids[1]}-{index}", field=f"steps[{index}]", now=self.now),
                f"{doc.path} steps[{index}]",
                own_operation_id(raw.get("operationId")) if isinstance(raw, Mapping) else None,
            )
            for index, raw in enumerate(steps)
        ]

    def _conversion(self, doc: Document, found: Sequence[Found], kept: Sequence[Found]) -> list[Write]:
        """Return the writes converting a legacy session whose steps in Tally are `kept` (version-checked)."""
        ids = layout.session_ids(doc.path)
        assert ids is not None
        data = doc.fields
        times = [f.step.timestamp for f in found]
        created = _instant(data.get("createdAt")) or min(times, default=self.now)
        last = _instant(data.get("lastUpdatedAt")) or max(times, default=created)
        completed_at = None
        if str(data.get("status", "")).lower() == "completed":
            completed_at = _instant(data.get("completedAt")) or max([last, *times])
        session = plans.ImportedSession(
            user_id=ids[0],
            session_id=ids[1],
            version=doc.version,
            feature=data.get("feature") if isinstance(data.get("feature"), str) else None,
            created_at=created,
            last_at=last,
            completed_at=completed_at,
            steps=tuple(f.step for f in kept),
            source=doc.path,
        )
        return plans.imported_session_writes(
            session, now=self.now, shard=self._shards.next(self.store.shards)
        )

    def _import_session_once(self, doc: Document, found: Sequence[Found], done: _Progress) -> bool:
        """Import a session's steps and convert it, from one read of it; return False if Tally had every call.

        Its steps and its conversion go in one commit when they fit; otherwise the steps go in
        commits of STEPS_PER_COMMIT, each with its own counts, and the conversion last, so a stop
        anywhere leaves every committed step counted once and the session legacy (a rerun ends it).
        Raise Contention when the conversion was not applied (read the session again).
        """
        ids = layout.session_ids(doc.path)
        assert ids is not None
        user_id, session_id = ids
        found = self._counted(found)
        read = self._read(user_id, found)
        done.recorded |= read.recorded
        kept = [f for f in found if f.operation_id not in done.recorded]
        if found and not kept:
            return False  # Tally has every call, in its own session: a conversion would count it twice
        new = read.new(kept)
        if self.report.dry_run:
            done.created |= self._planned_new(user_id, new)
            return True
        writes = merged(
            self._writes(user_id, [f.step for f in new], read.state, session_id)
            + self._conversion(doc, found, kept)
        )
        if _fits(writes):
            self._commit(writes, read.state)
            done.created |= {f.operation_id for f in new}
            return True
        for start in range(0, len(kept), STEPS_PER_COMMIT):
            created, recorded = self._store_steps(user_id, kept[start : start + STEPS_PER_COMMIT], session_id)
            done.created |= created
            done.recorded |= recorded
        kept = [f for f in kept if f.operation_id not in done.recorded]
        self._commit(merged(self._conversion(doc, found, kept)), self._read(user_id, []).state)
        return True

    def import_session(self, doc: Document) -> None:
        """Import a legacy session with its steps (the rest, if a run stopped halfway), or refuse it whole."""
        ids = layout.session_ids(doc.path)
        assert ids is not None
        done = _Progress()
        for tries in range(1, ATTEMPTS + 1):
            try:
                found = self._session_steps(doc)
            except InvalidArgument as exc:
                self.report.sessions.refused += 1
                self.report.refused.append(Refused(doc.path, exc.message))
                return
            try:
                converted = self._import_session_once(doc, found, done)
            except Contention:  # a commit was not applied, or the session changed since read
                if tries < ATTEMPTS:
                    self._sleep(random.uniform(0, BACKOFF_SECONDS * 2**tries))  # noqa: S311 - jitter
                doc = self.store.read([doc.path])[doc.path]
                if not is_legacy_session(doc):  # converted meanwhile (another import): no longer legacy
                    self.report.sessions.skipped += 1
                    self.report.steps.imported += len(done.created)
                    return
                continue
            if converted:
                self.report.sessions.imported += 1
            else:
                self.report.skip_recorded(doc.path, session=True)
            self._report_steps(ids[0], found, done.created, done.recorded)
            return
        raise ImportStalled(
            f"{doc.path}: {ATTEMPTS} attempts in a row lost a race or met a transient error; "
            "everything committed is whole: run the import again"
        )

    def import_steps(self, user_id: str, found: Sequence[Found]) -> None:
        """Import standalone steps of one user, a commit per STEPS_PER_COMMIT (each step with its counts)."""
        for start in range(0, len(found), STEPS_PER_COMMIT):
            chunk = found[start : start + STEPS_PER_COMMIT]
            named = self._retrying(chunk[0].source, functools.partial(self._counted, chunk))
            created, recorded = self._store_steps(user_id, named, None)
            self._report_steps(user_id, named, created, recorded)

    def run_sessions(self) -> None:
        """Import every legacy session (Tally's own sessions are passed over)."""
        done = 0
        for doc in _pages(self.store, layout.SESSIONS):
            if layout.session_ids(doc.path) is None:
                continue
            if not is_legacy_session(doc):
                if session_doc.is_imported(doc.fields):
                    self.report.sessions.skipped += 1
                    # an earlier run may have stopped before reopening
                    self._months.update(month_key(at) for at in session_doc.step_times(doc.fields))
                continue
            self.import_session(doc)
            done += 1
            self._tick("sessions", done)

    def run_operations(self) -> None:
        """Import the `ApiUsage|AIUsage/{uid}/operations` logs, user by user."""
        current: str | None = None
        pending: list[Found] = []
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
