from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entrypoints.callables import set_limits, set_plan
from tally import layout, names
from tally.config import Settings
from tally.documents import plans
from tally.services import folding
from tally.services.reconcile import ShardCountMismatch, reconcile
from tally.services.reconcile import reads as reconcile_reads
from tally.services.recording import record_steps
from tally.services.sessions import finalize_session
from tally.values import Caller, Document, RecordRequest, SessionRequest, Step, UsageType
from tally.writes import Increment, Op, Write
from tally_dev.memory import MemoryStore, record_one

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)
MONTH = "2026-11"
BACKEND = Caller("svc", recorder=True)


def traffic(store: MemoryStore) -> None:
    """Two users, sessions finalized and open, names with dots, a step last month."""
    cache, picker = names.AdmittedNames(), plans.ShardPicker(seed=5)

    def send(request: RecordRequest) -> None:
        record_steps(
            store=store,
            caller=BACKEND,
            request=request,
            settings=Settings(),
            now=NOW,
            admitted_cache=cache,
            shards=picker,
        )

    for n, (user, feature) in enumerate([("ada", "claude-3.5-sonnet"), ("bo", "maps"), ("ada", "maps")]):
        steps = (
            Step(f"op{n}a", UsageType.AI, feature, "p", 1_500_000_000, True, NOW - timedelta(minutes=5)),
            Step(f"op{n}b", UsageType.API, feature, "q", 2_000_000_000, False, NOW - timedelta(minutes=1)),
        )
        send(RecordRequest(user, SessionRequest(f"s{n}", None, n != 1), steps))
        finalize_session(store=store, user_id=user, session_id=f"s{n}", now=NOW)
    send(
        RecordRequest(
            "bo", None, (Step("old", UsageType.API, "maps", "q", 7, False, NOW - timedelta(days=20)),)
        )
    )
    admin = Caller("a", admin=True)
    set_limits(
        store=store, caller=admin, data={"userId": "ada", "monthlyCostLimit": 8}, settings=Settings(), now=NOW
    )


def run(store: MemoryStore, *, fix: bool = False) -> list[str]:
    report = reconcile(store=store, month=MONTH, settings=Settings(), now=NOW, fix=fix)
    return [d.line() for d in report.differences]


def test_the_product_leaves_nothing_to_reconcile() -> None:
    store = MemoryStore()
    traffic(store)

    report = reconcile(store=store, month=MONTH, settings=Settings(), now=NOW, fix=False)

    assert [d.line() for d in report.differences] == []
    assert (report.steps, report.users) == (6, 2)
    assert report.summary() == "reconcile: 0 differences (2026-11: 6 steps of 2 users)"
    assert reconcile(store=store, month="2026-10", settings=Settings(), now=NOW, fix=False).differences == []


def test_fix_creates_missing_alerts_even_when_no_counter_needs_repair() -> None:
    store = MemoryStore()
    traffic(store)
    (lost,) = [path for path, doc in store.docs.items() if path.endswith("-cost-80")]  # ada's, at $8
    del store.docs[lost]  # lost after the commit that called for it

    found = run(store, fix=True)

    assert found == [f"{lost} alert: stored None, recomputed cost 80%"]
    assert store.docs[lost]["raisedBy"] == "reconcile"
    assert run(store) == []


