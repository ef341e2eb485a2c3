"""Value types shared by the services and the store (no Google imports, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# The opaque version (update time) of a document read, for a commit's precondition.
Version = Any


class UsageType(StrEnum):
    """The two kinds of paid call."""

    AI = "AI"
    API = "API"


class CostSource(StrEnum):
    """Where a step's cost came from."""

    CLIENT = "client"
    CATALOG = "catalog"
    GENAI_PRICES = "genai-prices"
    UNPRICED = "unpriced"


class SessionStatus(StrEnum):
    """The states of a session document."""

    ACTIVE = "active"
    COMPLETED = "completed"


class HoldStatus(StrEnum):
    """The states of a reservation."""

    PENDING = "pending"  # held, decision not stored yet
    ACTIVE = "active"  # allowed: holding until settled, released or expired
    DENIED = "denied"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"

    @property
    def holding(self) -> bool:
        """Return whether a reservation in this state counts in the user's holds."""
        return self in (HoldStatus.PENDING, HoldStatus.ACTIVE)


class CompletedBy(StrEnum):
    """Who completed a session."""

    CLIENT = "client"
    TIMEOUT = "timeout"


class Contention(Exception):
    """A commit lost a race (or hit a transient fault) and was not applied."""


class Rejected(Exception):
    """A commit was refused for what it would write (a document over 1 MiB, too many index entries).

    Nothing was applied. Retrying the same commit fails the same way; Tally meets it only on
    `users/{uid}`, whose other fields belong to the app and its user.
    """


@dataclass(frozen=True)
class Document:
    """A document as read: its fields (None if it does not exist) and its version."""

    path: str
    data: Mapping[str, Any] | None
    version: Version = None
    read_at: datetime | None = None  # the server's read time (one snapshot for a whole read)

    @property
    def exists(self) -> bool:
        """Return whether the document exists."""
        return self.data is not None

    @property
    def fields(self) -> Mapping[str, Any]:
        """Return the fields ({} for a missing document)."""
        return self.data or {}


@dataclass(frozen=True)
class Caller:
    """Who is calling, from a verified ID token's claims."""

    uid: str
    admin: bool = False
    recorder: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)  # the token's claims

    @property
    def trusted(self) -> bool:
        """Return whether the caller is a trusted backend or an admin."""
        return self.admin or self.recorder


