"""A fake of Tally's functions on a real local HTTP server (pytest-httpserver)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

FUNCTIONS = ("record_steps", "reserve_spend", "release_spend", "my_usage")
PREFIX = "/tally"
MAX_BODY_BYTES = 256 * 1024
MAX_STEPS = 100
MAX_NAMES = 20


@dataclass
class Received:
    """One request the fake got."""

    name: str
    body: Any
    raw: bytes
    headers: dict[str, str]


@dataclass
class FakeTally:
    """Answers like Tally's functions; records every request; can inject failures.

    Like the server, `record_steps` refuses a request over a per-request bound (413 over
    256 KiB; 400 over 100 steps, 20 distinct features, providers or `units.model`, or a
    repeated operation id), a step named in `bad_operations` (400 naming `steps[i]`),
    with `check_timestamps` a step timestamp more than 5 minutes ahead of its clock
    (`clock_offset` seconds ahead of the real one, also in the `Date` header), and new
    steps for a session in `completed_sessions` (409). A refused request records nothing.
    """

    server: HTTPServer
    received: list[Received] = field(default_factory=list)
    injected: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    valid_tokens: set[str] | None = None
    reserve_answer: dict[str, Any] | None = None
    seen_operations: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every accepted step by operation id, with `_session` (its session id or None) added."""
    completed_sessions: set[str] = field(default_factory=set)
    bad_operations: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Operation ids the fake refuses: (field under the step, problem)."""
    check_timestamps: bool = False
    clock_offset: float = 0.0
    date_header: str | None = None
    """A `Date` header to send instead of the fake's clock (e.g. an unreadable one)."""

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

    def now(self) -> datetime:
        """Return the fake server's clock."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset)

    def http_date(self) -> str:
        """Return the `Date` header the fake sends."""
        return self.date_header if self.date_header is not None else format_datetime(self.now(), usegmt=True)

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
                if name == "record_steps":
                    refusal = self._refusal(raw, json.loads(raw))
                    if refusal is not None:
                        return _json(*refusal)
                return _json(200, self._answer(name, json.loads(raw)))

        return handle

    def _refusal(self, raw: bytes, body: Any) -> tuple[int, Any] | None:
        """Return the server's refusal of a `record_steps` request, or None if it is accepted."""
        if len(raw) > MAX_BODY_BYTES:
            return 413, error_body(
                "PAYLOAD_TOO_LARGE", f"request body must be at most {MAX_BODY_BYTES} bytes"
            )
        steps: list[dict[str, Any]] = body["steps"]
        if len(steps) > MAX_STEPS:
            problem = f"must hold at most {MAX_STEPS} steps (got {len(steps)})"
            return 400, error_body(
                "INVALID_ARGUMENT", f"steps: {problem}", [{"field": "steps", "problem": problem}]
            )
        problems: list[dict[str, str]] = []
        now = self.now()
        for index, step in enumerate(steps):
            if step["operationId"] in self.bad_operations:
                where, problem = self.bad_operations[step["operationId"]]
                problems.append({"field": f"steps[{index}].{where}", "problem": problem})
            if self.check_timestamps and isinstance(step.get("timestamp"), str):
                instant = datetime.fromisoformat(step["timestamp"])
                if instant > now + timedelta(minutes=5):
                    problem = "must not be more than 5 minutes in the future"
                    problems.append({"field": f"steps[{index}].timestamp", "problem": problem})
        if not problems:
            problems = _bound_problems(steps)
        if problems:
            message = f"{problems[0]['field']}: {problems[0]['problem']}"
            return 400, error_body("INVALID_ARGUMENT", message, problems)
        session = body.get("session")
        new = [s for s in steps if s["operationId"] not in self.seen_operations]
        if session and session["id"] in self.completed_sessions and new:
            message = f"session {session['id']} is completed; it accepts no new steps"
            return 409, error_body("FAILED_PRECONDITION", message)
        return None

    def _answer(self, name: str, body: Any) -> Any:
        if name == "record_steps":
            new = [s for s in body["steps"] if s["operationId"] not in self.seen_operations]
            self.seen_operations.update(s["operationId"] for s in body["steps"])
            session = body.get("session")
            for step in new:
                self.recorded[step["operationId"]] = {**step, "_session": session["id"] if session else None}
            if session and session.get("complete"):
                self.completed_sessions.add(session["id"])
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


def _bound_problems(steps: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Return the server's problem with repeated operation ids or too many distinct names, if any."""
    seen: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step["operationId"] in seen:
            problem = f"repeats steps[{seen[step['operationId']]}].operationId"
            return [{"field": f"steps[{index}].operationId", "problem": problem}]
        seen[step["operationId"]] = index
    for kind in ("feature", "provider", "units.model"):
        names: set[str] = set()
        for index, step in enumerate(steps):
            name = (step.get("units") or {}).get("model") if kind == "units.model" else step[kind]
            if name is None:
                continue
            names.add(name)
            if len(names) > MAX_NAMES:
                plural = kind.split(".")[-1] + "s"
                problem = (
                    f"a request may name at most {MAX_NAMES} distinct {plural}; send the others in another"
                )
                return [{"field": f"steps[{index}].{kind}", "problem": problem}]
    return []


def error_body(status: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Return an error envelope like the server's."""
    return {"error": {"status": status, "message": message, "details": details or []}}


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")