class Claims:
    """Firebase Auth's claims, as a test gives them (None: Auth fails)."""

    def __init__(self, claims: dict[str, dict[str, Any]] | None) -> None:
        self.claims = claims

    def claims_of(self, user_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        if self.claims is None:
            return {}  # the lookup failed (quota exceeded, say): nobody's claims are known
        return {user_id: self.claims[user_id] for user_id in user_ids if user_id in self.claims}


def claimed_traffic() -> tuple[MemoryStore, Settings]:
    """Ada on pro by her claim, $6 by the 14th (past the $5 default); bo on pro by assignment."""
    store, settings = MemoryStore(), Settings(plan_claim="stripeRole")
    admin = Caller("a", admin=True)
    set_plan(
        store=store,
        caller=admin,
        data={"plan": "pro", "limits": {"monthlyCostLimit": 100}},
        settings=settings,
        now=NOW,
    )
    set_limits(store=store, caller=admin, data={"userId": "bo", "plan": "pro"}, settings=settings, now=NOW)
    for n, user in enumerate(["ada", "ada", "ada", "bo"]):
        record_steps(
            store=store,
            caller=BACKEND,
            request=RecordRequest(
                user, None, (Step(f"p{n}", UsageType.AI, "chat", "p", 2_000_000_000, True, NOW),)
            ),
            settings=settings,
            now=NOW,
            admitted_cache=names.AdmittedNames(),
            shards=plans.ShardPicker(seed=5),
            claimed_plan=lambda user_id: "pro" if user_id == "ada" else None,
        )
    return store, settings


def test_a_claimed_plan_is_reconciled_against_its_own_limits() -> None:
    store, settings = claimed_traffic()

    report = reconcile(
        store=store,
        month=MONTH,
        settings=settings,
        now=NOW,
        fix=True,
        claims=Claims({"ada": {"stripeRole": "pro"}, "bo": {}}),
    )

    assert (report.differences, report.due, report.unmeasured) == ([], [], 0)


def test_a_user_whose_claim_auth_cannot_say_has_no_limit_checks() -> None:
    store, settings = claimed_traffic()

    report = reconcile(store=store, month=MONTH, settings=settings, now=NOW, fix=True, claims=Claims(None))

    assert (report.differences, report.due, report.unmeasured) == ([], [], 1)  # ada: not against $5
    assert "limits of 1 users not checked (their plan may be claimed)" in report.summary()
    assert {doc["raisedBy"] for path, doc in store.docs.items() if path.startswith(layout.ALERTS + "/")} <= {
        "record_steps"
    }


def damage_usage_erased(store: MemoryStore) -> None:
    store.put(layout.user_path("ada"), {"displayName": "Ada"})  # an app's set() without merge


def damage_truth_lifetime(store: MemoryStore) -> None:
    store.docs[layout.usage_path("ada")]["usage"]["lifetime"]["costNanos"] = 5  # e.g. an admin's hand edit


def damage_aggregate_decremented(store: MemoryStore) -> None:
    store.commit([Write(layout.shard_path(MONTH, 2), Op.MERGE, {"costNanos": Increment(-1_000)})])


def damage_user_month_deleted(store: MemoryStore) -> None:
    del store.docs[layout.user_month_path("bo", MONTH)]


def damage_free_tier_removed(store: MemoryStore) -> None:
    del store.docs[layout.user_month_path("ada", MONTH)]["limitPercent"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (damage_usage_erased, "users/ada usage.lifetime.costNanos: stored 0, recomputed 7000000000"),
        (damage_truth_lifetime, "TallyUsers/ada usage.lifetime.costNanos: stored 5, recomputed 7000000000"),
        (damage_aggregate_decremented, "costNanos: stored 10499999000, recomputed 10500000000"),
        (
            damage_user_month_deleted,
            "TallyMonthlyUsage/bo_2026-11 costNanos: stored 0, recomputed 3500000000",
        ),
        (
            damage_free_tier_removed,
            "TallyMonthlyUsage/ada_2026-11 limitPercent: stored None, recomputed 87.5",
        ),
    ],
)
def test_damage_is_reported_repaired_and_gone(damage: object, expected: str) -> None:
    store = MemoryStore()
    traffic(store)
    damage(store)  # type: ignore[operator]

    found = run(store)
    repaired = run(store, fix=True)
    after = run(store)

    assert any(line.endswith(expected) for line in found), found
    assert repaired == found
    assert after == []


def test_an_erased_usage_map_gets_its_limits_back() -> None:
    store = MemoryStore()
    traffic(store)
    damage_usage_erased(store)

    run(store, fix=True)

    usage = store.docs[layout.user_path("ada")]["usage"]
    assert usage["limits"]["monthlyCostLimitNanos"] == 8_000_000_000
    assert (usage["sessions"].get("active", 0), usage["sessions"]["completed"]) == (0, 2)
    assert store.docs[layout.user_path("ada")]["displayName"] == "Ada"


def test_a_repair_adds_the_difference_so_a_concurrent_step_is_kept() -> None:
    store = MemoryStore()
    traffic(store)
    damage_aggregate_decremented(store)
    report = reconcile(store=store, month=MONTH, settings=Settings(), now=NOW, fix=False)
    late = (Step("late", UsageType.API, "maps", "q", 5, False, NOW),)
    record_steps(
        store=store, caller=BACKEND, request=RecordRequest("bo", None, late), settings=Settings(), now=NOW
    )

    reconcile(store=store, month=MONTH, settings=Settings(), now=NOW, fix=True)

    assert report.differences
    assert run(store) == []


def test_reconcile_refuses_fewer_shards_than_the_platform_has() -> None:
    store = MemoryStore(shards=4)
    store.put(layout.shard_path("2026-11", 6), {"month": "2026-11", "shard": 6, "costNanos": 5})

    with pytest.raises(ShardCountMismatch, match="TALLY_AGGREGATE_SHARDS is 4"):
        reconcile(store=store, month="2026-11", settings=Settings(), now=NOW, fix=True)


def test_a_repair_never_rolls_back_a_concurrent_set_limits() -> None:
    store = MemoryStore()
    traffic(store)
    del store.docs[layout.usage_path("ada")]["usage"]["limits"]  # damage: the truth lost its limits
    admin = Caller("a", admin=True)
    raced = False

    def set_limits_meanwhile(writes: Sequence[Write]) -> None:
        nonlocal raced
        if not raced and any(w.path == layout.usage_path("ada") and w.version for w in writes):
            raced = True  # an admin raises the limit between reconcile's read and its repair
            set_limits(
                store=store,
                caller=admin,
                data={"userId": "ada", "monthlyCostLimit": 9},
                settings=Settings(),
                now=NOW,
            )

    store.before_commit = set_limits_meanwhile

    run(store, fix=True)

    assert raced
    assert store.docs[layout.usage_path("ada")]["usage"]["limits"]["monthlyCostLimitNanos"] == 9_000_000_000
    assert store.docs[layout.limits_path("ada")]["monthlyCostLimitNanos"] == 9_000_000_000
    assert run(store) == []


