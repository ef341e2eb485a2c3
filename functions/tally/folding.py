"""Platform months folded from their shards into rollups, on demand (no schedule, no idle cost).

A rollup is exact as of its `asOf`: the shards are read in one batch, a snapshot at
the server's read time, and summed; each commit touches one shard per month, so
every step is wholly in it or wholly out. Readers use a rollup younger than `FRESH_SECONDS`
and fold again otherwise, so keeping analytics fresh costs one read per shard per
minute only while somebody reads, and nothing at all while nobody does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from tally import layout, plans
from tally.rollup import MonthAggregate, Rollup
from tally.timeutil import MAX_AGE, month_end
from tally.values import Contention, Document, Version
from tally.writes import CommitResult, Write

FRESH_SECONDS = 60
MARGIN = timedelta(seconds=1)  # fold a little early, so an answer is never more than 60 s old
FINAL_AFTER = MAX_AGE + timedelta(days=1)  # no step can land in a month this long after it ended


class FoldStore(Protocol):
    """The store operations folding needs."""

    shards: int

    def read(self, paths: Sequence[str], *, read_time: datetime | None = None) -> dict[str, Document]: ...

    def commit(self, writes: Sequence[Write]) -> CommitResult: ...

    def commit_each(self, groups: Sequence[Sequence[Write]], *, workers: int = 8) -> list[bool]: ...


def rollup_of(month: str, doc: Document) -> Rollup:
    """Read a stored rollup (or the empty one of a month never folded)."""
    if not doc.exists:
        return Rollup.missing(month)
    as_of = doc.fields.get("asOf")
    return Rollup(month, MonthAggregate.from_document(doc.fields), as_of, doc.version)


def needs_fold(rollup: Rollup, now: datetime) -> bool:
    """Return whether a rollup is too old to answer for its month."""
    if rollup.as_of is None:
        return True
    if rollup.as_of >= month_end(rollup.month) + FINAL_AFTER:
        return False  # final: nothing can change the month any more (except reconcile, which refolds)
    return now - rollup.as_of > timedelta(seconds=FRESH_SECONDS) - MARGIN


def fold_months(store: FoldStore, versions: Mapping[str, Version], *, now: datetime) -> dict[str, Rollup]:
    """Fold months now (all shards in one read) and store their rollups (a lost race is fine)."""
    paths = {month: [layout.shard_path(month, shard) for shard in range(store.shards)] for month in versions}
    docs = store.read([path for month_paths in paths.values() for path in month_paths])
    as_of = max((doc.read_at for doc in docs.values() if doc.read_at is not None), default=now)
    folded = {
        month: MonthAggregate.fold(docs[path].fields for path in month_paths if docs[path].exists)
        for month, month_paths in paths.items()
    }
    writes = [
        plans.rollup_write(
            month=month, aggregate=aggregate, as_of=as_of, shards=store.shards, version=versions[month]
        )
        for month, aggregate in folded.items()
    ]
    try:
        store.commit(writes)
    except Contention:  # another fold stored some rollup first: store the others on their own
        store.commit_each([[write] for write in writes])
    return {month: Rollup(month, aggregate, as_of, None) for month, aggregate in folded.items()}


def fold(store: FoldStore, month: str, *, now: datetime, version: Version = None) -> Rollup:
    """Fold one month now and store its rollup."""
    return fold_months(store, {month: version}, now=now)[month]


def rollups(
    store: FoldStore, months: Sequence[str], *, now: datetime, fresh: Sequence[str] = ()
) -> tuple[dict[str, Rollup], int]:
    """Return the rollups of `months`, folding stale ones (and those in `fresh`); and the documents read."""
    docs = store.read([layout.rollup_path(month) for month in months])
    found = {month: rollup_of(month, docs[layout.rollup_path(month)]) for month in months}
    stale = {month: r.version for month, r in found.items() if month in fresh or needs_fold(r, now)}
    if stale:
        found.update(fold_months(store, stale, now=now))
    return found, len(months) + len(stale) * store.shards
