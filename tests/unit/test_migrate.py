from datetime import UTC, datetime, timedelta

from entrypoints.callables import my_usage
from tally import layout
from tally.config import Settings
from tally.services.migrate import MigrationReport, adopt, migrate
from tally.services.reconcile import reconcile
from tally.values import Caller
from tally_dev.memory import MemoryStore, record_one

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)


def v1_data(store: MemoryStore) -> None:
    """What Tally before v2 left: one user, one session, two steps, the old aggregates."""
    counts = {"costNanos": 3_000_000_000, "apiCalls": 2, "billableRuns": 1}
    for n, cost in enumerate((1_000_000_000, 2_000_000_000)):
        store.put(
            layout.step_path("ada", f"op{n}"),
            {
                "userId": "ada",
                "sessionId": "s1",
                "operationId": f"op{n}",
                "usageType": "AI",
                "feature": "claude-3.5-sonnet",
                "provider": "anthropic",
                "costNanos": cost,
                "isBillableRun": n == 0,
                "timestamp": NOW - timedelta(minutes=n),
                "month": "2026-11",
                "day": "2026-11-14",
            },
        )
    store.put(
        layout.session_path("ada", "s1"),
        {
            "status": "completed",
            "createdAt": NOW - timedelta(minutes=5),
            "lastUpdatedAt": NOW,
            "completedAt": NOW,
            "finalizedAt": NOW,
            "stats": {"stepCount": 2, "costNanos": 3_000_000_000, "billableRuns": 1},
            "summary": {"stepCount": 2, "totalCostNanos": 3_000_000_000, "durationSeconds": 60.0},
        },
    )
    old_month = {**counts, "features": {"claude-3.5-sonnet": counts}, "providers": {"anthropic": counts}}
    store.put(
        layout.user_path("ada"),
        {
            "name": "Ada",
            "usage": {
                "months": {"2026-11": {**old_month, "byType": {"AI": counts}}, "2025-01": {"costNanos": 5}},
                "lifetime": counts,
                "sessions": {"active": 0, "completed": 1},
                "limits": {"monthlyCostLimitNanos": 3_500_000_000, "monthlyFreeRuns": 10},
            },
        },
    )
    store.put(f"{layout.LEGACY_USER_MONTHS}/2026-11_ada", {"userId": "ada", "month": "2026-11", **counts})
    store.put(
        f"{layout.LEGACY_PLATFORM_MONTHS}/2026-11-s03",
        {"month": "2026-11", **counts, "users": {"ada": True}, "sessions": {"active": 0, "completed": 1}},
    )


def test_data_written_before_v2_is_rebuilt_in_the_v2_layout() -> None:
    store = MemoryStore()
    v1_data(store)

    report = migrate(store=store, settings=Settings(), now=NOW)
    again = migrate(store=store, settings=Settings(), now=NOW)

    assert (report.sessions, report.users, report.months, report.deleted) == (1, 1, ["2026-11"], 2)
    assert (again.sessions, again.months, again.deleted) == (0, [], 0)
    assert reconcile(store=store, month="2026-11", settings=Settings(), now=NOW, fix=False).differences == []
    view = my_usage(store=store, caller=Caller("ada"), data={}, settings=Settings(), now=NOW)
    assert (view["totalCost"], view["features"][0]["name"], view["limits"]["warning"]) == (
        3.0,
        "claude-3.5-sonnet",
        True,
    )
    usage = store.docs[layout.user_path("ada")]["usage"]
    assert set(usage["months"]) == {"2026-11"}
    assert "features" not in usage["months"]["2026-11"]
    assert store.docs[layout.user_path("ada")]["name"] == "Ada"
    assert not any(
        p.startswith((layout.LEGACY_USER_MONTHS, layout.LEGACY_PLATFORM_MONTHS)) for p in store.docs
    )
    assert store.docs[layout.session_path("ada", "s1")]["tallyShard"] == layout.sweep_shard("ada", "s1")


V2_USAGE = {
    "months": {"2026-11": {"costNanos": 10**9, "apiCalls": 1, "billableRuns": 1}},
    "lifetime": {"costNanos": 10**9, "apiCalls": 1, "billableRuns": 1},
}


def test_adoption_keeps_a_request_recorded_while_it_ran() -> None:
    store = MemoryStore()
    store.put(layout.user_path("u"), {"usage": V2_USAGE})
    page = [store.read([layout.user_path("u")])[layout.user_path("u")]]  # the migration's page of users
    record_one(store, "u", 2 * 10**9, when=NOW, now=NOW)  # a v3 request lands: truth and mirror

    adopt(store, page, MigrationReport())

    truth, user = store.docs[layout.usage_path("u")], store.docs[layout.user_path("u")]
    assert truth["usage"]["months"]["2026-11"]["costNanos"] == 3 * 10**9
    assert user["usage"]["months"]["2026-11"]["costNanos"] == 3 * 10**9
    assert truth["adopted"] is True


def test_a_truth_whose_mirror_is_stale_is_not_adopted_but_reported() -> None:
    store = MemoryStore()
    store.put(layout.user_path("u"), {"bio": "x" * 1_048_330, "usage": V2_USAGE})  # at 1 MiB already
    record_one(store, "u", 2 * 10**9, when=NOW, now=NOW)  # v3 counts it in the truth only
    report = MigrationReport()

    adopt(store, [store.read([layout.user_path("u")])[layout.user_path("u")]], report)

    assert (report.adopted, report.not_adopted) == (0, ["u"])
    assert store.docs[layout.usage_path("u")]["usage"]["months"]["2026-11"]["costNanos"] == 2 * 10**9
