from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entrypoints.callables import usage_analytics
from tally import layout
from tally.access import require_admin, resolve_reader
from tally.config import Settings
from tally.documents.months import TOP_USERS_KEPT, MonthAggregate, Rollup
from tally.errors import InvalidArgument, PermissionDenied, Unauthenticated
from tally.requests import AnalyticsIn, SetLimitsIn, parse_data
from tally.services import folding
from tally.services.legacy import import_legacy
from tally.timeutil import days_of, months_back
from tally.usage import Counts
from tally.values import Caller, Document
from tally_dev.memory import MemoryStore, record_one

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)
ADMIN = Caller("boss", admin=True)


class Emails:
    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        return {uid: f"{uid}@example.com" for uid in user_ids if uid != "ghost"}


def test_months_back_crosses_years_oldest_first() -> None:
    assert months_back("2026-02", 4) == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert len(months_back("2026-11", 12)) == 12


def test_days_of_every_month_length() -> None:
    assert len(days_of("2026-02")) == 28
    assert len(days_of("2028-02")) == 29
    assert days_of("2026-11")[0] == "2026-11-01"
    assert days_of("2026-11")[-1] == "2026-11-30"


def shard(cost: int, feature: str, day: str, kind: str, active: int) -> dict[str, Any]:
    counts = {"costNanos": cost, "apiCalls": 1, "billableRuns": 0}
    return {
        **counts,
        "activeUsers": active,
        "byType": {kind: counts},
        "features": {feature: counts},
        "providers": {"p": counts},
        "days": {day: counts},
        "sessions": {"active": 1, "completed": 2},
    }


def test_folding_adds_every_breakdown() -> None:
    merged = MonthAggregate.fold(
        [
            shard(5, "claude-3.5-sonnet", "2026-11-01", "AI", 2),
            shard(7, "maps", "2026-11-02", "API", 1),
        ]
    )

    assert merged.total == Counts(12, 2, 0)
    assert merged.by_type == {"AI": Counts(5, 1, 0), "API": Counts(7, 1, 0)}
    assert merged.features["claude-3.5-sonnet"] == Counts(5, 1, 0)
    assert merged.providers["p"] == Counts(12, 2, 0)
    assert merged.active_users == 3
    assert merged.sessions == {"active": 2, "completed": 4}
    assert MonthAggregate.from_document(merged.document(month="2026-11", as_of=NOW, shards=2)) == merged


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"month": "2026-13"}, "month: must be a month like 2026-11"),
        ({"month": "2026-11\n"}, "month: must be a month like 2026-11"),
        ({"month": "1999-12"}, "month: must be between 2000-01 and 2999-12"),
        ({"top": True}, "top: must be an integer from 1 to 100"),
        ({"top": 100.0}, "top: must be an integer from 1 to 100"),
        ({"fresh": "yes"}, "fresh: must be true or false"),
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

    assert (parsed.month, parsed.top, parsed.fresh) == (None, 10, False)


def test_limits_input_in_nanos() -> None:
    parsed = parse_data(SetLimitsIn, {"userId": "u1", "monthlyCostLimit": 12.5, "monthlyFreeRuns": 3})

    assert (parsed.monthly_cost_nanos, parsed.monthly_free_runs) == (12_500_000_000, 3)
    with pytest.raises(InvalidArgument, match="must be <= 1000000"):
        parse_data(SetLimitsIn, {"userId": "u1", "monthlyCostLimit": 2_000_000})


def test_roles() -> None:
    with pytest.raises(Unauthenticated):
        require_admin(None)
    with pytest.raises(PermissionDenied):
        require_admin(Caller("u1", recorder=True))
    assert require_admin(ADMIN).uid == "boss"
    assert resolve_reader(ADMIN, "u9") == "u9"
    with pytest.raises(PermissionDenied):
        resolve_reader(Caller("u1"), "u9")


def seed(store: MemoryStore, user: str, cost: int, *, when: datetime = NOW, feature: str = "f") -> None:
    record_one(store, user, cost, when=when, now=NOW, feature=feature)


def analytics(store: MemoryStore, now: datetime = NOW, **data: Any) -> dict[str, Any]:
    return usage_analytics(
        store=store, directory=Emails(), caller=ADMIN, data=data, settings=Settings(), now=now
    )


def test_analytics_is_exact_as_of_its_rollup_and_fresh_on_demand() -> None:
    store = MemoryStore(shards=4)
    seed(store, "a", 3_000_000_000)
    first = analytics(store)
    seed(store, "b", 1_000_000_000)

    cached = analytics(store, now=NOW + timedelta(seconds=30))
    fresh = analytics(store, now=NOW + timedelta(seconds=30), fresh=True)
    later = analytics(store, now=NOW + timedelta(seconds=61))

    assert first["totals"]["cost"] == cached["totals"]["cost"] == 3.0
    assert cached["meta"]["asOf"] == first["meta"]["asOf"]
    assert fresh["totals"]["cost"] == later["totals"]["cost"] == 4.0
    assert fresh["totals"]["activeUsers"] == 2
    assert fresh["meta"]["asOf"] == "2026-11-14T10:00:30Z"


