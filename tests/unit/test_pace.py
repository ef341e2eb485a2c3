"""(v3) Forecast and anomaly alerts: once per (scope, month) and per (scope, day), however many requests."""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters import wiring
from entrypoints.callables import set_limits
from tally import layout
from tally.config import Settings
from tally.documents import months as month_doc
from tally.services import folding, pace, projections
from tally.services.reconcile import reconcile
from tally.timeutil import days_of
from tally.usage import Counts, aggregate
from tally.values import Caller, Contention, Document, Step, UsageType
from tally.writes import CommitResult, Write
from tally_dev.memory import MemoryStore, record_body
from tally_dev.projection import worst_ranking
from tally_dev.sizing import MAX_DOCUMENT_BYTES, document_size

ADMIN = Caller("admin", admin=True)
SETTINGS = Settings()


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def spend(
    store: MemoryStore,
    user: str,
    usd: str,
    when: datetime,
    *,
    op: str | None = None,
    feature: str = "chat",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record one step of `user` stamped `when`, recorded at `now` (default: then)."""
    step = {
        "operationId": op or f"op-{user}-{len(store.commits)}-{when:%d%H}",
        "usageType": "AI",
        "feature": feature,
        "provider": "openai",
        "cost": usd,
        "timestamp": when.isoformat(),
    }
    return record_body(store, {"steps": [step]}, caller=Caller(user), now=now or when, settings=SETTINGS).body


def alerts_of(store: MemoryStore, kind: str) -> list[dict[str, Any]]:
    return sorted(
        (
            doc
            for path, doc in store.docs.items()
            if path.startswith(layout.ALERTS + "/") and doc["kind"] == kind
        ),
        key=lambda doc: str(doc["alertId"]),
    )


def limit(store: MemoryStore, user: str, usd: float) -> None:
    set_limits(
        store=store,
        caller=ADMIN,
        data={"userId": user, "monthlyCostLimit": usd},
        settings=SETTINGS,
        now=at(1),
    )


def test_marks_step_by_a_factor_of_root_two_from_a_cent() -> None:
    assert [pace.mark(n) for n in (0, 9_999_999, 10_000_000, 14_142_136, 20_000_000, 40_000_000)] == [
        -1,
        -1,
        0,
        1,
        2,
        4,
    ]


def test_a_forecast_alert_waits_for_the_third_day_and_the_limit() -> None:
    found = projections.project(month="2026-11", days={"2026-11-01": Counts(5 * 10**9)}, now=at(2))

    early = pace.forecast_alert(
        projected=found, limit_nanos=10**9, now=at(2), scope="user.month.cost", raised_by="t"
    )
    under = pace.forecast_alert(
        projected=found, limit_nanos=10**15, now=at(3), scope="user.month.cost", raised_by="t"
    )
    over = pace.forecast_alert(
        projected=found, limit_nanos=10**9, now=at(3), scope="user.month.cost", raised_by="t"
    )

    assert (early, under) == (None, None)
    assert over is not None
    assert (over.kind.value, over.threshold, over.window) == ("forecast", 100, "2026-11")


def test_a_pace_past_the_limit_raises_one_forecast_alert_even_for_twenty_concurrent_requests() -> None:
    store = MemoryStore()
    limit(store, "u1", 10)
    for day in range(1, 5):
        spend(store, "u1", "0.30", at(day, 23))  # $9 a month: under the limit
    assert alerts_of(store, "forecast") == []

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(
            pool.map(lambda n: spend(store, "u1", "0.10", at(5), op=f"burst-{n}"), range(20))
        )  # $3.20 spent by noon on the 5th: at least $0.30 a day after that ends past $10
    spend(store, "u1", "0.10", at(5, 13))

    (alert,) = alerts_of(store, "forecast")
    assert (alert["userId"], alert["scope"], alert["window"], alert["limit"]) == (
        "u1",
        "user.month.cost",
        "2026-11",
        10,
    )
    assert alert["used"] >= 10
    assert store.docs[layout.user_month_path("u1", "2026-11")]["forecastAlerted"] is True


def test_a_forecast_alert_whose_commit_failed_leaves_no_flag_so_it_is_tried_again() -> None:
    store = MemoryStore()
    alert = pace.forecast_alert(
        projected=projections.project(month="2026-11", days={"2026-11-01": Counts(5 * 10**9)}, now=at(3)),
        limit_nanos=10**9,
        now=at(3),
        scope="user.month.cost",
        raised_by="t",
        user_id="u1",
    )
    assert alert is not None

    def unavailable(writes: Sequence[Write]) -> None:
        raise Contention("unavailable")

    store.before_commit = unavailable
    failed = pace.raise_flagged(store, alert, at(3))
    store.before_commit = None
    month = layout.user_month_path("u1", "2026-11")
    flagged_after_failure = "forecastAlerted" in store.docs.get(month, {})
    again = pace.raise_flagged(store, alert, at(3, 13))

    assert (failed, flagged_after_failure, again) == (False, False, True)
    assert store.docs[month]["forecastAlerted"] is True


def test_once_flagged_a_month_tries_no_forecast_alert_again() -> None:
    store = MemoryStore()
    limit(store, "u1", 1)
    spend(store, "u1", "2", at(5))
    before = len(store.commits)

    spend(store, "u1", "0.01", at(5, 13))

    assert len(alerts_of(store, "forecast")) == 1
    assert len(store.commits) - before == 1  # the recording only: no alert tried, no flag written


def test_a_spike_day_raises_one_anomaly_alert_for_the_user_and_ordinary_days_none() -> None:
    store = MemoryStore()
    for day in range(1, 16):
        spend(store, "u1", "0.20" if day % 7 in (1, 2) else "0.10", at(day))  # weekly: two dearer days
    assert alerts_of(store, "anomaly") == []

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda n: spend(store, "u1", "0.10", at(16), op=f"spike-{n}"), range(20)))  # $2.00

    (alert,) = [a for a in alerts_of(store, "anomaly") if a["userId"] == "u1"]
    assert (alert["scope"], alert["window"], alert["threshold"]) == ("user.day.cost", "2026-11-16", 250)
    assert alert["limit"] < 0.25  # the usual cost of that day


class ReadCounting(MemoryStore):
    """A memory store that counts the reads of each path."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    def read(self, paths: Sequence[str], **options: Any) -> dict[str, Document]:
        for path in paths:
            self.reads[path] = self.reads.get(path, 0) + 1
        return super().read(paths, **options)


def test_an_instance_remembers_a_bounded_number_of_previous_months(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace, "PREVIOUS_REMEMBERED", 2)
    store = ReadCounting()
    store.put(layout.user_month_path("u1", "2026-10"), {"days": {"2026-10-30": {"costNanos": 7}}})

    first = pace.previous_days(store, "u1", at(5))
    for user in ("u2", "u3", "u1"):  # u1 was the least recently used: forgotten
        pace.previous_days(store, user, at(5))

    assert first == {"2026-10-30": 7}
    assert store.reads[layout.user_month_path("u1", "2026-10")] == 2


def test_an_instance_has_one_store_so_its_memories_outlive_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wiring, "firestore_client", object)
    wiring.store.cache_clear()

    first, second = wiring.store(), wiring.store()
    wiring.store.cache_clear()

    assert first is second


