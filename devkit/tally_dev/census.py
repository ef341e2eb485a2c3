"""A write census: every document each applied commit writes, projected to a platform request rate.

Install `Census.record` as the store's `on_commit` and drive a workload through the real
services: each document's share of the requests, times a platform rate, is the write
rate it would take in production (Firestore sustains about one write per second per
document; the emulator does not throttle, so the shape is what can be measured).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from tally import layout, names
from tally.config import Settings
from tally.documents import plans
from tally.services.recording import RecordingStore, record_steps
from tally.services.sessions import SessionStore, finalize_session
from tally.values import Caller, RecordRequest, SessionRequest, Step, UsageType
from tally.writes import Write

PER_USER = (layout.USERS, layout.USAGE, layout.SESSION_USAGE, layout.USER_MONTHS, layout.NAME_QUOTAS)
# Written when a month admits a name: at most TALLY_MAX_NAMES times a month each, not per request.
ADMISSION = (layout.NAMES, layout.NAME_COUNTS)


def kind_of(path: str) -> str:
    """Return a document's kind: its path with every id replaced by a placeholder."""
    parts = path.split("/")
    return "/".join(part if i % 2 == 0 else "{id}" for i, part in enumerate(parts))


def owner_of(path: str) -> str | None:
    """Return the uid a per-user document belongs to (None for a shared document)."""
    parts = path.split("/")
    if parts[0] in (layout.USERS, layout.USAGE, layout.SESSION_USAGE):
        return parts[1]
    if parts[0] in (layout.USER_MONTHS, layout.NAME_QUOTAS):
        return parts[1].rsplit("_", 1)[0]
    return None


@dataclass
class Census:
    """Counts applied commits per document and requests per user."""

    writes: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    max_transforms: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, writes: Sequence[Write]) -> None:
        """Count one applied commit (the store's `on_commit`)."""
        with self._lock:
            for write in writes:
                self.writes[write.path] += 1
                self.max_transforms = max(self.max_transforms, write.transforms())

    def request(self, user_id: str) -> None:
        """Count one request of a user."""
        with self._lock:
            self.requests[user_id] += 1

    @property
    def total_requests(self) -> int:
        """Return how many requests the workload sent."""
        return sum(self.requests.values())

    def shared(self) -> dict[str, int]:
        """Return the writes of each document shared by many users, on the request path."""
        return {
            path: n
            for path, n in self.writes.items()
            if owner_of(path) is None and not path.startswith(tuple(c + "/" for c in ADMISSION))
        }

    def admissions(self) -> dict[str, int]:
        """Return the writes of the name registry and its counters (bounded per month, not per request)."""
        return {
            path: n for path, n in self.writes.items() if path.startswith(tuple(c + "/" for c in ADMISSION))
        }

    def reset(self) -> None:
        """Forget everything counted (after a warm-up)."""
        with self._lock:
            self.writes.clear()
            self.requests.clear()
            self.max_transforms = 0

    def hottest_shared(self, rate: float) -> tuple[str, float]:
        """Return the most written shared document and its projected writes/s at `rate` requests/s."""
        path, count = max(self.shared().items(), key=lambda item: item[1], default=("-", 0))
        return path, count / max(1, self.total_requests) * rate

    def hottest_per_user(self) -> tuple[str, float]:
        """Return the per-user document with the most writes per request of its user (writes/s at 1 req/s)."""
        best, ratio = "-", 0.0
        for path, count in self.writes.items():
            owner = owner_of(path)
            if owner is not None and self.requests[owner]:
                share = count / self.requests[owner]
                if share > ratio:
                    best, ratio = path, share
        return best, ratio

    def by_kind(self, rate: float) -> dict[str, tuple[int, float, bool]]:
        """Return per document kind: how many were written, the hottest one's writes/s, if it is per user.

        A shared document's rate is projected at `rate` platform requests/s; a per-user
        document's at one request per second of its user.
        """
        kinds: dict[str, tuple[int, float, bool]] = {}
        for path, count in self.writes.items():
            kind, owner = kind_of(path), owner_of(path)
            if owner is None:
                per_second = count / max(1, self.total_requests) * rate
            else:
                per_second = count / max(1, self.requests[owner])
            documents, hottest, _ = kinds.get(kind, (0, 0.0, owner is not None))
            kinds[kind] = (documents + 1, max(hottest, per_second), owner is not None)
        return kinds

    def shard_writes_per_request(self) -> float:
        """Return the platform-shard writes per request (what sets the shard count a rate needs)."""
        shards = sum(n for path, n in self.writes.items() if path.startswith(layout.PLATFORM_SHARDS + "/"))
        return shards / max(1, self.total_requests)


@dataclass(frozen=True)
class Workload:
    """Users, each sending sessions of `per_session` requests (the last completes), one step each."""

    users: int
    sessions_per_user: int
    per_session: int = 4
    features: tuple[str, ...] = ("chat", "search", "maps_details", "summary")
    providers: tuple[str, ...] = ("openai", "anthropic", "google_maps")

    @property
    def requests(self) -> int:
        """Return how many requests the workload sends."""
        return self.users * self.sessions_per_user * self.per_session


class CensusStore(RecordingStore, SessionStore, Protocol):
    """What the workload needs of a store: recording and finalizing."""


def run(
    store: CensusStore,
    census: Census,
    workload: Workload,
    *,
    now: Callable[[], datetime],
    prefix: str,
    threads: int = 16,
    settings: Settings | None = None,
) -> float:
    """Drive a workload through `record_steps` and `finalize_session`; return the wall time in seconds."""
    settings = settings or Settings()
    shards = plans.ShardPicker(seed=7)  # one picker for recording and finalizing, as in one instance
    admitted = names.AdmittedNames()
    backend = Caller("census-backend", recorder=True)

    def user(index: int) -> None:
        uid = f"{prefix}-user-{index:05d}"
        for session in range(workload.sessions_per_user):
            sid = f"{prefix}-s{session}"
            for n in range(workload.per_session):
                at = now()
                step = Step(
                    operation_id=f"{prefix}-{index}-{session}-{n}",
                    usage_type=UsageType.AI,
                    feature=workload.features[(index + n) % len(workload.features)],
                    provider=workload.providers[(index + session) % len(workload.providers)],
                    cost_nanos=1_000_000,
                    is_billable_run=n == 0,
                    timestamp=at - timedelta(seconds=1),
                )
                complete = n == workload.per_session - 1
                request = RecordRequest(uid, SessionRequest(sid, "census", complete), (step,))
                census.request(uid)
                record_steps(
                    store=store,
                    caller=backend,
                    request=request,
                    settings=settings,
                    now=at,
                    admitted_cache=admitted,
                    shards=shards,
                )
                if complete:
                    finalize_session(store=store, user_id=uid, session_id=sid, now=now(), shards=shards)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(user, range(workload.users)))
    return time.perf_counter() - started
