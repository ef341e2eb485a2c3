from datetime import UTC, datetime, timedelta

import pytest

from tally.timeutil import TimeError, check_step_time, day_key, month_key, parse_instant, parse_month

NOW = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-14T10:04:09.794Z", datetime(2026, 11, 14, 10, 4, 9, 794000, tzinfo=UTC)),
        ("2026-11-14T12:04:09+02:00", datetime(2026, 11, 14, 10, 4, 9, tzinfo=UTC)),
        (1_763_114_649_794, datetime(2025, 11, 14, 10, 4, 9, 794000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_instant_gives_aware_utc(value: object, expected: datetime) -> None:
    parsed = parse_instant(value)

    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-11-14T10:04:09", "must include a UTC offset or Z"),
        ("yesterday", "must be an ISO-8601 timestamp"),
        (True, "must be an ISO-8601 string or epoch milliseconds"),
        (1.5, "must be an ISO-8601 string or epoch milliseconds"),
        (10**20, "is out of range"),
        (-(10**20), "is out of range"),
        ("0001-01-01T00:00:00+01:00", "is out of range"),
    ],
)
def test_parse_instant_rejects(value: object, problem: str) -> None:
    with pytest.raises(TimeError, match=problem):
        parse_instant(value)


def test_step_time_window() -> None:
    assert check_step_time(NOW + timedelta(minutes=5), now=NOW) == NOW + timedelta(minutes=5)
    assert check_step_time(NOW - timedelta(days=35), now=NOW) == NOW - timedelta(days=35)
    with pytest.raises(TimeError, match="future"):
        check_step_time(NOW + timedelta(minutes=5, seconds=1), now=NOW)
    with pytest.raises(TimeError, match="older than 35 days"):
        check_step_time(NOW - timedelta(days=35, seconds=1), now=NOW)


def test_buckets_use_the_utc_day_and_month() -> None:
    late_evening_in_new_york = parse_instant("2026-10-31T21:30:00-04:00")  # 01:30 UTC on Nov 1

    assert month_key(late_evening_in_new_york) == "2026-11"
    assert day_key(late_evening_in_new_york) == "2026-11-01"


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "26-11", "2026-11-01", ""])
def test_parse_month_rejects(bad: str) -> None:
    with pytest.raises(TimeError):
        parse_month(bad)