def test_early_in_a_month_a_users_spike_is_judged_with_the_previous_months_days() -> None:
    store, newcomer = ReadCounting(), ReadCounting()
    for day in range(1, 32):
        spend(store, "u1", "0.10", datetime(2026, 10, day, 12, tzinfo=UTC))
    for day in range(1, 5):
        spend(store, "u1", "0.10", at(day))
        spend(newcomer, "u1", "0.10", at(day))

    spend(store, "u1", "1.00", at(5))
    spend(newcomer, "u1", "1.00", at(5))

    (alert,) = [a for a in alerts_of(store, "anomaly") if a["userId"] == "u1"]
    assert (alert["scope"], alert["window"]) == ("user.day.cost", "2026-11-05")
    assert [a for a in alerts_of(newcomer, "anomaly") if a["userId"] == "u1"] == []  # 4 days: too few


def test_the_previous_month_is_read_only_past_the_floor_and_once_an_hour() -> None:
    store = ReadCounting()
    october = layout.user_month_path("u1", "2026-10")
    spend(store, "u1", "0.10", at(5, 9))  # not past the floor ($0.10): no anomaly possible
    assert store.reads.get(october, 0) == 0

    spend(store, "u1", "0.05", at(5, 10))
    spend(store, "u1", "0.05", at(5, 10))
    spend(store, "u1", "0.05", at(5, 11))

    assert store.reads[october] == 2  # at 10:00, then again after an hour


