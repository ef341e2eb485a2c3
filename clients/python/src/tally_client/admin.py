"""An `id_token` for a backend with the Firebase Admin SDK: sign in as an account with the `recorder` claim.

`firebase-admin` is not a dependency of tally-client (install the `admin` extra): it is imported
only when `recorder_token` is called without an `auth` of its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from tally_client._values import check_user_id
from tally_client.errors import TallyError, Unavailable

__all__ = ["recorder_token"]

PRODUCTION_URL = "https://identitytoolkit.googleapis.com/v1"
EMULATOR_API_KEY = "fake-api-key"  # the Auth emulator accepts any key


def _default_auth() -> Any:
    from firebase_admin import auth  # noqa: PLC0415 - an optional dependency, imported on first use

    return auth


def _is_error(error: Exception, auth: Any, name: str, code: str) -> bool:
    """Return whether `error` is the Admin SDK's `name` error (or any error whose code says `code`)."""
    cls = getattr(auth, name, None)
    if isinstance(cls, type) and isinstance(error, cls):
        return True
    return type(error).__name__ == name or code in str(getattr(error, "code", ""))


def _ensure_recorder(auth: Any, app: Any, uid: str) -> None:
    """Make sure the account exists and has `recorder: True`, keeping its other claims."""
    try:
        claims = dict(auth.get_user(uid, app=app).custom_claims or {})
    except Exception as exc:
        if not _is_error(exc, auth, "UserNotFoundError", "NOT_FOUND"):
            raise
        try:
            auth.create_user(uid=uid, app=app)
            claims = {}
        except Exception as created:
            if not _is_error(created, auth, "UidAlreadyExistsError", "ALREADY_EXISTS"):
                raise
            claims = dict(auth.get_user(uid, app=app).custom_claims or {})
    if claims.get("recorder") is not True:
        auth.set_custom_user_claims(uid, {**claims, "recorder": True}, app=app)


def recorder_token(
    *,
    app: Any = None,
    uid: str,
    api_key: str | None = None,
    auth: Any = None,
    emulator_host: str | None = None,
    refresh_margin: float = 300.0,
    session: requests.Session | None = None,
    identity_toolkit_url: str | None = None,
    timeout: float = 30.0,
) -> RecorderToken:
    """Return an `id_token` callable for `Tally(...)` that signs in as the recorder account `uid`.

    On first use it makes sure the account exists with the `recorder` custom claim (Admin SDK,
    other claims kept), signs in with a custom token (Identity Toolkit
    `accounts:signInWithCustomToken`, which the Auth emulator serves too), caches the ID token
    and signs in again `refresh_margin` seconds before it expires, or at once after the server
    answered 401 (the client calls `invalidate()`, which drops the cached token only if it is
    still the one the calling thread was handed). Thread-safe: concurrent calls
    share one sign-in. `app` is the Admin SDK app (None: the default app); `auth` a module or
    object with the Admin SDK's `get_user`, `create_user`, `set_custom_user_claims` and
    `create_custom_token` (default: `firebase_admin.auth`). `api_key` is the project's Web API
    key (default: `FIREBASE_API_KEY`), not needed when `emulator_host` (default:
    `FIREBASE_AUTH_EMULATOR_HOST`) names the Auth emulator.
    """
    check_user_id("uid", uid)
    emulator = (
        emulator_host if emulator_host is not None else os.environ.get("FIREBASE_AUTH_EMULATOR_HOST") or None
    )
    key = api_key or os.environ.get("FIREBASE_API_KEY") or (EMULATOR_API_KEY if emulator else None)
    if identity_toolkit_url is not None:
        base = identity_toolkit_url.rstrip("/")
    elif emulator:
        base = f"http://{emulator}/identitytoolkit.googleapis.com/v1"
    else:
        base = PRODUCTION_URL
    lock = threading.Lock()
    state: dict[str, Any] = {"token": None, "refresh_at": 0.0, "ensured": False}
    http = session or requests.Session()

    def sign_in() -> str:
        if key is None:
            raise TallyError(
                "recorder_token needs the project's Web API key: pass api_key= or set FIREBASE_API_KEY",
                status="FAILED_PRECONDITION",
            )
        admin_auth = auth if auth is not None else _default_auth()
        if not state["ensured"]:
            _ensure_recorder(admin_auth, app, uid)
            state["ensured"] = True
        custom = admin_auth.create_custom_token(uid, {"recorder": True}, app=app)
        custom_token = custom.decode("ascii") if isinstance(custom, bytes) else str(custom)
        try:
            response = http.post(
                f"{base}/accounts:signInWithCustomToken",
                params={"key": key},
                json={"token": custom_token, "returnSecureToken": True},
                timeout=timeout,
            )
        except requests.RequestException as exc:
            raise Unavailable(f"signInWithCustomToken: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            error_type = Unavailable if response.status_code >= 500 else TallyError
            raise error_type(
                f"signInWithCustomToken answered {response.status_code}: {response.text[:300]}",
                http_status=response.status_code,
            )
        body = response.json()
        token = body.get("idToken")
        if not isinstance(token, str):
            raise Unavailable("signInWithCustomToken answered without an idToken")
        try:
            lifetime = float(body.get("expiresIn") or 3600)
        except (TypeError, ValueError):
            lifetime = 3600.0
        state["token"] = token
        state["refresh_at"] = time.monotonic() + max(0.0, lifetime - refresh_margin)
        return token

    # The token each thread was handed last: a 401 that thread gets is about that one.
    handed = threading.local()

    def id_token() -> str:
        with lock:
            token = state["token"]
            if not (isinstance(token, str) and time.monotonic() < state["refresh_at"]):
                token = sign_in()
            handed.token = token
            return token

    def invalidate() -> None:
        # Drop the cached token only if it is the one this thread was handed: another thread's
        # newer sign-in (after its own 401, or a refresh) is kept.
        with lock:
            if getattr(handed, "token", None) in (None, state["token"]):
                state["token"] = None

    return RecorderToken(id_token, invalidate)


class RecorderToken:
    """An `id_token` callable whose cached token the client drops after a 401 (`invalidate`)."""

    def __init__(self, get: Callable[[], str], invalidate: Callable[[], None]) -> None:
        self._get = get
        self.invalidate = invalidate

    def __call__(self) -> str:
        """Return a current ID token (signing in again if needed)."""
        return self._get()
