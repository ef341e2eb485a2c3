"""Firebase glue for the entry points: clients, token checks, and the one error mapping."""

from __future__ import annotations

import dataclasses
import functools
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import firebase_admin
import firebase_admin.exceptions
from firebase_admin import app_check, auth
from firebase_functions import https_fn, logger, params
from flask import Request, Response
from google.cloud import firestore

from tally import alerts
from tally.config import Settings
from tally.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    TallyError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)
from tally.jsonbody import MAX_BODY_BYTES, check_content_type, check_declared_length, parse_json_body
from tally.store import FirestoreStore
from tally.values import Caller, Contention

TOKEN_CLOCK_SKEW_SECONDS = 300
CONTENDED = "too much contention; retry the request"
APP_CHECK_HEADER = "X-Firebase-AppCheck"

# Deployment option: set TALLY_ENFORCE_APP_CHECK=true in functions/.env.<project> to refuse
# requests without a valid Firebase App Check token. Off by default (and in the emulator).
ENFORCE_APP_CHECK = params.BoolParam(
    "TALLY_ENFORCE_APP_CHECK",
    default=False,
    description="Refuse record_steps and callable requests without a valid Firebase App Check token",
)


def with_retry(function: Callable[..., Any]) -> Callable[..., Any]:
    """Declare that a failed delivery of an event function is retried.

    The Python SDK builds Firestore triggers with `retry: false` and offers no option
    (firebase/firebase-functions-python#165), so the manifest entry is set here; the
    Node SDK and the platform support it. The function must be idempotent.
    """
    endpoint = function.__firebase_endpoint__  # type: ignore[attr-defined]
    trigger = dict(endpoint.eventTrigger or {})
    trigger["retry"] = True
    function.__firebase_endpoint__ = dataclasses.replace(endpoint, eventTrigger=trigger)  # type: ignore[attr-defined]
    return function