@dataclass(frozen=True)
class Units:
    """What a step used, for Tally to price: a model and counts."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0  # cache writes kept 5 minutes
    requests: int = 0
    cache_write_1h_tokens: int = 0  # cache writes kept 1 hour (not in cache_write_tokens)

    def document(self) -> dict[str, Any]:
        """Return the stored form (`cacheWrite1hTokens` only when there are some)."""
        stored: dict[str, Any] = {
            "model": self.model,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cacheReadTokens": self.cache_read_tokens,
            "cacheWriteTokens": self.cache_write_tokens,
            "requests": self.requests,
        }
        if self.cache_write_1h_tokens:
            stored["cacheWrite1hTokens"] = self.cache_write_1h_tokens
        return stored


@dataclass(frozen=True)
class Step:
    """One validated step: cost in nano-USD, time aware UTC.

    `feature_key` and `provider_key` are the names the step is counted under in the
    breakdowns: the real name once admitted, `(other)` otherwise (None: not decided yet).
    """

    operation_id: str
    usage_type: UsageType
    feature: str
    provider: str
    cost_nanos: int
    is_billable_run: bool
    timestamp: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    feature_key: str | None = None
    provider_key: str | None = None
    cost_source: CostSource = CostSource.CLIENT
    units: Units | None = None
    reservation_id: str | None = None  # the hold this step settles
    price: Mapping[str, Any] | None = None  # which price Tally used (catalog version or package)
    model_key: str | None = None  # an unpriced step's model, as the unpriced breakdown counts it
    team_key: str | None = None  # (v3) the team the user was in when it was recorded

    @property
    def unpriced(self) -> bool:
        """Return whether the step was recorded without a price."""
        return self.cost_source is CostSource.UNPRICED

    @property
    def needs_price(self) -> bool:
        """Return whether Tally still has to price this step (units without a cost)."""
        return self.units is not None and self.cost_source is CostSource.UNPRICED and self.price is None

    @property
    def model_bucket(self) -> str | None:
        """Return the model an unpriced step is counted under (None for a priced step)."""
        if not self.unpriced or self.units is None:
            return None
        return self.model_key or self.units.model

    @property
    def feature_bucket(self) -> str:
        """Return the feature name the breakdowns count this step under."""
        return self.feature_key or self.feature

    @property
    def provider_bucket(self) -> str:
        """Return the provider name the breakdowns count this step under."""
        return self.provider_key or self.provider


@dataclass(frozen=True)
class SessionRequest:
    """What a request asks of its session."""

    session_id: str
    feature: str | None
    complete: bool


@dataclass(frozen=True)
class RecordRequest:
    """A validated `record_steps` request, before authorization."""

    user_id: str | None
    session: SessionRequest | None
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class SessionState:
    """What the write path needs to know of a stored session."""

    status: SessionStatus
    created_at: datetime
    first_step_at: datetime | None
    last_step_at: datetime | None
    version: Version
    step_count: int = 0
    cost_nanos: int = 0
    feature_names: frozenset[str] = frozenset()
    provider_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StoredStep:
    """What the write path needs to know of a step already recorded."""

    request_id: str | None
    feature_key: str | None
    provider_key: str | None
    model_key: str | None = None

    def key(self, kind: str) -> str | None:
        """Return the name the step was counted under for a kind of name (`feature`, `provider`, `model`)."""
        return {"feature": self.feature_key, "provider": self.provider_key, "model": self.model_key}.get(kind)


@dataclass(frozen=True)
class HoldState:
    """A reservation as read: what it holds and the version a conditional write builds on."""

    user_id: str
    reservation_id: str
    status: HoldStatus
    cost_nanos: int
    runs: int
    version: Version
    unpriced: bool = False  # its estimate could not be priced (the gate refuses it)
    feature: str | None = None  # the estimate's feature
    month: str | None = None  # the month it was made in
    feature_held: bool = False  # it also counts in its feature's holds (the user has a limit for it)
    team_id: str | None = None  # the team whose slice also holds it
    team_slice: int | None = None
    platform_shard: int | None = None  # the platform hold shard that also holds it


@dataclass(frozen=True)
class UserMonthState:
    """Whether a user's month document exists and already counts the user as active."""

    exists: bool
    active: bool
    version: Version = None
    limit_percent: float | None = None  # the stored free-tier entry, if any
    day_costs: Mapping[str, int] = field(default_factory=dict)  # (v3) YYYY-MM-DD -> cost, as read
    forecast_alerted: bool = False  # (v3) the month's forecast alert is raised
    anomaly_day: str | None = None  # (v3) the last day (YYYY-MM-DD) whose anomaly alert is raised


@dataclass(frozen=True)
class RecordingState:
    """A plain (lock-free) read of everything a request touches."""

    session: SessionState | None
    existing_steps: Mapping[str, StoredStep]
    usage: Mapping[str, Any] = field(default_factory=dict)  # TallyUsers/{uid}.usage, the truth
    truth: Mapping[str, Any] = field(
        default_factory=dict
    )  # the rest of TallyUsers/{uid} (the mirror's state)
    user_months: Mapping[str, UserMonthState] = field(default_factory=dict)
    holds: Mapping[str, HoldState] = field(default_factory=dict)  # reservations the steps settle


@dataclass(frozen=True)
class SessionRecord:
    """A stored session: its fields and the version a conditional write builds on."""

    user_id: str
    session_id: str
    data: Mapping[str, Any]
    version: Version


@dataclass(frozen=True)
class IdleSession:
    """One result of a sweep query."""

    user_id: str
    session_id: str
    version: Version
    cursor: Any
