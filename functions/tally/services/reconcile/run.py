"""One reconcile run: every user with steps in the month, page by page, then the platform at `T2`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from tally import layout, ports
from tally.config import Settings
from tally.documents import counters
from tally.documents import months as month_doc
from tally.documents.months import Flat, MonthAggregate
from tally.documents.plan_catalog import catalog_of
from tally.services import alerts, pace, plan_claims
from tally.services.reconcile import reads
from tally.services.reconcile.reads import (
    ReconcileStore,
    delta_of,
    expected_sessions,
    server_time,
    user_steps,
)
from tally.services.reconcile.report import Difference, Repairs, Report, ShardCountMismatch
from tally.services.reconcile.users import MAX_CHECKS, Seen, UserCheck, check_user, read_users
from tally.timeutil import month_key
from tally.values import Contention, Document, Rejected
from tally.writes import batches

REPAIR_SHARD = 0  # platform repairs are added to this shard (any shard would do: they are summed)


@dataclass
class UserResult:
    """What checking (and repairing) one user came to."""

    differences: list[Difference]
    correction: Flat  # what the user's month document lacked when checked (expected - stored)
    repaired: bool = False  # the correction was committed
    unrepaired: list[str] = field(default_factory=list)
    due: list[str] = field(default_factory=list)  # forecast and anomaly alerts due, not raised
    unmeasured: bool = False  # the user's limits are not known here (a plan claim may set them)

    @classmethod
    def of(cls, check: UserCheck, *, repaired: bool = False, unrepaired: Sequence[str] = ()) -> UserResult:
        """Return what one check of a user came to."""
        repairs = check.repairs
        return cls(
            repairs.differences, check.correction, repaired, list(unrepaired), repairs.due, repairs.unmeasured
        )


def _commit(store: ReconcileStore, check: UserCheck, now: datetime) -> list[str] | None:
    """Commit a user's repair; return what it could not repair (None: a document changed meanwhile)."""
    unrepaired = []
    try:
        try:
            store.commit(check.commit_writes(with_mirror=True))
        except Rejected:
            store.commit(check.commit_writes(with_mirror=False))
            unrepaired.append(
                f"{layout.user_path(check.user_id)}: the usage map does not fit in the document; "
                "it is rewritten once it fits"
            )
    except Contention:
        return None
    alerts.create(store, check.repairs.alerts, now)
    return unrepaired