def reconciled(store: MemoryStore, now: datetime, *, fix: bool = False) -> tuple[list[str], list[str]]:
    report = reconcile(store=store, month="2026-11", settings=SETTINGS, now=now, fix=fix)
    return [d.line() for d in report.differences], report.due


def test_lowering_a_limit_raises_the_forecast_alert_it_calls_for() -> None:
    store = MemoryStore()
    limit(store, "u1", 100)
    for day in range(1, 6):
        spend(store, "u1", "1.00", at(day, 9))  # $30 a month: under $100
    assert alerts_of(store, "forecast") == []

    set_limits(
        store=store, caller=ADMIN, data={"userId": "u1", "monthlyCostLimit": 20}, settings=SETTINGS, now=at(6)
    )

    (alert,) = alerts_of(store, "forecast")
    assert (alert["userId"], alert["limit"], alert["raisedBy"]) == ("u1", 20, "set_limits")
    assert store.docs[layout.user_month_path("u1", "2026-11")]["forecastAlerted"] is True


def test_reconcile_raises_a_lost_forecast_alert_late_as_due_not_as_a_difference() -> None:
    store = MemoryStore()
    limit(store, "u1", 20)
    for day in range(1, 6):
        spend(store, "u1", "1.00", at(day, 9))  # $30 a month: past $20
    (lost,) = alerts_of(store, "forecast")
    del store.docs[layout.alert_path(lost["alertId"])]  # the commit after the step's was lost
    del store.docs[layout.user_month_path("u1", "2026-11")]["forecastAlerted"]

    differences, due = reconciled(store, at(6), fix=True)

    (alert,) = alerts_of(store, "forecast")
    assert differences == []
    assert due == [f"{layout.alert_path(lost['alertId'])} forecast user.month.cost 2026-11: due, not raised"]
    assert (alert["userId"], alert["late"], alert["raisedBy"]) == ("u1", True, "reconcile")
    assert reconciled(store, at(6, 13)) == ([], [])


def test_a_projection_that_reaches_the_limit_with_the_clock_is_due_in_reconcile_not_a_difference() -> None:
    store = MemoryStore()
    limit(store, "u1", 39)
    for day in range(1, 6):
        spend(store, "u1", "1.00", at(day, 9))
    spend(store, "u1", "5.00", at(6, 10))  # projected $37.26 at 10:00, $40.46 at noon (today joins the fit)
    assert alerts_of(store, "forecast") == []

    differences, due = reconciled(store, at(6, 12))

    assert differences == []
    assert [line.split(" ")[1] for line in due] == ["forecast"]


def test_reconcile_raises_yesterdays_anomaly_alert_a_crash_lost() -> None:
    store = MemoryStore()
    for day in range(1, 16):
        spend(store, "u1", "0.10", at(day))
    spend(store, "u1", "2.00", at(16))
    (lost,) = [a for a in alerts_of(store, "anomaly") if a["userId"] == "u1"]
    del store.docs[layout.alert_path(lost["alertId"])]  # the commit after the step's was lost
    del store.docs[layout.user_month_path("u1", "2026-11")]["anomalyAlertedDay"]

    differences, due = reconciled(store, at(17, 1), fix=True)

    (alert,) = [a for a in alerts_of(store, "anomaly") if a["userId"] == "u1"]
    assert differences == []
    assert due == [f"{layout.alert_path(lost['alertId'])} anomaly user.day.cost 2026-11-16: due, not raised"]
    assert (alert["window"], alert["late"], alert["raisedBy"]) == ("2026-11-16", True, "reconcile")
    assert reconciled(store, at(17, 2)) == ([], [])


