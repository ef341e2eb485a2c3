"""(v3) Forecast and anomaly alerts: a month heading past its limit, a day far above its usual level.

`forecast`, once per (scope, month), from the 3rd UTC day of the month, when the projection
(`tally.forecast`, as `my_usage` and `usage_analytics` show it) reaches the monthly cost limit.
`anomaly`, once per (scope, day), when the day's cost so far (a lower bound on the day's) is
far above its usual level by the rule of `tally.forecast.anomaly`; its `limit` is the usual
(expected) cost of the day and its `threshold` the ratio the rule asks for, in percent.

- A user's are judged after each of their recordings, from what the request already read
  (their month document: its days; their own document: the previous months) and the days
  the commit touched as its fetch-and-add left them: no read is added (but for the anomaly,
  early in a month, the previous month's days: `previous_days`). The forecast alert is
  created together with the flag `forecastAlerted` of the month document, only if absent, so
  of any number of concurrent requests one raises it, and once the flag is read nobody tries
  again. The anomaly rule is monotone in the day's cost, so exactly one commit takes the day
  past it (its own share subtracted from the day's total after it): that request raises it.
- `reconcile` judges a user's current month again (`late_user_alerts`) and raises what is
  missing, late: the alerts of a request that crashed after its commit, or of a lowered limit.
- A team's forecast is judged from its slices, read after a member's recording for the
  team's threshold alerts anyway, and ensured with them.
- The platform's and each feature's are judged on a fold of the month (`watch_platform`),
  which a recording runs when its commit takes its shard's cost of today or yesterday, or a feature's
  there, past a mark (every factor of sqrt 2 from $0.01), or past a budget mark; the sweep
  runs it every 15 minutes when a platform budget is set. So nothing is read while nobody
  records, and a check costs one read per shard, a few times per day and feature.
"""

from __future__ import annotations

import threading
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import NamedTuple

from tally import forecast, layout
from tally.config import Settings
from tally.documents import months as month_doc
from tally.documents import user_months
from tally.services import alerts, folding, projections
from tally.services.alerts import Alert, AlertKind, AlertStore
from tally.timeutil import day_key, days_of, month_end, month_key, months_back
from tally.usage import Counts, MonthDelta
from tally.values import UserMonthState
from tally.writes import CommitResult

FORECAST_FROM_DAY = 3  # SPEC: from the 3rd UTC day of the month
ANOMALY_THRESHOLD = round(forecast.ANOMALY_RATIO * 100)  # an anomaly alert's `threshold`: percent of usual
HISTORY_DAYS = 7 * (forecast.ANOMALY_WEEKS + 1)  # days before today the anomaly rule looks at
MIN_HISTORY = 14  # days of history an anomaly needs here: two of each weekday
MARK_UNIT = 10_000_000  # $0.01: the first mark of a day's cost
PREVIOUS_FRESH = timedelta(hours=1)  # a user's previous month is read again after this (late steps)
PREVIOUS_REMEMBERED = 10_000  # users' previous months one instance keeps
INT64_MAX = 2**63 - 1  # what a machine integer of the memory holds (Firestore's integers too)


