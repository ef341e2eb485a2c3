"""Alerts: one per (user or platform, month, kind, threshold), however many requests cross it.

A commit's fetch-and-add returns the user's month totals after it, so `before = after -
its own delta` is exact: of all concurrent requests, exactly one sees each threshold
crossed. Its alert document has a deterministic id and is created with an exists=false
precondition, so a retry (or anyone else) creating it again changes nothing. If the
process dies between the commit and the alert, a retry of the request, the sweep or
`reconcile` creates it late, saying so (`late: true`, `raisedBy`).

Delivery: each alert is POSTed to `TALLY_ALERT_WEBHOOK_URL` as JSON, signed with
HMAC-SHA256 of the raw body (`X-Tally-Signature: sha256=<hex>`), retried with backoff
until a 2xx answer; the document records `attempts` and `deliveredAt`. A redirect is not
followed: a 3xx answer is a failed attempt. Logs and messages name the webhook by its
scheme, host and port only (`webhook_origin`): chat webhooks carry their secret in the
path or the query.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

from tally import layout, ports
from tally.config import Settings
from tally.money import nanos_to_usd
from tally.usage import Counts, Limits
from tally.values import Contention
from tally.writes import Increment, Op, Write

MONTH, CREATED = "month", "createdAt"  # queried: a month's latest alerts
DELIVERED = "deliveredAt"  # queried: alerts not delivered yet
NEXT_ATTEMPT = "nextAttemptAt"  # queried: their delivery is due
SHARD = "tallyShard"  # the sweep's shard

THRESHOLDS = (80, 100)
log = logging.getLogger("tally.alerts")


class AlertKind(StrEnum):
    """What an alert measures against its limit."""

    COST = "cost"
    RUNS = "runs"
    FORECAST = "forecast"  # (v3) the projected month-end (`used`) reached the monthly cost limit
    ANOMALY = "anomaly"  # (v3) a day's cost (`used`) far above its usual level (`limit`)


class AlertStore(ports.DocumentStore, Protocol):
    """The store operations alerts need: the port's, nothing more."""


def reached(used: int, limit: int) -> list[int]:
    """Return the thresholds (percent of `limit`) that `used` has reached (a limit of 0: any use)."""
    if limit <= 0:
        return list(THRESHOLDS) if used > 0 else []
    return [t for t in THRESHOLDS if used * 100 >= t * limit]


def crossed(before: int, after: int, limit: int) -> list[int]:
    """Return the thresholds reached by `after` and not by `before`."""
    already = set(reached(before, limit))
    return [t for t in reached(after, limit) if t not in already]


@dataclass(frozen=True)
class Alert:
    """One alert to raise."""

    user_id: str | None  # None: the platform's budget
    month: str
    kind: AlertKind
    threshold: int
    used: int  # nano-USD for cost, runs for runs
    limit: int
    raised_by: str  # record_steps, set_limits, retry, sweep, reconcile, analytics
    late: bool = False
    scope: str | None = None  # (v3) e.g. user.day.cost; None: the user's or the platform's month
    window: str | None = None  # (v3) YYYY-MM or YYYY-MM-DD
    team_id: str | None = None  # (v3) a team's alert

    @property
    def alert_id(self) -> str:
        """Return the deterministic id (a v3 scope's: of its owner, window, scope and threshold)."""
        if self.scope is None:
            return layout.alert_id(self.user_id, self.month, self.kind.value, self.threshold)
        owner = f"team:{self.team_id}" if self.team_id is not None else self.user_id
        return layout.alert_id(owner, f"{self.window}|{self.scope}", self.kind.value, self.threshold)

    def creation(self, now: datetime) -> Write:
        """Return the write creating the alert document (only if it does not exist)."""
        return Write(layout.alert_path(self.alert_id), Op.CREATE, self.document(now))

    def document(self, now: datetime) -> dict[str, Any]:
        """Return the alert document."""
        money = self.kind is not AlertKind.RUNS
        scope = self.scope or (f"user.month.{self.kind.value}" if self.user_id else "platform.month.cost")
        return {
            "alertId": self.alert_id,
            "userId": self.user_id,
            "scope": scope,
            "window": self.window or self.month,
            "teamId": self.team_id,
            MONTH: self.month,
            "kind": self.kind.value,
            "threshold": self.threshold,
            "used": nanos_to_usd(self.used) if money else self.used,
            "limit": nanos_to_usd(self.limit) if money else self.limit,
            CREATED: now,
            "raisedBy": self.raised_by,
            "late": self.late,
            DELIVERED: None,
            "attempts": 0,
            NEXT_ATTEMPT: now,
            SHARD: int(self.alert_id[:4], 16) % layout.SWEEP_SHARDS,
        }


