"""The platform's budget at the gate (TALLY_PLATFORM_BUDGET_ENFORCED), on the in-memory store."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from tally import layout
from tally.config import Settings
from tally.requests import parse_reserve_request
from tally.services.reservations import release_spend, reserve_spend
from tally.values import Caller
from tally_dev.memory import MemoryStore, record_body

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)
ENFORCED = Settings(platform_budget_nanos=2_000_000_000, platform_budget_enforced=True)


def reserve(
    store: MemoryStore, user: str, rid: str, usd: str, settings: Settings = ENFORCED
) -> dict[str, Any]:
    request = parse_reserve_request({"reservationId": rid, "estimate": {"cost": usd}, "ttlSeconds": 60})
    return reserve_spend(store=store, caller=Caller(user), request=request, settings=settings, now=NOW)


def spend(store: MemoryStore, user: str, usd: str, **extra: Any) -> None:
    step = {
        "operationId": f"op-{user}-{len(store.commits)}",
        "usageType": "API",
        "feature": "f",
        "provider": "p",
        "cost": usd,
        **extra,
    }
    record_body(store, {"steps": [step]}, caller=Caller(user), now=NOW, settings=ENFORCED)


def platform_held(store: MemoryStore) -> int:
    return sum(
        doc.get("costNanos", 0) for path, doc in store.docs.items() if path.startswith(layout.PLATFORM_HOLDS)
    )


def test_thirty_concurrent_reservations_of_many_users_admit_exactly_what_fits_the_platform() -> None:
    store = MemoryStore()
    spend(store, "someone", "0.50")

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: reserve(store, f"user-{n}", f"r{n}", "0.25"), range(30)))

    assert sum(a["allowed"] for a in answers) == 6  # $0.50 + 6 x $0.25 = $2.00
    assert {a["reason"] for a in answers if not a["allowed"]} == {"PLATFORM_BUDGET"}
    assert platform_held(store) == 1_500_000_000


def test_settling_and_releasing_take_the_platform_hold_back() -> None:
    store = MemoryStore()
    reserve(store, "a", "r1", "1")
    reserve(store, "b", "r2", "0.5")

    spend(store, "a", "0.70", reservationId="r1")
    release_spend(
        store=store, caller=Caller("b"), user_id=None, reservation_id="r2", settings=ENFORCED, now=NOW
    )

    assert platform_held(store) == 0
    assert reserve(store, "c", "r3", "1.30")["allowed"] is True  # $0.70 + $1.30 = $2.00
    assert reserve(store, "c", "r4", "0.01")["reason"] == "PLATFORM_BUDGET"


def test_without_enforcement_the_budget_only_alerts() -> None:
    store = MemoryStore()
    alerting = Settings(platform_budget_nanos=1)

    answer = reserve(store, "a", "r1", "1", settings=alerting)

    assert answer["allowed"] is True
    assert platform_held(store) == 0
