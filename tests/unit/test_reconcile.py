from datetime import UTC, datetime, timedelta

import pytest

from tally import layout, names, plans
from tally.config import Settings
from tally.reconcile import ShardCountMismatch, reconcile
from tally.recording import record_steps
from tally.sessions import finalize_session
from tally.users import set_limits
from tally.values import Caller, RecordRequest, SessionRequest, Step, UsageType
from tally.writes import Increment, Op, Write
from tally_dev.memory import MemoryStore

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


def damage_usage_erased(store: MemoryStore) -> None:
    store.put(layout.user_path("ada"), {"displayName": "Ada"})  # an app's set() without merge


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
