"""A reservation of the budget gate, `SessionUsage/{uid}/reservations/{reservationId}`.

Created `pending` with its estimate; its decision (`active` or `denied`) is stored on it, and
it ends `settled`, `released` or `expired`. While it holds, its estimate counts in the user's
`usage.held` (see `tally.documents.usage`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tally import layout
from tally.values import CostSource, Document, HoldState, HoldStatus

ESTIMATE = "estimateNanos"  # summed: a user's allowed holds
RUNS = "runs"  # summed with it
STATUS = "status"  # queried: holds that still count
EXPIRES = "expiresAt"  # queried: holds past their expiry
SHARD = "tallyShard"  # the sweep's shard
COST_SOURCE = "costSource"
FEATURE, MONTH = "feature", "month"
FEATURE_HELD = "featureHeld"  # also held in its feature's window (see tally.documents.windows)
TEAM, TEAM_SLICE = "teamId", "teamSlice"  # also held by this slice of the team (tally.documents.teams)
PLATFORM_SHARD = "platformShard"  # also held on the platform's budget, in this hold shard


def document(
    *,
    user_id: str,
    reservation_id: str,
    cost_nanos: int,
    runs: int,
    source: CostSource,
    month: str,
    now: datetime,
    expires_at: datetime,
    feature: str | None = None,
    feature_held: bool = False,
    team: tuple[str, int] | None = None,
    platform_shard: int | None = None,
) -> dict[str, Any]:
    """Return a new reservation's document (`pending` until its decision is stored)."""
    return {
        "userId": user_id,
        "reservationId": reservation_id,
        FEATURE: feature,
        FEATURE_HELD: feature_held,
        TEAM: team[0] if team else None,
        TEAM_SLICE: team[1] if team else None,
        PLATFORM_SHARD: platform_shard,
        STATUS: HoldStatus.PENDING.value,
        ESTIMATE: cost_nanos,
        RUNS: runs,
        MONTH: month,
        COST_SOURCE: source.value,
        "createdAt": now,
        EXPIRES: expires_at,
        "reason": None,
        SHARD: int(layout.digest(user_id, reservation_id)[:8], 16) % layout.SWEEP_SHARDS,
    }


def hold_of(doc: Document) -> HoldState | None:
    """Return a stored reservation (None if there is none)."""
    ids = layout.reservation_ids(doc.path)
    if not doc.exists or ids is None:
        return None
    data = doc.fields
    return HoldState(
        user_id=ids[0],
        reservation_id=ids[1],
        status=HoldStatus(data[STATUS]),
        cost_nanos=int(data.get(ESTIMATE, 0)),
        runs=int(data.get(RUNS, 0)),
        version=doc.version,
        unpriced=data.get(COST_SOURCE) == CostSource.UNPRICED.value,
        feature=data.get(FEATURE) if isinstance(data.get(FEATURE), str) else None,
        month=data.get(MONTH) if isinstance(data.get(MONTH), str) else None,
        feature_held=data.get(FEATURE_HELD) is True,
        team_id=data.get(TEAM) if isinstance(data.get(TEAM), str) else None,
        team_slice=data.get(TEAM_SLICE) if isinstance(data.get(TEAM_SLICE), int) else None,
        platform_shard=data.get(PLATFORM_SHARD) if isinstance(data.get(PLATFORM_SHARD), int) else None,
    )


def decided(fields: Mapping[str, Any], *, reason: str | None, now: datetime) -> dict[str, Any]:
    """Return a reservation's document with its decision (a reason: refused)."""
    status = HoldStatus.ACTIVE if reason is None else HoldStatus.DENIED
    return {**fields, **decision(status, reason, now)}


def decision(status: HoldStatus, reason: str | None, now: datetime) -> dict[str, Any]:
    """Return the fields storing a decision."""
    return {STATUS: status.value, "reason": reason, "decidedAt": now}


def ending(status: HoldStatus, now: datetime, *, by: str | None = None) -> dict[str, Any]:
    """Return the fields ending a hold (`by`: the step that settled it)."""
    return {STATUS: status.value, "endedAt": now, **({"settledBy": by} if by is not None else {})}


@dataclass(frozen=True)
class Outcome:
    """What a reservation's answer says of it."""

    allowed: bool
    reason: str | None
    reserved_nanos: int
    expires_at: datetime


def outcome_of(fields: Mapping[str, Any]) -> Outcome:
    """Read a reservation's answer: allowed once a decision that is not a refusal is stored.

    A hold that ended (expired, released, settled) before any decision was stored was never
    allowed: its reason says how it ended.
    """
    decided = fields.get("decidedAt") is not None
    allowed = decided and fields.get(STATUS) != HoldStatus.DENIED.value
    reason = fields.get("reason") if decided else str(fields.get(STATUS, "")).upper()
    return Outcome(allowed, reason, int(fields.get(ESTIMATE, 0)) if allowed else 0, fields[EXPIRES])
