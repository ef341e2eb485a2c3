from datetime import UTC, datetime

import pytest

from entrypoints.callables import my_usage, set_limits
from tally import layout
from tally.config import Settings
from tally.documents.plan_catalog import PlanCatalog
from tally.errors import InvalidArgument, PermissionDenied
from tally.limits import LimitSet
from tally.services.users import month_view
from tally.values import Caller
from tally_dev.memory import MemoryStore

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)


def limits_of(stored: dict[str, int]) -> LimitSet:
    return PlanCatalog().limits_of(stored, Settings())


def test_month_view_of_a_user_with_no_usage() -> None:
    view = month_view(usage={}, user_month={}, month="2026-11", current=True, limits=limits_of({}))

    assert view["totalCost"] == 0.0
    assert view["byType"] == {
        "AI": {"cost": 0.0, "apiCalls": 0, "billableRuns": 0},
        "API": {"cost": 0.0, "apiCalls": 0, "billableRuns": 0},
    }
    assert view["features"] == []
    assert view["limits"]["monthlyCostLimit"] == 5.0
    assert view["limits"]["held"] == 0.0
    assert view["sessions"] == {"active": 0, "completed": 0}


def test_month_view_ranks_features_by_cost() -> None:
    user_month = {
        "costNanos": 30,
        "apiCalls": 3,
        "features": {
            "cheap": {"costNanos": 10, "apiCalls": 2, "billableRuns": 0},
            "dear": {"costNanos": 20, "apiCalls": 1, "billableRuns": 1},
        },
    }
    usage = {"limits": {"monthlyCostLimitNanos": 40, "monthlyFreeRuns": 1}}

    view = month_view(
        usage=usage, user_month=user_month, month="2026-11", current=True, limits=limits_of(usage["limits"])
    )

    assert [f["name"] for f in view["features"]] == ["dear", "cheap"]
    assert view["limits"]["warning"] is False
    assert view["limits"]["monthlyCostLimit"] == 0.00000004


def store_with(user: str, month: str, cost: int) -> MemoryStore:
    store = MemoryStore()
    store.put(
        layout.user_month_path(user, month),
        {"userId": user, "month": month, "costNanos": cost, "apiCalls": 1},
    )
    return store


def test_my_usage_reads_any_past_month() -> None:
    store = store_with("u1", "2025-03", 7_000_000_000)

    view = my_usage(store=store, caller=Caller("u1"), data={"month": "2025-03"}, settings=Settings(), now=NOW)

    assert (view["userId"], view["month"], view["totalCost"]) == ("u1", "2025-03", 7.0)
    assert view["limits"]["exceeded"] is True


def test_admins_read_any_users_month_and_users_only_their_own() -> None:
    store = store_with("u1", "2026-11", 1)

    seen = my_usage(
        store=store, caller=Caller("a", admin=True), data={"userId": "u1"}, settings=Settings(), now=NOW
    )

    assert seen["apiCalls"] == 1
    with pytest.raises(PermissionDenied):
        my_usage(store=store, caller=Caller("u2"), data={"userId": "u1"}, settings=Settings(), now=NOW)


def test_set_limits_writes_limits_and_the_exact_free_tier_entry() -> None:
    store = store_with("u1", "2026-11", 4_500_000_000)

    result = set_limits(
        store=store,
        caller=Caller("a", admin=True),
        data={"userId": "u1", "monthlyCostLimit": 4},
        settings=Settings(),
        now=NOW,
    )

    assert result["limits"]["exceeded"] is True
    assert store.docs[layout.user_path("u1")]["usage"]["limits"]["monthlyCostLimitNanos"] == 4_000_000_000
    assert store.docs[layout.user_month_path("u1", "2026-11")]["limitPercent"] == 112.5
    with pytest.raises(InvalidArgument):
        set_limits(
            store=store, caller=Caller("a", admin=True), data={"userId": "u1"}, settings=Settings(), now=NOW
        )
