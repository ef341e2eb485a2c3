"""(v3) Alerts of every limited scope (a user's day, features, team): once per (scope, window, threshold).

A user's scopes are counted in their own document, so the recording commit's fetch-and-add
returns each counter after it and `before = after - the request's own share` is exact: of
any number of concurrent requests, exactly one crosses each threshold. A team's usage is
spread over its slices, so after a member's recording the slices are read and every
threshold reached is ensured; the alert document is created with an exists=false
precondition, so however many members cross at once there is one alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from tally import layout
from tally.documents import counters
from tally.documents import windows as window_doc
from tally.documents.teams import SliceView, Team
from tally.limits import LimitSet, Scope, Windows, scopes
from tally.services import alerts, pace, teams
from tally.services.alerts import Alert, AlertKind, AlertStore
from tally.timeutil import day_key, month_key
from tally.usage import Counts
from tally.values import Step
from tally.writes import CommitResult


def _kind(scope: Scope) -> AlertKind:
    return AlertKind.COST if scope.cost else AlertKind.RUNS


def user_scope_alerts(
    *,
    user_id: str,
    limits: LimitSet,
    steps: Sequence[Step],
    result: CommitResult,
    now: datetime,
    raised_by: str,
) -> list[Alert]:
    """Return the alerts a recording crossed in the user's day and feature scopes (the month's are v2's)."""
    day, month = day_key(now), month_key(now)
    today = [s for s in steps if day_key(s.timestamp) == day]
    this_month = [s for s in steps if month_key(s.timestamp) == month]
    path = layout.usage_path(user_id)
    found: list[Alert] = []
    for scope in scopes(limits, Windows()):
        owner, window_name, _ = scope.scope.rsplit(".", 2)
        if owner == "user" and window_name == "month":
            continue  # the month's alerts are raised as in v2
        in_window = today if window_name == "day" else this_month
        feature = owner.removeprefix("feature:") if owner != "user" else None
        mine = [s for s in in_window if feature is None or (s.feature_key or s.feature) == feature]
        if not mine:
            continue
        at: tuple[str, ...] = (
            (window_doc.WINDOWS, window_doc.DAYS, day)
            if window_name == "day"
            else (window_doc.WINDOWS, window_doc.MONTHS, month)
        )
        if feature is not None:
            at = (*at, window_doc.FEATURES, feature)
        after = counters.committed(result, path, *at)
        delta = _total(mine)
        value, added = _measure(after, scope, feature), _measure(delta, scope, feature)
        key = day if window_name == "day" else month
        found += [
            Alert(
                user_id, month, _kind(scope), t, value, scope.limit, raised_by, scope=scope.scope, window=key
            )
            for t in alerts.crossed(value - added, value, scope.limit)
        ]
    return found


def _total(steps: Iterable[Step]) -> Counts:
    total = Counts()
    for step in steps:
        total.add(step)
    return total


def _measure(counts: Counts, scope: Scope, feature: str | None) -> int:
    if scope.cost:
        return counts.cost_nanos
    return counts.api_calls if feature is not None else counts.billable_runs  # a feature's runs: every step


def team_alerts(
    store: AlertStore, team: Team, *, now: datetime, raised_by: str, views: list[SliceView] | None = None
) -> int:
    """Create the team's alerts its slices, summed, have reached (each once); return how many were new."""
    views = teams.read_slices(store, team, now) if views is None else views
    month, day = month_key(now), day_key(now)
    wanted = [
        Alert(
            None,
            month,
            _kind(scope),
            t,
            scope.used,
            scope.limit,
            raised_by,
            scope=scope.scope,
            window=day if ".day." in scope.scope else month,
            team_id=team.team_id,
        )
        for scope in teams.team_scopes(team, views)
        for t in alerts.reached(scope.used, scope.limit)
    ]
    limit = team.limits.monthly_cost_nanos
    projected = (
        pace.forecast_alert(
            projected=teams.team_forecast(team, views, now),
            limit_nanos=limit,
            now=now,
            scope="team.month.cost",
            raised_by=raised_by,
            team_id=team.team_id,
        )
        if pace.forecast_due(limit, now)
        else None
    )
    return alerts.ensure(store, wanted + ([projected] if projected is not None else []), now, remember=True)