def test_reconcile_raises_the_platforms_and_a_features_lost_anomaly_alerts_late() -> None:
    store = MemoryStore()
    for day in range(1, 16):
        spend(store, "u1", "0.10", at(day))
    spend(store, "u1", "2.00", at(16))
    lost = [a for a in alerts_of(store, "anomaly") if a["userId"] is None]
    for alert in lost:
        del store.docs[layout.alert_path(alert["alertId"])]  # the check after the commit was lost

    differences, due = reconciled(store, at(16, 13), fix=True)

    assert sorted(a["scope"] for a in lost) == ["feature:chat.day.cost", "platform.day.cost"]
    assert differences == []
    assert sorted(line.split(" ")[2] for line in due) == ["feature:chat.day.cost", "platform.day.cost"]
    raised = [a for a in alerts_of(store, "anomaly") if a["userId"] is None]
    assert [(a["late"], a["raisedBy"]) for a in raised] == [(True, "reconcile")] * 2
    assert reconciled(store, at(16, 14)) == ([], [])


def test_reconcile_judges_the_platform_on_the_whole_last_month_even_if_its_rollup_was_folded_early() -> None:
    store = MemoryStore()
    for day in range(1, 8):
        spend(store, "u1", "0.10", datetime(2026, 10, day, 12, tzinfo=UTC))
    folding.fold(store, "2026-10", now=datetime(2026, 10, 7, 13, tzinfo=UTC))  # read mid-month: 7 days
    early = dict(store.docs[layout.rollup_path("2026-10")])
    for day in range(8, 32):
        spend(store, "u1", "0.10", datetime(2026, 10, day, 12, tzinfo=UTC))
    for day, usd in ((1, "0.10"), (2, "0.10"), (3, "0.15")):  # the 3rd: ordinary against all of October
        spend(store, "u1", usd, at(day))
    store.docs[layout.rollup_path("2026-10")] = early  # as if November's checks had not stored it again

    _, due = reconciled(store, at(3, 13))

    assert [line for line in due if "platform" in line or "feature" in line] == []


def test_a_step_recorded_after_midnight_for_the_day_before_raises_that_days_anomaly() -> None:
    store = MemoryStore()
    for day in range(1, 17):
        spend(store, "u1", "0.10", at(day))
    late_step, recorded = datetime(2026, 11, 16, 23, 59, tzinfo=UTC), datetime(2026, 11, 17, 0, 1, tzinfo=UTC)

    spend(store, "u1", "2.00", late_step, op="late", now=recorded)

    (alert,) = [a for a in alerts_of(store, "anomaly") if a["userId"] == "u1"]
    assert (alert["window"], alert["late"], alert["raisedBy"]) == ("2026-11-16", True, "record_steps")
    assert reconciled(store, datetime(2026, 11, 17, 1, tzinfo=UTC)) == ([], [])


def feature_month(daily: dict[str, int], spike: int) -> month_doc.MonthAggregate:
    docs = []
    for day in days_of("2026-11")[:17]:
        cost = spike if day == "2026-11-17" else daily.get(day, 50_000_000)
        steps = [
            Step(
                f"op-{day}",
                UsageType.AI,
                "img",
                "p",
                cost,
                False,
                timestamp=datetime.fromisoformat(day + "T09:00:00+00:00"),
            )
        ]
        docs.append(month_doc.counters_of(aggregate(steps)["2026-11"]))
    return month_doc.MonthAggregate.fold(docs)


