"""Forecasts and anomalies (pure): month-end projections on hand-built daily series, and the spike rule."""

import math
import random
from datetime import date

import pytest

from tally.forecast import GROWTH_CAP, actual, anomaly, forecast

USD = 10**9
MONTH = "2026-11"  # 30 days; the 1st is a Sunday
DAYS = 30


def weekday(day: int) -> int:
    return date(2026, 11, day).weekday()


def weekly(day: int) -> int:
    """Return a weekly-cyclic day's cost: $10 on weekdays, $2 on weekends."""
    return 2 * USD if weekday(day) >= 5 else 10 * USD


def noisy(rng: random.Random, cost: float, sigma: float) -> int:
    return round(cost * math.exp(rng.gauss(0, sigma) - sigma * sigma / 2))


def test_a_steady_series_projects_its_run_rate() -> None:
    got = forecast(month=MONTH, daily_nanos=[USD] * 10, today=10)

    assert got.month_end_nanos == pytest.approx(30 * USD, rel=0.01)
    assert 10 * USD <= got.low_nanos <= got.month_end_nanos <= got.high_nanos
    assert got.exceeds_on is None
    assert (
        "run rate over 9 days" in got.basis
    )  # the 1st (a new user's first day may be partial) out, today in


def test_a_steady_series_blends_with_its_history() -> None:
    got = forecast(month=MONTH, daily_nanos=[USD] * 10, today=10, previous_months_nanos=[31 * USD, 30 * USD])

    assert got.month_end_nanos == pytest.approx(30 * USD, rel=0.01)
    assert "blended with 2 previous months" in got.basis


def test_a_weekly_cycle_projects_the_weekdays_left() -> None:
    daily = [weekly(d) for d in range(1, 22)]
    truth = sum(weekly(d) for d in range(1, DAYS + 1))

    got = forecast(month=MONTH, daily_nanos=daily, today=21)

    assert got.month_end_nanos == pytest.approx(truth, rel=0.01)
    assert got.basis.startswith("weekday-aware run rate")


def test_a_weekly_cycle_beats_the_plain_run_rate() -> None:
    # By the 13th, 3 days of 13 were weekend days; the month has 9 of 30: the run rate over-counts weekdays.
    rng = random.Random(3)
    tally_errors, run_rate_errors = [], []
    for sigma in [0.0] + [0.15] * 30:
        daily = [noisy(rng, weekly(d), sigma) for d in range(1, DAYS + 1)]
        got = forecast(month=MONTH, daily_nanos=daily[:13], today=13)
        tally_errors.append(abs(got.month_end_nanos / sum(daily) - 1))
        run_rate_errors.append(abs(sum(daily[:13]) / 13 * DAYS / sum(daily) - 1))

    assert tally_errors[0] < 0.01 < run_rate_errors[0]  # without noise
    assert sum(tally_errors) < 0.7 * sum(run_rate_errors)


def test_a_growing_series_projects_more_than_its_run_rate_but_within_the_cap() -> None:
    daily = [round(USD * 1.03**d) for d in range(DAYS)]
    previous = [round(sum(USD * 1.03 ** (d - 30 * k) for d in range(DAYS))) for k in (1, 2, 3)]
    truth = sum(daily)
    run_rate = sum(daily[:14]) / 14 * DAYS

    got = forecast(month=MONTH, daily_nanos=daily[:14], today=14, previous_months_nanos=previous)

    assert got.month_end_nanos > run_rate
    assert abs(got.month_end_nanos - truth) / truth < 0.05
    assert "trend +" in got.basis


def test_growth_is_capped() -> None:
    daily = [round(USD * 1.3**d) for d in range(12)]

    got = forecast(month=MONTH, daily_nanos=daily, today=12)

    spent = sum(daily)
    assert got.month_end_nanos <= spent + GROWTH_CAP * 1.3**11 * USD * (DAYS - 11)


def test_a_burst_does_not_set_the_level() -> None:
    daily = [USD] * 14
    daily[4] = 50 * USD
    run_rate = sum(daily) / 14 * DAYS

    got = forecast(month=MONTH, daily_nanos=daily, today=14)

    assert got.month_end_nanos == pytest.approx(sum(daily) + 16 * USD, rel=0.02)
    assert got.month_end_nanos < run_rate
    assert got.high_nanos > got.month_end_nanos


def test_the_projection_never_falls_below_what_is_spent() -> None:
    daily = [5 * USD] * 10 + [0] * 10

    got = forecast(month=MONTH, daily_nanos=daily, today=20, previous_months_nanos=[150 * USD])

    assert got.month_end_nanos >= sum(daily)
    assert got.low_nanos >= sum(daily)