def test_an_interrupted_fix_keeps_what_it_repaired() -> None:
    store = MemoryStore()
    traffic(store)
    damage_user_month_deleted(store)  # bo
    del store.docs[layout.user_month_path("ada", MONTH)]["limitPercent"]

    def crash_on_bo(writes: Sequence[Write]) -> None:
        if any(w.path == layout.user_month_path("bo", MONTH) for w in writes):
            raise RuntimeError("the run dies here")

    store.before_commit = crash_on_bo
    with pytest.raises(RuntimeError):
        run(store, fix=True)
    store.before_commit = None

    left = run(store)

    assert not any(line.startswith(layout.user_month_path("ada", MONTH)) for line in left)
    assert any(line.startswith(layout.user_month_path("bo", MONTH)) for line in left)
    run(store, fix=True)
    assert run(store) == []


class ClockedStore(MemoryStore):
    """A store whose reads without a time each run at a new instant; keeps how old the times asked are."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = 0
        self.ages: list[int] = []

    def _asked(self, read_time: datetime | None) -> None:
        if read_time is not None:
            self.ages.append(self.clock - round((read_time - NOW).total_seconds()))

    def read(
        self, paths: Sequence[str], *, read_time: datetime | None = None, fields: Sequence[str] | None = None
    ) -> dict[str, Document]:
        found = super().read(paths, read_time=read_time, fields=fields)
        if read_time is not None:
            self._asked(read_time)
            return found
        self.clock += 1
        at = NOW + timedelta(seconds=self.clock)
        return {path: Document(d.path, d.data, d.version, read_at=at) for path, d in found.items()}

    def month_steps(self, **kwargs: Any) -> list[Document]:
        self._asked(kwargs.get("read_time"))
        return super().month_steps(**kwargs)

    def month_users(self, **kwargs: Any) -> list[Document]:
        self._asked(kwargs.get("read_time"))
        return super().month_users(**kwargs)


def test_no_read_uses_a_snapshot_older_than_its_own_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile_reads, "PAGE_SIZE", 2)
    store = ClockedStore()
    traffic(store)

    report = reconcile(store=store, month=MONTH, settings=Settings(), now=NOW, fix=False)

    assert report.differences == []
    assert store.clock >= 4  # a time taken for each page, and one for the platform
    assert store.ages
    assert max(store.ages) == 0  # every read and query at the time taken for its page


def test_a_stale_mirror_is_reported_and_rewritten_once_it_fits() -> None:
    store = MemoryStore()
    traffic(store)
    user = dict(store.docs[layout.user_path("ada")])
    store.put(layout.user_path("ada"), {**user, "bio": "x" * 1_048_400})
    record_steps(
        store=store,
        caller=BACKEND,
        request=RecordRequest("ada", None, (Step("more", UsageType.API, "maps", "q", 5, False, NOW),)),
        settings=Settings(),
        now=NOW,
    )

    stuck = reconcile(store=store, month=MONTH, settings=Settings(), now=NOW, fix=True)
    store.put(layout.user_path("ada"), {**user, "bio": "short"})
    fixed = reconcile(store=store, month=MONTH, settings=Settings(), now=NOW, fix=True)

    assert any(line.startswith("users/ada usage.lifetime") for line in (d.line() for d in stuck.differences))
    assert stuck.unrepaired
    assert "does not fit" in stuck.unrepaired[0]
    assert fixed.unrepaired == []
    assert store.docs[layout.user_path("ada")]["usage"] == store.docs[layout.usage_path("ada")]["usage"]
    assert run(store) == []


def test_a_repair_reopens_a_final_months_analytics() -> None:
    july, later = datetime(2026, 7, 14, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)  # July is final
    store = MemoryStore()
    record_one(store, "ada", 3_000_000_000, when=july, now=july)
    record_one(store, "bo", 1_000_000_000, when=july, now=july)
    store.docs[layout.user_month_path("ada", "2026-07")]["costNanos"] = 7  # only a user's document is wrong
    folding.rollups(store, ["2026-07"], now=later, ranked=["2026-07"])  # the final rollup ranks ada at 7

    reconcile(store=store, month="2026-07", settings=Settings(), now=later, fix=True)
    found, _ = folding.rollups(store, ["2026-07"], now=later + timedelta(hours=1), ranked=["2026-07"])

    ranking = found["2026-07"].ranking
    assert ranking is not None
    assert [(row["userId"], row["costNanos"]) for row in ranking.top][:1] == [("ada", 3_000_000_000)]
