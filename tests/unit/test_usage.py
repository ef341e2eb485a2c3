from datetime import UTC, datetime

from tally.usage import Counts, Limits, aggregate, limit_percent, limits_status, total
from tally.values import Step, UsageType


def make_step(cost_nanos: int, *, when: datetime, feature: str = "f", billable: bool = False) -> Step:
    return Step(
        operation_id=f"op-{cost_nanos}-{when.isoformat()}",
        usage_type=UsageType.AI if feature.startswith("llm") else UsageType.API,
        feature=feature,
        provider="p",
        cost_nanos=cost_nanos,
        is_billable_run=billable,
        timestamp=when,
        metadata={},
    )


def test_aggregate_buckets_each_step_by_its_own_utc_month_and_day() -> None:
    steps = [
        make_step(5, when=datetime(2026, 10, 31, 23, 59, tzinfo=UTC), feature="llm.chat"),
        make_step(7, when=datetime(2026, 11, 1, 0, 0, tzinfo=UTC), billable=True),
        make_step(11, when=datetime(2026, 11, 2, 9, 0, tzinfo=UTC), feature="llm.chat"),
    ]

    months = aggregate(steps)

    assert set(months) == {"2026-10", "2026-11"}
    november = months["2026-11"]
    assert november.total == Counts(cost_nanos=18, api_calls=2, billable_runs=1)
    assert november.by_type["API"] == Counts(7, 1, 1)
    assert november.by_type["AI"] == Counts(11, 1, 0)
    assert november.features["llm.chat"] == Counts(11, 1, 0)
    assert november.days["2026-11-01"] == Counts(7, 1, 1)
    assert months["2026-10"].days["2026-10-31"] == Counts(5, 1, 0)


def test_breakdowns_add_up_to_the_total() -> None:
    steps = [
        make_step(
            i * 1000,
            when=datetime(2026, 11, 1 + i % 20, tzinfo=UTC),
            feature=f"f{i % 3}",
            billable=i % 2 == 0,
        )
        for i in range(50)
    ]

    month = aggregate(steps)["2026-11"]

    for breakdown in (month.by_type, month.features, month.providers, month.days):
        assert sum(c.cost_nanos for c in breakdown.values()) == month.total.cost_nanos
        assert sum(c.api_calls for c in breakdown.values()) == month.total.api_calls
        assert sum(c.billable_runs for c in breakdown.values()) == month.total.billable_runs
    assert month.total == total(steps)


def test_limits_status_defaults() -> None:
    status = limits_status(Counts(cost_nanos=2_830_000, api_calls=1), Limits(5 * 10**9, 100))

    assert status == {
        "monthlyCostLimit": 5.0,
        "costRemaining": 4.99717,
        "monthlyFreeRuns": 100,
        "freeRunsRemaining": 100,
        "exceeded": False,
        "warning": False,
        "held": 0.0,
        "heldRuns": 0,
    }


def test_warning_at_eighty_percent_and_exceeded_past_the_limit() -> None:
    limits = Limits(10 * 10**9, 10)

    assert limits_status(Counts(cost_nanos=8 * 10**9 - 1), limits)["warning"] is False
    assert limits_status(Counts(cost_nanos=8 * 10**9), limits)["warning"] is True
    assert limits_status(Counts(billable_runs=8), limits)["warning"] is True
    assert limits_status(Counts(cost_nanos=10 * 10**9), limits)["exceeded"] is False
    over = limits_status(Counts(cost_nanos=10 * 10**9 + 1, billable_runs=11), limits)
    assert over["exceeded"] is True
    assert over["costRemaining"] == 0.0
    assert over["freeRunsRemaining"] == 0


def test_limit_percent_takes_the_larger_share() -> None:
    assert limit_percent(Counts(cost_nanos=4 * 10**9, billable_runs=90), Limits(5 * 10**9, 100)) == 90.0
    assert limit_percent(Counts(), Limits(0, 0)) == 0.0
    assert limit_percent(Counts(billable_runs=1), Limits(5, 0)) == 100.0
