"""A fake of Tally's functions on a real local HTTP server (pytest-httpserver)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

FUNCTIONS = ("record_steps", "reserve_spend", "release_spend", "my_usage")
PREFIX = "/tally"


@dataclass
class Received:
    """One request the fake got."""

    name: str
    body: Any
    raw: bytes
    headers: dict[str, str]


@dataclass
class FakeTally:
    """Answers like Tally's functions; records every request; can inject failures."""

    server: HTTPServer
    received: list[Received] = field(default_factory=list)
    injected: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    valid_tokens: set[str] | None = None
    reserve_answer: dict[str, Any] | None = None
    seen_operations: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Return the functions URL to give Tally."""
        return self.server.url_for(PREFIX)

    def install(self) -> None:
        """Register a handler per function."""
        for name in FUNCTIONS:
            self.server.expect_request(f"{PREFIX}/{name}", method="POST").respond_with_handler(
                self._handler(name)
            )

    def inject(self, name: str, status: int, payload: Any = None, *, times: int = 1) -> None:
        """Answer the next `times` requests to `name` with `status` and `payload`."""
        self.injected.setdefault(name, []).extend([(status, payload)] * times)

    def bodies(self, name: str = "record_steps") -> list[Any]:
        """Return the JSON bodies `name` received, in order."""
        return [r.body for r in self.received if r.name == name]

    def steps(self) -> list[dict[str, Any]]:
        """Return every step record_steps received (duplicates included)."""
        return [step for body in self.bodies() for step in body["steps"]]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.01)

    def _handler(self, name: str) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            raw = request.get_data()
            with self.lock:
                self.received.append(Received(name, json.loads(raw), raw, dict(request.headers)))
                token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
                if self.valid_tokens is not None and token not in self.valid_tokens:
                    return _json(401, error_body("UNAUTHENTICATED", "the ID token has expired"))
                queue = self.injected.get(name)
                if queue:
                    status, payload = queue.pop(0)
                    return _json(status, payload)
                return _json(200, self._answer(name, json.loads(raw)))

        return handle

    def _answer(self, name: str, body: Any) -> Any:
        if name == "record_steps":
            new = [s for s in body["steps"] if s["operationId"] not in self.seen_operations]
            self.seen_operations.update(s["operationId"] for s in body["steps"])
            session = body.get("session")
            return {
                "recorded": len(new),
                "duplicates": len(body["steps"]) - len(new),
                "session": (
                    {"id": session["id"], "status": "completed" if session.get("complete") else "active"}
                    if session
                    else None
                ),
                "usage": {"month": "2026-11", "totalCost": 0.0},
                "warnings": [],
            }
        if name == "reserve_spend":
            answer = self.reserve_answer or {
                "allowed": True,
                "reserved": 0.05,
                "expiresAt": "2026-11-14T10:09:09.794Z",
                "reason": None,
                "usage": {"month": "2026-11", "totalCost": 1.25},
            }
            return {"reservationId": body["reservationId"], **answer}
        if name == "release_spend":
            return {"released": True}
        return {"result": {"month": "2026-11", "totalCost": 0.0, "apiCalls": 0}}


def error_body(status: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Return an error envelope like the server's."""
    return {"error": {"status": status, "message": message, "details": details or []}}


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")