class _Run:
    """One reconcile run."""

    def __init__(
        self,
        *,
        store: ReconcileStore,
        month: str,
        settings: Settings,
        now: datetime,
        fix: bool,
        progress: Callable[[int, int], None] | None,
        workers: int,
        deep: bool,
        claims: plan_claims.ClaimsLookup | None,
    ) -> None:
        self.store, self.month, self.settings, self.now, self.fix = store, month, settings, now, fix
        self.deep = deep
        self.claims = claims
        self.progress = progress
        self.workers = workers
        self.report = Report(month=month)
        self.seen: set[str] = set()
        self.pending: Flat = Counter()  # corrections not in the month documents (report only, or unrepaired)
        self.total = 0
        self.catalog = catalog_of(store.read([layout.plan_catalog_path()])[layout.plan_catalog_path()])

    def check(
        self,
        user_id: str,
        steps: Sequence[Document],
        read_time: datetime | None,
        seen: Seen | None = None,
        plans: Mapping[str, str | None] | None = None,
    ) -> UserResult:
        """Check one user (and with `fix`, repair them), again from a fresh read while they keep changing."""
        for _ in range(MAX_CHECKS):
            read = seen or read_users(self.store, [user_id], self.month, read_time)

            def checked(
                deep: bool,
                read: Seen = read,
                steps: Sequence[Document] = steps,
                read_time: datetime | None = read_time,
            ) -> UserCheck:
                return check_user(
                    store=self.store,
                    user_id=user_id,
                    month=self.month,
                    delta=delta_of(steps),
                    seen=read,
                    settings=self.settings,
                    read_time=read_time,
                    catalog=self.catalog,
                    claimed=(plans or {}).get(user_id),
                    claim_known=plans is not None and user_id in plans,
                    now=self.now,
                    deep=deep,
                )

            check = checked(self.deep)
            if check.suspect:  # which of the two is right? only the steps and sessions can say
                check = checked(True)
            if not self.fix or not (check.repairs.data or check.mirror_rewrite or check.repairs.alerts):
                return UserResult.of(check)
            if not (check.repairs.data or check.mirror_rewrite):  # only alerts are missing
                alerts.create(self.store, check.repairs.alerts, self.now)
                return UserResult.of(check, repaired=True)
            committed = _commit(self.store, check, self.now)
            if committed is not None:
                return UserResult.of(check, repaired=True, unrepaired=committed)
            steps, read_time = user_steps(self.store, user_id, self.month, None, None)
            seen = None
        note = f"{user_id}: changed {MAX_CHECKS} times while reconcile ran; run it again"
        return UserResult.of(check, unrepaired=[note])

    def check_all(
        self,
        users: Sequence[tuple[str, Sequence[Document], datetime | None]],
        *,
        seen: Seen | None = None,
        after_snapshot: bool = False,
    ) -> None:
        """Check users a few at a time (their documents are independent), keeping the report in order.

        `seen` holds what was read of them all at their (one) snapshot; without it each is read
        on its own. A correction not yet in the month documents the platform is compared with
        is kept for that comparison: one not committed, or one committed after its snapshot.
        """
        self.seen.update(user_id for user_id, _, _ in users)

        plans = plan_claims.claimed_plans(self.settings, self.claims, [user_id for user_id, _, _ in users])

        def one(user: tuple[str, Sequence[Document], datetime | None]) -> UserResult:
            return self.check(*user, seen=seen, plans=plans)

        if self.workers <= 1 or len(users) <= 1:
            results = [one(user) for user in users]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(users))) as pool:
                results = list(pool.map(one, users))
        for result in results:
            self.report.differences += result.differences
            self.report.unrepaired += result.unrepaired
            self.report.due += result.due
            self.report.unmeasured += result.unmeasured
            if after_snapshot or not result.repaired:
                self.pending.update(result.correction)

    def users(self) -> None:
        """Check every user with steps in the month, page by page, each at its page's snapshot."""
        store, month = self.store, self.month
        self.total = store.count_month_steps(month=month, read_time=None)
        after: str | None = None
        while page := store.month_steps(
            month=month,
            read_time=(read_time := server_time(store, month)),
            limit=reads.PAGE_SIZE,
            after=after,
        ):
            groups: dict[str, list[Document]] = {}
            for doc in page:
                owner = layout.step_owner(doc.path)
                if owner is not None:
                    groups.setdefault(owner, []).append(doc)
            after = page[-1].path
            last = layout.step_owner(after)
            if (
                len(page) == reads.PAGE_SIZE and last is not None
            ):  # the last user may go on: read them to the end
                rest, _ = user_steps(store, last, month, read_time, after)
                groups.setdefault(last, []).extend(rest)
                after = rest[-1].path if rest else after
            self.report.steps += sum(len(steps) for steps in groups.values())
            seen = read_users(store, list(groups), month, read_time) if groups else None
            self.check_all([(user_id, steps, read_time) for user_id, steps in groups.items()], seen=seen)
            if self.progress is not None:
                self.progress(self.report.steps, max(self.total, self.report.steps))
            if len(page) < reads.PAGE_SIZE:
                break


