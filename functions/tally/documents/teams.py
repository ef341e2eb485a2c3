"""A team, `TallyTeams/{teamId}`, and its slices, `TallyTeamSlices/{hash}-{teamId}-{k}` (k < slices).

The team document holds its limits (month and day, cost and billable runs) and its number of
slices, fixed when it is created. Its usage lives in the slices: a member's request writes
one slice (picked per request), never a document every member writes, so each slice takes
1/slices of the team's writes. A slice holds what members recorded, by window, and the
holds made on it. Windows are keys, as a user's: `months.{YYYY-MM}` and
`months.{YYYY-MM}.days.{DD}`; every write deletes the twelve months before the last two, so a
slice keeps about two months of at most 31 days each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tally import layout
from tally.documents import counters
from tally.documents import limits as limits_doc
from tally.documents import usage as usage_doc
from tally.limits import TeamLimits
from tally.timeutil import month_key, months_back
from tally.usage import Held
from tally.writes import DELETE, CommitResult, Increment, Op, Replace, Write, merge_payload

LIMITS, SLICES, TEAM_ID = "limits", "slices", "teamId"
MONTH_COST, MONTH_RUNS = (
    limits_doc.COST_LIMIT,
    limits_doc.FREE_RUNS,
)  # a team's limits: a limits object's names
DAY_COST, DAY_RUNS = limits_doc.DAILY_COST, limits_doc.DAILY_RUNS
MONTHS, DAYS, HELD = "months", "days", usage_doc.HELD
COST, RUNS = counters.COST, "runs"  # recorded (and held) cost and billable runs


@dataclass(frozen=True)
class Team:
    """A team as stored."""

    team_id: str
    limits: TeamLimits
    slices: int


_LIMIT_FIELDS = {
    "monthly_cost_nanos": MONTH_COST,
    "monthly_runs": MONTH_RUNS,
    "daily_cost_nanos": DAY_COST,
    "daily_runs": DAY_RUNS,
}


def team_of(doc: Any) -> Team | None:
    """Read a team document (None: no such team)."""
    if doc is None or not doc.exists:
        return None
    data = doc.fields
    stored = data.get(LIMITS) or {}
    limits = TeamLimits(
        **{
            attr: int(v) if isinstance(v := stored.get(name), int) else None
            for attr, name in _LIMIT_FIELDS.items()
        }
    )
    return Team(str(data.get(TEAM_ID)), limits, max(1, int(data.get(SLICES, 1))))


def team_write(team_id: str, limits: TeamLimits, *, slices: int, exists: bool, now: datetime) -> Write:
    """Return the write of a team's limits (its number of slices is set once, at creation)."""
    stored = {
        name: value for attr, name in _LIMIT_FIELDS.items() if (value := getattr(limits, attr)) is not None
    }
    data: dict[str, Any] = {TEAM_ID: team_id, LIMITS: Replace(stored), "updatedAt": now}
    if not exists:
        data[SLICES] = slices
    return Write(layout.team_path(team_id), Op.MERGE, data)


@dataclass(frozen=True)
class SliceView:
    """One slice as read: recorded per window, and held."""

    k: int
    month: Mapping[str, int] = field(default_factory=dict)  # costNanos, runs
    day: Mapping[str, int] = field(default_factory=dict)
    held: Held = field(default_factory=Held)
    days: Mapping[str, int] = field(default_factory=dict)  # this month's cost per day (YYYY-MM-DD)
    last_month_cost: int = 0

    def window(self, window: str) -> Mapping[str, int]:
        """Return the counters of `months` (this month) or `days` (today)."""
        return self.month if window == MONTHS else self.day


NAMES = (COST, RUNS)
KEPT_MONTHS = 2  # this month and the last; a write deletes the twelve before them


def window_path(window: str, when: datetime) -> tuple[str, ...]:
    """Return where a window's counters are: `months.{M}`, or `months.{M}.days.{DD}`."""
    month = (MONTHS, month_key(when))
    return month if window == MONTHS else (*month, DAYS, f"{when.day:02d}")


