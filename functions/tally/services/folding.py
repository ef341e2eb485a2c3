"""Platform months folded from their shards into rollups, on demand (no schedule, no idle cost).

A rollup is exact as of its `asOf`: the shards are read in one batch, a snapshot at
the server's read time, and summed; each commit touches one shard per month, so
every step is wholly in it or wholly out. Readers use a rollup younger than `FRESH_SECONDS`
and fold again otherwise, so keeping analytics fresh costs one read per shard per
minute only while somebody reads, and nothing at all while nobody does.

The month an admin asks for is also ranked when folded: its top users and free-tier
candidates come from two indexed queries at the shards' read time, and are kept in the
rollup, so the answer is one consistent snapshot and a call that finds a young rollup
runs no query at all.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from tally import layout, ports
from tally.documents.months import (
    ALERT_ROWS,
    FREE_TIER_PERCENT,
    FREE_TIER_ROWS,
    TOP_USERS_KEPT,
    MonthAggregate,
    Ranking,
    Rollup,
    is_final,
    rollup_of,
    rollup_write,
)
from tally.values import Contention, Document, Version

FRESH_SECONDS = 60
MARGIN = timedelta(seconds=1)  # fold a little early, so an answer is never more than 60 s old


class FoldStore(ports.DocumentStore, Protocol):
    """The store operations folding needs: the port's, nothing more."""


class RankStore(FoldStore, Protocol):
    """The store operations folding with a ranking needs (two indexed queries)."""

    def top_users(self, *, month: str, limit: int, read_time: datetime | None = None) -> list[Document]: ...

    def free_tier(
        self, *, month: str, min_percent: float, limit: int, read_time: datetime | None = None
    ) -> list[Document]: ...

    def month_alerts(self, *, month: str, limit: int) -> list[Document]: ...


def needs_fold(rollup: Rollup, now: datetime) -> bool:
    """Return whether a rollup is too old to answer for its month."""
    if rollup.as_of is None:
        return True
    if is_final(rollup.month, rollup.as_of):
        return False  # final: only an import or a repair can change the month, and those reopen it
    return now - rollup.as_of > timedelta(seconds=FRESH_SECONDS) - MARGIN


def rank(store: RankStore, month: str, read_time: datetime | None) -> Ranking:
    """Rank a month's users as of `read_time`: the top by cost, those near a limit; and its latest alerts."""
    top = store.top_users(month=month, limit=TOP_USERS_KEPT, read_time=read_time)
    near = store.free_tier(
        month=month, min_percent=FREE_TIER_PERCENT, limit=FREE_TIER_ROWS, read_time=read_time
    )
    latest = store.month_alerts(month=month, limit=ALERT_ROWS)
    return Ranking.of(
        (doc.fields for doc in top), (doc.fields for doc in near), (doc.fields for doc in latest)
    )


def fold_months(
    store: FoldStore,
    versions: Mapping[str, Version],
    *,
    now: datetime,
    ranker: RankStore | None = None,
    ranked: Collection[str] = (),
) -> dict[str, Rollup]:
    """Fold months now (all shards in one read), rank those in `ranked`, and store the rollups.

    `ranker` is the store again, typed for the queries ranking needs. A lost race is
    fine: another fold stored an equally exact rollup first.
    """
    paths = {month: [layout.shard_path(month, shard) for shard in range(store.shards)] for month in versions}
    docs = store.read([path for month_paths in paths.values() for path in month_paths])
    as_of = max((doc.read_at for doc in docs.values() if doc.read_at is not None), default=now)
    folded = {
        month: MonthAggregate.fold(docs[path].fields for path in month_paths if docs[path].exists)
        for month, month_paths in paths.items()
    }
    rankings = {m: rank(ranker, m, as_of) for m in versions if ranker is not None and m in ranked}
    writes = [
        rollup_write(
            month=month,
            aggregate=aggregate,
            as_of=as_of,
            shards=store.shards,
            version=versions[month],
            ranking=rankings.get(month),
        )
        for month, aggregate in folded.items()
    ]
    try:
        store.commit(writes)
    except Contention:  # another fold stored some rollup first: store the others on their own
        store.commit_each([[write] for write in writes])
    return {month: Rollup(month, agg, as_of, None, rankings.get(month)) for month, agg in folded.items()}


def aggregate_now(store: FoldStore, month: str) -> MonthAggregate:
    """Return a month's shards summed as they are now (one read per shard; no rollup is stored)."""
    paths = [layout.shard_path(month, shard) for shard in range(store.shards)]
    docs = store.read(paths)
    return MonthAggregate.fold(docs[path].fields for path in paths if docs[path].exists)


def fold(store: FoldStore, month: str, *, now: datetime, version: Version = None) -> Rollup:
    """Fold one month now and store its rollup, without a ranking (the next reader ranks it)."""
    return fold_months(store, {month: version}, now=now)[month]


def fold_ranked(store: RankStore, month: str, *, now: datetime, version: Version = None) -> Rollup:
    """Fold and rank one month now, and store its rollup."""
    return fold_months(store, {month: version}, now=now, ranker=store, ranked=[month])[month]


def rollups(
    store: RankStore,
    months: Sequence[str],
    *,
    now: datetime,
    fresh: Sequence[str] = (),
    ranked: Sequence[str] = (),
) -> tuple[dict[str, Rollup], int]:
    """Return the rollups of `months` and the documents read.

    Stale ones are folded again, as are those in `fresh`, and those in `ranked` stored
    without a ranking.
    """
    docs = store.read([layout.rollup_path(month) for month in months])
    found = {month: rollup_of(month, docs[layout.rollup_path(month)]) for month in months}
    stale = {
        month: r.version
        for month, r in found.items()
        if month in fresh or needs_fold(r, now) or (month in ranked and r.ranking is None)
    }
    if stale:
        found.update(fold_months(store, stale, now=now, ranker=store, ranked=ranked))
    ranking_reads = sum(ranking.reads() for m in stale if (ranking := found[m].ranking) is not None)
    return found, len(months) + len(stale) * store.shards + ranking_reads