@functools.cache
def firestore_client() -> firestore.Client:
    """Create the Firestore client on first use (never at import time)."""
    project = os.environ.get("GCLOUD_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    return firestore.Client(project=project)


@functools.cache
def settings() -> Settings:
    """Read Tally's settings from the environment once per instance."""
    return Settings.from_env()


def store() -> FirestoreStore:
    """Return the Firestore store with the configured shard count."""
    return FirestoreStore(firestore_client(), shards=settings().aggregate_shards)


class AuthDirectory:
    """Emails of users from Firebase Auth (100 a lookup)."""

    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        """Return the email of each user Auth knows (unknown users and failures are left out)."""
        found: dict[str, str] = {}
        for start in range(0, len(user_ids), 100):
            batch = [auth.UidIdentifier(uid) for uid in user_ids[start : start + 100]]
            try:
                result = auth.get_users(batch, app=admin_app())
            except (auth.UserNotFoundError, ValueError, firebase_admin.exceptions.FirebaseError) as exc:
                logger.warn("email lookup failed", error=repr(exc))
                continue
            found.update({user.uid: user.email for user in result.users if user.email})
        return found


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: the 3xx is the answer (urllib would resend a POST as a GET, without its body)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        """Refuse every redirect (the answer then surfaces as an HTTPError with its 3xx status)."""
        return None


def _failure(exc: BaseException) -> str:
    """Return what went wrong without the URL (the messages of some errors quote its path and query)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__}: {reason.strerror}"
    return type(reason).__name__


def post_json(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    """POST a body; return the HTTP status (a redirect is not followed: its 3xx; 0 when no answer came).

    Logs name the URL's scheme, host and port only: a chat webhook carries its secret in the path.
    """
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 - the operator's URL
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:  # a 3xx, 4xx or 5xx answer
        exc.close()
        return int(exc.code)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        logger.warn("webhook unreachable", webhook=alerts.webhook_origin(url), error=_failure(exc))
        return 0


def directory() -> AuthDirectory:
    """Return the user directory (Firebase Auth)."""
    return AuthDirectory()


@functools.cache
def admin_app() -> firebase_admin.App:
    """Return the default Admin SDK app, initializing it on first use."""
    try:
        return firebase_admin.get_app()
    except ValueError:
        return firebase_admin.initialize_app()


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


# The one mapping from Tally errors to callable error codes.
_CALLABLE_CODES: dict[type[TallyError], https_fn.FunctionsErrorCode] = {
    InvalidArgument: https_fn.FunctionsErrorCode.INVALID_ARGUMENT,
    Unauthenticated: https_fn.FunctionsErrorCode.UNAUTHENTICATED,
    PermissionDenied: https_fn.FunctionsErrorCode.PERMISSION_DENIED,
    NotFound: https_fn.FunctionsErrorCode.NOT_FOUND,
    FailedPrecondition: https_fn.FunctionsErrorCode.FAILED_PRECONDITION,
    Unavailable: https_fn.FunctionsErrorCode.UNAVAILABLE,
    PayloadTooLarge: https_fn.FunctionsErrorCode.INVALID_ARGUMENT,
    UnsupportedMediaType: https_fn.FunctionsErrorCode.INVALID_ARGUMENT,
    MethodNotAllowed: https_fn.FunctionsErrorCode.INVALID_ARGUMENT,
}


def to_https_error(err: TallyError) -> https_fn.HttpsError:
    """Map a Tally error to the callable protocol's error."""
    code = _CALLABLE_CODES.get(type(err), https_fn.FunctionsErrorCode.INTERNAL)
    details = [{"field": d.field, "problem": d.problem} for d in err.details] or None
    return https_fn.HttpsError(code, err.message, details)


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """Return a JSON response."""
    return Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def require_post(req: Request) -> None:
    """Accept only POST (OPTIONS preflights are answered by the CORS layer)."""
    if req.method != "POST":
        raise MethodNotAllowed(f"method {req.method} is not allowed; use POST")


def read_json(req: Request) -> dict[str, Any]:
    """Check the type and size of a JSON body, then parse it strictly."""
    check_content_type(req.headers.get("Content-Type"))
    check_declared_length(req.content_length)
    return parse_json_body(req.stream.read(MAX_BODY_BYTES + 1))


def http_endpoint(name: str, handler: Callable[[Request], dict[str, Any]]) -> Callable[[Request], Response]:
    """Wrap a handler: JSON 200 on success, the SPEC's error body on any error."""

    def run(req: Request) -> Response:
        try:
            return json_response(200, handler(req))
        except TallyError as err:
            logger.warn(f"{name} rejected", function=name, status=err.status, reason=err.message)
            headers = {"Allow": "POST, OPTIONS"} if isinstance(err, MethodNotAllowed) else None
            return json_response(err.http_status, err.body(), headers)
        except Contention as exc:  # a race or transient fault past a service's retries: retry, not a bug
            logger.warn(f"{name} contended", function=name, error=repr(exc))
            return json_response(503, Unavailable(CONTENDED).body())
        except Exception as exc:  # noqa: BLE001 - anything unexpected becomes INTERNAL
            logger.error(f"{name} failed", function=name, error=repr(exc))
            return json_response(500, Internal().body())

    return run


def callable_endpoint(
    name: str, handler: Callable[[https_fn.CallableRequest[Any]], Any]
) -> Callable[[https_fn.CallableRequest[Any]], Any]:
    """Wrap a callable handler: Tally errors become HttpsErrors, anything else INTERNAL."""

    def run(req: https_fn.CallableRequest[Any]) -> Any:
        try:
            return handler(req)
        except TallyError as err:
            logger.warn(f"{name} rejected", function=name, status=err.status, reason=err.message)
            raise to_https_error(err) from None
        except Contention as exc:
            logger.warn(f"{name} contended", function=name, error=repr(exc))
            raise to_https_error(Unavailable(CONTENDED)) from None
        except Exception as exc:  # noqa: BLE001
            logger.error(f"{name} failed", function=name, error=repr(exc))
            raise https_fn.HttpsError(https_fn.FunctionsErrorCode.INTERNAL, "internal error") from None

    return run
