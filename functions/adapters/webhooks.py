"""Alert webhooks over HTTP: one POST, no redirect followed, the URL's host only in logs."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import IO

from firebase_functions import logger

from tally.services import alerts


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
