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


def resolve_reader(caller: Caller, requested: str | None) -> str:
    """Return whose usage a caller reads: their own, or anyone's for an admin."""
    if requested is None or requested == caller.uid:
        return caller.uid
    if caller.admin:
        return requested
    raise PermissionDenied("userId: only admins may read another user's usage")
