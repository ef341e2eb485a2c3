"""Steps as clients send them to `record_steps` (JSON bodies)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

MAPS_PRICES = {"autocomplete": Decimal("0.00283"), "details": Decimal("0.017"), "nearby": Decimal("0.032")}


def iso(instant: datetime) -> str:
    """Return an aware instant as ISO-8601 with `Z`."""
    return instant.isoformat().replace("+00:00", "Z")


def step(
    *,
    feature: str = "google_maps_details",
    provider: str = "google_maps",
    usage_type: str = "API",
    cost: Decimal | str | float | None = "0.017",
    billable: bool = False,
    when: datetime | None = None,
    operation_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return one step; `extra` adds or overrides raw fields (e.g. `units`, `metadata`)."""
    body: dict[str, Any] = {
        "operationId": operation_id or f"op_{uuid.uuid4().hex[:20]}",
        "usageType": usage_type,
        "feature": feature,
        "provider": provider,
        "isBillableRun": billable,
    }
    if cost is not None:
        body["cost"] = str(cost) if isinstance(cost, Decimal) else cost
    if when is not None:
        body["timestamp"] = iso(when)
    body.update(extra)
    return body


def maps_step(kind: str, *, billable: bool = False, **extra: Any) -> dict[str, Any]:
    """Return a Google Maps Places step (`autocomplete`, `details` or `nearby`) at its list price."""
    fields: dict[str, Any] = {
        "feature": f"google_maps_{kind}",
        "provider": "google_maps",
        "usage_type": "ApiUsage",
        "cost": float(MAPS_PRICES[kind]),
        "billable": billable,
    }
    fields.update(extra)
    return step(**fields)
