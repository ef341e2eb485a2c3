"""Budgets before spending and alerts, on the in-memory store (Firestore's commit semantics)."""

import contextlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entrypoints.callables import set_limits, set_price
from tally import layout, names
from tally.config import Settings
from tally.documents import plans
from tally.errors import Unavailable
from tally.requests import parse_record_request, parse_reserve_request
from tally.services import alerts
from tally.services.recording import record_steps
from tally.services.reservations import expire_holds, release_spend, reserve_spend
from tally.values import Caller, Contention
from tally_dev.memory import MemoryStore

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)
USER = Caller("u1")
SETTINGS = Settings()


def spend(
    store: MemoryStore, usd: str, *, billable: bool = False, op: str | None = None, **extra: Any
) -> dict[str, Any]:
    step = {
        "operationId": op or f"op-{usd}-{billable}-{len(store.commits)}",
        "usageType": "AI",
        "feature": "chat",
        "provider": "openai",
        "cost": usd,
        "isBillableRun": billable,
        **extra,
    }
    request = parse_record_request({"steps": [step]}, now=NOW)
    return record_steps(
        store=store,
        caller=USER,
        request=request,
        settings=SETTINGS,
        now=NOW,
        admitted_cache=names.AdmittedNames(),
        shards=plans.ShardPicker(seed=1),
    ).body


def reserve(
    store: MemoryStore,
    rid: str,
    usd: str = "0.5",
    *,
    billable: bool = False,
    ttl: int = 300,
    now: datetime = NOW,
) -> dict[str, Any]:
    request = parse_reserve_request(
        {"reservationId": rid, "estimate": {"cost": usd, "isBillableRun": billable}, "ttlSeconds": ttl}
    )
    return reserve_spend(store=store, caller=USER, request=request, settings=SETTINGS, now=now)


def held(store: MemoryStore) -> dict[str, int]:
    result: dict[str, int] = store.docs[layout.usage_path("u1")]["usage"]["held"]
    return result


def test_thirty_concurrent_reservations_admit_exactly_what_fits() -> None:
    store = MemoryStore()
    spend(store, "2.00")

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: reserve(store, f"r{n}"), range(30)))

    allowed = [a for a in answers if a["allowed"]]
    assert len(allowed) == 6  # $2.00 recorded + 6 x $0.50 = $5.00
    assert {a["reason"] for a in answers if not a["allowed"]} == {"MONTHLY_COST_LIMIT"}
    assert held(store)["costNanos"] == 3_000_000_000
    assert max(a["usage"]["limits"]["held"] for a in answers) <= 3.0


def test_billable_runs_are_held_against_the_free_runs() -> None:
    store = MemoryStore()
    set_limits(
        store=store,
        caller=Caller("a", admin=True),
        data={"userId": "u1", "monthlyFreeRuns": 3},
        settings=SETTINGS,
        now=NOW,
    )
    spend(store, "0.01", billable=True)

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda n: reserve(store, f"r{n}", "0.01", billable=True), range(10)))

    assert sum(a["allowed"] for a in answers) == 2
    assert {a["reason"] for a in answers if not a["allowed"]} == {"FREE_RUNS"}


def test_the_same_reservation_id_gets_the_same_answer_and_holds_nothing_more() -> None:
    store = MemoryStore()

    first, again = reserve(store, "r1", "1"), reserve(store, "r1", "1")

    assert again == first
    assert held(store)["costNanos"] == 1_000_000_000


def test_recording_with_the_reservation_settles_it_at_the_actual_cost() -> None:
    store = MemoryStore()
    reserve(store, "r1", "0.5")

    body = spend(store, "0.75", reservationId="r1")
    again = spend(store, "0.25", reservationId="r1")

    assert body["usage"]["totalCost"] == 0.75
    assert body["usage"]["limits"]["held"] == 0.0
    assert again["usage"]["totalCost"] == 1.0  # recorded, never refused; the hold is already settled
    assert held(store)["costNanos"] == 0
    assert store.docs[layout.reservation_path("u1", "r1")]["status"] == "settled"


def test_release_and_expiry_free_the_hold() -> None:
    store = MemoryStore()
    reserve(store, "r1", "1")
    reserve(store, "r2", "1", ttl=10)

    released = release_spend(
        store=store, caller=USER, user_id=None, reservation_id="r1", settings=SETTINGS, now=NOW
    )
    twice = release_spend(
        store=store, caller=USER, user_id=None, reservation_id="r1", settings=SETTINGS, now=NOW
    )
    ended = expire_holds(store=store, now=NOW + timedelta(seconds=11))

    assert (released["released"], twice["released"], twice["status"]) == (True, False, "released")
    assert ended == 1
    assert held(store) == {"costNanos": 0, "runs": 0}