def _at(data: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
    found: Any = data
    for key in path:
        found = found.get(key) if isinstance(found, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def slice_of(doc: Any, k: int, now: datetime) -> SliceView:
    """Read a slice document (absent: all zero)."""
    data = doc.fields if doc is not None and doc.exists else {}
    month, day = _at(data, window_path(MONTHS, now)), _at(data, window_path(DAYS, now))
    held = _at(data, (HELD,))
    return SliceView(
        k,
        {name: int(month.get(name, 0)) for name in NAMES},
        {name: int(day.get(name, 0)) for name in NAMES},
        Held(int(held.get(COST, 0)), int(held.get(RUNS, 0))),
        days_of_slice(doc, month_key(now)),
        month_cost(doc, months_back(month_key(now), 2)[0]),
    )


def _nested(pairs: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path, value in pairs.items():
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return data


def _old_months(now: datetime) -> dict[tuple[str, ...], Any]:
    """Return the deletion of the twelve months before the kept ones."""
    pairs: dict[tuple[str, ...], Any] = {}
    month = month_key(now)
    for old in months_back(month, KEPT_MONTHS + 12)[:-KEPT_MONTHS]:
        pairs[(MONTHS, old)] = DELETE
    return pairs


def slice_write(team_id: str, k: int, pairs: Mapping[tuple[str, ...], Any]) -> Write:
    """Return a merge into one slice."""
    return Write(
        layout.team_slice_path(team_id, k), Op.MERGE, merge_payload({TEAM_ID: team_id, **_nested(pairs)})
    )


def hold_change(team_id: str, k: int, held: Held, now: datetime) -> Write:
    """Return a hold made on a slice (old months dropped on the way)."""
    pairs = _old_months(now)
    pairs[(HELD, COST)], pairs[(HELD, RUNS)] = Increment(held.cost_nanos), Increment(held.runs)
    return slice_write(team_id, k, pairs)


def release_change(team_id: str, k: int, held: Held) -> Write:
    """Return the change taking a hold back out of a slice."""
    return slice_write(
        team_id, k, {(HELD, COST): Increment(-held.cost_nanos), (HELD, RUNS): Increment(-held.runs)}
    )


def usage_change(
    team_id: str,
    k: int,
    steps: list[tuple[datetime, int, int]],
    now: datetime,
    *,
    released: Held | None = None,
) -> Write:
    """Return what members' steps (time, cost, billable runs) add to a slice, and the holds they settle."""
    pairs = _old_months(now)
    kept = set(months_back(month_key(now), KEPT_MONTHS))
    for when, cost, runs in steps:
        if month_key(when) not in kept:
            continue
        for window in (MONTHS, DAYS):
            path = window_path(window, when)
            before_cost = pairs[(*path, COST)].value if (*path, COST) in pairs else 0
            before_runs = pairs[(*path, RUNS)].value if (*path, RUNS) in pairs else 0
            pairs[(*path, COST)], pairs[(*path, RUNS)] = (
                Increment(before_cost + cost),
                Increment(before_runs + runs),
            )
    if released is not None:
        pairs[(HELD, COST)], pairs[(HELD, RUNS)] = Increment(-released.cost_nanos), Increment(-released.runs)
    return slice_write(team_id, k, pairs)


COUNT = "teams"  # how many teams exist (TallyTeamCount/all)


def count_write(change: int) -> Write:
    """Return a change of the number of teams (fetch-and-add: the commit returns the count)."""
    return Write(layout.team_count_path(), Op.MERGE, {COUNT: Increment(change)})


def count_of(result: CommitResult) -> int:
    """Return the number of teams as a count write left it."""
    return result.value(layout.team_count_path(), COUNT)


def days_of_slice(doc: Any, month: str) -> dict[str, int]:
    """Return a slice's cost per day of a month (`YYYY-MM-DD`), as recorded."""
    data = doc.fields if doc is not None and doc.exists else {}
    days = _at(data, (MONTHS, month, DAYS))
    return {f"{month}-{day}": int(_at(days, (day,)).get(COST, 0)) for day in days}


def month_cost(doc: Any, month: str) -> int:
    """Return a slice's recorded cost in a month."""
    data = doc.fields if doc is not None and doc.exists else {}
    return int(_at(data, (MONTHS, month)).get(COST, 0))
