"""Teams: `set_team`, the team's scopes at the gate, and the team's view.

A member's reservation adds its estimate to the holds of one slice of the team (picked at
random) in the same commit as its own hold, then reads every slice *as of that commit's
time* and admits only if the team's recorded usage and holds, summed, stay within each team
limit. Each hold thus sees exactly the holds committed up to its own, the same argument as a
user's fetch-and-add: no interleaving of any number of members admits more than the team's
limit, and a burst is not under-admitted either. A team's
documents each take 1/slices of its writes; the price is one read per slice per member
reservation (see docs/design.md).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from tally import layout, ports
from tally.config import Settings
from tally.documents import teams as team_doc
from tally.documents.plans import ShardPicker
from tally.documents.teams import COST, DAYS, MONTHS, RUNS, SliceView, Team
from tally.errors import InvalidArgument
from tally.forecast import Forecast
from tally.limits import Scope, TeamLimits, team_limits_view
from tally.money import nanos_to_usd
from tally.requests import SetTeamIn
from tally.services import projections
from tally.timeutil import month_key
from tally.usage import Counts, Held
from tally.values import Document

TEAM_MONTHLY_COST_LIMIT = "TEAM_MONTHLY_COST_LIMIT"
TEAM_DAILY_COST_LIMIT = "TEAM_DAILY_COST_LIMIT"
TEAM_RUNS = "TEAM_RUNS"
MAX_TEAMS = 500  # as names: the month documents break usage down by team
CHECKS = (
    (MONTHS, COST, TEAM_MONTHLY_COST_LIMIT, "team.month.cost"),
    (DAYS, COST, TEAM_DAILY_COST_LIMIT, "team.day.cost"),
    (MONTHS, RUNS, TEAM_RUNS, "team.month.runs"),
    (DAYS, RUNS, TEAM_RUNS, "team.day.runs"),
)


def _held(held: Held, measure: str) -> int:
    return held.cost_nanos if measure == COST else held.runs


def refusal(team: Team, views: list[SliceView], *, billable: bool) -> str | None:
    """Return the first team scope the summed slices pass (runs: only for a billable hold)."""
    for scope in team_scopes(team, views):
        if scope.over and (billable or scope.reason != TEAM_RUNS):
            return scope.reason
    return None


class SliceStore(ports.DocumentStore, Protocol):
    """Reads as of a commit: what the team's gate needs besides plain reads."""

    def read_as_of(self, paths: Sequence[str], version: Any) -> dict[str, Document]: ...


def read_slices(store: ports.DocumentStore, team: Team, now: datetime) -> list[SliceView]:
    """Read every slice of a team as it is now (one round trip)."""
    paths = [layout.team_slice_path(team.team_id, k) for k in range(team.slices)]
    docs = store.read(paths)
    return [team_doc.slice_of(docs[path], k, now) for k, path in enumerate(paths)]


def slices_as_of(store: SliceStore, team: Team, version: Any, now: datetime) -> list[SliceView]:
    """Read every slice of a team as it was right after the commit that gave `version` (one round trip).

    The gate reads at its own hold's commit time: it sees exactly the holds committed up to
    its own, as a fetch-and-add does, so a burst is neither over- nor under-admitted.
    """
    paths = [layout.team_slice_path(team.team_id, k) for k in range(team.slices)]
    docs = store.read_as_of(paths, version)
    return [team_doc.slice_of(docs[path], k, now) for k, path in enumerate(paths)]


HOLDS, STEPS = ShardPicker(), ShardPicker()  # round-robin from a random start: equal shares


def pick_slice(team: Team, *, recording: bool = False) -> int:
    """Return a slice for one request (not per member: a heavy member spreads over every slice).

    Reservations and recordings count apart: a recording that settles a hold writes the
    hold's slice, and one shared counter would leave every other slice to the holds.
    """
    return (STEPS if recording else HOLDS).next(team.slices)


def team_scopes(team: Team, views: list[SliceView]) -> Iterator[Scope]:
    """Yield the team's limited scopes from all its slices (recorded and held, summed)."""
    for window, measure, reason, name in CHECKS:
        limit = team.limits.limit(monthly=window == MONTHS, cost=measure == COST)
        if limit is None:
            continue
        used = sum(v.window(window).get(measure, 0) for v in views)
        held = sum(_held(v.held, measure) for v in views)
        yield Scope(name, used, held, limit, reason, measure == COST)


TEAM_CACHE_SECONDS = 30.0
_teams: dict[str, tuple[float, Team | None]] = {}


def read_team(
    store: ports.DocumentStore,
    team_id: str | None,
    *,
    fresh: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> Team | None:
    """Return a team (None: no team, or no such team), kept 30 s per instance.

    A member's request would otherwise read the team's document in a second round trip
    (its id is in the member's document); a change of a team's limits applies within 30 s.
    """
    if team_id is None:
        return None
    now = clock()
    found = None if fresh else _teams.get(team_id)
    if found is not None and now - found[0] < TEAM_CACHE_SECONDS:
        return found[1]
    path = layout.team_path(team_id)
    team = team_doc.team_of(store.read([path])[path])
    if len(_teams) >= 10_000:
        _teams.clear()
    _teams[team_id] = (now, team)
    return team


def team_forecast(team: Team, views: Sequence[SliceView], now: datetime) -> Forecast:
    """Return the team's forecast of this month from its slices (their days and last month's cost)."""
    days = Counter[str]()
    for view in views:
        days.update(view.days)
    return projections.project(
        month=month_key(now),
        days={day: Counts(cost) for day, cost in days.items()},
        now=now,
        previous_months_nanos=[sum(view.last_month_cost for view in views)],
        limit_nanos=team.limits.monthly_cost_nanos,
    )


def team_view(store: ports.DocumentStore, team: Team, now: datetime) -> dict[str, Any]:
    """Return a team as `my_usage` shows it: month and day, limits, scopes, forecast (one read per slice)."""
    views = read_slices(store, team, now)
    projected = team_forecast(team, views, now)
    month = sum(v.month.get(COST, 0) for v in views)
    day = sum(v.day.get(COST, 0) for v in views)
    return {
        "teamId": team.team_id,
        "usage": {
            "monthCost": nanos_to_usd(month),
            "monthRuns": sum(v.month.get(RUNS, 0) for v in views),
            "dayCost": nanos_to_usd(day),
            "dayRuns": sum(v.day.get(RUNS, 0) for v in views),
        },
        "limits": team_limits_view(team.limits),
        "scopes": [scope.view() for scope in team_scopes(team, views)],
        "forecast": projections.view(projected),
    }


def set_team(
    *, store: ports.DocumentStore, request: SetTeamIn, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Store a team's limits (replacing them); a new team gets `TALLY_TEAM_SLICES` slices."""
    existing = read_team(store, request.team_id, fresh=True)
    given = request.limits
    limits = TeamLimits(
        given.monthly_cost_nanos, given.monthly_runs, given.daily_cost_nanos, given.daily_runs
    )
    slices = existing.slices if existing is not None else settings.team_slices
    if existing is None:  # one more team: the month documents' breakdown by team stays bounded
        counted = store.commit([team_doc.count_write(1)])
        if team_doc.count_of(counted) > MAX_TEAMS:
            store.commit([team_doc.count_write(-1)])
            raise InvalidArgument.field("teamId", f"at most {MAX_TEAMS} teams; reuse or remove one")
    store.commit(
        [team_doc.team_write(request.team_id, limits, slices=slices, exists=existing is not None, now=now)]
    )
    _teams.pop(request.team_id, None)
    return {"teamId": request.team_id, "limits": team_limits_view(limits), "slices": slices}
