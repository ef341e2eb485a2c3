"""The sweep (every 15 minutes, and on demand): what must happen even when no request comes.

It completes idle sessions and finalizes any completed session no delivery finalized;
ends holds past their expiry; raises late any alert a lost process did not raise; with
a platform budget, checks the platform's month; and retries the webhook deliveries that
are due. Each part pages through indexed queries and stops early when time runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from tally import layout, ports
from tally.config import Settings
from tally.documents import counters
from tally.documents import limits as limits_doc
from tally.services import alerts, pace, reservations, sessions
from tally.timeutil import month_key
from tally.usage import Counts
from tally.values import Document

PAGE_SIZE = 200
log = logging.getLogger("tally.sweep")
_T = TypeVar("_T")


class SweepStore(sessions.SessionStore, reservations.HoldStore, alerts.AlertStore, Protocol):
    """Everything the sweep touches."""

    def free_tier_page(self, *, month: str, limit: int, after: str | None) -> list[Document]: ...

    def undelivered_alerts(self, *, shard: int, now: datetime, limit: int) -> list[Document]: ...


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    sessions: sessions.SweepResult
    holds_expired: int
    late_alerts: int
    deliveries: int
    failed: tuple[str, ...] = ()  # parts that raised (logged); the next sweep runs them again

    @property
    def finished(self) -> bool:
        """Return whether the sweep got through everything (else the next run continues)."""
        return self.sessions.finished and not self.failed

    def summary(self) -> str:
        """Return a one-line report."""
        s = self.sessions
        return (
            f"sweep: completed {s.completed} idle sessions, finalized {s.finalized}; "
            f"examined {s.examined} in {s.pages} page(s); ended {self.holds_expired} expired holds; "
            f"raised {self.late_alerts} late alerts; delivered {self.deliveries} alerts"
            + (f"; FAILED: {', '.join(self.failed)} (logged)" if self.failed else "")
        )


def late_alerts(store: SweepStore, settings: Settings, now: datetime) -> int:
    """Raise the alerts the free-tier entries of this month and the last call for, if any is missing."""
    raised = 0
    for month in sorted({month_key(now), month_key(now - timedelta(days=35))}):

        def near(after: str | None, month: str = month) -> list[Document]:
            return store.free_tier_page(month=month, limit=PAGE_SIZE, after=after)

        for page in ports.pages(near, cursor=ports.by_path, size=PAGE_SIZE):
            found = []
            for doc in page:
                data = doc.fields
                limits = limits_doc.limits_in(data, settings)
                found += alerts.user_alerts(
                    user_id=str(data["userId"]),
                    month=month,
                    before=Counts(),
                    after=counters.counts_of(data),
                    limits=limits,
                    raised_by="sweep",
                    late=True,
                )
            raised += alerts.ensure(store, found, now)
    if settings.platform_budget_nanos is None:  # no fold while nobody records: recordings watch the platform
        return raised
    return raised + pace.watch_platform(store, month_key(now), settings, now, raised_by="sweep")


def redeliver(
    store: SweepStore, settings: Settings, now: datetime, post: alerts.Post, clock: Callable[[], datetime]
) -> int:
    """Try once more every alert whose delivery is due; return how many were delivered."""
    if settings.webhook_url is None or alerts.webhook_problem(settings) is not None:
        return 0
    delivered = 0
    for shard in range(layout.SWEEP_SHARDS):
        for doc in store.undelivered_alerts(shard=shard, now=now, limit=PAGE_SIZE):
            result = alerts.deliver(
                store=store,
                alert_id=str(doc.fields["alertId"]),
                settings=settings,
                post=post,
                sleep=lambda _: None,
                now=clock,
                attempts=1,
            )
            delivered += result.delivered
    return delivered


def run(
    *,
    store: SweepStore,
    settings: Settings,
    now: datetime,
    idle_minutes: int,
    post: alerts.Post,
    clock: Callable[[], datetime],
    page_size: int = sessions.SWEEP_PAGE_SIZE,
    seconds_left: Callable[[], float] | None = None,
) -> SweepResult:
    """Run every part of the sweep once; a part that fails is logged and the others still run.

    Expired holds go first: a hold that stops counting late keeps a user from spending.
    """
    failed: list[str] = []

    def part(name: str, work: Callable[[], _T], empty: _T) -> _T:
        try:
            return work()
        except Exception:
            log.exception("the sweep's %s failed (the next sweep tries again)", name)
            failed.append(name)
            return empty

    expired = part("holds", lambda: reservations.expire_holds(store=store, now=now), 0)
    swept = part(
        "sessions",
        lambda: sessions.sweep_sessions(
            store=store, now=now, idle_minutes=idle_minutes, page_size=page_size, seconds_left=seconds_left
        ),
        sessions.SweepResult(0, 0, 0, 0, finished=False),
    )
    raised = part("late alerts", lambda: late_alerts(store, settings, now), 0)
    delivered = part("deliveries", lambda: redeliver(store, settings, now, post, clock), 0)
    return SweepResult(swept, expired, raised, delivered, tuple(failed))
