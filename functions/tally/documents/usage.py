"""A user's usage: `TallyUsers/{uid}` (the truth; `mirror` copies its `usage` map into users/{uid}).

`usage` holds the user's recent months (totals and by type), lifetime totals, session
counters, the holds of the budget gate, and limits; `TallyUserLimits/{uid}` keeps Tally's own
copy of the limits (it survives an app erasing `usage`). This module spells their fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from tally import layout
from tally.documents import counters
from tally.timeutil import month_key, months_back
from tally.usage import Counts, Held, MonthDelta
from tally.writes import DELETE, CommitResult, Increment, Op, Write, merge_payload

MONTHS_KEPT = 3  # usage.months keeps this month and the two before it
USAGE = "usage"
MONTHS, LIFETIME, SESSIONS, HELD, PENDING, LIMITS = (
    "months",
    "lifetime",
    "sessions",
    "held",
    "pending",
    "limits",
)
ACTIVE, COMPLETED = "active", "completed"  # session counters
UPDATED = "updatedAt"
HELD_COST, HELD_RUNS = counters.COST, "runs"


def usage_of(truth: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the `usage` map of a user's document (empty when there is none)."""
    found = truth.get(USAGE)
    return found if isinstance(found, Mapping) else {}


def months_of(usage: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the months a `usage` map keeps."""
    return usage.get(MONTHS) or {}


def month_usage(usage: Mapping[str, Any], month: str) -> Counts:
    """Return one month's totals from a `usage` map."""
    return counters.counts_of(months_of(usage).get(month))


def previous_costs(usage: Mapping[str, Any], month: str) -> list[int]:
    """Return the cost of the two months before `month` that `usage.months` keeps, most recent first."""
    return [month_usage(usage, m).cost_nanos for m in reversed(months_back(month, 3)[:-1])]


def month_of(usage: Mapping[str, Any], month: str) -> tuple[Counts, dict[str, Counts], int]:
    """Return one month's totals, its totals by type, and its unpriced steps."""
    return counters.totals_of(months_of(usage).get(month))


def lifetime_of(usage: Mapping[str, Any]) -> Counts:
    """Return a user's lifetime totals."""
    return counters.counts_of(usage.get(LIFETIME))


def sessions_of(usage: Mapping[str, Any]) -> tuple[int, int]:
    """Return a user's (active, completed) session counters."""
    sessions = usage.get(SESSIONS) or {}
    return int(sessions.get(ACTIVE, 0)), int(sessions.get(COMPLETED, 0))


def limit_settings(usage: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return a user's stored limit settings: their assigned plan and their own overrides."""
    found = usage.get(LIMITS)
    return found if isinstance(found, Mapping) else {}


def held_of(usage: Mapping[str, Any], *, pending: bool = False) -> Held:
    """Return a user's holds (with `pending`: also the counter of holds being decided before v3)."""
    found = [stored_held(usage)] + ([pending_of(usage)] if pending else [])
    return Held(cost_nanos=max(0, sum(h.cost_nanos for h in found)), runs=max(0, sum(h.runs for h in found)))


def _held_at(usage: Mapping[str, Any], key: str) -> Held:
    counter = usage.get(key) or {}
    return Held(int(counter.get(HELD_COST, 0)), int(counter.get(HELD_RUNS, 0)))


def stored_held(usage: Mapping[str, Any]) -> Held:
    """Return the holds counter as stored (possibly negative: a repair's business)."""
    return _held_at(usage, HELD)


def pending_of(usage: Mapping[str, Any]) -> Held:
    """Return the counter of holds being decided, as stored before v3 (now counted in `held`)."""
    return _held_at(usage, PENDING)


def committed_month(result: CommitResult, user_id: str, month: str) -> Counts:
    """Return a month's totals as a commit's increments left them."""
    return counters.committed(result, layout.usage_path(user_id), USAGE, MONTHS, month)


def committed_held(result: CommitResult, user_id: str) -> Held:
    """Return a user's holds as a commit's increments left them."""
    path = layout.usage_path(user_id)
    return Held(result.value(path, USAGE, HELD, HELD_COST), result.value(path, USAGE, HELD, HELD_RUNS))


def stale_months(usage: Mapping[str, Any], now: datetime) -> tuple[str, ...]:
    """Return the months in `usage.months` older than the ones kept."""
    oldest = min(kept_months(now))
    return tuple(sorted(m for m in months_of(usage) if m < oldest))


def kept_months(now: datetime) -> tuple[str, ...]:
    """Return the months `usage.months` keeps at `now`."""
    return tuple(months_back(month_key(now), MONTHS_KEPT))


def write(user_id: str, usage: Mapping[str, Any]) -> Write:
    """Return a merge into the user's `usage` (only the given leaves change); `mirror` copies it."""
    return Write(layout.usage_path(user_id), Op.MERGE, merge_payload({"userId": user_id, USAGE: usage}))


def sessions_change(*, active: int | None = None, completed: int | None = None) -> dict[str, Any]:
    """Return the change of a user's session counters (those given)."""
    changed = {ACTIVE: active, COMPLETED: completed}
    return {SESSIONS: {name: Increment(value) for name, value in changed.items() if value is not None}}


def held_change(held: Held) -> dict[str, Any]:
    """Return the change of a user's holds."""
    return {HELD: {HELD_COST: Increment(held.cost_nanos), HELD_RUNS: Increment(held.runs)}}


def recording_write(
    *,
    user_id: str,
    now: datetime,
    deltas: Mapping[str, MonthDelta],
    stale: Iterable[str],
    lifetime: Counts | None,
    sessions: dict[str, Any],
    settled: Held | None,
) -> Write:
    """Return a recording's change of the user's usage: months, lifetime, sessions, settled holds."""
    usage: dict[str, Any] = {
        MONTHS: {
            **dict.fromkeys(stale, DELETE),
            **{
                month: counters.totals_change(delta)
                for month, delta in deltas.items()
                if delta.total.api_calls
            },
        },
        UPDATED: now,
        **sessions,
    }
    if lifetime is not None:
        usage[LIFETIME] = counters.increments(lifetime)
    if settled is not None:
        usage.update(held_change(Held(-settled.cost_nanos, -settled.runs)))
    return write(user_id, usage)


def hold_write(user_id: str, month: str, held: Held) -> Write:
    """Return the fetch-and-add of a hold: the holds grow, and the month's totals come back (adding 0)."""
    return write(user_id, {**held_change(held), MONTHS: {month: counters.increments(Counts())}})


def limits_writes(*, user_id: str, change: Mapping[str, Any]) -> list[Write]:
    """Return the writes of a change of a user's limit settings: `usage.limits` and Tally's own copy."""
    return [write(user_id, {LIMITS: change}), limits_copy_write(user_id, change)]


def limits_copy_write(user_id: str, change: Mapping[str, Any]) -> Write:
    """Return the merge of a change into Tally's own copy of a user's limit settings."""
    return Write(layout.limits_path(user_id), Op.MERGE, merge_payload({"userId": user_id, **change}))