def mark(cost_nanos: int) -> int:
    """Return the mark a day's cost has passed: -1 under $0.01, then one more per factor of sqrt 2."""
    if cost_nanos < MARK_UNIT:
        return -1
    return (cost_nanos * cost_nanos // (MARK_UNIT * MARK_UNIT)).bit_length() - 1


def _history(daily: Mapping[str, int], day: date) -> list[int]:
    """Return the costs of the days before `day` the rule reads, most recent last (absent days: 0).

    From the day after the first day with a cost (that one is likely partial), at most
    `HISTORY_DAYS` back.
    """
    known = [d for d, cost in daily.items() if cost > 0 and d < day.isoformat()]
    if not known:
        return []
    start = max(day - timedelta(days=HISTORY_DAYS), date.fromisoformat(min(known)) + timedelta(days=1))
    return [daily.get((start + timedelta(days=i)).isoformat(), 0) for i in range((day - start).days)]


def anomaly_alert(
    *,
    daily: Mapping[str, int],
    day: date,
    scope: str,
    raised_by: str,
    user_id: str | None = None,
    late: bool = False,
) -> Alert | None:
    """Return the anomaly alert of a day's cost (`daily[day]`; today's: so far) against the days before.

    At least `MIN_HISTORY` days (two of each weekday) are needed: with one, a single day is
    "usual" and ordinary noise fires.
    """
    history = _history(daily, day)
    if len(history) < MIN_HISTORY:
        return None
    cost = daily.get(day.isoformat(), 0)
    found = forecast.anomaly(history_nanos=history, today_nanos=cost, weekday=day.weekday())
    if found is None:
        return None
    return Alert(
        user_id,
        day.isoformat()[:7],
        AlertKind.ANOMALY,
        ANOMALY_THRESHOLD,
        cost,
        found.expected_nanos,
        raised_by,
        late=late,
        scope=scope,
        window=day.isoformat(),
    )


def forecast_due(limit_nanos: int | None, now: datetime) -> bool:
    """Return whether a month with this limit can have its forecast alert now (a limit, the 3rd day on)."""
    return limit_nanos is not None and now.day >= FORECAST_FROM_DAY


def forecast_alert(
    *,
    projected: forecast.Forecast,
    limit_nanos: int | None,
    now: datetime,
    scope: str,
    raised_by: str,
    user_id: str | None = None,
    team_id: str | None = None,
    late: bool = False,
) -> Alert | None:
    """Return the forecast alert of a month whose projection reached its limit (from the 3rd day on)."""
    if not forecast_due(limit_nanos, now) or projected.month_end_nanos <= 0:
        return None
    if limit_nanos is None or projected.month_end_nanos < limit_nanos:
        return None
    month = month_key(now)
    return Alert(
        user_id,
        month,
        AlertKind.FORECAST,
        100,
        projected.month_end_nanos,
        limit_nanos,
        raised_by,
        late=late,
        scope=scope,
        window=month,
        team_id=team_id,
    )


# A user's


def user_days_after(
    *, state: UserMonthState, delta: MonthDelta, result: CommitResult, user_id: str, month: str
) -> dict[str, int]:
    """Return a user's cost per day of the month after a commit (the days it touched as it left them)."""
    days = dict(state.day_costs)
    path = layout.user_month_path(user_id, month)
    for day, counts in delta.days.items():
        days[day] = (
            month_doc.committed_day(result, path, delta, day)[0] if state.exists else counts.cost_nanos
        )
    return days


@dataclass(frozen=True)
class UserPace:
    """What a user's pace alerts are judged from: the month's cost per day, earlier months, the limit."""

    user_id: str
    days: Mapping[str, int]  # YYYY-MM-DD -> cost, this month's
    previous_months_nanos: Sequence[int]  # most recent first
    limit_nanos: int | None
    previous_days: Callable[[], Mapping[str, int]] = dict  # the month before's days, asked only if needed


def user_forecast(user: UserPace, now: datetime, raised_by: str, *, late: bool = False) -> Alert | None:
    """Return the user's forecast alert if their month's projection reaches their limit now."""
    if not forecast_due(user.limit_nanos, now):  # projecting costs ~0.3 ms
        return None
    projected = projections.project(
        month=month_key(now),
        days={day: Counts(cost) for day, cost in user.days.items()},
        now=now,
        previous_months_nanos=user.previous_months_nanos,
        limit_nanos=user.limit_nanos,
    )
    return forecast_alert(
        projected=projected,
        limit_nanos=user.limit_nanos,
        now=now,
        scope="user.month.cost",
        raised_by=raised_by,
        user_id=user.user_id,
        late=late,
    )


def user_anomaly(user: UserPace, day: date, raised_by: str, *, late: bool = False) -> Alert | None:
    """Return the user's anomaly alert of a day (so far).

    While this month holds under `MIN_HISTORY` days, a day past the rule's floor ($0.10) is
    judged with the previous month's days too (`previous_days`, called only then).
    """
    daily = user.days
    cost = daily.get(day.isoformat(), 0)
    if cost > forecast.ANOMALY_FLOOR_NANOS and len(_history(daily, day)) < MIN_HISTORY:
        daily = {**user.previous_days(), **daily}  # this month alone is too short a history
    return anomaly_alert(
        daily=daily, day=day, scope="user.day.cost", raised_by=raised_by, user_id=user.user_id, late=late
    )


class UserPaceAlerts(NamedTuple):
    """The pace alerts a recording raises for its user: each created with its month flag, but `yesterday`."""

    forecast: Alert | None
    anomaly: Alert | None  # today's
    yesterday: Alert | None  # late: a step backdated to yesterday, or recorded after its midnight


def user_alerts(
    *, user: UserPace, state: UserMonthState, delta: MonthDelta, now: datetime, raised_by: str
) -> UserPaceAlerts:
    """Return the alerts a recording of this month raises for its user.

    `user.days`: as the recording's commit left them (`user_days_after`). The forecast and
    today's anomaly only while the month document does not say they are raised
    (`forecastAlerted`, the day in `anomalyAlertedDay`): the one commit that creates the alert
    also writes the flag. Yesterday's anomaly (this month's) only when the commit touched it.
    """
    today, yesterday = now.date(), now.date() - timedelta(days=1)
    found = None if state.forecast_alerted else user_forecast(user, now, raised_by)
    spike = late = None
    if today.isoformat() in delta.days and state.anomaly_day != today.isoformat():
        spike = user_anomaly(user, today, raised_by)
    if yesterday.isoformat() in delta.days and state.anomaly_day != yesterday.isoformat():
        late = user_anomaly(user, yesterday, raised_by, late=True)
    return UserPaceAlerts(found, spike, late)


def late_user_alerts(user: UserPace, *, month: str, state: UserMonthState, now: datetime) -> list[Alert]:
    """Return the forecast and anomaly alerts (today's, yesterday's) a user's month calls for now, late.

    For `reconcile`: a request's alerts lost after its commit, a lowered limit's, a
    projection that reached the limit since the user's last request.
    """
    if month != month_key(now):
        return []
    found = [None if state.forecast_alerted else user_forecast(user, now, "reconcile", late=True)]
    for day in (now.date() - timedelta(days=1), now.date()):
        if day.isoformat()[:7] == month and state.anomaly_day != day.isoformat():
            found.append(user_anomaly(user, day, "reconcile", late=True))
    return [alert for alert in found if alert is not None]


_PREVIOUS: weakref.WeakKeyDictionary[AlertStore, OrderedDict[tuple[str, str], tuple[datetime, array[int]]]]
_PREVIOUS = (
    weakref.WeakKeyDictionary()
)  # per store: (user, month) -> (read at, cost of day 1..31), oldest first
_PREVIOUS_LOCK = threading.Lock()


def previous_days(store: AlertStore, user_id: str, now: datetime) -> Mapping[str, int]:
    """Return a user's cost per day of the month before now's, read at most hourly per instance.

    Kept as 31 machine integers a user (about 0.5 MB per 1,000 users; as a dict, 4 MB).
    """
    month = months_back(month_key(now), 2)[0]
    key = (user_id, month)
    with _PREVIOUS_LOCK:
        remembered = _PREVIOUS.setdefault(store, OrderedDict())
        kept = remembered.get(key)
        if kept is not None and now - kept[0] < PREVIOUS_FRESH:
            remembered.move_to_end(key)
    if kept is None or now - kept[0] >= PREVIOUS_FRESH:
        path = layout.user_month_path(user_id, month)
        read = user_months.state_of(store.read([path], fields=[month_doc.DAYS])[path]).day_costs
        kept = (now, array("q", (min(read.get(day, 0), INT64_MAX) for day in days_of(month))))
        with _PREVIOUS_LOCK:
            remembered = _PREVIOUS.setdefault(store, OrderedDict())
            remembered[key] = kept
            remembered.move_to_end(key)
            while len(remembered) > PREVIOUS_REMEMBERED:
                remembered.popitem(last=False)
    return {day: cost for day, cost in zip(days_of(month), kept[1], strict=True) if cost}


def raise_flagged(store: AlertStore, alert: Alert, now: datetime) -> bool:
    """Create a user's forecast or anomaly alert and its flag, in one commit; return whether it was new.

    A flag is written only with its alert, or once the alert is read to exist, so a flag
    means the alert exists (reconcile trusts it).
    """
    assert alert.user_id is not None
    if alert.kind is AlertKind.FORECAST:
        flag = user_months.forecast_alerted_write(alert.user_id, alert.month)
    else:
        flag = user_months.anomaly_alerted_write(alert.user_id, str(alert.window))
    if store.commit_each([[alert.creation(now), flag]])[0]:
        return True
    path = layout.alert_path(alert.alert_id)
    if store.read([path])[path].exists:  # a concurrent request, or an earlier attempt: stop trying
        store.commit([flag])
    return False  # (else the commit failed: no flag, so the next request, or reconcile, tries again)


# The platform's and the features'


def shard_crossed(result: CommitResult, month: str, shard: int, delta: MonthDelta, now: datetime) -> bool:
    """Return whether a commit took its shard's cost of today or yesterday, or a feature's there, past a mark.

    Yesterday's: a step recorded after its midnight (the check judges yesterday too).
    """
    path = layout.shard_path(month, shard)
    for day in (day_key(now), day_key(now - timedelta(days=1))):
        if day[:7] != month_key(now) or day[:7] != month or day not in delta.days:
            continue
        total, features = month_doc.committed_day(result, path, delta, day)
        if mark(total) > mark(total - delta.days[day].cost_nanos):
            return True
        added = {f: cost for (f, dd), cost in delta.feature_days.items() if dd == day[-2:]}
        if any(mark(after) > mark(after - added.get(f, 0)) for f, after in features.items()):
            return True
    return False


def _feature_daily(aggregates: Mapping[str, month_doc.MonthAggregate], feature: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for month, aggregate in aggregates.items():
        for day, cost in aggregate.feature_days.get(feature, {}).items():
            found[f"{month}-{day}"] = cost
    return found


def platform_pace_alerts(
    *,
    current: month_doc.MonthAggregate,
    previous: Sequence[month_doc.MonthAggregate],
    settings: Settings,
    now: datetime,
    raised_by: str,
) -> list[Alert]:
    """Return the platform's forecast alert (with a budget) and the platform's and features' anomalies.

    `previous`: the months before, most recent first (the forecast blends their totals as
    usage_analytics does; the anomalies read the last one's days). Yesterday is judged too
    (late): a day that passed the rule after the last check of it is not lost.
    """
    month = month_key(now)
    last = months_back(month, 2)[0]
    before = previous[0] if previous else month_doc.MonthAggregate()
    budget = settings.platform_budget_nanos
    projected = projections.project(
        month=month,
        days=current.days,
        now=now,
        previous_months_nanos=[m.total.cost_nanos for m in previous],
        limit_nanos=budget,
    )
    found = [
        forecast_alert(
            projected=projected, limit_nanos=budget, now=now, scope="platform.month.cost", raised_by=raised_by
        )
    ]
    both = {last: before, month: current}
    daily = {day: counts.cost_nanos for aggregate in both.values() for day, counts in aggregate.days.items()}
    judged = [("platform.day.cost", daily)] + [
        (f"feature:{feature}.day.cost", _feature_daily(both, feature))
        for feature in sorted(current.feature_days)
    ]
    today = now.date()
    for scope, days in judged:
        for day, late in ((today, False), (today - timedelta(days=1), True)):
            found.append(anomaly_alert(daily=days, day=day, scope=scope, raised_by=raised_by, late=late))
    return [alert for alert in found if alert is not None]


def _previous_rollups(store: AlertStore, month: str) -> list[month_doc.Rollup]:
    """Read the stored rollups of the three months before `month`, most recent first."""
    earlier = list(reversed(months_back(month, 4)[:-1]))
    paths = [layout.rollup_path(m) for m in earlier]
    docs = store.read(paths)
    return [month_doc.rollup_of(m, docs[path]) for m, path in zip(earlier, paths, strict=True)]


def _folded_early(rollup: month_doc.Rollup) -> bool:
    """Return whether a past month's rollup was folded before the month ended (or never)."""
    return rollup.as_of is None or rollup.as_of < month_end(rollup.month)


def late_platform_alerts(
    store: AlertStore, current: month_doc.MonthAggregate, settings: Settings, now: datetime
) -> list[Alert]:
    """Return the platform's and features' forecast and anomaly alerts its figures call for now, late.

    For `reconcile` (nothing is written: the rollups before are read as stored).
    """
    stored = _previous_rollups(store, month_key(now))
    previous = [rollup.aggregate for rollup in stored]
    if _folded_early(stored[0]):  # as watch_platform judges it: the whole month (summed, not stored)
        previous[0] = folding.aggregate_now(store, stored[0].month)
    found = platform_pace_alerts(
        current=current, previous=previous, settings=settings, now=now, raised_by="reconcile"
    )
    return [replace(alert, late=True) for alert in found]


def watch_platform(store: AlertStore, month: str, settings: Settings, now: datetime, raised_by: str) -> int:
    """Sum the month's shards and raise the alerts they call for (budget, forecast, anomaly); count new ones.

    The month's rollup is not written (a reader's ranked rollup stays); the months before
    are read from their rollups (three reads), the last one folded once more (and stored) if
    it was folded before it ended.
    """
    current = folding.aggregate_now(store, month)
    wanted: list[Alert] = []
    budget = settings.platform_budget_nanos
    if budget is not None:
        total = current.total.cost_nanos
        wanted += alerts.platform_alerts(month=month, total=total, budget=budget, raised_by=raised_by)
    if month == month_key(now):
        stored = _previous_rollups(store, month)
        last = stored[0]
        if _folded_early(last):  # once more
            stored[0] = folding.fold(store, last.month, now=now, version=last.version)
        previous = [rollup.aggregate for rollup in stored]
        wanted += platform_pace_alerts(
            current=current, previous=previous, settings=settings, now=now, raised_by=raised_by
        )
    return alerts.ensure(store, wanted, now)
