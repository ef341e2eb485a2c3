"""Time: timezone-aware UTC instants and the UTC day and month buckets."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

MAX_FUTURE = timedelta(minutes=5)
MAX_AGE = timedelta(days=35)
_MONTH_RE = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
# Epoch milliseconds that datetime can represent (years 1..9999), checked before converting.
_MIN_MS = -62_135_596_800_000
_MAX_MS = 253_402_300_799_999


class TimeError(ValueError):
    """A value that is not an acceptable step timestamp or month."""


def utc_now() -> datetime:
    """Return the current instant, timezone-aware UTC."""
    return datetime.now(UTC)


def parse_instant(value: object) -> datetime:
    """Parse an ISO-8601 string with an offset or `Z`, or epoch milliseconds, to UTC."""
    if isinstance(value, bool):
        raise TimeError("must be an ISO-8601 string or epoch milliseconds")
    if isinstance(value, int):
        if not _MIN_MS <= value <= _MAX_MS:
            raise TimeError("is out of range")
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    if isinstance(value, str):
        if len(value) > 64:
            raise TimeError("must be an ISO-8601 string or epoch milliseconds")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise TimeError("must be an ISO-8601 timestamp like 2026-11-14T10:04:09.794Z") from None
        if parsed.tzinfo is None:
            raise TimeError("must include a UTC offset or Z")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise TimeError("is out of range") from None
    raise TimeError("must be an ISO-8601 string or epoch milliseconds")


def instant_or_none(value: object) -> datetime | None:
    """Return a stored time as aware UTC, whatever a writer that is not Tally left (None if unreadable)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        return parse_instant(value)
    except TimeError:
        return None


def check_step_time(instant: datetime, *, now: datetime, max_age: timedelta | None = MAX_AGE) -> datetime:
    """Reject a step time more than 5 minutes ahead of `now` or older than `max_age` (35 days)."""
    if instant > now + MAX_FUTURE:
        raise TimeError("must not be more than 5 minutes in the future")
    if max_age is not None and instant < now - max_age:
        raise TimeError("must not be older than 35 days")
    return instant


def month_key(instant: datetime) -> str:
    """Return the UTC month bucket `YYYY-MM` of an aware instant."""
    return instant.astimezone(UTC).strftime("%Y-%m")


def day_key(instant: datetime) -> str:
    """Return the UTC day bucket `YYYY-MM-DD` of an aware instant."""
    return instant.astimezone(UTC).strftime("%Y-%m-%d")


def parse_month(value: str) -> str:
    """Validate a `YYYY-MM` month key."""
    if not _MONTH_RE.fullmatch(value):
        raise TimeError("must be a month like 2026-11")
    return value


def months_back(month: str, count: int) -> list[str]:
    """Return `count` months up to and including `month`, oldest first."""
    year, number = (int(part) for part in month.split("-"))
    index = year * 12 + number - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)]


def days_of(month: str) -> list[str]:
    """Return every `YYYY-MM-DD` of a month."""
    year, number = (int(part) for part in month.split("-"))
    return [f"{month}-{day:02d}" for day in range(1, calendar.monthrange(year, number)[1] + 1)]


def month_end(month: str) -> datetime:
    """Return the first instant after a month (UTC)."""
    year, number = (int(part) for part in month.split("-"))
    return datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)


def month_start(month: str) -> datetime:
    """Return the first instant of a month (UTC)."""
    year, number = (int(part) for part in month.split("-"))
    return datetime(year, number, 1, tzinfo=UTC)
