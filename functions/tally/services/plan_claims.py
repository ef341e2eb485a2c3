"""The plan a custom claim names (`TALLY_PLAN_CLAIM`, e.g. `stripeRole`): a user's plan when none is assigned.

For a user's own request the claim comes from their verified ID token; for a recorder's or an
admin's request on another user's behalf, from Firebase Auth, cached at most five minutes
per instance (so a plan bought a minute ago applies within five).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tally.config import Settings
from tally.values import Caller

CACHE_SECONDS = 300.0
CACHE_USERS = 10_000

ClaimedPlan = Callable[[str], str | None]


def no_claim(_user_id: str) -> str | None:
    """Return no plan (no TALLY_PLAN_CLAIM, or no caller)."""
    return None


class ClaimDirectory(Protocol):
    """Firebase Auth's custom claims of a user."""

    def custom_claims(self, user_id: str) -> Mapping[str, Any]: ...


class ClaimCache:
    """Users' custom claims, each kept `CACHE_SECONDS` at most; the least recently read go first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Mapping[str, Any]]] = OrderedDict()

    def claims(self, user_id: str, fetch: Callable[[str], Mapping[str, Any]]) -> Mapping[str, Any]:
        """Return a user's claims, fetched again once the cached ones are five minutes old."""
        now = self._clock()
        with self._lock:
            found = self._entries.get(user_id)
            if found is not None and now - found[0] < CACHE_SECONDS:
                self._entries.move_to_end(user_id)
                return found[1]
        claims = fetch(user_id)
        with self._lock:
            self._entries[user_id] = (now, claims)
            self._entries.move_to_end(user_id)
            while len(self._entries) > CACHE_USERS:
                self._entries.popitem(last=False)
        return claims


CLAIMS = ClaimCache()


def resolver(
    *, caller: Caller, settings: Settings, directory: ClaimDirectory, cache: ClaimCache = CLAIMS
) -> ClaimedPlan:
    """Return the function giving the plan a user's claim names (None: no claim, or no such setting)."""
    claim = settings.plan_claim
    if claim is None:
        return no_claim

    def claimed(user_id: str) -> str | None:
        claims = caller.claims if user_id == caller.uid else cache.claims(user_id, directory.custom_claims)
        value = claims.get(claim)
        return value if isinstance(value, str) and value else None

    return claimed


class ClaimsLookup(Protocol):
    """Firebase Auth's custom claims of many users at once (for reconcile)."""

    def claims_of(self, user_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """Return the claims of users (a user Auth does not know: none); those it cannot say left out."""
        ...


def claimed_plans(
    settings: Settings, lookup: ClaimsLookup | None, user_ids: Sequence[str]
) -> dict[str, str | None]:
    """Return the plan each user's claim names (None: no claim); a user left out is not known.

    Without TALLY_PLAN_CLAIM every user is known to claim nothing. With it, a user is known
    only if Auth says their claims (none, for a user it does not know, as the functions read
    it): not without a lookup, nor when the lookup fails.
    """
    claim = settings.plan_claim
    if claim is None:
        return dict.fromkeys(user_ids)
    if lookup is None or not user_ids:
        return {}
    found = lookup.claims_of(user_ids)
    return {
        user_id: value if isinstance(value := claims.get(claim), str) and value else None
        for user_id, claims in found.items()
    }
