"""POST JSON to Tally's functions with auth headers, retries, backoff and jitter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from tally_client._values import encode
from tally_client.errors import TallyError, Unauthenticated, Unavailable, error_from_body

logger = logging.getLogger("tally_client")

TokenSource = Callable[[], str]
"""A callable returning a current token (called before every request, and once more after a 401)."""

APP_CHECK_HEADER = "X-Firebase-AppCheck"
USER_AGENT = "tally-client-python/0.1.0"
_RETRIABLE_EXCEPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def _retriable_status(code: int) -> bool:
    return code >= 500 or code in {408, 429}


class Transport:
    """Send one JSON body to a function, retrying transient failures with the same bytes."""

    def __init__(
        self,
        functions_url: str,
        *,
        id_token: TokenSource,
        app_check_token: TokenSource | None,
        timeout: float,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        http: requests.Session | None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Keep the settings; make a requests.Session unless one is given."""
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = functions_url.rstrip("/")
        self._id_token = id_token
        self._app_check_token = app_check_token
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._owns_http = http is None
        self._http = http if http is not None else requests.Session()
        self._sleep = sleep
        self.server_clock_offset: float | None = None
        """Seconds the server's clock is ahead of this machine's, from the last `Date` header, if any."""

    def close(self) -> None:
        """Close the HTTP session if this transport made it."""
        if self._owns_http:
            self._http.close()

    def post(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST `body` to the HTTPS function `name`; return its 200 JSON or raise a TallyError."""
        result = self._send(name, encode(body))
        if not isinstance(result, dict):
            raise Unavailable(f"{name} answered 200 with a body that is not a JSON object", http_status=200)
        return result

    def call(self, name: str, data: Mapping[str, Any]) -> Any:
        """Call the callable function `name` with `data` (callable protocol) and return its `result`."""
        response = self._send(name, encode({"data": data}))
        if not isinstance(response, dict) or "result" not in response:
            raise Unavailable(f"{name} answered 200 without a result", http_status=200)
        return response["result"]

    def _headers(self) -> dict[str, str]:
        try:
            token = self._id_token()
            app_check = self._app_check_token() if self._app_check_token is not None else None
        except Exception as exc:
            raise Unavailable(f"the token callable failed: {type(exc).__name__}: {exc}") from exc
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Authorization": f"Bearer {token}",
            "User-Agent": USER_AGENT,
        }
        if app_check is not None:
            headers[APP_CHECK_HEADER] = app_check
        return headers

    def _send(self, name: str, data: bytes) -> Any:
        url = f"{self.base_url}/{name}"
        refreshed = False
        attempt = 0
        while True:
            headers = self._headers()
            retry_after: float | None = None
            try:
                response = self._http.post(url, data=data, headers=headers, timeout=self._timeout)
            except _RETRIABLE_EXCEPTIONS as exc:
                error: TallyError = Unavailable(f"{name}: {type(exc).__name__}: {exc}")
            except requests.exceptions.RequestException as exc:
                # A bad URL or similar: retrying cannot help, but the steps must not be lost either.
                raise Unavailable(f"{name}: {type(exc).__name__}: {exc}") from exc
            else:
                self._note_server_clock(response)
                if 200 <= response.status_code < 300:
                    try:
                        return response.json()
                    except ValueError:
                        error = Unavailable(
                            f"{name} answered {response.status_code} with a body that is not JSON"
                        )
                else:
                    error = _error_of(response)
                    if response.status_code == 401 and not refreshed:
                        refreshed = True
                        invalidate = getattr(self._id_token, "invalidate", None)
                        if callable(invalidate):
                            invalidate()  # a token source that caches drops its token
                        logger.info("%s answered 401; retrying once with a fresh token", name)
                        continue
                    if isinstance(error, Unauthenticated) or not _retriable_status(response.status_code):
                        raise error
                    retry_after = _retry_after(response)
            if attempt >= self._max_retries:
                raise error
            delay = self._delay(attempt, retry_after)
            logger.info(
                "%s failed (%s); retry %d/%d in %.2f s", name, error, attempt + 1, self._max_retries, delay
            )
            self._sleep(delay)
            attempt += 1

    def _note_server_clock(self, response: requests.Response) -> None:
        """Learn the server's clock from the response's `Date` header (1 s resolution: add half a second)."""
        value = response.headers.get("Date")
        if not value:
            return
        try:
            server_date = parsedate_to_datetime(value)
            if server_date.tzinfo is None:  # "-0000": UTC by RFC 5322
                server_date = server_date.replace(tzinfo=UTC)
            server_time = server_date.timestamp() + 0.5
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self.server_clock_offset = server_time - time.time()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay: float = min(self._backoff_max, self._backoff_base * (2**attempt))
        delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not cryptography
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._backoff_max))
        return delay


def _error_of(response: requests.Response) -> TallyError:
    try:
        body: object = response.json()
    except ValueError:
        body = None
    return error_from_body(
        response.status_code, body, f"HTTP {response.status_code} {response.reason or ''}".strip()
    )


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
