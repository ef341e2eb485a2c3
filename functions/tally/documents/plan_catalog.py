"""The plan catalog, `TallyPlans/catalog`: every plan's limits object in one document.

One document, so that every request reads the plans in the same round trip as its other
state (its path is known before anything is read) and a user's limits resolve with no
second read. Only `set_plan` writes it (an admin's rare change: no contention), and it is
bounded: at most `MAX_PLANS` plans of at most `MAX_FEATURES` features each (~330 kB at
worst, typically a few hundred bytes). The `default` plan exists without a document: the
settings give it, and an admin's `set_plan("default")` overrides it field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tally import layout
from tally.config import Settings
from tally.documents import limits as limits_doc
from tally.limits import DEFAULT_PLAN, LimitSet, default_plan, resolve
from tally.usage import Limits
from tally.values import Document
from tally.writes import Op, Replace, Write

PLANS = "plans"


@dataclass(frozen=True)
class PlanCatalog:
    """Every plan, by name, with the `default` plan resolved against the settings."""

    plans: Mapping[str, LimitSet] = field(default_factory=dict)

    def default(self, settings: Settings) -> LimitSet:
        """Return the `default` plan: an admin's values, else the settings' (monthly fields always set)."""
        base = default_plan(
            Limits(settings.default_monthly_cost_limit_nanos, settings.default_monthly_free_runs)
        )
        return self.plans[DEFAULT_PLAN].overlay(base) if DEFAULT_PLAN in self.plans else base

    def names(self) -> list[str]:
        """Return every plan's name (`default` included), sorted."""
        return sorted({DEFAULT_PLAN, *self.plans})

    def limits_of(
        self, stored: Mapping[str, Any] | None, settings: Settings, *, claimed: str | None = None
    ) -> LimitSet:
        """Return a user's limits from their stored settings: override > plan > default, per field.

        The plan is the one assigned, else the one `claimed` (TALLY_PLAN_CLAIM), if it exists.
        """
        plan = limits_doc.assigned_plan(stored) or claimed
        return resolve(
            override=limits_doc.limit_set(stored),
            plan=self.plans.get(plan) if plan is not None else None,
            default=self.default(settings),
        )


def catalog_of(doc: Document | None) -> PlanCatalog:
    """Read the plan catalog (none stored: only the settings' `default`)."""
    stored = doc.fields.get(PLANS) if doc is not None and doc.exists else None
    if not isinstance(stored, Mapping):
        return PlanCatalog()
    return PlanCatalog(
        {str(name): limits_doc.limit_set(own) for name, own in stored.items() if isinstance(own, Mapping)}
    )


def plan_write(name: str, limits: LimitSet, *, now: datetime) -> Write:
    """Return the write storing one plan's limits object, replacing what it held."""
    return Write(
        layout.plan_catalog_path(),
        Op.MERGE,
        {PLANS: {name: Replace(limits_doc.set_fields(limits))}, "updatedAt": now},
    )
