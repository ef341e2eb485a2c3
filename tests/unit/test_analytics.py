from typing import Any

import pytest

from tally.analytics import (
    AnalyticsIn,
    SetLimitsIn,
    days_of,
    merge_shards,
    month_view,
    months_back,
    parse_data,
    require_admin,
)
from tally.config import Settings
from tally.errors import InvalidArgument, PermissionDenied, Unauthenticated
from tally.recording import Caller
from tally.usage import Counts


def test_months_back_crosses_years_oldest_first() -> None:
    assert months_back("2026-02", 4) == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert len(months_back("2026-11", 12)) == 12


def test_days_of_every_month_length() -> None:
    assert len(days_of("2026-02")) == 28
    assert len(days_of("2028-02")) == 29
    assert days_of("2026-11")[0] == "2026-11-01"
    assert days_of("2026-11")[-1] == "2026-11-30"


def shard(users: list[str], cost: int, feature: str, day: str, kind: str) -> dict[str, Any]:
    counts = {"costNanos": cost, "apiCalls": 1, "billableRuns": 0}
    return {
        **counts,
        "byType": {kind: counts},
        "features": {feature: counts},
        "providers": {"p": counts},
        "days": {day: counts},
        "users": dict.fromkeys(users, True),
        "sessions": {"active": 1, "completed": 2},
    }


def test_merge_shards_adds_every_breakdown_and_unions_users() -> None:
    merged = merge_shards(
        [
            shard(["a", "b"], 5, "claude-3.5-sonnet", "2026-11-01", "AI"),
            shard(["b", "c"], 7, "maps", "2026-11-02", "API"),
        ]
    )

    assert merged.total == Counts(12, 2, 0)
    assert merged.by_type == {"AI": Counts(5, 1, 0), "API": Counts(7, 1, 0)}
    assert merged.features["claude-3.5-sonnet"] == Counts(5, 1, 0)
    assert merged.providers["p"] == Counts(12, 2, 0)
    assert merged.users == {"a", "b", "c"}
    assert merged.sessions == {"active": 2, "completed": 4}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"month": "2026-13"}, "month: must be a month like 2026-11"),
        ({"month": "1999-12"}, "month: must be between 2000-01 and 2999-12"),
        ({"top": True}, "top: must be an integer from 1 to 100"),
        ({"top": 100.0}, "top: must be an integer from 1 to 100"),
        ({"other": 1}, "other: is not an accepted field"),
        ("x", "data: must be a JSON object"),
    ],
)
def test_analytics_input_errors(data: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_data(AnalyticsIn, data)

    assert info.value.message == message


def test_analytics_input_defaults() -> None:
    parsed = parse_data(AnalyticsIn, None)

    assert (parsed.month, parsed.top) == (None, 10)


def test_limits_input_in_nanos() -> None:
    parsed = parse_data(SetLimitsIn, {"userId": "u1", "monthlyCostLimit": 12.5, "monthlyFreeRuns": 3})

    assert (parsed.monthly_cost_limit_nanos, parsed.monthly_free_runs) == (12_500_000_000, 3)
    with pytest.raises(InvalidArgument, match="must be <= 1000000"):
        parse_data(SetLimitsIn, {"userId": "u1", "monthlyCostLimit": 2_000_000})


def test_roles() -> None:
    with pytest.raises(Unauthenticated):
        require_admin(None)
    with pytest.raises(PermissionDenied):
        require_admin(Caller("u1", recorder=True))
    assert require_admin(Caller("boss", admin=True)).uid == "boss"


def test_month_view_of_a_user_with_no_usage() -> None:
    view = month_view({}, "2026-11", Settings())

    assert view["totalCost"] == 0.0
    assert view["byType"] == {
        "AI": {"cost": 0.0, "apiCalls": 0, "billableRuns": 0},
        "API": {"cost": 0.0, "apiCalls": 0, "billableRuns": 0},
    }
    assert view["features"] == []
    assert view["limits"]["monthlyCostLimit"] == 5.0
    assert view["sessions"] == {"active": 0, "completed": 0}


def test_month_view_ranks_features_by_cost() -> None:
    usage = {
        "months": {
            "2026-11": {
                "costNanos": 30,
                "apiCalls": 3,
                "features": {
                    "cheap": {"costNanos": 10, "apiCalls": 2, "billableRuns": 0},
                    "dear": {"costNanos": 20, "apiCalls": 1, "billableRuns": 1},
                },
            }
        },
        "limits": {"monthlyCostLimitNanos": 40, "monthlyFreeRuns": 1},
    }

    view = month_view(usage, "2026-11", Settings())

    assert [f["name"] for f in view["features"]] == ["dear", "cheap"]
    assert view["limits"]["warning"] is False
    assert view["limits"]["monthlyCostLimit"] == 0.00000004
