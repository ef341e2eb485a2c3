"""The `usage` map of `users/{uid}`: a copy of `TallyUsers/{uid}.usage` that the app can read and listen to.

Tally counts each user in its own document, `TallyUsers/{uid}` (the truth; only the functions
write it), and mirrors its `usage` map into the app's `users/{uid}` with the same increments,
in the same commit. The rest of `users/{uid}` belongs to the app and to the user, who may
fill it up to Firestore's 1 MiB (or 40,000 index entries): a commit naming it then fails
whole (`Rejected`). So a commit is made again without the mirror, marking it stale
(`mirrorStale`) in the truth. One rule keeps the copy honest: every commit that writes the
truth either writes the same increments into the mirror or marks it stale. A stale mirror
is rewritten whole from the truth, conditional on the truth being unchanged since read (so no
increment can slip between), by the next request of that user (at most once a minute while
it keeps failing) and by `reconcile --fix`. No total, limit or gate decision reads the mirror.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from tally import layout, ports
from tally.documents import usage as usage_doc
from tally.documents.usage import USAGE
from tally.values import Contention, Document, Rejected
from tally.writes import DELETE, CommitResult, Op, Replace, Write, merge_payload

STALE = "mirrorStale"
FAILED_AT = "mirrorFailedAt"
RETRY_AFTER = timedelta(minutes=1)  # a mirror that would not fit is tried again at most this often


class MirrorStore(ports.DocumentStore, Protocol):
    """The store operations the mirror needs: the port's, nothing more."""


@dataclass(frozen=True)
class MirrorState:
    """Whether a user's mirror is behind the truth, and when rewriting it last failed."""

    stale: bool = False
    failed_at: datetime | None = None

    @classmethod
    def of(cls, truth: Mapping[str, Any]) -> MirrorState:
        """Read the state from the truth document's fields."""
        failed = truth.get(FAILED_AT)
        return cls(truth.get(STALE) is True, failed if isinstance(failed, datetime) else None)

    def due(self, now: datetime) -> bool:
        """Return whether a stale mirror should be rewritten now."""
        return self.stale and (self.failed_at is None or now - self.failed_at >= RETRY_AFTER)


def warning(user_id: str) -> dict[str, str]:
    """Return the response warning of a request whose usage could not be mirrored."""
    return {
        "field": layout.user_path(user_id),
        "problem": "the usage map could not be written into this document (it is at a Firestore limit); "
        "the usage is recorded and counted, and the map is rewritten once it fits",
    }


def _owner(path: str) -> str | None:
    collection, _, user_id = path.partition("/")
    return user_id if collection == layout.USAGE and user_id and "/" not in user_id else None


def mirrored(writes: Sequence[Write]) -> list[Write]:
    """Return the writes with a copy of each write of a `usage` truth into its user's mirror."""
    copies = [
        Write(layout.user_path(user_id), Op.MERGE, merge_payload({USAGE: write.data[USAGE]}))
        for write in writes
        if (user_id := _owner(write.path)) is not None and write.data.get(USAGE)
    ]
    return [*writes, *copies]


def unmirrored(writes: Sequence[Write]) -> list[Write]:
    """Return the writes with each truth they write marked: its mirror misses these increments."""
    return [
        Write(write.path, write.op, {**write.data, STALE: True}, write.version)
        if _owner(write.path) is not None and write.op is not Op.DELETE
        else write
        for write in writes
    ]


@dataclass(frozen=True)
class Committed:
    """What a commit returned, and whether it wrote the mirror too."""

    result: CommitResult
    mirrored: bool


def commit(store: MirrorStore, writes: Sequence[Write], *, stale: bool = False) -> Committed:
    """Commit writes with their mirror; without it (marked stale) if the mirror is stale or cannot be written.

    `Contention` propagates: the caller reads again and replans, as for any lost race.
    """
    if not stale:
        try:
            return Committed(store.commit(mirrored(writes)), mirrored=True)
        except Rejected:
            pass  # users/{uid} is at a limit: count without it
    return Committed(store.commit(unmirrored(writes)), mirrored=False)


def commit_each(store: MirrorStore, groups: Sequence[Sequence[Write]]) -> list[bool]:
    """Commit each group on its own with its mirror (without it where the mirror cannot be written)."""
    applied = store.commit_each([mirrored(group) for group in groups])
    again = [index for index, done in enumerate(applied) if not done]
    # A group that lost a race fails again on its own preconditions; one that was rejected goes in.
    for index, done in zip(again, store.commit_each([unmirrored(groups[i]) for i in again]), strict=True):
        applied[index] = done
    return applied


def repair_writes(truth: Document) -> list[Write]:
    """Return the rewrite of a mirror from its truth, applied only if the truth is unchanged since read."""
    user_id = _owner(truth.path)
    assert user_id is not None
    assert truth.exists
    usage = dict(usage_doc.usage_of(truth.fields))
    return [
        Write(layout.user_path(user_id), Op.MERGE, {USAGE: Replace(usage)}),
        Write(truth.path, Op.UPDATE, {STALE: False, FAILED_AT: DELETE}, version=truth.version),
    ]


def repair(store: MirrorStore, user_id: str, *, now: datetime, force: bool = False) -> bool:
    """Rewrite a user's stale mirror from the truth when due (or `force`); return whether it is current."""
    path = layout.usage_path(user_id)
    truth = store.read([path])[path]
    state = MirrorState.of(truth.fields)
    if not truth.exists or not state.stale:
        return True
    if not force and not state.due(now):
        return False
    try:
        store.commit(repair_writes(truth))
    except Rejected:
        _note_failure(store.commit, truth, now)
        return False
    except Contention:
        return False  # the truth moved on meanwhile: the next writer repairs it from the new state
    return True


def _note_failure(send: Callable[[Sequence[Write]], CommitResult], truth: Document, now: datetime) -> None:
    with contextlib.suppress(Contention):  # a concurrent writer got there first; the next one tries again
        send([Write(truth.path, Op.UPDATE, {FAILED_AT: now}, version=truth.version)])
