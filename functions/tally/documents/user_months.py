"""A user's month, `TallyMonthlyUsage/{uid}_{month}`: the user's share of the platform month.

It holds the same counters as a platform shard (see `tally.documents.months`), the flag
`active` (the user counted in the month's active users), and the user's free-tier entry: the
share of their limits used (`limitPercent`, indexed) with the limits it was measured against,
once it reaches 80 %.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tally import layout
from tally.documents import counters, months
from tally.documents import limits as limits_doc
from tally.usage import WARNING_PERCENT, Counts, Limits, MonthDelta, limit_percent
from tally.values import Document, UserMonthState
from tally.writes import Op, Write, merge_payload

FREE_TIER_STEP = 5.0  # percent: an entry is rewritten after the commit only past a step of this
FORECAST_ALERTED = "forecastAlerted"  # (v3) the month's forecast alert exists: no request tries again
ANOMALY_DAY = "anomalyAlertedDay"  # (v3) the last day whose anomaly alert exists (one field: bounded)


def state_of(doc: Document) -> UserMonthState:
    """Return what the write path needs of a user's month document."""
    return UserMonthState(
        doc.exists,
        doc.fields.get(months.ACTIVE) is True,
        doc.version,
        limits_doc.percent_of(doc.fields),
        day_costs={
            day: counters.counts_of(stored).cost_nanos
            for day, stored in (doc.fields.get(months.DAYS) or {}).items()
        },
        forecast_alerted=doc.fields.get(FORECAST_ALERTED) is True,
        anomaly_day=doc.fields.get(ANOMALY_DAY) if isinstance(doc.fields.get(ANOMALY_DAY), str) else None,
    )


def forecast_alerted_write(user_id: str, month: str) -> Write:
    """Return the write marking a user's month as having its forecast alert."""
    return Write(
        layout.user_month_path(user_id, month),
        Op.MERGE,
        {"userId": user_id, months.MONTH: month, FORECAST_ALERTED: True},
    )


def anomaly_alerted_write(user_id: str, day: str) -> Write:
    """Return the write marking a user's day (YYYY-MM-DD) as having its anomaly alert."""
    return Write(
        layout.user_month_path(user_id, day[:7]),
        Op.MERGE,
        {"userId": user_id, months.MONTH: day[:7], ANOMALY_DAY: day},
    )


def entry(percent: float | None, limits: Limits | None, *, exact: bool) -> dict[str, Any]:
    """Return the free-tier fields for a share of limits: none under 80 %; raised only, unless `exact`."""
    if percent is None or limits is None or percent < WARNING_PERCENT:
        return {}
    return limits_doc.entry(percent, limits, exact=exact)


def write(
    *, user_id: str, month: str, delta: MonthDelta, state: UserMonthState, free_tier: Mapping[str, Any]
) -> Write:
    """Return a recording's write of a user's month: created, made active once, or incremented."""
    path = layout.user_month_path(user_id, month)
    if not state.exists:
        return Write(
            path,
            Op.CREATE,
            {
                "userId": user_id,
                months.MONTH: month,
                months.ACTIVE: True,
                **months.counters_of(delta),
                **free_tier,
            },
        )
    change = {**months.counters_change(delta), **free_tier}
    if not state.active:
        return Write(path, Op.UPDATE, {months.ACTIVE: True, **change}, version=state.version)
    return Write(path, Op.MERGE, merge_payload({"userId": user_id, months.MONTH: month, **change}))


def free_tier_write(*, user_id: str, month: str, percent: float, limits: Limits, exact: bool) -> Write:
    """Return the write of a user's free-tier entry: raised to `percent`, or set to it when `exact`."""
    return Write(
        layout.user_month_path(user_id, month),
        Op.MERGE,
        {"userId": user_id, months.MONTH: month, **limits_doc.entry(percent, limits, exact=exact)},
    )


def free_tier_fixups(
    *, user_id: str, used: Mapping[str, Counts], known: Mapping[str, float | None], limits: Limits
) -> list[Write]:
    """Return the entries to raise after a commit: where the exact share passed a step beyond what is stored.

    The commit already raised each entry to its estimate (from a plain read); only a
    concurrent request can make the exact share higher, so this is rarely needed.
    """
    writes = []
    for month, counts in sorted(used.items()):
        exact = limit_percent(counts, limits)
        stored = known.get(month)
        if exact >= WARNING_PERCENT and (
            stored is None or exact // FREE_TIER_STEP > stored // FREE_TIER_STEP
        ):
            writes.append(
                free_tier_write(user_id=user_id, month=month, percent=exact, limits=limits, exact=False)
            )
    return writes
