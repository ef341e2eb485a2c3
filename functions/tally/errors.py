"""The one error table of Tally: each error's status, HTTP status, callable code and body.

The entry points answer an HTTPS request with `http_status` and `body()`, and a callable with
`callable_code` (the callable protocol's code names); nothing else maps errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldProblem:
    """One problem with one field of a request."""

    field: str
    problem: str


class TallyError(Exception):
    """Base of every error Tally reports to a caller."""

    status: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    callable_code: ClassVar[str] = "internal"  # the callable protocol's code

    def __init__(self, message: str, *, details: tuple[FieldProblem, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """Return the SPEC's error body."""
        error: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.details:
            error["details"] = [{"field": d.field, "problem": d.problem} for d in self.details]
        return {"error": error}


class InvalidArgument(TallyError):
    """The request is malformed or a field is invalid."""

    status = "INVALID_ARGUMENT"
    http_status = 400
    callable_code = "invalid-argument"  # the callable protocol's code

    @classmethod
    def of(cls, problems: list[FieldProblem]) -> InvalidArgument:
        """Build one error from field problems; the message names the first."""
        first = problems[0]
        message = f"{first.field}: {first.problem}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more)"
        return cls(message, details=tuple(problems))

    @classmethod
    def field(cls, field: str, problem: str) -> InvalidArgument:
        """Build an error about one field."""
        return cls.of([FieldProblem(field, problem)])


class Unauthenticated(TallyError):
    """No valid Firebase ID token."""

    status = "UNAUTHENTICATED"
    http_status = 401
    callable_code = "unauthenticated"  # the callable protocol's code


class PermissionDenied(TallyError):
    """The caller may not do this."""

    status = "PERMISSION_DENIED"
    http_status = 403
    callable_code = "permission-denied"  # the callable protocol's code


class NotFound(TallyError):
    """The named resource does not exist."""

    status = "NOT_FOUND"
    http_status = 404
    callable_code = "not-found"  # the callable protocol's code


class MethodNotAllowed(TallyError):
    """The HTTP method is not accepted."""

    status = "METHOD_NOT_ALLOWED"
    http_status = 405
    callable_code = "invalid-argument"  # the callable protocol's code


class FailedPrecondition(TallyError):
    """The resource is not in a state that allows this (a completed session)."""

    status = "FAILED_PRECONDITION"
    http_status = 409
    callable_code = "failed-precondition"  # the callable protocol's code


class PayloadTooLarge(TallyError):
    """The request body is over the size limit."""

    status = "PAYLOAD_TOO_LARGE"
    http_status = 413
    callable_code = "invalid-argument"  # the callable protocol's code


class UnsupportedMediaType(TallyError):
    """The request body is not JSON."""

    status = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415
    callable_code = "invalid-argument"  # the callable protocol's code


class Unavailable(TallyError):
    """A transient condition (contention); the caller may retry the same request."""

    status = "UNAVAILABLE"
    http_status = 503
    callable_code = "unavailable"  # the callable protocol's code


class Internal(TallyError):
    """An unexpected failure; the message never carries internals."""

    status = "INTERNAL"
    http_status = 500
    callable_code = "internal"  # the callable protocol's code

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(message)
