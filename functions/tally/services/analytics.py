"""Platform analytics for admins (`usage_analytics`): rollups, top users, the free-tier table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from tally import ports
from tally.config import Settings
from tally.documents import counters
from tally.documents import limits as limits_doc
from tally.documents import months as month_doc
from tally.documents.months import FREE_TIER_PERCENT, MonthAggregate, Ranking
from tally.money import nanos_to_usd
from tally.requests import AnalyticsIn
from tally.services import alerts, folding, projections
from tally.timeutil import days_of, month_key, months_back
from tally.usage import Counts, limit_percent
from tally.values import Document, UsageType

HISTORY_MONTHS = 12


class AnalyticsStore(folding.RankStore, Protocol):
    """The store operations analytics needs."""

    def month_alerts(self, *, month: str, limit: int) -> list[Document]: ...


def _iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def _ranked(named: Mapping[str, Counts]) -> list[dict[str, Any]]:
    ordered = sorted(named.items(), key=lambda item: (-item[1].cost_nanos, item[0]))
    return [{"name": name, **counts.usd()} for name, counts in ordered]


def _per(total: int, count: int) -> float:
    return round(total / count, 9) if count else 0.0


def sessions_view(sessions: Mapping[str, int]) -> dict[str, Any]:
    """Return the session statistics of a month."""
    completed = sessions.get(month_doc.COMPLETED, 0)
    cost = sessions.get(counters.COST, 0)
    return {
        "active": max(0, sessions.get(month_doc.ACTIVE, 0)),
        "completed": completed,
        "avgCost": nanos_to_usd(round(cost / completed)) if completed else 0.0,
        "avgSteps": _per(sessions.get(month_doc.STEP_COUNT, 0), completed),
        "avgDurationSeconds": _per(sessions.get(month_doc.DURATION, 0), completed * 1000),
    }


def free_tier_row(doc: Mapping[str, Any], settings: Settings) -> dict[str, Any] | None:
    """Return a free-tier row from a user's month document, recomputed from its own figures."""
    used = counters.counts_of(doc)
    limits = limits_doc.limits_in(doc, settings)
    percent = limit_percent(used, limits)
    if percent < FREE_TIER_PERCENT:
        return None
    return {
        "userId": doc["userId"],
        "costUsed": nanos_to_usd(used.cost_nanos),
        "monthlyCostLimit": nanos_to_usd(limits.monthly_cost_limit_nanos),
        "runsUsed": used.billable_runs,
        "monthlyFreeRuns": limits.monthly_free_runs,
        "percent": round(percent, 2),
    }


def month_report(
    *, month: str, aggregate: MonthAggregate, history: Mapping[str, MonthAggregate]
) -> dict[str, Any]:
    """Return the totals, breakdowns, sessions, daily and history parts of the answer."""
    return {
        "month": month,
        "totals": {
            **aggregate.total.usd(),
            "activeUsers": aggregate.active_users,
            "unpricedSteps": aggregate.unpriced,
            "byType": {kind.value: aggregate.by_type.get(kind.value, Counts()).usd() for kind in UsageType},
        },
        "features": _ranked(aggregate.features),
        "providers": _ranked(aggregate.providers),
        "unpriced": [
            {"provider": provider, "model": model, "steps": steps}
            for (provider, model), steps in sorted(
                aggregate.unpriced_models.items(), key=lambda i: (-i[1], i[0])
            )
        ],
        "sessions": sessions_view(aggregate.sessions),
        "daily": [{"date": day, **aggregate.days.get(day, Counts()).usd()} for day in days_of(month)],
        "history": [
            {"month": m, "cost": nanos_to_usd(agg.total.cost_nanos), "apiCalls": agg.total.api_calls}
            for m, agg in history.items()
        ],
    }


def usage_analytics(
    *,
    store: AnalyticsStore,
    directory: ports.Directory,
    request: AnalyticsIn,
    settings: Settings,
    now: datetime,
) -> dict[str, Any]:
    """Return the platform's month for an admin, from a bounded number of reads.

    Without `fresh` the month comes from its rollup (exact as of `asOf`, at most 60 s
    before the call), ranking included; with `fresh` it is folded and ranked now, so
    every step recorded before the call is in it.
    """
    month = request.month or month_key(now)
    months = months_back(month, HISTORY_MONTHS)
    found, reads = folding.rollups(
        store, months, now=now, fresh=[month] if request.fresh else [], ranked=[month]
    )
    current, as_of = found[month].aggregate, found[month].as_of or now
    ranking = found[month].ranking or Ranking()
    history = {m: found[m].aggregate for m in months}
    top = ranking.top[: request.top]
    free_rows = [row for doc in ranking.free_tier if (row := free_tier_row(doc, settings)) is not None]
    free_rows.sort(key=lambda row: (-row["percent"], row["userId"]))
    emails = directory.emails(sorted({doc["userId"] for doc in top} | {r["userId"] for r in free_rows}))
    earlier = [history[m].total.cost_nanos for m in reversed(months[:-1])]  # most recent first
    platform = projections.project(
        month=month,
        days=current.days,
        now=now,
        previous_months_nanos=earlier,
        limit_nanos=settings.platform_budget_nanos,
    )
    return {
        **month_report(month=month, aggregate=current, history=history),
        "forecast": projections.view(platform),
        "topUsers": [
            {
                "userId": doc["userId"],
                "email": emails.get(doc["userId"]),
                **counters.counts_of(doc).usd(),
                "monthEnd": projections.run_rate_month_end(
                    counters.counts_of(doc).cost_nanos, month=month, now=now
                ),
            }
            for doc in top
        ],
        "freeTier": [{**row, "email": emails.get(row["userId"])} for row in free_rows],
        "topTeams": [  # (v3) from the month's breakdown by team (what members recorded while members)
            {
                "teamId": team_id,
                **counts.usd(),
                "monthEnd": projections.run_rate_month_end(counts.cost_nanos, month=month, now=now),
            }
            for team_id, counts in sorted(current.teams.items(), key=lambda t: (-t[1].cost_nanos, t[0]))[
                : request.top
            ]
        ],
        "alerts": [alerts.document_view(alert) for alert in ranking.alerts],
        "meta": {"generatedAt": _iso(now), "asOf": _iso(as_of), "documentsRead": reads},
    }
