"""Where Tally's documents live: collection names and document paths (pure).

Ids of shared and per-month documents never start with the month: a per-user document
starts with the uid, a shared one with a short hash, so each month's writes spread over
the key space instead of opening one hot key range (Firestore's 500/50/5 rule).
"""

from __future__ import annotations

import hashlib

USERS = "users"
USAGE = "TallyUsers"  # Tally's own per-user document: the true `usage`, mirrored into users/{uid}
SESSION_USAGE = "SessionUsage"
SESSIONS = "sessions"
STEPS = "steps"
USER_MONTHS = "TallyMonthlyUsage"
PLATFORM_SHARDS = "TallyPlatformShards"
ROLLUPS = "TallyPlatformRollups"
NAMES = "TallyNames"
NAME_COUNTS = "TallyNameCounts"
NAME_QUOTAS = "TallyNameQuotas"
USER_LIMITS = "TallyUserLimits"  # Tally's own copy of each user's limits (repairs an erased `usage`)
PRICE_BOOKS = "TallyPriceBooks"  # the admins' prices, one book per provider and model
PRICE_LOG = "TallyPriceLog"  # every price an admin set, for list_prices
RESERVATIONS = "reservations"  # SessionUsage/{uid}/reservations/{reservationId}
ALERTS = "TallyAlerts"
PLANS = "TallyPlans"  # the plan catalog: one document holding every plan's limits
PLATFORM_HOLDS = "TallyPlatformHolds"  # holds on the platform's budget, when it is enforced
TEAMS = "TallyTeams"  # a team's limits and number of slices
TEAM_COUNT = "TallyTeamCount"  # how many teams exist (set_team bounds it)
TEAM_SLICES = "TallyTeamSlices"  # a team's escrow slices: its usage, holds and shares of its limits

# The layout before v2 (read by `reconcile` when it migrates a month, then deleted).
LEGACY_USER_MONTHS = "TallyUserMonths"
LEGACY_PLATFORM_MONTHS = "TallyPlatformMonths"

# Sessions carry `tallyShard` in 0..SWEEP_SHARDS-1; the sweep's indexes put it first, so
# the ever-increasing `lastUpdatedAt` never makes one hot index range.
SWEEP_SHARDS = 16


def digest(*parts: str) -> str:
    """Return the SHA-256 hex digest of `parts` joined unambiguously."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def user_path(user_id: str) -> str:
    """Return `users/{uid}`."""
    return f"{USERS}/{user_id}"


def user_id_of(path: str) -> str:
    """Return the uid of `users/{uid}` or `TallyUsers/{uid}`."""
    return path.split("/", 1)[1]


def usage_path(user_id: str) -> str:
    """Return `TallyUsers/{uid}`: the user's usage as Tally counts it (users/{uid}.usage mirrors it)."""
    return f"{USAGE}/{user_id}"


def session_path(user_id: str, session_id: str) -> str:
    """Return `SessionUsage/{uid}/sessions/{sessionId}`."""
    return f"{SESSION_USAGE}/{user_id}/{SESSIONS}/{session_id}"


def step_path(user_id: str, operation_id: str) -> str:
    """Return `SessionUsage/{uid}/steps/{operationId}`."""
    return f"{SESSION_USAGE}/{user_id}/{STEPS}/{operation_id}"


def user_month_path(user_id: str, month: str) -> str:
    """Return the user's month document (breakdowns, free-tier entry)."""
    return f"{USER_MONTHS}/{user_id}_{month}"


def shard_path(month: str, shard: int) -> str:
    """Return one shard of the platform's month."""
    return f"{PLATFORM_SHARDS}/{digest(month, str(shard))[:8]}-{month}-{shard}"


def rollup_path(month: str) -> str:
    """Return the platform month folded from its shards."""
    return f"{ROLLUPS}/{digest(month)[:8]}-{month}"


def name_path(kind: str, month: str, name: str) -> str:
    """Return the registry entry of a name admitted into a month's breakdowns."""
    return f"{NAMES}/{digest(kind, month, name)[:32]}"


def name_count_path(kind: str, month: str) -> str:
    """Return the counter of a month's admitted names of one kind."""
    return f"{NAME_COUNTS}/{digest(kind, month)[:8]}-{kind}-{month}"


def name_quota_path(user_id: str, month: str) -> str:
    """Return the counter of the new names a caller introduced in a month."""
    return f"{NAME_QUOTAS}/{user_id}_{month}"


def reservation_path(user_id: str, reservation_id: str) -> str:
    """Return `SessionUsage/{uid}/reservations/{reservationId}`."""
    return f"{SESSION_USAGE}/{user_id}/{RESERVATIONS}/{reservation_id}"


def reservation_ids(path: str) -> tuple[str, str] | None:
    """Return (uid, reservationId) of a Tally reservation path, or None for any other document."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == SESSION_USAGE and parts[2] == RESERVATIONS:
        return parts[1], parts[3]
    return None


def alert_id(user_id: str | None, month: str, kind: str, threshold: int) -> str:
    """Return the id of the one alert of (user or platform, month, kind, threshold)."""
    return f"{digest(user_id or '(platform)', month, kind, str(threshold))[:24]}-{kind}-{threshold}"


def alert_path(alert: str) -> str:
    """Return `TallyAlerts/{alertId}`."""
    return f"{ALERTS}/{alert}"


def limits_path(user_id: str) -> str:
    """Return Tally's copy of a user's limits."""
    return f"{USER_LIMITS}/{user_id}"


def sweep_shard(user_id: str, session_id: str) -> int:
    """Return a session's sweep shard (stable, spread)."""
    return int(digest(user_id, session_id)[:8], 16) % SWEEP_SHARDS


def session_ids(path: str) -> tuple[str, str] | None:
    """Return (uid, sessionId) of a Tally session path, or None for any other document."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == SESSION_USAGE and parts[2] == SESSIONS:
        return parts[1], parts[3]
    return None


def step_owner(path: str) -> str | None:
    """Return the uid of a Tally step path, or None for any other document."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == SESSION_USAGE and parts[2] == STEPS:
        return parts[1]
    return None


def plan_catalog_path() -> str:
    """Return the plan catalog, `TallyPlans/catalog` (read by every request that needs limits)."""
    return f"{PLANS}/catalog"


def team_path(team_id: str) -> str:
    """Return `TallyTeams/{teamId}`."""
    return f"{TEAMS}/{team_id}"


def team_slice_path(team_id: str, k: int) -> str:
    """Return a team's slice k, `TallyTeamSlices/{hash}-{teamId}-{k}` (a hash first: no hot key range)."""
    return f"{TEAM_SLICES}/{digest(team_id)[:8]}-{team_id}-{k}"


def platform_hold_path(month: str, shard: int) -> str:
    """Return one shard of the platform's holds in a month (a hash first, as the platform shards)."""
    return f"{PLATFORM_HOLDS}/{digest(month, str(shard), 'holds')[:8]}-{month}-{shard}"


def team_count_path() -> str:
    """Return the count of teams, `TallyTeamCount/all`."""
    return f"{TEAM_COUNT}/all"
