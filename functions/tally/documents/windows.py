"""The gate's windows in a user's `TallyUsers/{uid}`: days and feature counters (not mirrored).

`windows.days.{YYYY-MM-DD}` holds the user's day totals and, under `features`, each feature's
cost and steps that day; `windows.months.{YYYY-MM}.features` the same per month, and
`windows.months.{YYYY-MM}.held` the holds of reservations naming a feature the user has a
limit for. A window is part of the field path, as months are in `usage.months`, so days and
months roll over at 00:00 UTC with no job: a new window starts at zero. Only today and
yesterday, this month and the one before, are kept (older keys are deleted by the next
write that reads them), and features are counted under their admitted names (at most
`TALLY_MAX_NAMES` + `(other)` a month), so the map stays bounded (see docs/design.md).

The field sits beside `usage`, in the same document, so a recording and a reservation still
write the user's documents once each, and the gate's fetch-and-add returns every window it
checks in the same commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from tally import layout
from tally.documents import counters
from tally.limits import Windows
from tally.timeutil import day_key, month_key, months_back
from tally.usage import Counts, Held
from tally.values import Step
from tally.writes import DELETE, CommitResult, Increment, Op, Write, merge_payload

WINDOWS = "windows"
DAYS, MONTHS, FEATURES, HELD = "days", "months", "features", "held"
HELD_COST, HELD_RUNS = counters.COST, "runs"


def kept_days(now: datetime) -> tuple[str, str]:
    """Return the days kept at `now`: today and yesterday (UTC)."""
    return day_key(now), day_key(now - timedelta(days=1))


def kept_months(now: datetime) -> tuple[str, ...]:
    """Return the months kept at `now`: this one and the one before."""
    return tuple(months_back(month_key(now), 2))


def _windows(truth: Mapping[str, Any]) -> Mapping[str, Any]:
    found = truth.get(WINDOWS)
    return found if isinstance(found, Mapping) else {}


def _map(data: Any, *keys: str) -> Mapping[str, Any]:
    for key in keys:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def _held(data: Mapping[str, Any] | None) -> Held:
    data = data or {}
    return Held(int(data.get(HELD_COST, 0)), int(data.get(HELD_RUNS, 0)))


def windows_of(truth: Mapping[str, Any], now: datetime, *, month: Counts, held: Held) -> Windows:
    """Return the gate's view of a user's document as read (`month` and `held` from their `usage`)."""
    stored = _windows(truth)
    today = _map(stored, DAYS, day_key(now))
    this_month = _map(stored, MONTHS, month_key(now))
    feature_held: dict[str, Held] = {}
    for kept in kept_months(now):
        for name, value in _map(stored, MONTHS, kept, HELD).items():
            found, before = _held(value), feature_held.get(name, Held())
            feature_held[name] = Held(before.cost_nanos + found.cost_nanos, before.runs + found.runs)
    return Windows(
        month=month,
        day=counters.counts_of(today),
        held=held,
        feature_month=counters.named_counts(this_month.get(FEATURES)),
        feature_day=counters.named_counts(today.get(FEATURES)),
        feature_held=feature_held,
    )


def stale_keys(truth: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Return the deletions of windows no longer kept (merged into the next write of the document)."""
    stored = _windows(truth)  # only older windows: a newer one (another instance's clock) is never dropped
    days = {day: DELETE for day in _map(stored, DAYS) if day < min(kept_days(now))}
    months = {month: DELETE for month in _map(stored, MONTHS) if month < min(kept_months(now))}
    return {key: value for key, value in ((DAYS, days), (MONTHS, months)) if value}


def recording_change(
    steps: Iterable[Step], now: datetime, *, released: Mapping[tuple[str, str], Held]
) -> dict[str, Any]:
    """Return what recorded steps add to the kept windows, and the feature holds they settle.

    `released`: by (month, feature), the feature holds the steps' reservations take back.
    """
    days, months = kept_days(now), kept_months(now)
    by_day: dict[str, dict[str, Counts]] = {}
    by_month: dict[str, dict[str, Counts]] = {}
    totals: dict[str, Counts] = {}
    for step in steps:
        name = step.feature_key or step.feature
        day, month = day_key(step.timestamp), month_key(step.timestamp)
        if day in days:
            totals.setdefault(day, Counts()).add(step)
            by_day.setdefault(day, {}).setdefault(name, Counts()).add(step)
        if month in months:
            by_month.setdefault(month, {}).setdefault(name, Counts()).add(step)
    change: dict[str, Any] = {
        DAYS: {
            day: {**counters.increments(totals[day]), FEATURES: counters.increment_map(named)}
            for day, named in by_day.items()
        },
        MONTHS: {month: {FEATURES: counters.increment_map(named)} for month, named in by_month.items()},
    }
    for (month, name), held in released.items():
        change[MONTHS].setdefault(month, {}).setdefault(HELD, {})[name] = _held_change(
            Held(-held.cost_nanos, -held.runs)
        )
    return change


