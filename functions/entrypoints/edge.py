"""The edge of every entry point: HTTP plumbing, the callable protocol, and errors as statuses and codes.

Every entry point checks access, parses its input into a typed request, calls a service,
and answers; a `TallyError` becomes its HTTP status and body, or its callable code (both
from the error's own class, `tally.errors`), anything unexpected `INTERNAL` with no
internals, and contention past a service's retries `UNAVAILABLE`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from firebase_functions import https_fn, logger
from flask import Request, Response

from entrypoints.jsonbody import MAX_BODY_BYTES, check_content_type, check_declared_length, parse_json_body
from tally.errors import Internal, MethodNotAllowed, TallyError, Unavailable
from tally.values import Contention

CONTENDED = "too much contention; retry the request"


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


def to_https_error(err: TallyError) -> https_fn.HttpsError:
    """Map a Tally error to the callable protocol's error."""
    code = https_fn.FunctionsErrorCode(err.callable_code)
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
