"""Who may call what: the checks every callable and endpoint shares."""

from __future__ import annotations

from tally.errors import PermissionDenied, Unauthenticated
from tally.values import Caller


def require_signed_in(caller: Caller | None) -> Caller:
    """Refuse calls without a verified ID token."""
    if caller is None:
        raise Unauthenticated("sign in first: this function needs a Firebase ID token")
    return caller


def require_admin(caller: Caller | None) -> Caller:
    """Refuse callers without the `admin` claim."""
    caller = require_signed_in(caller)
    if not caller.admin:
        raise PermissionDenied("this function needs the admin claim")
    return caller


def _whose(caller: Caller, requested: str | None, *, allowed: bool, problem: str) -> str:
    if requested is None or requested == caller.uid:
        return caller.uid
    if allowed:
        return requested
    raise PermissionDenied(f"userId: {problem}")


def resolve_reader(caller: Caller, requested: str | None) -> str:
    """Return whose usage a caller reads: their own, or anyone's for an admin."""
    return _whose(
        caller, requested, allowed=caller.admin, problem="only admins may read another user's usage"
    )


def resolve_user(caller: Caller, requested: str | None) -> str:
    """Return whose usage a caller records for: their own, or anyone's for a recorder or an admin."""
    return _whose(
        caller,
        requested,
        allowed=caller.trusted,
        problem="only recorder or admin callers may record for another user",
    )