def test_a_decision_lost_in_a_crash_is_made_again_on_the_retry() -> None:
    store = MemoryStore()
    spend(store, "4.80")
    original = store.commit

    def crash_before_deciding(writes: Any) -> Any:
        if any("decidedAt" in w.data for w in writes):
            raise RuntimeError("the process died")
        return original(writes)

    store.commit = crash_before_deciding  # type: ignore[method-assign]
    with contextlib.suppress(RuntimeError):
        reserve(store, "r1", "0.5")
    store.commit = original  # type: ignore[method-assign]

    answer = reserve(store, "r1", "0.5")

    assert (answer["allowed"], answer["reason"]) == (False, "MONTHLY_COST_LIMIT")
    assert held(store)["costNanos"] == 0


def alert_docs(store: MemoryStore) -> list[dict[str, Any]]:
    return [doc for path, doc in store.docs.items() if path.startswith(layout.ALERTS + "/")]


def test_concurrent_requests_crossing_80_and_100_percent_raise_one_alert_each() -> None:
    store = MemoryStore()

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda n: spend(store, "0.3", op=f"op{n}"), range(20)))

    found = sorted((d["kind"], d["threshold"], d["raisedBy"]) for d in alert_docs(store))
    assert found == [
        ("cost", 80, "record_steps"),
        ("cost", 100, "record_steps"),
        ("forecast", 100, "record_steps"),
    ]


def test_lowering_a_limit_below_usage_raises_the_alert_once() -> None:
    store = MemoryStore()
    spend(store, "1")
    admin = Caller("a", admin=True)

    for _ in range(2):
        set_limits(
            store=store,
            caller=admin,
            data={"userId": "u1", "monthlyCostLimit": 0.5},
            settings=SETTINGS,
            now=NOW,
        )

    assert sorted((d["threshold"], d["raisedBy"]) for d in alert_docs(store) if d["kind"] == "cost") == [
        (80, "set_limits"),
        (100, "set_limits"),
    ]


def test_an_alert_lost_after_the_commit_is_raised_late_by_a_retry() -> None:
    store = MemoryStore()
    original = store.commit

    def lose_alerts(writes: Any) -> Any:
        if any(w.path.startswith(layout.ALERTS) for w in writes):
            raise RuntimeError("the process died")
        return original(writes)

    store.commit = lose_alerts  # type: ignore[method-assign]
    spend(store, "4.5", op="big")
    store.commit = original  # type: ignore[method-assign]
    assert alert_docs(store) == []

    spend(store, "4.5", op="big")

    assert [(d["threshold"], d["late"], d["raisedBy"]) for d in alert_docs(store)] == [(80, True, "retry")]


def test_webhook_payload_is_signed_and_retried_until_a_2xx() -> None:
    store = MemoryStore()
    spend(store, "4.5")
    alert = alert_docs(store)[0]
    answers = iter([500, 0, 204])
    sent: list[tuple[bytes, dict[str, str]]] = []

    def post(url: str, body: bytes, headers: Any) -> int:
        sent.append((body, dict(headers)))
        return next(answers)

    settings = Settings(
        webhook_url="https://hooks.example.com/tally", webhook_secret="s3cret", webhook_backoff_seconds=0
    )
    result = alerts.deliver(
        store=store,
        alert_id=alert["alertId"],
        settings=settings,
        post=post,
        sleep=lambda _: None,
        now=lambda: NOW,
    )

    assert (result.delivered, result.attempts) == (True, 3)
    body, headers = sent[-1]
    assert headers["X-Tally-Alert-Id"] == alert["alertId"]
    assert headers["X-Tally-Signature"] == alerts.signature("s3cret", body)
    stored = store.docs[layout.alert_path(alert["alertId"])]
    assert (stored["attempts"], stored["deliveredAt"]) == (3, NOW)


def test_a_document_tally_did_not_write_is_refused_not_retried_forever() -> None:
    store = MemoryStore()
    store.put(layout.alert_path("stray"), {"note": "written by hand", "month": "2026-11"})
    settings = Settings(webhook_url="https://hooks.example.com/tally", webhook_secret="s3cret")
    sent: list[bytes] = []

    def post(url: str, body: bytes, headers: Any) -> int:
        sent.append(body)
        return 204

    result = alerts.deliver(
        store=store, alert_id="stray", settings=settings, post=post, sleep=lambda _: None, now=lambda: NOW
    )

    assert result == alerts.Delivery(
        False, 0, "not an alert Tally wrote (no alertId, kind, threshold, used, limit)"
    )
    assert sent == []
    assert store.docs[layout.alert_path("stray")] == {"note": "written by hand", "month": "2026-11"}


def test_a_webhook_without_a_secret_is_a_clear_refusal_not_a_crash() -> None:
    store = MemoryStore()
    settings = Settings(webhook_url="https://hooks.example.com/tally")

    result = alerts.deliver(
        store=store,
        alert_id="x",
        settings=settings,
        post=lambda *a: 500,
        sleep=lambda _: None,
        now=lambda: NOW,
    )

    assert result.skipped == "TALLY_ALERT_WEBHOOK_SECRET is not set: alerts are not delivered unsigned"


