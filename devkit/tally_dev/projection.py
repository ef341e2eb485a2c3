"""Project the largest size each document kind reaches: years of worst-case traffic, in memory.

Every month the simulation admits the maximum number of names (100 characters long,
the longest allowed), sends more that go to `(other)`, fills one session past its name
cap, records steps with the largest metadata, finalizes the sessions and folds the
month (its ranking filled to the most a rollup keeps). The real services run against
the in-memory store, so the documents are the ones production would hold; their sizes
follow Firestore's published rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tally import layout, names
from tally.config import Settings
from tally.documents import plans
from tally.documents.months import FREE_TIER_ROWS, RANKED_FIELDS, TOP_USERS_KEPT, Ranking
from tally.services import folding
from tally.services.recording import record_steps
from tally.services.sessions import finalize_session
from tally.timeutil import month_end
from tally.values import Caller, RecordRequest, SessionRequest, Step, UsageType
from tally_dev.census import kind_of
from tally_dev.memory import MemoryStore
from tally_dev.sizing import MAX_DOCUMENT_BYTES, document_size

BACKEND = Caller("projection-backend", recorder=True)
BIG_METADATA = {"blob": "x" * 4080}  # 4,091 bytes as compact JSON: the most metadata a step may carry


@dataclass(frozen=True)
class KindSize:
    """The largest document of one kind, and how many documents of that kind exist."""

    kind: str
    largest: int
    documents: int
    path: str

    @property
    def share_of_limit(self) -> float:
        """Return the largest size as a fraction of Firestore's 1 MiB limit."""
        return self.largest / MAX_DOCUMENT_BYTES


def _name(prefix: str, month_index: int, n: int) -> str:
    return f"{prefix}-{month_index:03d}-{n:03d}-".ljust(100, "n")


def _steps(
    month_index: int, start: int, count: int, when: datetime, *, metadata: bool = False
) -> tuple[Step, ...]:
    return tuple(
        Step(
            operation_id=f"m{month_index}-{start + n}",
            usage_type=UsageType.AI if n % 2 else UsageType.API,
            feature=_name("feature", month_index, start + n),
            provider=_name("provider", month_index, start + n),
            cost_nanos=123_456_789,
            is_billable_run=n % 3 == 0,
            timestamp=when + timedelta(days=n % 27, seconds=n),
            metadata=BIG_METADATA if metadata and n == 0 else {},
        )
        for n in range(count)
    )


def _record(
    store: MemoryStore, request: RecordRequest, settings: Settings, now: datetime, **kit: object
) -> None:
    record_steps(
        store=store,
        caller=BACKEND,
        request=request,
        settings=settings,
        now=now,
        sleep=lambda _: None,
        **kit,  # type: ignore[arg-type]
    )


def simulate(*, months: int, light_users: int, max_names: int = 500, shards: int = 8) -> MemoryStore:
    """Run `months` of worst-case traffic through the services; return the store.

    Each month one heavy user names every admitted name (and more, counted under
    `(other)`), fills one session past its cap and sends the largest metadata; each of
    `light_users` other users sends one step. No document should grow with them.
    """
    store = MemoryStore(shards=shards)
    settings = Settings(max_names=max_names, aggregate_shards=shards)
    kit = {"admitted_cache": names.AdmittedNames(), "shards": plans.ShardPicker(seed=3)}
    per_request = 20
    batches = max_names // per_request + 6  # the last batches' names go to (other)
    big = 7  # batches in the one session that passes its name cap
    for index in range(months):
        start = (datetime(2026, 1, 15, tzinfo=UTC) + timedelta(days=30.5 * index)).replace(day=1)
        now = start + timedelta(days=28)
        for batch in range(batches):
            session = f"s-{index}-big" if batch < big else f"s-{index}-{batch}"
            steps = _steps(index, batch * per_request, per_request, start, metadata=batch == 0)
            request = RecordRequest(
                "user-heavy", SessionRequest(session, "projection", batch >= big - 1), steps
            )
            _record(store, request, settings, now, **kit)
        for light in range(light_users):
            step = _steps(index, 0, 1, start)
            _record(store, RecordRequest(f"user-{light:07d}", None, step), settings, now, **kit)
        for path in [p for p in store.docs if p.startswith("SessionUsage/") and "/sessions/" in p]:
            _, uid, _, sid = path.split("/")
            finalize_session(store=store, user_id=uid, session_id=sid, now=now)
        month = start.strftime("%Y-%m")
        folding.fold_ranked(store, month, now=month_end(month) + timedelta(days=40))
        store.docs[layout.rollup_path(month)].update(worst_ranking())  # as if a million users ranked
    return store


def worst_ranking() -> dict[str, Any]:
    """Return the largest ranking a rollup can hold: every row kept, 128-character user ids."""
    row: dict[str, Any] = dict.fromkeys(RANKED_FIELDS, 2**63 - 1) | {"userId": "u" * 128, "limitPercent": 1e9}
    return Ranking.of([row] * TOP_USERS_KEPT, [row] * FREE_TIER_ROWS).fields()


def largest_by_kind(docs: Mapping[str, Mapping[str, object]]) -> dict[str, KindSize]:
    """Return the largest document of each kind."""
    found: dict[str, KindSize] = {}
    for path, data in docs.items():
        kind = kind_of(path)
        size = document_size(path, data)
        known = found.get(kind)
        count = (known.documents if known else 0) + 1
        if known is None or size > known.largest:
            found[kind] = KindSize(kind, size, count, path)
        else:
            found[kind] = KindSize(kind, known.largest, count, known.path)
    return found
