"""Importing an earlier system's sessions: their steps, then the conversion into a Tally session."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tally import layout
from tally.documents import plans
from tally.documents import sessions as session_doc
from tally.errors import InvalidArgument
from tally.services.legacy.report import Refused
from tally.services.legacy.sources import instant, is_legacy_session, legacy_step, own_operation_id
from tally.services.legacy.steps import (
    ATTEMPTS,
    BACKOFF_SECONDS,
    STEPS_PER_COMMIT,
    Found,
    ImportStalled,
    StepImporter,
    fits,
    pages,
)
from tally.timeutil import month_key
from tally.values import Contention, Document
from tally.writes import Write, merged


@dataclass
class Progress:
    """What importing one session has done so far, over its attempts (operationIds)."""

    created: set[str] = field(default_factory=set)
    recorded: set[str] = field(default_factory=set)


class SessionImporter(StepImporter):
    """Importing sessions."""

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
        created = instant(data.get("createdAt")) or min(times, default=self.now)
        last = instant(data.get("lastUpdatedAt")) or max(times, default=created)
        completed_at = None
        if str(data.get("status", "")).lower() == "completed":
            completed_at = instant(data.get("completedAt")) or max([last, *times])
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

    def _import_session_once(self, doc: Document, found: Sequence[Found], done: Progress) -> bool:
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
        if fits(writes):
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
        done = Progress()
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

    def run_sessions(self) -> None:
        """Import every legacy session (Tally's own sessions are passed over)."""
        done = 0
        for doc in pages(self.store, layout.SESSIONS):
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