def test_the_platform_budget_alerts_once() -> None:
    store = MemoryStore(shards=2)
    settings = Settings(platform_budget_nanos=10_000_000_000, aggregate_shards=2)

    for n in range(12):
        request = parse_record_request(
            {
                "steps": [
                    {"operationId": f"p{n}", "usageType": "API", "feature": "f", "provider": "p", "cost": "1"}
                ]
            },
            now=NOW,
        )
        record_steps(
            store=store,
            caller=Caller(f"u{n}"),
            request=request,
            settings=settings,
            now=NOW,
            admitted_cache=names.AdmittedNames(),
            shards=plans.ShardPicker(seed=2),
        )

    platform = sorted((d["kind"], d["threshold"]) for d in alert_docs(store) if d["userId"] is None)
    assert platform == [("cost", 80), ("cost", 100), ("forecast", 100)]


def reserve_units(store: MemoryStore, rid: str, **estimate: Any) -> dict[str, Any]:
    body = {
        "reservationId": rid,
        "estimate": {"units": {"model": "ft:gpt-4o:acme:tally:42", "inputTokens": 1000}, **estimate},
    }
    return reserve_spend(
        store=store, caller=USER, request=parse_reserve_request(body), settings=SETTINGS, now=NOW
    )


def test_an_estimate_nobody_can_price_is_refused_and_holds_nothing() -> None:
    store = MemoryStore()

    answers = [reserve_units(store, f"r{n}", provider="openai") for n in range(3)]
    no_provider = reserve_units(store, "r9")

    assert [(a["allowed"], a["reason"]) for a in [*answers, no_provider]] == [(False, "UNPRICED")] * 4
    assert layout.usage_path("u1") not in store.docs  # nothing held, nothing written to the user
    assert {w.path.rsplit("/", 2)[1] for commit in store.commits for w in commit} == {"reservations"}


def test_an_admin_price_lets_an_estimate_through() -> None:
    store = MemoryStore()
    set_price(
        store=store,
        caller=Caller("boss", admin=True),
        data={"provider": "openai", "model": "ft:gpt-4o:acme:tally:42", "prices": {"inputMTok": 3}},
        settings=SETTINGS,
        now=NOW - timedelta(days=1),
    )

    answer = reserve_units(store, "r1", provider="openai", feature="chat")

    assert (answer["allowed"], answer["reserved"]) == (True, 0.003)


def test_a_gated_call_writes_the_users_documents_twice_in_all() -> None:
    store = MemoryStore()
    admin = Caller("a", admin=True)
    set_limits(
        store=store, caller=admin, data={"userId": "u1", "monthlyCostLimit": 100}, settings=SETTINGS, now=NOW
    )
    spend(store, "0.10")  # on a pace well under the limit: no forecast alert (its flag is one more write)
    store.commits.clear()

    reserve(store, "r1", "0.5")
    spend(store, "0.40", reservationId="r1")

    per_user = {layout.user_path("u1"), layout.usage_path("u1"), layout.user_month_path("u1", "2026-11")}
    writes = [w.path for commit in store.commits for w in commit if w.path in per_user]
    assert sorted(writes) == sorted(
        [*[layout.user_path("u1"), layout.usage_path("u1")] * 2, layout.user_month_path("u1", "2026-11")]
    )


def test_a_refused_reservation_takes_its_hold_back() -> None:
    store = MemoryStore()
    spend(store, "4.80")

    answer = reserve(store, "r1", "0.5")

    assert (answer["allowed"], answer["reason"]) == (False, "MONTHLY_COST_LIMIT")
    assert held(store) == {"costNanos": 0, "runs": 0}


def test_contention_past_the_retries_is_unavailable() -> None:
    store = MemoryStore()
    reserve(store, "r1", "0.5")

    def contend(writes: Any) -> None:
        raise Contention("Aborted")

    store.before_commit = contend

    with pytest.raises(Unavailable):
        reserve(store, "r2", "0.5")
    with pytest.raises(Unavailable):
        release_spend(store=store, caller=USER, user_id=None, reservation_id="r1", settings=SETTINGS, now=NOW)


def test_a_hold_that_ended_before_its_decision_was_never_allowed() -> None:
    store = MemoryStore()
    spend(store, "4.50")
    decided = 0

    def crash_on_the_decision(writes: Any) -> None:
        nonlocal decided
        if any("decidedAt" in w.data for w in writes):
            decided += 1
            raise RuntimeError("the instance dies before storing its decision")

    store.before_commit = crash_on_the_decision
    with contextlib.suppress(RuntimeError):
        reserve(store, "r1", "1.0")
    store.before_commit = None
    expire_holds(store=store, now=NOW + timedelta(minutes=6))

    again = reserve(store, "r1", "1.0")

    assert decided == 1
    assert (again["allowed"], again["reserved"], again["reason"]) == (False, 0.0, "EXPIRED")
