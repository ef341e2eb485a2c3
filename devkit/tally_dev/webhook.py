"""A webhook receiver for alerts (a real local HTTP server): verifies signatures, records deliveries.

`scripts/with-emulators` tells the functions to POST alerts to `TALLY_WEBHOOK_PORT` on this
machine; the tests and the demo run this receiver there. It can be told to fail the first
few deliveries of an alert (HTTP 500), to prove the retries, or to answer them with a
redirect, to prove that a redirect is a failed delivery and is never followed: it answers a
GET or HEAD (what a client following a redirect sends) with a page and 200, as a sign-in
page would, and records it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEBHOOK_PATH = "/tally-alerts"


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got."""

    alert_id: str
    body: dict[str, Any]
    signature_valid: bool
    answered: int
    path: str = WEBHOOK_PATH


@dataclass(frozen=True)
class Visit:
    """A GET or HEAD the receiver got (a client following a redirect sends one)."""

    method: str
    path: str
    alert_id: str


@dataclass
class _Script:
    """How to answer the next deliveries: `left` more times with `status` (and `location`)."""

    left: int
    status: int
    location: str | None = None


def valid_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Return whether `X-Tally-Signature` is the HMAC-SHA256 of the raw body with the secret."""
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(expected, header)


class Receiver:
    """A running receiver: `deliveries` (POSTs) and `visits` (GETs and HEADs) in arrival order."""

    def __init__(
        self, *, port: int, secret: str, on_delivery: Callable[[Delivery], None] | None = None
    ) -> None:
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self.visits: list[Visit] = []
        self._scripts: dict[str, _Script] = {}
        self._lock = threading.Lock()
        self._on_delivery = on_delivery
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                alert_id = self.headers.get("X-Tally-Alert-Id", "")
                status, location = receiver._answer(alert_id)
                delivery = Delivery(
                    alert_id=alert_id,
                    body=json.loads(raw or b"{}"),
                    signature_valid=valid_signature(
                        receiver.secret, raw, self.headers.get("X-Tally-Signature")
                    ),
                    answered=status,
                    path=self.path,
                )
                with receiver._lock:
                    receiver.deliveries.append(delivery)
                if receiver._on_delivery is not None:
                    receiver._on_delivery(delivery)
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _visit(self) -> None:
                with receiver._lock:
                    receiver.visits.append(
                        Visit(self.command, self.path, self.headers.get("X-Tally-Alert-Id", ""))
                    )
                page = b"<html><body>Sign in</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(page)

            def do_GET(self) -> None:
                self._visit()

            def do_HEAD(self) -> None:
                self._visit()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Return the URL deliveries are POSTed to (the port is the one bound, also when asked for 0)."""
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def _answer(self, alert_id: str) -> tuple[int, str | None]:
        with self._lock:
            key = alert_id if alert_id in self._scripts else "*"
            script = self._scripts.get(key)
            if script is None or script.left <= 0:
                return 204, None
            script.left -= 1
            return script.status, script.location

    def fail_next(self, count: int, alert_id: str = "*") -> None:
        """Answer 500 to the next `count` deliveries (of one alert, or of any)."""
        with self._lock:
            self._scripts[alert_id] = _Script(count, 500)

    def redirect_next(self, count: int, location: str, alert_id: str = "*", *, status: int = 302) -> None:
        """Answer the next `count` deliveries (of one alert, or of any) with a redirect to `location`."""
        with self._lock:
            self._scripts[alert_id] = _Script(count, status, location)

    def received(self, alert_id: str) -> list[Delivery]:
        """Return the deliveries of one alert."""
        with self._lock:
            return [d for d in self.deliveries if d.alert_id == alert_id]

    def wait_for(self, alert_id: str, *, answered: int = 204, timeout: float = 30.0) -> list[Delivery]:
        """Wait until an alert was delivered and answered `answered`; return its deliveries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(alert_id)
            if any(d.answered == answered for d in found):
                return found
            time.sleep(0.05)
        found = self.received(alert_id)
        raise AssertionError(f"alert {alert_id} was not delivered within {timeout} s: {found}")

    def clear(self) -> None:
        """Forget the deliveries, the visits and the scripted answers."""
        with self._lock:
            self.deliveries.clear()
            self.visits.clear()
            self._scripts.clear()

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()


def from_environment(on_delivery: Callable[[Delivery], None] | None = None) -> Receiver:
    """Start the receiver where scripts/with-emulators told the functions to deliver."""
    port = int(os.environ["TALLY_WEBHOOK_PORT"])
    secret = os.environ["TALLY_ALERT_WEBHOOK_SECRET"]
    return Receiver(port=port, secret=secret, on_delivery=on_delivery)