def test_analytics_reads_a_bounded_number_of_documents() -> None:
    store = MemoryStore(shards=8)
    for n in range(30):
        seed(store, f"user{n:02d}", 1_000_000 * (n + 1))

    stored = sum(path.startswith(layout.ROLLUPS + "/") for path in store.docs)  # by the platform's watch
    cold = analytics(store, top=5)
    warm = analytics(store, top=5, now=NOW + timedelta(seconds=10))
    fresh = analytics(store, top=5, fresh=True, now=NOW + timedelta(seconds=10))

    # rollups, every month's shards, the 30 users ranked, an empty free-tier query, no alert yet;
    # a young rollup answers with its ranking and the month's latest alerts: no query at all
    assert cold["meta"]["documentsRead"] == 12 + (12 - stored) * 8 + 30 + 1 + 1
    assert warm["meta"]["documentsRead"] == 12
    assert fresh["meta"]["documentsRead"] == 12 + 8 + 30 + 1 + 1
    assert [u["userId"] for u in warm["topUsers"]] == ["user29", "user28", "user27", "user26", "user25"]
    assert warm["topUsers"][0]["email"] == "user29@example.com"


class CountingStore(MemoryStore):
    """A memory store that counts the ranking queries run against it."""

    queries = 0

    def top_users(self, *, month: str, limit: int, read_time: datetime | None = None) -> list[Document]:
        self.queries += 1
        return super().top_users(month=month, limit=limit, read_time=read_time)


def test_a_young_rollup_answers_with_its_own_ranking_and_runs_no_query() -> None:
    store = CountingStore()
    seed(store, "a", 3_000_000_000)
    first = analytics(store)
    seed(store, "b", 4_000_000_000)

    cached = analytics(store, now=NOW + timedelta(seconds=30))
    fresh = analytics(store, now=NOW + timedelta(seconds=30), fresh=True)

    assert store.queries == 2
    assert [u["userId"] for u in first["topUsers"]] == [u["userId"] for u in cached["topUsers"]] == ["a"]
    assert [u["userId"] for u in fresh["topUsers"]] == ["b", "a"]
    assert [r["userId"] for r in fresh["freeTier"]] == ["b"]
    assert cached["freeTier"] == []


def test_a_rollup_folded_without_a_ranking_is_ranked_by_the_next_reader() -> None:
    store = MemoryStore()
    seed(store, "a", 3_000_000_000)
    folding.fold(store, "2026-11", now=NOW)

    result = analytics(store, now=NOW + timedelta(seconds=5))

    assert [u["userId"] for u in result["topUsers"]] == ["a"]
    assert result["meta"]["asOf"] == "2026-11-14T10:00:05Z"


def test_top_asks_for_a_slice_of_the_hundred_ranked_users() -> None:
    store = MemoryStore()
    for n in range(105):
        seed(store, f"user{n:03d}", 1_000 * (n + 1))

    result = analytics(store, top=100)

    assert len(result["topUsers"]) == 100
    assert result["topUsers"][-1]["userId"] == "user005"
    assert len(store.docs[layout.rollup_path("2026-11")]["topUsers"]) == TOP_USERS_KEPT


def test_free_tier_rows_carry_emails_and_percent() -> None:
    store = MemoryStore()
    seed(store, "heavy", 4_500_000_000)
    seed(store, "ghost", 4_200_000_000)
    seed(store, "light", 1_000_000)

    result = analytics(store)

    assert [(r["userId"], r["email"], r["percent"]) for r in result["freeTier"]] == [
        ("heavy", "heavy@example.com", 90.0),
        ("ghost", None, 84.0),
    ]


def test_a_past_months_rollup_is_final_and_never_folded_again() -> None:
    rollup = Rollup("2026-08", MonthAggregate(), datetime(2026, 10, 7, tzinfo=UTC), "v")
    young = Rollup("2026-10", MonthAggregate(), NOW - timedelta(seconds=59), "v")
    old = Rollup("2026-10", MonthAggregate(), NOW - timedelta(seconds=60), "v")

    assert not folding.needs_fold(rollup, NOW)
    assert not folding.needs_fold(young, NOW)
    assert folding.needs_fold(old, NOW)
    assert folding.needs_fold(Rollup.missing("2026-10"), NOW)


def test_a_final_month_shows_what_an_import_adds_to_it() -> None:
    store = MemoryStore()
    july = datetime(2026, 7, 10, tzinfo=UTC)
    record_one(store, "ada", 5, when=july, now=july)
    before, _ = folding.rollups(store, ["2026-07"], now=NOW)  # folded after the month became final
    store.put(
        "ApiUsage/bo/operations/op-july",
        {
            "feature": "maps",
            "provider": "google_maps",
            "cost": 0.000000007,
            "timestamp": "2026-07-11T10:00:00Z",
        },
    )
    import_legacy(store=store, settings=Settings(), now=NOW, sleep=lambda _: None)

    after, _ = folding.rollups(store, ["2026-07"], now=NOW + timedelta(seconds=1))

    assert before["2026-07"].aggregate.total.cost_nanos == 5
    assert after["2026-07"].aggregate.total.cost_nanos == 12


def test_history_covers_twelve_months_with_late_steps_in_the_previous_month() -> None:
    store = MemoryStore()
    seed(store, "a", 2_000_000_000, when=NOW - timedelta(days=20))
    seed(store, "a", 1_000_000_000)

    result = analytics(store)

    assert [h["month"] for h in result["history"]] == months_back("2026-11", 12)
    assert [h["cost"] for h in result["history"][-2:]] == [2.0, 1.0]
    assert store.docs[layout.rollup_path("2026-10")]["costNanos"] == 2_000_000_000