def user_alerts(
    *,
    user_id: str,
    month: str,
    before: Counts,
    after: Counts,
    limits: Limits,
    raised_by: str,
    late: bool = False,
) -> list[Alert]:
    """Return the alerts a change of a user's month from `before` to `after` raises."""
    found = []
    for kind, old, new, limit in (
        (AlertKind.COST, before.cost_nanos, after.cost_nanos, limits.monthly_cost_limit_nanos),
        (AlertKind.RUNS, before.billable_runs, after.billable_runs, limits.monthly_free_runs),
    ):
        found += [
            Alert(user_id, month, kind, t, new, limit, raised_by, late) for t in crossed(old, new, limit)
        ]
    return found


def create(store: AlertStore, alerts: Sequence[Alert], now: datetime) -> int:
    """Create alert documents (each only if it does not exist yet); return how many were new."""
    if not alerts:
        return 0
    groups = [[a.creation(now)] for a in alerts]
    return sum(store.commit_each(groups))


_EXISTING: set[tuple[int, str]] = set()  # (store, alert) seen to exist (Tally never deletes an alert)


def ensure(store: AlertStore, alerts: Sequence[Alert], now: datetime, *, remember: bool = False) -> int:
    """Create the alerts that are missing (read first: most exist); return how many were late.

    `remember`: skip the alerts this instance already saw exist, and remember those it sees,
    for callers that would otherwise read the same alert on every request (a team's).
    """
    alerts = [a for a in alerts if not (remember and (id(store), a.alert_id) in _EXISTING)]
    if not alerts:
        return 0
    docs = store.read([layout.alert_path(a.alert_id) for a in alerts])
    missing = [a for a in alerts if not docs[layout.alert_path(a.alert_id)].exists]
    if remember:
        if len(_EXISTING) > 100_000:
            _EXISTING.clear()
        _EXISTING.update((id(store), a.alert_id) for a in alerts)  # those missing exist once created below
    return create(store, missing, now)


def ensure_user(
    *,
    store: AlertStore,
    user_id: str,
    month: str,
    used: Counts,
    limits: Limits,
    raised_by: str,
    now: datetime,
) -> int:
    """Raise late the alerts a user's month should already have."""
    if not reached(used.cost_nanos, limits.monthly_cost_limit_nanos) and not reached(
        used.billable_runs, limits.monthly_free_runs
    ):
        return 0
    alerts = user_alerts(
        user_id=user_id,
        month=month,
        before=Counts(),
        after=used,
        limits=limits,
        raised_by=raised_by,
        late=True,
    )
    return ensure(store, alerts, now)


def platform_alerts(
    *, month: str, total: int, budget: int, raised_by: str, late: bool = False
) -> list[Alert]:
    """Return the platform alerts its month total has reached."""
    return [
        Alert(None, month, AlertKind.COST, t, total, budget, raised_by, late) for t in reached(total, budget)
    ]


def _mark(total: int, budget: int, shards: int) -> int:
    """Return which mark a shard's total has passed: -1 below 80 % of its share, then one per fifth of it."""
    over = total * shards * 100 - THRESHOLDS[0] * budget
    return -1 if over < 0 else over // (20 * budget)


def shard_marks_crossed(before: int, after: int, budget: int, shards: int) -> bool:
    """Return whether a commit moved its shard past a mark, so the platform's month should be checked.

    The platform's total reaches 80 % of the budget only once some shard holds 80 % of its
    share (1/shards) of it; from there, every further fifth of a share a shard gains
    triggers a check. However the requests spread over the shards, a crossing is seen
    within a fraction of a share; the sweep and `reconcile` catch anything else.
    """
    return _mark(after, budget, shards) > _mark(before, budget, shards)


# Delivery


PAYLOAD_FIELDS = ("alertId", "month", "kind", "threshold", "used", "limit")  # what a webhook needs
SCOPE_FIELDS = ("scope", "window", "teamId")


def payload(alert: Mapping[str, Any]) -> bytes:
    """Return the JSON body POSTed for an alert (the bytes the signature covers)."""
    created = alert.get(CREATED)
    body = {
        "alertId": alert["alertId"],
        "userId": alert.get("userId"),
        "month": alert["month"],
        "kind": alert["kind"],
        "threshold": alert["threshold"],
        "used": alert["used"],
        "limit": alert["limit"],
        "createdAt": created.isoformat().replace("+00:00", "Z") if isinstance(created, datetime) else created,
        "late": bool(alert.get("late", False)),
    }
    for name in SCOPE_FIELDS:  # (v3) which scope and window; absent from v2 alerts
        if alert.get(name) is not None:
            body[name] = alert[name]
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")