def test_the_platform_and_a_feature_raise_their_anomaly_on_a_spike_day() -> None:
    calm, spiked = feature_month({}, 50_000_000), feature_month({}, 2_000_000_000)

    quiet = pace.platform_pace_alerts(
        current=calm, previous=[], settings=SETTINGS, now=at(17, 20), raised_by="t"
    )
    found = pace.platform_pace_alerts(
        current=spiked, previous=[], settings=SETTINGS, now=at(17, 20), raised_by="t"
    )

    assert quiet == []
    assert sorted((a.kind.value, a.scope, a.window) for a in found) == [
        ("anomaly", "feature:img.day.cost", "2026-11-17"),
        ("anomaly", "platform.day.cost", "2026-11-17"),
    ]


def test_watching_the_platform_raises_each_alert_once() -> None:
    store = MemoryStore(shards=1)
    for day in range(1, 17):
        spend(store, f"u{day}", "0.05", at(day), feature="img")
    spend(store, "u99", "2", at(17), feature="img")

    pace.watch_platform(store, "2026-11", SETTINGS, at(17, 13), raised_by="t")
    pace.watch_platform(store, "2026-11", SETTINGS, at(17, 14), raised_by="t")

    scopes = sorted(a["scope"] for a in alerts_of(store, "anomaly") if a["userId"] is None)
    assert scopes == ["feature:img.day.cost", "platform.day.cost"]


def test_a_recording_watches_the_platform_only_when_its_shard_passes_a_mark() -> None:
    steps = [Step("op", UsageType.AI, "img", "p", 5_000_000, False, timestamp=at(15))]
    delta = aggregate(steps)["2026-11"]

    def result(day_cost: int, feature_cost: int, shard: int = 0) -> CommitResult:
        return CommitResult(
            {
                layout.shard_path("2026-11", shard): {
                    ("days", "2026-11-15", "costNanos"): day_cost,
                    ("featureDays", "img", "15"): feature_cost,
                }
            }
        )

    assert pace.shard_crossed(
        result(12_000_000, 7_000_000), "2026-11", 0, delta, at(15)
    )  # the day: past $0.01
    assert pace.shard_crossed(result(9_000_000, 11_000_000), "2026-11", 0, delta, at(15))  # the feature's
    assert not pace.shard_crossed(result(9_000_000, 9_000_000), "2026-11", 0, delta, at(15))
    assert pace.shard_crossed(result(12_000_000, 7_000_000, 1), "2026-11", 1, delta, at(15))  # any shard


def test_a_new_user_is_not_blended_with_months_of_nothing() -> None:
    days = {f"2026-11-{d:02d}": Counts(10**9) for d in range(1, 14)}

    fresh = projections.project(month="2026-11", days=days, now=at(14), previous_months_nanos=[])
    zeros = projections.project(month="2026-11", days=days, now=at(14), previous_months_nanos=[0, 0])

    assert zeros == fresh


def test_a_rollup_with_every_name_on_every_day_stays_under_60_percent_of_a_mebibyte() -> None:
    name = "n" * 100
    every = {f"{n:03d}{name}"[:100]: Counts(2**62, 2**62, 2**62) for n in range(501)}
    days = {day: Counts(2**62, 2**62, 2**62) for day in days_of("2026-12")}
    aggregate = month_doc.MonthAggregate(
        total=Counts(2**62, 2**62, 2**62),
        unpriced_models={(f"{n:03d}{name}"[:100], f"{n:03d}{name}"[:100]): 2**62 for n in range(501)},
        by_type={"API": Counts(1, 1, 1), "AI": Counts(1, 1, 1)},
        features=every,
        providers=dict(every),
        days=days,
        teams={f"team-{n:03d}".ljust(64, "t"): Counts(2**62, 2**62, 2**62) for n in range(500)},
        feature_days={feature: {day[-2:]: 2**62 for day in days} for feature in every},
    )
    document = aggregate.document(month="2026-12", as_of=at(1), shards=64) | worst_ranking()

    size = document_size(layout.rollup_path("2026-12"), document)

    assert size < 0.6 * MAX_DOCUMENT_BYTES  # 587,042 bytes, of which featureDays ~237 kB
