"""Who is calling: Firebase ID tokens and App Check tokens verified with the Admin SDK."""

from __future__ import annotations

import time
from typing import Any

from firebase_admin import app_check, auth
from firebase_functions import https_fn, params

from adapters.firebase_app import admin_app
from tally.errors import Unauthenticated
from tally.values import Caller

TOKEN_CLOCK_SKEW_SECONDS = 300

APP_CHECK_HEADER = "X-Firebase-AppCheck"

# Deployment option: set TALLY_ENFORCE_APP_CHECK=true in functions/.env.<project> to refuse
# requests without a valid Firebase App Check token. Off by default (and in the emulator).
ENFORCE_APP_CHECK = params.BoolParam(
    "TALLY_ENFORCE_APP_CHECK",
    default=False,
    description="Refuse record_steps and callable requests without a valid Firebase App Check token",
)


def caller_from_claims(claims: dict[str, Any], *, now: float | None = None) -> Caller:
    """Build the caller from verified token claims (a claim counts only when exactly true).

    Also checks `exp` and `iat` itself: production verification does too, but the Admin SDK
    skips both for Auth-emulator tokens, and an expired token must be refused everywhere.
    """
    now = time.time() if now is None else now
    expires, issued = claims.get("exp"), claims.get("iat")
    if not isinstance(expires, int | float) or expires <= now:
        raise Unauthenticated("the ID token has expired")
    if isinstance(issued, int | float) and issued > now + TOKEN_CLOCK_SKEW_SECONDS:
        raise Unauthenticated("the ID token is not valid yet")
    return Caller(
        uid=str(claims["uid"]),
        admin=claims.get("admin") is True,
        recorder=claims.get("recorder") is True,
        claims=claims,
    )


def caller_from_auth(auth_data: https_fn.AuthData | None) -> Caller | None:
    """Return the caller of a callable (its token was verified by the SDK), or None."""
    if auth_data is None or auth_data.uid is None:
        return None
    return caller_from_claims({**auth_data.token, "uid": auth_data.uid})


def verify_app_check(token: str | None) -> None:
    """When App Check is enforced, refuse a request without a valid App Check token."""
    if not ENFORCE_APP_CHECK.value:
        return
    if not token:
        raise Unauthenticated(f"an App Check token ({APP_CHECK_HEADER} header) is required")
    try:
        app_check.verify_token(token, app=admin_app())
    except Exception:  # noqa: BLE001 - every verification failure means the same to the caller
        raise Unauthenticated("the App Check token is not valid") from None


def require_callable_app_check(app_data: https_fn.AppCheckData | None) -> None:
    """When App Check is enforced, refuse a callable request the SDK found no valid App Check token in."""
    if ENFORCE_APP_CHECK.value and app_data is None:
        raise Unauthenticated("a valid App Check token is required")


def verify_bearer(header: str | None) -> Caller:
    """Verify `Authorization: Bearer <Firebase ID token>` and return the caller."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization: Bearer <Firebase ID token> is required")
    try:
        claims = auth.verify_id_token(token.strip(), app=admin_app())
    except auth.ExpiredIdTokenError:
        raise Unauthenticated("the ID token has expired") from None
    except auth.RevokedIdTokenError:
        raise Unauthenticated("the ID token has been revoked") from None
    except (auth.InvalidIdTokenError, ValueError):
        raise Unauthenticated("the ID token is not valid") from None
    return caller_from_claims(claims)