def platform(run: _Run) -> Repairs:
    """Compare the shards with the users' month documents (and the sessions), at one snapshot `T2`.

    A month document whose user had no step in the first pass (a first step recorded
    meanwhile, or a document with no step at all) is checked now, from a fresh read; its
    correction is not in the month documents read at `T2`, so it is added to them.
    """
    store, month = run.store, run.month
    expected: Flat = Counter()
    unseen: list[str] = []
    read_time = server_time(store, month)  # T2

    def fetch(after: str | None) -> list[Document]:
        return store.month_users(month=month, limit=reads.PAGE_SIZE, after=after, read_time=read_time)

    for doc in ports.documents(fetch, size=reads.PAGE_SIZE):
        expected.update(month_doc.flat_month(doc.fields))
        user_id = str(doc.fields.get("userId") or doc.path.split("/", 1)[1].rsplit("_", 1)[0])
        if user_id not in run.seen:
            unseen.append(user_id)
    shards = store.read([layout.shard_path(month, n) for n in range(store.shards)], read_time=read_time)
    sessions = expected_sessions(store, month, read_time)
    late = []
    for user_id in unseen:
        steps, steps_time = user_steps(store, user_id, month, None, None)
        run.report.steps += len(steps)
        late.append((user_id, steps, steps_time))
    run.check_all(late, after_snapshot=True)
    expected.update(run.pending)
    stored: Flat = Counter()
    for doc in shards.values():
        stored.update(month_doc.flat_month(doc.fields))
    repairs = Repairs()
    repair_path = layout.shard_path(month, REPAIR_SHARD)
    repairs.flat(repair_path, stored, expected)
    folded = MonthAggregate.fold(doc.fields for doc in shards.values() if doc.exists)
    for key, value in sessions.items():
        repairs.counter(repair_path, [month_doc.SESSIONS, key], folded.sessions.get(key, 0), value)
    if run.settings.platform_budget_nanos is not None:
        wanted = alerts.platform_alerts(
            month=month,
            total=expected[(counters.COST,)],
            budget=run.settings.platform_budget_nanos,
            raised_by="reconcile",
            late=True,
        )
        repairs.missing_alerts(store, wanted, read_time)
    if month == month_key(run.now):
        judged = pace.late_platform_alerts(store, folded, run.settings, run.now)
        repairs.missing_alerts(store, judged, read_time, judged=True)
    return repairs


def reconcile(
    *,
    store: ReconcileStore,
    month: str,
    settings: Settings,
    now: datetime,
    fix: bool,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 8,
    deep: bool = False,
    claims: plan_claims.ClaimsLookup | None = None,
) -> Report:
    """Recompute a month's aggregates from its steps; with `fix`, repair what differs as it goes.

    With `deep`, each user's lifetime totals and completed sessions are recomputed too, from
    all their steps and sessions (a few aggregation queries per user). `claims`: Firebase
    Auth's, with TALLY_PLAN_CLAIM (a plan claimed, as the functions apply it); a user whose
    claims it cannot say has nothing checked that depends on their limits.

    Refuses to run with fewer shards than the platform has (`ShardCountMismatch`): it would
    miss the others' counts and "repair" them into shard 0, counting them twice.
    """
    if (extra := store.shard_beyond(store.shards)) is not None:
        raise ShardCountMismatch(
            f"{extra.path} exists, but TALLY_AGGREGATE_SHARDS is {store.shards}: "
            "use the value the functions are deployed with"
        )
    run = _Run(
        store=store,
        month=month,
        settings=settings,
        now=now,
        fix=fix,
        progress=progress,
        workers=workers,
        deep=deep,
        claims=claims,
    )
    run.users()
    repairs = platform(run)
    run.report.users = len(run.seen)
    run.report.differences += repairs.differences
    run.report.due += repairs.due
    if fix:
        context = {layout.shard_path(month, REPAIR_SHARD): {"month": month, "shard": REPAIR_SHARD}}
        for commit in batches(repairs.writes({}, context)):
            store.commit(commit)
        alerts.create(store, repairs.alerts, now)
        if run.report.differences:  # the next reader folds the month again, final or not
            store.commit(month_doc.reopen_writes([month], now=now, final_only=False))
        run.report.fixed = True
    return run.report
