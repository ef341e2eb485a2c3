"""Importing steps: each with every count it makes, in atomic commits retried from a new read."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol, TypeVar

from tally import layout, ports
from tally.config import Settings
from tally.documents import months as month_doc
from tally.documents import plans
from tally.documents import usage as usage_doc
from tally.documents.plan_catalog import catalog_of
from tally.services import admission, mirror, planning
from tally.services.legacy.report import ImportReport, MonthlyCheck
from tally.timeutil import month_key
from tally.values import Caller, Document, RecordingState, Step, UsageType
from tally.writes import Write, check_commit

PAGE_SIZE = 300


STEPS_PER_COMMIT = 20  # at most 20 distinct names of a kind per commit, as for a request


ATTEMPTS = 8  # tries of one commit that loses a race or meets a transient error, each from a new read


BACKOFF_SECONDS = 0.05  # the first retry's longest wait; each next one doubles


IMPORTER = Caller("tally-import-legacy", recorder=True)


REQUEST_ID = "import-legacy"  # the requestId of every step the import writes


_T = TypeVar("_T")


class ImportStore(ports.DocumentStore, Protocol):
    """The store operations the import needs."""

    def collection_group(self, *, group: str, limit: int, after: str | None) -> list[Document]: ...


def fits(writes: Sequence[Write]) -> bool:
    """Return whether writes fit one commit (at most 450 documents, 500 transforms each)."""
    try:
        check_commit(writes)
    except ValueError:
        return False
    return len(writes) <= 450


def pages(store: ImportStore, group: str) -> Iterator[Document]:
    return ports.documents(
        lambda after: store.collection_group(group=group, limit=PAGE_SIZE, after=after), size=PAGE_SIZE
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
class Read:
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


class ImportRun:
    """One import run: what it reports, and the retries, names and months its commits share."""

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
        self.catalog = catalog_of(store.read([layout.plan_catalog_path()])[layout.plan_catalog_path()])
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

    def _tally_monthly(self, user_id: str, step: Step) -> None:
        self._months.add(month_key(step.timestamp))  # reopened at the end, also when imported earlier
        check = self._checks.get((user_id, month_key(step.timestamp), step.usage_type))
        if check is not None and step.operation_id not in check.operations:
            check.operations.add(step.operation_id)
            check.imported_nanos += step.cost_nanos

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

    def _planned_new(self, user_id: str, new: Sequence[Found]) -> set[str]:
        """Return what a dry run would create, remembering it (a real run finds it written)."""
        fresh = {f.operation_id for f in new if (user_id, f.operation_id) not in self._planned}
        self._planned.update((user_id, op) for op in fresh)
        return fresh

    def reopen_months(self) -> None:
        """Reopen the rollups of the final months this run wrote, once (see `month_doc.reopen_writes`)."""
        writes = month_doc.reopen_writes(self._months, now=self.now)
        if writes and not self.report.dry_run:
            self._retrying("reopening the analytics of final months", lambda: self.store.commit(writes))


class StepImporter(ImportRun):
    """Importing steps with their counts."""

    def _read(self, user_id: str, found: Sequence[Found]) -> Read:
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
        return Read(state, recorded)

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
            limits=self.catalog.limits_of(usage_doc.limit_settings(state.usage), self.settings).month,
            months_before={m: usage_doc.month_usage(state.usage, m) for m in months},
            step_session_id=session_id,
        )
        return plans.recording_writes(commit)

    def _commit(self, writes: Sequence[Write], state: RecordingState) -> None:
        """Apply writes in one atomic commit with the user's usage mirror; raise Contention if not applied."""
        mirror.commit(self.store, writes, stale=mirror.MirrorState.of(state.truth).stale)
        self._months.update(str(w.data["month"]) for w in writes if w.path.startswith(layout.PLATFORM_SHARDS))

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

    def import_steps(self, user_id: str, found: Sequence[Found]) -> None:
        """Import standalone steps of one user, a commit per STEPS_PER_COMMIT (each step with its counts)."""
        for start in range(0, len(found), STEPS_PER_COMMIT):
            chunk = found[start : start + STEPS_PER_COMMIT]
            named = self._retrying(chunk[0].source, functools.partial(self._counted, chunk))
            created, recorded = self._store_steps(user_id, named, None)
            self._report_steps(user_id, named, created, recorded)