def test_a_new_user_on_their_first_day_takes_it_as_the_rate() -> None:
    got = forecast(month=MONTH, daily_nanos=[2 * USD], today=1)

    assert got.month_end_nanos == 60 * USD
    assert 2 * USD <= got.low_nanos < got.month_end_nanos < got.high_nanos
    assert got.high_nanos - got.low_nanos > 30 * USD  # wide: one partial day is little to go on
    assert "no previous months" in got.basis


def test_a_new_user_with_two_days_and_no_history() -> None:
    got = forecast(month=MONTH, daily_nanos=[USD, 2 * USD], today=2)

    assert got.month_end_nanos >= 3 * USD
    assert got.month_end_nanos == pytest.approx(USD + 2 * USD * 29, rel=0.05)


def test_a_user_with_two_days_leans_on_their_history() -> None:
    daily = [3 * USD, USD]  # a first day at three times the usual, and today so far

    got = forecast(month=MONTH, daily_nanos=daily, today=2, previous_months_nanos=[31 * USD])
    run = forecast(month=MONTH, daily_nanos=daily, today=2, previous_months_nanos=[0])  # a history of nothing

    by_history = 4 * USD + 28 * USD
    assert abs(got.month_end_nanos - by_history) < abs(got.month_end_nanos - run.month_end_nanos)
    assert "blended with 1 previous month" in got.basis


def test_history_alone_before_a_completed_day() -> None:
    got = forecast(month=MONTH, daily_nanos=[0], today=1, previous_months_nanos=[31 * USD, 31 * USD])

    assert got.month_end_nanos == pytest.approx(30 * USD, rel=0.02)
    assert "no completed day yet" in got.basis


def test_a_user_who_started_mid_month_is_not_diluted_by_the_days_before() -> None:
    daily = [0] * 9 + [2 * USD] * 6

    got = forecast(month=MONTH, daily_nanos=daily, today=15)

    assert got.month_end_nanos == pytest.approx(12 * USD + 15 * 2 * USD, rel=0.02)


def test_exceeds_on_is_the_day_a_linear_series_crosses_the_limit() -> None:
    daily = [USD] * 10

    def crossing(limit: int) -> date | None:
        return forecast(month=MONTH, daily_nanos=daily, today=10, limit_nanos=limit).exceeds_on

    assert crossing(20 * USD) == date(2026, 11, 20)
    assert crossing(20 * USD + 1) == date(2026, 11, 21)
    assert crossing(30 * USD) == date(2026, 11, 30)
    assert crossing(30 * USD + 1) is None
    assert crossing(5 * USD) == date(2026, 11, 5)  # already crossed


def test_the_interval_contains_the_truth_on_steady_series() -> None:
    rng = random.Random(11)
    inside = 0
    for _ in range(50):
        daily = [noisy(rng, 3 * USD, 0.25) for _ in range(DAYS)]
        got = forecast(month=MONTH, daily_nanos=daily[:14], today=14, previous_months_nanos=[90 * USD])
        inside += got.low_nanos <= sum(daily) <= got.high_nanos

    assert inside >= 40


def test_a_past_month_is_its_actual_total() -> None:
    daily = [USD] * 30

    got = actual(daily_nanos=daily, limit_nanos=25 * USD, month=MONTH)

    assert (got.month_end_nanos, got.low_nanos, got.high_nanos) == (30 * USD, 30 * USD, 30 * USD)
    assert got.exceeds_on == date(2026, 11, 25)
    assert actual(daily_nanos=daily).exceeds_on is None
    assert actual(daily_nanos=daily, limit_nanos=31 * USD, month=MONTH).exceeds_on is None


def test_a_past_month_with_a_limit_needs_its_month() -> None:
    with pytest.raises(ValueError, match="month"):
        actual(daily_nanos=[USD], limit_nanos=USD)


@pytest.mark.parametrize(
    ("month", "daily", "today"),
    [("2026-11", [USD, USD], 3), ("2026-11", [], 0), ("2026-02", [USD] * 29, 29), ("2026-13", [USD], 1)],
)
def test_a_series_that_does_not_fit_its_month_is_refused(month: str, daily: list[int], today: int) -> None:
    with pytest.raises(ValueError, match="month"):
        forecast(month=month, daily_nanos=daily, today=today)


def test_negative_costs_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        forecast(month=MONTH, daily_nanos=[USD, -1], today=2)


