"""A step, `SessionUsage/{uid}/steps/{operationId}`: created once with its recording, never rewritten."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tally.documents import counters
from tally.timeutil import day_key, month_key
from tally.values import CostSource, Step, StoredStep, Units, UsageType

MONTH = "month"  # queried: a month's steps, a user's steps of a month
COST = counters.COST  # summed: a user's lifetime cost
BILLABLE = "isBillableRun"  # counted: a user's lifetime billable runs
TEAM_KEY = "teamKey"  # (v3) the team the step counts in (its user's when recorded)


def document(
    step: Step, *, user_id: str, session_id: str | None, now: datetime, request_id: str
) -> dict[str, Any]:
    """Return a step's document (created once, never rewritten)."""
    return {
        "userId": user_id,
        "sessionId": session_id,
        "operationId": step.operation_id,
        "usageType": step.usage_type.value,
        "feature": step.feature,
        "provider": step.provider,
        "featureKey": step.feature_bucket,
        "providerKey": step.provider_bucket,
        COST: step.cost_nanos,
        "costSource": step.cost_source.value,
        **({"units": step.units.document()} if step.units is not None else {}),
        **({"price": dict(step.price)} if step.price is not None else {}),
        **({"modelKey": step.model_bucket} if step.model_bucket is not None else {}),
        **({TEAM_KEY: step.team_key} if step.team_key is not None else {}),
        BILLABLE: step.is_billable_run,
        "timestamp": step.timestamp,
        MONTH: month_key(step.timestamp),
        "day": day_key(step.timestamp),
        "metadata": step.metadata,
        "recordedAt": now,
        "requestId": request_id,
    }


def stored(data: Mapping[str, Any]) -> StoredStep:
    """Return what the write path needs of a step already recorded."""
    return StoredStep(
        data.get("requestId"), data.get("featureKey"), data.get("providerKey"), data.get("modelKey")
    )


def request_id(data: Mapping[str, Any]) -> str | None:
    """Return which request wrote a step."""
    found = data.get("requestId")
    return found if isinstance(found, str) else None


def step_of(data: Mapping[str, Any]) -> Step:
    """Return a stored step as a value (older steps, without counted names, count under their own)."""
    return Step(
        operation_id=str(data.get("operationId", "")),
        usage_type=UsageType(data.get("usageType", "API")),
        feature=str(data["feature"]),
        provider=str(data["provider"]),
        cost_nanos=int(data[COST]),
        is_billable_run=bool(data.get(BILLABLE, False)),
        timestamp=data["timestamp"],
        feature_key=data.get("featureKey"),
        provider_key=data.get("providerKey"),
        cost_source=CostSource(data.get("costSource", CostSource.CLIENT.value)),
        units=Units(str(units["model"])) if isinstance(units := data.get("units"), Mapping) else None,
        model_key=data.get("modelKey"),
        team_key=data.get(TEAM_KEY) if isinstance(data.get(TEAM_KEY), str) else None,
    )