def _held_change(held: Held) -> dict[str, Increment]:
    return {HELD_COST: Increment(held.cost_nanos), HELD_RUNS: Increment(held.runs)}


def hold_change(now: datetime, *, feature: str | None, held: Held | None) -> dict[str, Any]:
    """Return the gate's fetch-and-add on the windows: today's totals, and a feature's (adding 0), its hold.

    `held`: the estimate the feature's scopes hold (None: the feature has no limit for the user).
    """
    day, month = day_key(now), month_key(now)
    change: dict[str, Any] = {DAYS: {day: counters.increments(Counts())}}
    if feature is not None:
        change[DAYS][day][FEATURES] = {feature: counters.increments(Counts())}
        change[MONTHS] = {month: {FEATURES: {feature: counters.increments(Counts())}}}
        if held is not None:
            change[MONTHS][month][HELD] = {feature: _held_change(held)}
    return change


def release_change(month: str, feature: str, held: Held) -> dict[str, Any]:
    """Return the change taking a feature's hold back (released, expired, refused or settled)."""
    return {MONTHS: {month: {HELD: {feature: _held_change(Held(-held.cost_nanos, -held.runs))}}}}


def committed(result: CommitResult, user_id: str, now: datetime, feature: str | None) -> dict[str, Any]:
    """Return today's totals, a feature's counters and this month's hold as the gate's commit left them."""
    path, day, month = layout.usage_path(user_id), day_key(now), month_key(now)
    found: dict[str, Any] = {"day": counters.committed(result, path, WINDOWS, DAYS, day)}
    if feature is not None:
        found["feature_day"] = counters.committed(result, path, WINDOWS, DAYS, day, FEATURES, feature)
        found["feature_month"] = counters.committed(result, path, WINDOWS, MONTHS, month, FEATURES, feature)
        found["feature_held"] = Held(
            result.value(path, WINDOWS, MONTHS, month, HELD, feature, HELD_COST),
            result.value(path, WINDOWS, MONTHS, month, HELD, feature, HELD_RUNS),
        )
    return found


def payload(change: Mapping[str, Any]) -> dict[str, Any]:
    """Return a windows change as the part of a merge into the user's document."""
    return merge_payload({WINDOWS: change})


def write(user_id: str, change: Mapping[str, Any]) -> Write:
    """Return a merge of a windows change into the user's document (merged with its usage write)."""
    return Write(layout.usage_path(user_id), Op.MERGE, payload(change))


def earlier_held(truth: Mapping[str, Any], now: datetime, feature: str) -> Held:
    """Return a feature's holds made in the month before, as read (a hold lives an hour at most)."""
    earlier = [month for month in kept_months(now) if month != month_key(now)]
    found = [_held(_map(_windows(truth), MONTHS, month, HELD).get(feature)) for month in earlier]
    return Held(sum(h.cost_nanos for h in found), sum(h.runs for h in found))


def with_steps(
    view: Windows, steps: Iterable[Step], now: datetime, *, released: Mapping[str, Held]
) -> Windows:
    """Return a view with recorded steps added (today's, this month's), settled feature holds taken back."""
    day, month = day_key(now), month_key(now)
    total, by_day, by_month = Counts(), dict(view.feature_day), dict(view.feature_month)
    total.merge(view.day)
    for step in steps:
        name = step.feature_key or step.feature
        if day_key(step.timestamp) == day:
            total.add(step)
            by_day[name] = _plus(by_day.get(name), step)
        if month_key(step.timestamp) == month:
            by_month[name] = _plus(by_month.get(name), step)
    held = dict(view.feature_held)
    for name, back in released.items():
        before = held.get(name, Held())
        held[name] = Held(max(0, before.cost_nanos - back.cost_nanos), max(0, before.runs - back.runs))
    return replace(view, day=total, feature_day=by_day, feature_month=by_month, feature_held=held)


def _plus(counts: Counts | None, step: Step) -> Counts:
    result = Counts()
    if counts is not None:
        result.merge(counts)
    result.add(step)
    return result