def test_ninety_percent_through_a_steady_day_projects_the_steady_level() -> None:
    got = forecast(month=MONTH, daily_nanos=[USD] * 9 + [9 * USD // 10], today=10, day_fraction=0.9)

    assert got.month_end_nanos == pytest.approx(30 * USD, rel=0.005)
    assert "run rate over 9 days" in got.basis  # the 1st out, today's pace in


def test_a_complete_day_counts_as_it_is() -> None:
    daily = [USD] * 13 + [USD // 2]  # today ended at half the usual cost

    done = forecast(month=MONTH, daily_nanos=daily, today=14, day_fraction=1.0)
    unknown = forecast(month=MONTH, daily_nanos=daily, today=14)

    assert done.month_end_nanos <= sum(daily) + 16 * USD  # nothing more for today, the rest at <= $1
    assert done.month_end_nanos < unknown.month_end_nanos - USD // 3  # unknown: $0.50 a lower bound


def test_a_fast_morning_raises_today_by_its_pace() -> None:
    daily = [USD] * 13 + [USD]  # half the day gone, a whole usual day spent

    half = forecast(month=MONTH, daily_nanos=daily, today=14, day_fraction=0.5)
    done = forecast(month=MONTH, daily_nanos=daily, today=14, day_fraction=1.0)

    assert done.month_end_nanos == pytest.approx(30 * USD, rel=0.01)
    assert done.month_end_nanos < half.month_end_nanos < done.month_end_nanos + 2 * USD


def test_early_in_the_day_its_pace_stays_out_of_the_fit() -> None:
    got = forecast(month=MONTH, daily_nanos=[USD] * 9 + [USD // 2], today=10, day_fraction=0.1)

    assert "run rate over 8 days" in got.basis  # days 2-9: an hour's pace is too little to fit
    # today: $0.50 + 0.9 x (0.1 x its pace of $5 + 0.9 x $1), then 20 days at $1
    assert got.month_end_nanos == pytest.approx(9.5 * USD + 0.9 * 1.4 * USD + 20 * USD, rel=0.005)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.5, 0.7, 0.99, 1.0])
def test_the_partial_day_never_lowers_a_projection_below_what_is_spent(fraction: float) -> None:
    rng = random.Random(7)
    for today in (1, 2, 9, 20, 30):
        daily = [noisy(rng, 3 * USD, 0.5) for _ in range(today - 1)] + [rng.choice((0, USD, 40 * USD))]
        for previous in ((), (90 * USD,), (10 * USD, 300 * USD)):
            got = forecast(
                month=MONTH,
                daily_nanos=daily,
                today=today,
                previous_months_nanos=previous,
                day_fraction=fraction,
            )
            assert sum(daily) <= got.low_nanos <= got.month_end_nanos <= got.high_nanos


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_a_day_fraction_outside_the_day_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="day_fraction"):
        forecast(month=MONTH, daily_nanos=[USD], today=1, day_fraction=fraction)


def weekly_history(days: int, *, today_weekday: int, rng: random.Random | None = None) -> list[int]:
    """Return `days` weekly-cyclic costs before a day of `today_weekday`, most recent last."""
    costs = []
    for i in range(days):
        cost = 2 * USD if (today_weekday - days + i) % 7 >= 5 else 10 * USD
        costs.append(noisy(rng, cost, 0.15) if rng else cost)
    return costs


def test_an_anomaly_fires_on_a_spike() -> None:
    history = weekly_history(56, today_weekday=2, rng=random.Random(5))

    found = anomaly(history_nanos=history, today_nanos=60 * USD, weekday=2)

    assert found is not None
    assert found.day == 2
    assert found.cost_nanos == 60 * USD
    assert found.expected_nanos == pytest.approx(10 * USD, rel=0.15)
    assert found.expected_nanos < found.threshold_nanos < 60 * USD


def test_a_weekend_spike_is_measured_against_weekends() -> None:
    history = weekly_history(56, today_weekday=5)

    # $9 is an ordinary weekday but 4.5 times a Saturday.
    assert anomaly(history_nanos=history, today_nanos=9 * USD, weekday=5) is not None


def test_no_anomaly_on_an_ordinary_weekly_cycle() -> None:
    rng = random.Random(8)
    # Day d has weekday (6 + d) % 7: $10 on weekdays, $2 on weekends.
    series = [noisy(rng, 2 * USD if (6 + d) % 7 >= 5 else 10 * USD, 0.15) for d in range(140)]

    fired = [
        t
        for t in range(56, len(series))
        if anomaly(history_nanos=series[t - 56 : t], today_nanos=series[t], weekday=(6 + t) % 7) is not None
    ]

    assert fired == []


def test_a_monday_after_a_quiet_weekend_is_no_anomaly() -> None:
    history = weekly_history(56, today_weekday=0)

    assert history[-2:] == [2 * USD, 2 * USD]
    assert anomaly(history_nanos=history, today_nanos=11 * USD, weekday=0) is None


def test_no_anomaly_without_enough_history_or_below_the_floor() -> None:
    assert anomaly(history_nanos=[USD] * 6, today_nanos=100 * USD, weekday=0) is None
    assert anomaly(history_nanos=[1000] * 28, today_nanos=50_000, weekday=0) is None
    assert anomaly(history_nanos=[0] * 28, today_nanos=USD, weekday=0) is not None
