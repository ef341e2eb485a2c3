"""The platform's holds, `TallyPlatformHolds/{hash}-{M}-{n}`, while `TALLY_PLATFORM_BUDGET_ENFORCED` is on.

A reservation adds its estimate to one of the month's hold shards (one per request, as the
platform's usage shards) in the same commit as its own hold; settling, releasing, expiring
or refusing takes it back. The platform's usage stays in its usage shards
(`tally.documents.months`), which `reconcile` recomputes from the steps: the holds are kept
apart so that a repair never touches them. One counter per document, fixed size.
"""

from __future__ import annotations

from tally import layout
from tally.documents import counters
from tally.values import Document
from tally.writes import Increment, Op, Write

COST = counters.COST


def hold_write(month: str, shard: int, cost_nanos: int) -> Write:
    """Return a change of one hold shard (negative: a hold taken back)."""
    return Write(
        layout.platform_hold_path(month, shard), Op.MERGE, {"month": month, COST: Increment(cost_nanos)}
    )


def held_of(doc: Document) -> int:
    """Return what a hold shard holds."""
    return int(doc.fields.get(COST, 0)) if doc.exists else 0
