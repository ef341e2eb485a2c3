"""Errors raised by the Tally client, named after the server's canonical statuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BudgetExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "QueueFull",
    "TallyError",
    "Unauthenticated",
    "Unavailable",
    "error_from_body",
]


class TallyError(Exception):
    """Base of every error the client raises.

    `status` is the canonical status (`INVALID_ARGUMENT`, ...), `message` the server's
    message, `details` its list of `{"field", "problem"}` objects, `http_status` the
    HTTP status code (None for errors found before anything was sent), `steps` the
    steps of a `record_steps` request the server refused (they are not queued again),
    `user_id` and `session_id` the request's `userId` and session id (None if absent).
    """

    default_status = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        http_status: int | None = None,
    ) -> None:
        """Build the error from the server's `error` object fields."""
        super().__init__(message)
        self.message = message
        self.status = status or self.default_status
        self.details: list[dict[str, Any]] = list(details or [])
        self.http_status = http_status
        self.steps: list[dict[str, Any]] = []
        self.user_id: str | None = None
        self.session_id: str | None = None

    def __str__(self) -> str:
        """Return `STATUS: message`."""
        return f"{self.status}: {self.message}"


class InvalidArgument(TallyError, ValueError):
    """A request or a value the server (or the client, before sending) refuses: 400."""

    default_status = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, problem: str) -> InvalidArgument:
        """Return the error for one bad field, shaped like the server's."""
        return cls(f"{field}: {problem}", details=[{"field": field, "problem": problem}])


class Unauthenticated(TallyError):
    """No valid ID token (or App Check token) even after one refresh: 401."""

    default_status = "UNAUTHENTICATED"


class PermissionDenied(TallyError):
    """The caller may not do this (e.g. record for another user without `recorder`): 403."""

    default_status = "PERMISSION_DENIED"


class NotFound(TallyError):
    """The server knows no such thing (e.g. completing an unknown session): 404."""

    default_status = "NOT_FOUND"


class FailedPrecondition(TallyError):
    """The request conflicts with the current state (e.g. a step for a completed session): 409."""

    default_status = "FAILED_PRECONDITION"


class Unavailable(TallyError):
    """Tally could not be reached or kept failing (network, 5xx, 429) after every retry."""

    default_status = "UNAVAILABLE"


class QueueFull(TallyError):
    """The client holds `max_queued_steps` unsent steps already and refuses more."""

    default_status = "RESOURCE_EXHAUSTED"


class BudgetExceeded(TallyError):
    """`reserve_spend` answered `allowed: false`: the user's budget does not admit the estimate.

    `reason` names what refused (`MONTHLY_COST_LIMIT`, `FREE_RUNS`, `UNPRICED`, ...);
    `usage` the user's month as the server sent it; `response` the whole response body.
    """

    default_status = "RESOURCE_EXHAUSTED"

    def __init__(self, response: Mapping[str, Any], *, reservation_id: str) -> None:
        """Build the error from a `reserve_spend` response."""
        reason = response.get("reason")
        self.reason: str | None = reason if isinstance(reason, str) else None
        usage = response.get("usage")
        self.usage: dict[str, Any] = dict(usage) if isinstance(usage, Mapping) else {}
        self.reservation_id = reservation_id
        self.response: dict[str, Any] = dict(response)
        super().__init__(f"budget exceeded ({self.reason or 'no reason given'})", http_status=200)


_BY_STATUS: dict[str, type[TallyError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "NOT_FOUND": NotFound,
    "FAILED_PRECONDITION": FailedPrecondition,
    "UNAVAILABLE": Unavailable,
}
_BY_HTTP: dict[int, type[TallyError]] = {
    400: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: FailedPrecondition,
}


def error_from_body(http_status: int, body: object, fallback_message: str = "") -> TallyError:
    """Return the TallyError for an error response (`{"error": {status, message, details}}`)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    status: str | None = None
    message = fallback_message or f"HTTP {http_status}"
    details: list[dict[str, Any]] = []
    if isinstance(error, Mapping):
        if isinstance(error.get("status"), str):
            status = error["status"]
        if isinstance(error.get("message"), str):
            message = error["message"]
        raw_details = error.get("details")
        if isinstance(raw_details, list):
            details = [dict(item) for item in raw_details if isinstance(item, Mapping)]
    if status in _BY_STATUS:
        cls = _BY_STATUS[status]
    elif http_status >= 500 or http_status in {408, 429}:
        cls = Unavailable
    else:
        cls = _BY_HTTP.get(http_status, TallyError)
    return cls(
        message, status=status or _default_status(cls, http_status), details=details, http_status=http_status
    )


def _default_status(cls: type[TallyError], http_status: int) -> str:
    if cls is TallyError:
        return {405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(
            http_status, f"HTTP_{http_status}"
        )
    return cls.default_status
