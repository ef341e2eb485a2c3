"""Convert data written by Tally before v3 to the current layout (idempotent; safe to run again).

v3: a user's usage is counted in Tally's own `TallyUsers/{uid}` (the truth) and mirrored into
`users/{uid}.usage`; before v3 the map in `users/{uid}` was the only copy. Each user's
map is adopted into the truth: every counter of the truth is raised by the difference
between the two, read at one instant and applied only if the truth is unchanged since, so
whatever v3 functions counted in the truth before the migration ran is kept, never doubled
(they wrote the same increments into the map). The truth is then marked `adopted`.

Before v2, the platform's months lived in `TallyPlatformMonths/{M}-sNN` (with a map of
every active user's uid), users' months in `TallyUserMonths/{M}_{uid}` and, with their
breakdowns, forever in `users/{uid}.usage.months`; sessions had no sweep shard. The
step documents are the same in both layouts, so each month found in the old platform
documents is rebuilt by `reconcile --fix`; then the old documents are deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tally import layout, ports
from tally.config import Settings
from tally.documents import limits as limits_doc
from tally.documents import sessions as session_doc
from tally.documents import usage as usage_doc
from tally.services import plan_claims
from tally.services.mirror import MirrorState
from tally.services.reconcile import ReconcileStore, reconcile
from tally.values import Contention, Document
from tally.writes import DELETE, Increment, Op, Write, leaves

PAGE_SIZE = 300
ADOPTED = "adopted"  # on TallyUsers/{uid}: the map of users/{uid} written before v3 is counted in it


class MigrateStore(ReconcileStore, Protocol):
    """The store operations the migration needs."""

    def collection_group(self, *, group: str, limit: int, after: str | None) -> list[Document]: ...


@dataclass
class MigrationReport:
    """What the migration changed."""

    sessions: int = 0
    users: int = 0
    adopted: int = 0
    not_adopted: list[str] = field(default_factory=list)  # truths whose mirror is stale: reconcile them
    months: list[str] = field(default_factory=list)
    repaired: int = 0
    deleted: int = 0

    def summary(self) -> str:
        """Return the summary line."""
        return (
            f"migrate: {self.sessions} sessions given a sweep shard or the open mark, "
            f"{self.users} user documents tidied, "
            f"{self.adopted} users' usage adopted into {layout.USAGE}, "
            f"{len(self.months)} months rebuilt ({', '.join(self.months) or 'none'}) with {self.repaired} "
            f"repairs, {self.deleted} old documents deleted"
        )


def _pages(store: MigrateStore, group: str) -> Iterator[Document]:
    return ports.documents(
        lambda after: store.collection_group(group=group, limit=PAGE_SIZE, after=after), size=PAGE_SIZE
    )


def _commit_each(store: MigrateStore, groups: Sequence[Sequence[Write]]) -> int:
    return sum(store.commit_each(groups))


def user_tidying(doc: Document, now: datetime) -> list[Write]:
    """Return the writes that bring an old `users/{uid}.usage` to v2 (months kept, breakdowns moved)."""
    usage = usage_doc.usage_of(doc.fields)
    months = usage_doc.months_of(usage)
    kept = set(usage_doc.kept_months(now))
    data: dict[str, Any] = {}
    for month, fields in months.items():
        if month not in kept:
            data[month] = DELETE
        elif isinstance(fields, dict):
            old = {key: DELETE for key in ("features", "providers") if key in fields}
            if old:
                data[month] = old
    writes = []
    if data:
        months_at = {usage_doc.USAGE: {usage_doc.MONTHS: data}}
        writes.append(Write(doc.path, Op.UPDATE, months_at, version=doc.version))
    limits = limits_doc.stored(usage.get(usage_doc.LIMITS) or {})
    if limits is not None:
        writes.append(usage_doc.limits_copy_write(doc.path.split("/")[1], limits_doc.fields(limits)))
    return writes


def _numbers(data: Mapping[str, Any]) -> dict[tuple[str, ...], int]:
    return {
        path: value for path, value in leaves(data) if isinstance(value, int) and not isinstance(value, bool)
    }


def adoption_writes(user: Document, truth: Document) -> list[Write]:
    """Return the writes adopting a user's `usage` map into the truth (none once adopted, or with no map)."""
    usage = user.fields.get(usage_doc.USAGE)
    if truth.fields.get(ADOPTED) is True or not isinstance(usage, Mapping):
        return []
    mirror, counted = _numbers(usage), _numbers(usage_doc.usage_of(truth.fields))
    data: dict[str, Any] = {"userId": layout.user_id_of(user.path), ADOPTED: True}
    for path in sorted(set(mirror) | set(counted)):
        node = data.setdefault(usage_doc.USAGE, {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = Increment(mirror.get(path, 0) - counted.get(path, 0))
    if not truth.exists:
        return [Write(truth.path, Op.CREATE, data)]
    return [Write(truth.path, Op.UPDATE, data, version=truth.version)]


def adopt(store: MigrateStore, users: Sequence[Document], report: MigrationReport) -> None:
    """Adopt each user's map into the truth; a truth that moved meanwhile is left for the next run.

    Each user's map and truth are read again together, in one batch (one snapshot), and the
    write is conditional on the truth being unchanged since: every v3 commit writes both (or
    marks the truth stale), so a commit between the read and the write makes it fail. A
    truth whose mirror is stale holds increments the map never got, so the difference would
    undercount: it is not adopted, and reported (reconcile recomputes it from the steps).
    """
    ids = [layout.user_id_of(doc.path) for doc in users]
    docs = store.read([path for uid in ids for path in (layout.user_path(uid), layout.usage_path(uid))])
    groups = []
    for uid in ids:
        truth = docs[layout.usage_path(uid)]
        if MirrorState.of(truth.fields).stale and truth.fields.get(ADOPTED) is not True:
            report.not_adopted.append(uid)
            continue
        if writes := adoption_writes(docs[layout.user_path(uid)], truth):
            groups.append(writes)
    report.adopted += _commit_each(store, groups)


def migrate(
    *,
    store: MigrateStore,
    settings: Settings,
    now: datetime,
    progress: Callable[[str], None] | None = None,
    claims: plan_claims.ClaimsLookup | None = None,
) -> MigrationReport:
    """Bring data written before v2 to the v2 layout (`claims`: Auth's, for reconcile's rebuild)."""
    report = MigrationReport()
    say = progress or (lambda _: None)
    upgrades = []
    for doc in _pages(store, layout.SESSIONS):
        ids = layout.session_ids(doc.path)
        if ids is None or session_doc.STATS not in doc.fields:
            continue
        upgrade: dict[str, Any] = {}
        if not session_doc.is_tally_session(doc.fields):
            upgrade[session_doc.SHARD] = layout.sweep_shard(*ids)
        if not session_doc.is_finalized(doc.fields) and session_doc.OPEN not in doc.fields:
            upgrade[session_doc.OPEN] = True  # v3: marks a session its finalization has not counted yet
        if upgrade:
            upgrades.append([Write(doc.path, Op.UPDATE, upgrade, version=doc.version)])
    report.sessions = _commit_each(store, upgrades)
    say(f"sessions: {report.sessions} given a sweep shard or the open mark")
    tidy = [
        writes
        for doc in _pages(store, layout.USERS)
        if doc.path.count("/") == 1 and (writes := user_tidying(doc, now))
    ]
    report.users = _commit_each(store, tidy)
    say(f"users: {report.users} documents tidied")
    page: list[Document] = []
    for doc in _pages(store, layout.USERS):
        if doc.path.count("/") == 1 and usage_doc.USAGE in doc.fields:
            page.append(doc)
        if len(page) >= PAGE_SIZE:
            adopt(store, page, report)
            page = []
    if page:
        adopt(store, page, report)
    say(f"users: {report.adopted} users' usage adopted into {layout.USAGE}")
    for uid in report.not_adopted:
        say(
            f"users/{uid}: not adopted (its map missed writes since v3); "
            "run `make reconcile FIX=1 DEEP=1` for the months it has steps in"
        )
    old = [
        doc
        for collection in (layout.LEGACY_PLATFORM_MONTHS, layout.LEGACY_USER_MONTHS)
        for doc in _pages(store, collection)
        if doc.path.count("/") == 1
    ]
    months = sorted({str(doc.fields["month"]) for doc in old if isinstance(doc.fields.get("month"), str)})
    for month in months:
        say(f"rebuilding {month} from its steps")
        result = reconcile(store=store, month=month, settings=settings, now=now, fix=True, claims=claims)
        report.repaired += len(result.differences)
        report.months.append(month)
    for start in range(0, len(old), 400):
        try:
            store.commit([Write(doc.path, Op.DELETE, {}) for doc in old[start : start + 400]])
        except Contention:
            continue
        report.deleted += len(old[start : start + 400])
    return report