def signature(secret: str, body: bytes) -> str:
    """Return the `X-Tally-Signature` header: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


Post = Callable[[str, bytes, Mapping[str, str]], int]  # (url, body, headers) -> HTTP status (0: no answer)


@dataclass(frozen=True)
class Delivery:
    """What delivering one alert did."""

    delivered: bool
    attempts: int
    skipped: str | None = None  # why nothing was tried (no webhook, no secret, already delivered)


def webhook_origin(url: str) -> str:
    """Return what logs may name of a webhook URL: scheme, host and port (no credentials, path or query)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(not a readable URL)"
    host = parts.hostname
    if not parts.scheme or not host:
        return "(not a URL with a scheme and a host)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def webhook_problem(settings: Settings) -> str | None:
    """Return why alerts cannot be delivered, or None (no webhook configured is not a problem)."""
    url = settings.webhook_url
    if url is None:
        return None
    if not url.startswith(("https://", "http://")):
        return f"TALLY_ALERT_WEBHOOK_URL must be an http(s) URL, not {webhook_origin(url)}"
    if not settings.webhook_secret:
        return "TALLY_ALERT_WEBHOOK_SECRET is not set: alerts are not delivered unsigned"
    return None


def deliver(
    *,
    store: AlertStore,
    alert_id: str,
    settings: Settings,
    post: Post,
    sleep: Callable[[float], None],
    now: Callable[[], datetime],
    attempts: int | None = None,
) -> Delivery:
    """POST one alert until an answer is 2xx or the attempts run out; record attempts and deliveredAt."""
    if settings.webhook_url is None:
        return Delivery(False, 0, "no webhook configured")
    problem = webhook_problem(settings)
    if problem is not None:
        log.error("alert %s not delivered: %s", alert_id, problem)
        return Delivery(False, 0, problem)
    path = layout.alert_path(alert_id)
    doc = store.read([path])[path]
    if not doc.exists:
        return Delivery(False, 0, "no such alert")
    if doc.fields.get(DELIVERED) is not None:
        return Delivery(True, 0, "already delivered")
    missing = [name for name in PAYLOAD_FIELDS if name not in doc.fields]
    if missing:  # written by something other than Tally: retrying would never help
        reason = f"not an alert Tally wrote (no {', '.join(missing)})"
        log.error("alert %s not delivered: %s", alert_id, reason)
        return Delivery(False, 0, reason)
    body = payload(doc.fields)
    headers = {
        "Content-Type": "application/json",
        "X-Tally-Alert-Id": alert_id,
        "X-Tally-Signature": signature(settings.webhook_secret or "", body),
    }
    tries = attempts or settings.webhook_attempts
    done = int(doc.fields.get("attempts", 0))
    origin = webhook_origin(settings.webhook_url)
    for attempt in range(tries):
        status = post(settings.webhook_url, body, headers)  # a redirect is not followed: its 3xx fails
        done += 1
        delivered = 200 <= status < 300
        update: dict[str, Any] = {"attempts": Increment(1), "lastStatus": status}
        if delivered:
            update[DELIVERED] = now()
        else:
            wait = settings.webhook_backoff_seconds * 2 ** (done - 1)
            update[NEXT_ATTEMPT] = now() + timedelta(seconds=wait)
        try:
            store.commit([Write(path, Op.UPDATE, update)])
        except Contention:
            log.warning("alert %s: could not record attempt %d", alert_id, done)
        if delivered:
            return Delivery(True, done)
        log.warning(
            "alert %s: the webhook at %s answered %s (attempt %d)%s",
            alert_id,
            origin,
            status or "nothing",
            done,
            " (a redirect is not followed)" if 300 <= status < 400 else "",
        )
        if attempt + 1 < tries:
            sleep(settings.webhook_backoff_seconds * 2**attempt)
    return Delivery(False, done)


def document_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return an alert (its stored fields) as usage_analytics lists it."""
    created = data.get(CREATED)
    return {
        "alertId": data.get("alertId"),
        "userId": data.get("userId"),
        "kind": data.get("kind"),
        "threshold": data.get("threshold"),
        "used": data.get("used"),
        "limit": data.get("limit"),
        "createdAt": created.isoformat().replace("+00:00", "Z") if isinstance(created, datetime) else created,
        "late": bool(data.get("late", False)),
        "delivered": data.get(DELIVERED) is not None,
        **{name: data.get(name) for name in SCOPE_FIELDS},
    }
