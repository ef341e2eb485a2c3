"""(v3) Forecast and anomaly alerts: a month heading past its limit, a day far above its usual level.

`forecast`, once per (scope, month), from the 3rd UTC day of the month, when the projection
(`tally.forecast`, as `my_usage` and `usage_analytics` show it) reaches the monthly cost limit.
`anomaly`, once per (scope, day), when the day's cost so far (a lower bound on the day's) is
far above its usual level by the rule of `tally.forecast.anomaly`; its `limit` is the usual
(expected) cost of the day and its `threshold` the ratio the rule asks for, in percent.

- A user's are judged after each of their recordings, from what the request already read
  (their month document: its days; their own document: the previous months) and the days
  the commit touched as its fetch-and-add left them: no read is added. The forecast alert is
  created together with the flag `forecastAlerted` of the month document, only if absent, so
  of any number of concurrent requests one raises it, and once the flag is read nobody tries
  again. The anomaly rule is monotone in the day's cost, so exactly one commit takes the day
  past it (its own share subtracted from the day's total after it): that request raises it.
- A team's forecast is judged from its slices, read after a member's recording for the
  team's threshold alerts anyway, and ensured with them.
- The platform's and each feature's are judged on a fold of the month (`watch_platform`),
  which a recording runs when its commit takes shard 0's cost of the day, or a feature's
  there, past a mark (every factor of sqrt 2 from $0.01), or past a budget mark; the sweep
  runs it every 15 minutes when a platform budget is set. So nothing is read while nobody
  records, and a check costs one read per shard, a few times per day and feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta

from tally import forecast, layout
from tally.config import Settings
from tally.documents import months as month_doc
from tally.documents import user_months
from tally.documents.months import Rollup
from tally.services import alerts, folding, projections
from tally.services.alerts import Alert, AlertKind, AlertStore
from tally.timeutil import day_key, month_key, months_back
from tally.usage import Counts, MonthDelta
from tally.values import UserMonthState, Version
from tally.writes import CommitResult, Op, Write

FORECAST_FROM_DAY = 3  # SPEC: from the 3rd UTC day of the month
ANOMALY_THRESHOLD = round(forecast.ANOMALY_RATIO * 100)  # an anomaly alert's `threshold`: percent of usual
HISTORY_DAYS = 7 * (forecast.ANOMALY_WEEKS + 1)  # days before today the anomaly rule looks at
MARK_UNIT = 10_000_000  # $0.01: the first mark of a day's cost


def mark(cost_nanos: int) -> int:
    """Return the mark a day's cost has passed: -1 under $0.01, then one more per factor of sqrt 2."""
    if cost_nanos < MARK_UNIT:
        return -1
    return (cost_nanos * cost_nanos // (MARK_UNIT * MARK_UNIT)).bit_length() - 1


def _history(daily: Mapping[str, int], today: date) -> list[int]:
    """Return the costs of the `HISTORY_DAYS` days before today, most recent last (absent days: 0)."""
    first = today - timedelta(days=HISTORY_DAYS)
    known = [day for day, cost in daily.items() if cost > 0 and day < today.isoformat()]
    start = max(first, date.fromisoformat(min(known))) if known else today
    return [daily.get((start + timedelta(days=i)).isoformat(), 0) for i in range((today - start).days)]


def anomaly_alert(
    *,
    daily: Mapping[str, int],
    today_cost: int,
    now: datetime,
    scope: str,
    raised_by: str,
    user_id: str | None = None,
) -> Alert | None:
    """Return the anomaly alert of today's cost so far against the days before (`daily`), if any.

    History starts at the first day with a cost: a user's or feature's first days are not
    read as a usual level of zero.
    """
    today = now.date()
    found = forecast.anomaly(
        history_nanos=_history(daily, today), today_nanos=today_cost, weekday=today.weekday()
    )
    if found is None:
        return None
    return Alert(
        user_id,
        month_key(now),
        AlertKind.ANOMALY,
        ANOMALY_THRESHOLD,
        today_cost,
        found.expected_nanos,
        raised_by,
        scope=scope,
        window=day_key(now),
    )


def forecast_alert(
    *,
    projected: forecast.Forecast,
    limit_nanos: int | None,
    now: datetime,
    scope: str,
    raised_by: str,
    user_id: str | None = None,
    team_id: str | None = None,
) -> Alert | None:
    """Return the forecast alert of a month whose projection reached its limit (from the 3rd day on)."""
    if limit_nanos is None or now.day < FORECAST_FROM_DAY or projected.month_end_nanos <= 0:
        return None
    if projected.month_end_nanos < limit_nanos:
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


def user_alerts(
    *,
    user_id: str,
    state: UserMonthState,
    delta: MonthDelta,
    result: CommitResult,
    previous_months_nanos: Sequence[int],
    limit_nanos: int | None,
    now: datetime,
    raised_by: str,
) -> tuple[Alert | None, Alert | None]:
    """Return the (forecast, anomaly) alerts a recording of this month raises for its user.

    The forecast alert only while the month is not flagged; the anomaly alert only when this
    commit took the day past the rule.
    """
    month, today = month_key(now), day_key(now)
    days = user_days_after(state=state, delta=delta, result=result, user_id=user_id, month=month)
    found = None
    if not state.forecast_alerted:
        projected = projections.project(
            month=month,
            days={day: Counts(cost) for day, cost in days.items()},
            now=now,
            previous_months_nanos=previous_months_nanos,
            limit_nanos=limit_nanos,
        )
        found = forecast_alert(
            projected=projected,
            limit_nanos=limit_nanos,
            now=now,
            scope="user.month.cost",
            raised_by=raised_by,
            user_id=user_id,
        )
    spike = None
    if today in delta.days:
        after = days.get(today, 0)
        before = after - delta.days[today].cost_nanos
        spike = anomaly_alert(
            daily=days, today_cost=after, now=now, scope="user.day.cost", raised_by=raised_by, user_id=user_id
        )
        if spike is not None and anomaly_alert(
            daily=days,
            today_cost=before,
            now=now,
            scope="user.day.cost",
            raised_by=raised_by,
            user_id=user_id,
        ):
            spike = None  # an earlier commit took the day past the rule: it raised the alert
    return found, spike


def raise_forecast(store: AlertStore, alert: Alert, now: datetime) -> bool:
    """Create a user's forecast alert and flag their month, in one commit; return whether it was new."""
    assert alert.user_id is not None
    flag = user_months.forecast_alerted_write(alert.user_id, alert.month)
    create = Write(layout.alert_path(alert.alert_id), Op.CREATE, alert.document(now))
    if store.commit_each([[create, flag]])[0]:
        return True
    store.commit([flag])  # it exists (a concurrent request, or the sweep): stop trying
    return False


# The platform's and the features'


def shard_crossed(result: CommitResult, month: str, shard: int, delta: MonthDelta, now: datetime) -> bool:
    """Return whether a commit took shard 0's cost of today, or a feature's there, past a mark."""
    today = day_key(now)
    if shard != 0 or month != month_key(now) or today not in delta.days:
        return False
    path = layout.shard_path(month, shard)
    total, features = month_doc.committed_day(result, path, delta, today)
    if mark(total) > mark(total - delta.days[today].cost_nanos):
        return True
    dd = today[-2:]
    return any(mark(after) > mark(after - delta.feature_days[(f, dd)]) for f, after in features.items())


def _daily(aggregate: month_doc.MonthAggregate, month: str) -> dict[str, int]:
    return {day: counts.cost_nanos for day, counts in aggregate.days.items() if day.startswith(month)}


def _feature_daily(aggregates: Mapping[str, month_doc.MonthAggregate], feature: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for month, aggregate in aggregates.items():
        for day, cost in aggregate.feature_days.get(feature, {}).items():
            found[f"{month}-{day}"] = cost
    return found


def platform_alerts(
    *,
    current: month_doc.MonthAggregate,
    previous: month_doc.MonthAggregate,
    settings: Settings,
    now: datetime,
    raised_by: str,
) -> list[Alert]:
    """Return the platform's forecast alert (with a budget) and the platform's and features' anomalies."""
    month, last = month_key(now), months_back(month_key(now), 2)[0]
    found: list[Alert | None] = []
    budget = settings.platform_budget_nanos
    projected = projections.project(
        month=month,
        days=current.days,
        now=now,
        previous_months_nanos=[previous.total.cost_nanos],
        limit_nanos=budget,
    )
    found.append(
        forecast_alert(
            projected=projected, limit_nanos=budget, now=now, scope="platform.month.cost", raised_by=raised_by
        )
    )
    today = day_key(now)
    daily = {**_daily(previous, last), **_daily(current, month)}
    found.append(
        anomaly_alert(
            daily=daily,
            today_cost=daily.get(today, 0),
            now=now,
            scope="platform.day.cost",
            raised_by=raised_by,
        )
    )
    both = {last: previous, month: current}
    for feature in sorted(current.feature_days):
        days = _feature_daily(both, feature)
        found.append(
            anomaly_alert(
                daily=days,
                today_cost=days.get(today, 0),
                now=now,
                scope=f"feature:{feature}.day.cost",
                raised_by=raised_by,
            )
        )
    return [alert for alert in found if alert is not None]


def watch_platform(store: AlertStore, month: str, settings: Settings, now: datetime, raised_by: str) -> int:
    """Fold the month and raise the alerts it calls for (budget, forecast, anomaly); return the new ones.

    The current month's anomalies also look at the month before (its rollup, folded again
    only if stale): a day early in a month has its usual level there.
    """
    versions: dict[str, Version] = {month: None}
    last = months_back(month, 2)[0]
    current = month == month_key(now)
    previous: Rollup | None = None
    if current:
        paths = [layout.rollup_path(last), layout.rollup_path(month)]
        docs = store.read(paths)
        previous = month_doc.rollup_of(last, docs[paths[0]])
        versions[month] = docs[paths[1]].version
        if folding.needs_fold(previous, now):
            versions[last] = previous.version
    folded = folding.fold_months(store, versions, now=now)
    previous = folded.get(last, previous)
    wanted: list[Alert] = []
    budget = settings.platform_budget_nanos
    if budget is not None:
        total = folded[month].aggregate.total.cost_nanos
        wanted += alerts.platform_alerts(month=month, total=total, budget=budget, raised_by=raised_by)
    if previous is not None:
        wanted += platform_alerts(
            current=folded[month].aggregate,
            previous=previous.aggregate,
            settings=settings,
            now=now,
            raised_by=raised_by,
        )
    return alerts.ensure(store, wanted, now)
