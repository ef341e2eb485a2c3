"""The Tally client: a thread-safe queue of steps, batched within the SPEC's limits, sessions and the gate."""

from __future__ import annotations

import atexit
import contextvars
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import requests

from tally_client import _values as v
from tally_client._transport import TokenSource, Transport
from tally_client.errors import (
    BudgetExceeded,
    InvalidArgument,
    QueueFull,
    TallyError,
    Unavailable,
)

__all__ = [
    "OnRefused",
    "Refusal",
    "Reservation",
    "Session",
    "Tally",
    "current_reservation",
    "current_session",
]

logger = logging.getLogger("tally_client")

MAX_BODY_BYTES = 256 * 1024
"""Bytes of JSON a `record_steps` request may hold (the server refuses more); bodies are measured exactly."""

CLOCK_SKEW_TOLERANCE = 60.0
"""Seconds this machine's clock may be off the server's before the client stamps steps by the server's."""

MAX_CLOCK_FIXES = 2
"""Resends of a step whose client-made timestamp was refused (by the server's clock, then without one)."""

MAX_COMPLETED_SESSIONS = 1024
"""Sessions the server said were completed meanwhile that the client remembers (their steps go standalone)."""

OnRefused = Callable[[list[dict[str, Any]], TallyError], None]
"""The `on_refused` callback: the refused steps (as sent) and the server's error."""

_GroupKey = tuple[str | None, str | None]  # (userId, session id)
_STEP_FIELD = re.compile(r"steps\[(\d+)\](?:\.(.+))?")
_BOUND_PROBLEM = re.compile(r"distinct|at most \d+ steps", re.IGNORECASE)
_COMPLETED_SESSION = re.compile(r"\bcompleted\b|accepts no new steps", re.IGNORECASE)

_current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "tally_current_session", default=None
)
_current_reservation: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar(
    "tally_current_reservation", default=None
)


def current_session() -> Session | None:
    """Return the session of the innermost `with tally.session(...)` block, if any."""
    return _current_session.get()


def current_reservation() -> Reservation | None:
    """Return the reservation of the innermost `with tally.reserve(...)` block, if any."""
    return _current_reservation.get()


@dataclass(frozen=True)
class Refusal:
    """Steps the server refused for good: what was sent (`steps`), why (`error`), and for whom."""

    steps: list[dict[str, Any]]
    error: TallyError
    user_id: str | None
    session_id: str | None


@dataclass
class _Pending:
    """One checked step as sent; `stamped_at`: this machine's clock when the client stamped it (else None)."""

    body: dict[str, Any]
    size: int
    stamped_at: datetime | None = None
    clock_fixes: int = 0

    @classmethod
    def of(cls, body: dict[str, Any], stamped_at: datetime | None = None, clock_fixes: int = 0) -> _Pending:
        """Return the pending step for `body`, measuring its JSON."""
        return cls(body, len(v.encode(body)), stamped_at, clock_fixes)


@dataclass
class _Group:
    """Unsent steps of one user in one session (or standalone), oldest first."""

    user_id: str | None
    session_id: str | None
    session_feature: str | None
    steps: list[_Pending] = field(default_factory=list)
    complete: bool = False


@dataclass
class _Batch:
    """One `record_steps` request within every per-request bound (steps, names, models, bytes)."""

    key: _GroupKey
    group: _Group
    steps: list[_Pending]
    complete: bool

    def body(self) -> dict[str, Any]:
        """Return the request body."""
        body: dict[str, Any] = {}
        if self.group.user_id is not None:
            body["userId"] = self.group.user_id
        if self.group.session_id is not None:
            session: dict[str, Any] = {"id": self.group.session_id, "complete": self.complete}
            if self.group.session_feature is not None:
                session["feature"] = self.group.session_feature
            body["session"] = session
        body["steps"] = [step.body for step in self.steps]
        return body


def _model_of(step: _Pending) -> str | None:
    units = step.body.get("units")
    return units.get("model") if isinstance(units, Mapping) else None


def split_batches(key: _GroupKey, group: _Group) -> list[_Batch]:
    """Split a group's steps into requests within every per-request bound; the last one carries `complete`.

    A request holds at most 100 steps, 20 distinct features, 20 distinct providers, 20
    distinct `units.model`, one step per operation id, and MAX_BODY_BYTES of JSON
    (measured exactly: the envelope, each step's JSON and the commas between them).
    """
    envelope = len(v.encode(_Batch(key, group, [], complete=False).body()))  # "false" outweighs "true"
    batches: list[_Batch] = []
    current: list[_Pending] = []
    features: set[str] = set()
    providers: set[str] = set()
    models: set[str] = set()
    operations: set[str] = set()
    size = envelope
    for step in group.steps:
        feature, provider, model = step.body["feature"], step.body["provider"], _model_of(step)
        operation = step.body["operationId"]
        new_features = features | {feature}
        new_providers = providers | {provider}
        new_models = (models | {model}) if model is not None else models
        if current and (
            len(current) >= v.MAX_STEPS
            or len(new_features) > v.MAX_NAMES
            or len(new_providers) > v.MAX_NAMES
            or len(new_models) > v.MAX_NAMES
            or operation in operations
            or size + 1 + step.size > MAX_BODY_BYTES
        ):
            batches.append(_Batch(key, group, current, complete=False))
            current, operations, size = [], set(), envelope
            new_features, new_providers = {feature}, {provider}
            new_models = {model} if model is not None else set()
        size += step.size + (1 if current else 0)
        current.append(step)
        operations.add(operation)
        features, providers, models = new_features, new_providers, new_models
    if current or group.complete:
        batches.append(_Batch(key, group, current, complete=False))
    if batches and group.complete:
        batches[-1].complete = True
    return batches


def _metadata_with_session(metadata: Mapping[str, Any], session_id: str) -> dict[str, Any]:
    """Return metadata holding `session_id` (as `sessionId`) within 4 KiB, dropping last keys if needed."""
    key = "sessionId" if metadata.get("sessionId") in (None, session_id) else "tallySessionId"
    kept = [(name, value) for name, value in metadata.items() if name != key]
    merged: dict[str, Any] = {key: session_id, **dict(kept)}
    while len(v.encode(merged)) > v.MAX_METADATA_BYTES:
        kept.pop()
        merged = {key: session_id, "metadataTruncated": True, **dict(kept)}
    return merged


def _standalone_batches(batch: _Batch) -> list[_Batch]:
    """Return a session batch's steps as standalone requests (same operation ids, session id in metadata)."""
    session_id = batch.group.session_id
    if session_id is None:
        return [batch]
    steps = [
        _Pending.of(
            {**step.body, "metadata": _metadata_with_session(step.body.get("metadata") or {}, session_id)},
            step.stamped_at,
            step.clock_fixes,
        )
        for step in batch.steps
    ]
    group = _Group(user_id=batch.group.user_id, session_id=None, session_feature=None, steps=steps)
    return split_batches((group.user_id, None), group)


def _bad_steps(error: TallyError, count: int) -> dict[int, set[str]] | None:
    """Return the fields a 400 names per step index, or None if it names no step or anything else too."""
    if not isinstance(error, InvalidArgument) or not error.details:
        return None
    bad: dict[int, set[str]] = {}
    for detail in error.details:
        match = _STEP_FIELD.fullmatch(str(detail.get("field", "")))
        if match is None or int(match.group(1)) >= count:
            return None
        bad.setdefault(int(match.group(1)), set()).add(match.group(2) or "")
    return bad


def _over_a_bound(error: TallyError) -> bool:
    """Return whether the server refused a request for its size or its number of steps or names."""
    if error.http_status == 413:
        return True
    return (
        isinstance(error, InvalidArgument)
        and bool(error.details)
        and all(_BOUND_PROBLEM.search(str(detail.get("problem", ""))) for detail in error.details)
    )


def _session_was_completed(batch: _Batch, error: TallyError) -> bool:
    """Return whether a session batch was refused because its session was completed meanwhile (409)."""
    return (
        error.http_status == 409
        and error.status == "FAILED_PRECONDITION"
        and batch.group.session_id is not None
        and bool(batch.steps)
        and _COMPLETED_SESSION.search(error.message) is not None
    )


class Tally:
    """Record paid calls to Tally's functions; thread-safe; use one per process (or per caller identity).

    `record()` and `Session.step()` only queue a step (they never do network I/O); a
    background thread sends the queue every `flush_interval` seconds and as soon as 100
    steps wait; `flush()`, `close()`, the end of a session and the end of a reservation
    send at once. Each step gets its `operationId` when it is queued, and a retried
    request resends the very same bytes, so nothing is counted twice.

    No step is dropped silently: a step whose session was completed meanwhile (409) is
    recorded again as a standalone step; a step the server refuses for good is logged at
    error level, handed to `on_refused` and kept in `refused` until `take_refused()`; the
    other steps of its request are still recorded.
    """

    def __init__(
        self,
        functions_url: str,
        *,
        id_token: TokenSource,
        app_check_token: TokenSource | None = None,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        flush_interval: float | None = 5.0,
        session: requests.Session | None = None,
        max_queued_steps: int = 100_000,
        sleep: Callable[[float], None] = time.sleep,
        on_refused: OnRefused | None = None,
        max_refused_steps: int = 10_000,
    ) -> None:
        """Configure the client; nothing is sent and no thread starts until the first step.

        `functions_url` is the base of the functions, e.g.
        `https://us-central1-PROJECT.cloudfunctions.net` or the emulator's
        `http://127.0.0.1:5001/demo-tally/us-central1`. `id_token` returns a current Firebase
        ID token; it is called before every request (cache inside it if fetching is costly)
        and once more after a 401, before the one retry. `app_check_token`, if given, is sent
        as `X-Firebase-AppCheck`. Network errors, 5xx and 429 are retried `max_retries` times
        after `backoff_base * 2**n` seconds (capped at `backoff_max`, jittered). With
        `flush_interval=None` the background thread only sends full batches.
        `on_refused(steps, error)` is called (on the thread that sent them) with the steps the
        server refused for good; `refused` keeps them too, up to `max_refused_steps` steps
        (the oldest go first, logged) until `take_refused()` reads them.
        """
        if flush_interval is not None and flush_interval <= 0:
            raise ValueError("flush_interval must be > 0 or None")
        self._transport = Transport(
            functions_url,
            id_token=id_token,
            app_check_token=app_check_token,
            timeout=timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            http=session,
            sleep=sleep,
        )
        self._flush_interval = flush_interval
        self._max_queued = max_queued_steps
        self._lock = threading.RLock()  # re-entrant: close() may run in a signal handler on this thread
        self._wakeup = threading.Condition(self._lock)
        self._send_lock = threading.RLock()
        self._groups: dict[_GroupKey, _Group] = {}
        self._queued = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pause_until = 0.0
        self._on_refused = on_refused
        self._max_refused = max_refused_steps
        self._refused: list[Refusal] = []
        self._refused_steps = 0
        self._completed_sessions: OrderedDict[_GroupKey, None] = OrderedDict()  # guarded by _send_lock
        atexit.register(self.close)

    @property
    def functions_url(self) -> str:
        """Return the base URL of the functions."""
        return self._transport.base_url

    @property
    def pending(self) -> int:
        """Return how many steps are queued and not yet acknowledged by the server."""
        with self._lock:
            return self._queued

    @property
    def refused(self) -> list[Refusal]:
        """Return what the server refused for good, oldest first; kept until `take_refused()`."""
        with self._lock:
            return list(self._refused)

    def take_refused(self) -> list[Refusal]:
        """Return what the server refused for good, oldest first, and forget it."""
        with self._lock:
            taken, self._refused, self._refused_steps = self._refused, [], 0
            return taken

    # --- recording ---------------------------------------------------------------

    def record(
        self,
        *,
        feature: str,
        provider: str,
        cost: v.Money | None = None,
        units: Mapping[str, Any] | None = None,
        usage_type: str | None = None,
        is_billable_run: bool = False,
        timestamp: v.Timestamp | None = None,
        metadata: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        operation_id: str | None = None,
        reservation_id: str | None = None,
    ) -> str:
        """Queue one standalone step and return its operation id (sent later, see the class doc).

        Give `cost` (USD: Decimal, decimal string, int, or float converted through its
        repr), or `units` (`{"model", "inputTokens", ...}`, priced by Tally), or both.
        `usage_type` defaults to `AI` when `units` are given, else `API`. `timestamp`
        defaults to now (the client's clock, so a step queued for a while keeps its
        time). `user_id` is needed only by `recorder`/`admin` callers recording for
        someone else. Invalid values raise InvalidArgument here, before anything is queued.
        """
        return self._enqueue(
            user_id=user_id,
            session=None,
            feature=feature,
            provider=provider,
            cost=cost,
            units=units,
            usage_type=usage_type,
            is_billable_run=is_billable_run,
            timestamp=timestamp,
            metadata=metadata,
            operation_id=operation_id,
            reservation_id=reservation_id,
        )

    def session(
        self, *, feature: str | None = None, user_id: str | None = None, session_id: str | None = None
    ) -> Session:
        """Return a new session (use it as a context manager: it is completed on exit)."""
        return Session(self, feature=feature, user_id=user_id, session_id=session_id)

    def reserve(
        self,
        *,
        estimate: v.Money | Mapping[str, Any],
        user_id: str | None = None,
        is_billable_run: bool = False,
        ttl_seconds: int = 300,
        reservation_id: str | None = None,
        provider: str | None = None,
        feature: str | None = None,
    ) -> Reservation:
        """Hold `estimate` (a cost or a units dict) on the user's budget now, or raise BudgetExceeded.

        `provider` and `feature` go into the estimate (`estimate.provider`, `estimate.feature`):
        Tally prices a units estimate at that provider's price (without one it cannot, and
        refuses it as `UNPRICED`) and checks the user's limits for that feature. They are
        also the defaults of the reservation's `record()`.
        """
        return Reservation._open(
            self,
            session=None,
            estimate=estimate,
            user_id=user_id,
            is_billable_run=is_billable_run,
            ttl_seconds=ttl_seconds,
            reservation_id=reservation_id,
            provider=provider,
            feature=feature,
        )

    def my_usage(self, *, month: str | None = None, user_id: str | None = None) -> dict[str, Any]:
        """Return the caller's usage for a month (`my_usage` callable; `user_id` for admins only)."""
        data: dict[str, Any] = {}
        if month is not None:
            data["month"] = month
        if user_id is not None:
            data["userId"] = v.check_user_id("userId", user_id)
        result = self._transport.call("my_usage", data)
        if not isinstance(result, dict):
            raise Unavailable("my_usage returned something that is not an object")
        return result

    # --- sending -----------------------------------------------------------------

    def flush(self) -> list[dict[str, Any]]:
        """Send every queued step now and return the server's responses, one per request.

        A transient failure (Unavailable, after the retries) keeps the unsent steps queued
        for the next flush and is raised at once. A refusal (4xx) removes only the refused
        steps (logged, handed to `on_refused`, kept in `refused`, and on the error as
        `.steps`); the other steps are still sent, and then the first refusal's error is raised.
        """
        return self._flush(None)

    def close(self) -> None:
        """Stop the background thread and send what is queued; log (never raise) what could not be sent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wakeup.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        try:
            self._flush(None)
        except Unavailable as exc:
            logger.error("tally: close() could not send every step: %s", exc)
        except TallyError:
            pass  # refused steps are logged, handed to on_refused and kept in `refused` already
        except Exception as exc:  # noqa: BLE001 - close() runs at exit and must not raise
            logger.error("tally: close() could not send every step: %s", exc)
        left = self.pending
        if left:
            logger.error("tally: %d step(s) were never acknowledged by the server and are lost", left)
        self._transport.close()
        atexit.unregister(self.close)

    def __enter__(self) -> Self:
        """Return self."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the client (send what is queued)."""
        self.close()

    # --- internals ---------------------------------------------------------------

    def _post(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._transport.post(name, body)

    def _enqueue(
        self,
        *,
        user_id: str | None,
        session: Session | None,
        feature: str,
        provider: str,
        cost: v.Money | None,
        units: Mapping[str, Any] | None,
        usage_type: str | None,
        is_billable_run: bool,
        timestamp: v.Timestamp | None,
        metadata: Mapping[str, Any] | None,
        operation_id: str | None,
        reservation_id: str | None,
    ) -> str:
        stamped_at = datetime.now(UTC) if timestamp is None else None
        step = _step_body(
            feature=feature,
            provider=provider,
            cost=cost,
            units=units,
            usage_type=usage_type,
            is_billable_run=is_billable_run,
            timestamp=timestamp if stamped_at is None else stamped_at + self._clock_skew(),
            metadata=metadata,
            operation_id=operation_id,
            reservation_id=reservation_id,
        )
        if user_id is not None:
            v.check_user_id("userId", user_id)
        key: _GroupKey = (user_id, session.id if session is not None else None)
        with self._lock:
            if self._closed:
                raise TallyError("this Tally client is closed", status="FAILED_PRECONDITION")
            if session is not None and session.completed:
                raise TallyError(f"session {session.id} is already completed", status="FAILED_PRECONDITION")
            if self._queued >= self._max_queued:
                raise QueueFull(f"{self._queued} steps are waiting to be sent (max_queued_steps)")
            group = self._groups.get(key)
            if group is None:
                group = _Group(
                    user_id=user_id,
                    session_id=key[1],
                    session_feature=session.feature if session is not None else None,
                )
                self._groups[key] = group
            group.steps.append(_Pending.of(step, stamped_at))
            self._queued += 1
            if session is not None:
                session._steps += 1
            self._start_thread_locked()
            if self._queued >= v.MAX_STEPS:
                self._wakeup.notify_all()
        return str(step["operationId"])

    def _clock_skew(self) -> timedelta:
        """Return how far the server's clock is ahead of this machine's, if more than CLOCK_SKEW_TOLERANCE."""
        offset = self._transport.server_clock_offset
        if offset is None or abs(offset) <= CLOCK_SKEW_TOLERANCE:
            return timedelta(0)
        return timedelta(seconds=offset)

    def _start_thread_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tally-flush", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """Send the queue every flush_interval seconds, or as soon as a full batch waits."""
        while True:
            with self._lock:
                deadline = (
                    None
                    if self._flush_interval is None
                    else max(time.monotonic() + self._flush_interval, self._pause_until)
                )
                while not self._closed:
                    now = time.monotonic()
                    full = self._queued >= v.MAX_STEPS
                    if full and now >= self._pause_until:
                        break
                    if deadline is not None and now >= deadline:
                        break
                    waits = [deadline - now] if deadline is not None else []
                    if full:
                        waits.append(self._pause_until - now)
                    self._wakeup.wait(min(waits) if waits else None)
                if self._closed:
                    return
                if not self._groups:
                    continue
            try:
                self._flush(None)
            except Unavailable as exc:
                logger.warning("tally: background flush failed, steps kept for the next one: %s", exc)
                with self._lock:
                    self._pause_until = time.monotonic() + (self._flush_interval or 1.0)
            except TallyError:
                pass  # refused steps are logged, handed to on_refused and kept in `refused` already
            except Exception:
                logger.exception("tally: background flush failed unexpectedly")
                with self._lock:
                    self._pause_until = time.monotonic() + (self._flush_interval or 1.0)

    def _flush(self, keys: set[_GroupKey] | None) -> list[dict[str, Any]]:
        """Send the groups named by `keys` (every group if None); then hand refusals to on_refused."""
        handed: list[Refusal] = []
        try:
            return self._send(keys, handed)
        finally:
            for refusal in handed:
                self._call_on_refused(refusal)

    def _send(self, keys: set[_GroupKey] | None, handed: list[Refusal]) -> list[dict[str, Any]]:
        """Send the groups' batches in order, recovering what a refusal allows; raise the first refusal."""
        with self._send_lock:
            with self._lock:
                taken = [
                    (key, self._groups.pop(key)) for key in list(self._groups) if keys is None or key in keys
                ]
            work = deque(batch for key, group in taken for batch in split_batches(key, group))
            responses: list[dict[str, Any]] = []
            errors: list[TallyError] = []
            while work:
                batch = work.popleft()
                if batch.key[1] is not None and batch.key in self._completed_sessions:
                    work.extendleft(reversed(_standalone_batches(batch)))
                    continue
                try:
                    response = self._post("record_steps", batch.body())
                except Unavailable:
                    self._requeue([batch, *work])
                    raise
                except TallyError as exc:
                    work.extendleft(reversed(self._after_refusal(batch, exc, handed, errors)))
                    continue
                except BaseException:
                    self._requeue([batch, *work])
                    raise
                self._drop(len(batch.steps))
                warnings = response.get("warnings")
                if warnings:
                    logger.warning("tally: record_steps warnings: %s", warnings)
                responses.append(response)
            if errors:
                raise errors[0]
            return responses

    def _after_refusal(
        self,
        batch: _Batch,
        error: TallyError,
        handed: list[Refusal],
        errors: list[TallyError],
    ) -> list[_Batch]:
        """Handle a refused batch (nothing of it was written); return the batches to send instead."""
        if _session_was_completed(batch, error):
            self._completed_sessions[batch.key] = None  # for good: its later steps go standalone at once
            while len(self._completed_sessions) > MAX_COMPLETED_SESSIONS:
                self._completed_sessions.popitem(last=False)
            logger.warning(
                "tally: session %s was completed meanwhile (%s); recording its %d step(s) as standalone",
                batch.group.session_id,
                error,
                len(batch.steps),
            )
            return _standalone_batches(batch)
        if len(batch.steps) > 1 and _over_a_bound(error):
            logger.warning(
                "tally: record_steps refused a batch of %d steps (%s); splitting it", len(batch.steps), error
            )
            half = len(batch.steps) // 2
            return [
                _Batch(batch.key, batch.group, batch.steps[:half], complete=False),
                _Batch(batch.key, batch.group, batch.steps[half:], complete=batch.complete),
            ]
        bad = _bad_steps(error, len(batch.steps))
        if bad is None:
            self._refuse(batch, batch.steps, error, handed, errors)
            return []
        kept: list[_Pending] = []
        refused: list[_Pending] = []
        for index, step in enumerate(batch.steps):
            if index not in bad:
                kept.append(step)
            elif (
                bad[index] == {"timestamp"}
                and step.stamped_at is not None
                and step.clock_fixes < MAX_CLOCK_FIXES
            ):
                kept.append(self._restamp(step, error))
            else:
                refused.append(step)
        if refused:
            self._refuse(batch, refused, error, handed, errors)
        if not kept and not batch.complete:
            return []
        group = batch.group
        rest = _Group(group.user_id, group.session_id, group.session_feature, kept, complete=batch.complete)
        return split_batches(batch.key, rest)

    def _restamp(self, step: _Pending, error: TallyError) -> _Pending:
        """Return a step the client stamped, stamped by the server's clock (`Date`), or else unstamped."""
        assert step.stamped_at is not None
        offset = self._transport.server_clock_offset
        body = dict(step.body)
        if step.clock_fixes == 0 and offset is not None:
            body["timestamp"] = v.utc_iso(step.stamped_at + timedelta(seconds=offset))
            logger.warning(
                "tally: the server refused the timestamp of step %s (%s); this machine's clock is %.1f s "
                "off the server's: resending it at %s",
                body["operationId"],
                error,
                -offset,
                body["timestamp"],
            )
        else:
            body.pop("timestamp", None)
            logger.warning(
                "tally: the server refused the timestamp of step %s again (%s); resending it without one "
                "(the server's time)",
                body["operationId"],
                error,
            )
        return _Pending.of(body, step.stamped_at, step.clock_fixes + 1)

    def _refuse(
        self,
        batch: _Batch,
        steps: list[_Pending],
        error: TallyError,
        handed: list[Refusal],
        errors: list[TallyError],
    ) -> None:
        """Give up on `steps`: log them, keep them in `refused`, and queue them for on_refused."""
        user_id, session_id = batch.group.user_id, batch.group.session_id
        error.steps = [step.body for step in steps]
        error.user_id, error.session_id = user_id, session_id
        errors.append(error)
        self._drop(len(steps))
        if not steps:
            logger.error("tally: record_steps refused to complete session %s: %s", session_id, error)
            return
        ids = [str(step.body["operationId"]) for step in steps]
        logger.error(
            "tally: record_steps refused %d step(s) (user %s, session %s): %s; operation ids: %s%s",
            len(steps),
            user_id or "(the caller)",
            session_id or "(none)",
            error,
            ", ".join(ids[:10]),
            f" and {len(ids) - 10} more" if len(ids) > 10 else "",
        )
        refusal = Refusal(steps=list(error.steps), error=error, user_id=user_id, session_id=session_id)
        handed.append(refusal)
        with self._lock:
            self._refused.append(refusal)
            self._refused_steps += len(refusal.steps)
            while self._refused and self._refused_steps > self._max_refused:
                oldest = self._refused.pop(0)
                self._refused_steps -= len(oldest.steps)
                logger.error(
                    "tally: %d refused step(s) were never read from `refused` and are forgotten "
                    "(max_refused_steps=%d); operation ids: %s",
                    len(oldest.steps),
                    self._max_refused,
                    ", ".join(str(step.get("operationId")) for step in oldest.steps[:10]),
                )

    def _call_on_refused(self, refusal: Refusal) -> None:
        """Hand a refusal to the application's callback; log (never raise) if it fails."""
        if self._on_refused is None:
            return
        try:
            self._on_refused(list(refusal.steps), refusal.error)
        except Exception:
            logger.exception("tally: the on_refused callback raised (the refusal stays in `refused`)")

    def _drop(self, count: int) -> None:
        with self._lock:
            self._queued -= count

    def _requeue(self, batches: list[_Batch]) -> None:
        """Put unsent batches back at the front of their groups, keeping their order and `complete`."""
        with self._lock:
            for batch in reversed(batches):
                group = self._groups.get(batch.key)
                if group is None:
                    group = batch.group
                    group.steps = []
                    group.complete = False
                    self._groups[batch.key] = group
                group.steps[0:0] = batch.steps
                group.complete = group.complete or batch.complete

    def _request_completion(self, session: Session) -> None:
        with self._lock:
            key: _GroupKey = (session.user_id, session.id)
            group = self._groups.get(key)
            if group is None:
                group = _Group(
                    user_id=session.user_id, session_id=session.id, session_feature=session.feature
                )
                self._groups[key] = group
            group.complete = True


def _step_body(
    *,
    feature: str,
    provider: str,
    cost: v.Money | None,
    units: Mapping[str, Any] | None,
    usage_type: str | None,
    is_billable_run: bool,
    timestamp: v.Timestamp | None,
    metadata: Mapping[str, Any] | None,
    operation_id: str | None,
    reservation_id: str | None,
) -> dict[str, Any]:
    """Check one step's values and return its wire form."""
    if cost is None and units is None:
        raise InvalidArgument.field("cost", "give cost, units, or both")
    if not isinstance(is_billable_run, bool):
        raise InvalidArgument.field("isBillableRun", "must be true or false")
    body: dict[str, Any] = {
        "operationId": v.check_id("operationId", operation_id) if operation_id else v.new_operation_id(),
        "usageType": v.usage_type("usageType", usage_type or ("AI" if units is not None else "API")),
        "feature": v.check_name("feature", feature),
        "provider": v.check_name("provider", provider),
    }
    if cost is not None:
        body["cost"] = v.cost_text("cost", cost)
    if units is not None:
        body["units"] = v.units_body("units", units)
    body["isBillableRun"] = is_billable_run
    body["timestamp"] = (
        v.timestamp_value("timestamp", timestamp) if timestamp is not None else v.utc_iso(datetime.now(UTC))
    )
    if metadata is not None:
        body["metadata"] = v.metadata_body("metadata", metadata)
    if reservation_id is not None:
        body["reservationId"] = v.check_id("reservationId", reservation_id)
    return body


class Session:
    """A group of steps of one user: created by its first step, completed on exit (also on an exception)."""

    def __init__(
        self, tally: Tally, *, feature: str | None, user_id: str | None, session_id: str | None
    ) -> None:
        """Make a session with a fresh id (`session_<ms>_<hex>`) unless one is given; nothing is sent yet."""
        self.tally = tally
        self.id = v.check_id("session.id", session_id) if session_id else v.new_session_id()
        self.feature = v.check_name("session.feature", feature) if feature is not None else None
        self.user_id = v.check_user_id("userId", user_id) if user_id is not None else None
        self.completed = False
        self._steps = 0
        self._tokens: list[contextvars.Token[Session | None]] = []

    def step(
        self,
        *,
        provider: str,
        cost: v.Money | None = None,
        units: Mapping[str, Any] | None = None,
        feature: str | None = None,
        usage_type: str | None = None,
        is_billable_run: bool = False,
        timestamp: v.Timestamp | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
        reservation_id: str | None = None,
    ) -> str:
        """Queue a step of this session (feature defaults to the session's) and return its operation id."""
        step_feature = feature if feature is not None else self.feature
        if step_feature is None:
            raise InvalidArgument.field("feature", "is required (the session has no feature)")
        return self.tally._enqueue(
            user_id=self.user_id,
            session=self,
            feature=step_feature,
            provider=provider,
            cost=cost,
            units=units,
            usage_type=usage_type,
            is_billable_run=is_billable_run,
            timestamp=timestamp,
            metadata=metadata,
            operation_id=operation_id,
            reservation_id=reservation_id,
        )

    record = step

    def reserve(
        self,
        *,
        estimate: v.Money | Mapping[str, Any],
        is_billable_run: bool = False,
        ttl_seconds: int = 300,
        reservation_id: str | None = None,
        provider: str | None = None,
        feature: str | None = None,
    ) -> Reservation:
        """Hold `estimate` for this session's user; what the reservation records goes into this session.

        `provider` and `feature` are as in Tally.reserve; `feature` defaults to the session's.
        """
        return Reservation._open(
            self.tally,
            session=self,
            estimate=estimate,
            user_id=self.user_id,
            is_billable_run=is_billable_run,
            ttl_seconds=ttl_seconds,
            reservation_id=reservation_id,
            provider=provider,
            feature=feature if feature is not None else self.feature,
        )

    def flush(self) -> list[dict[str, Any]]:
        """Send this session's queued steps now, without completing it."""
        return self.tally._flush({(self.user_id, self.id)})

    def complete(self) -> dict[str, Any] | None:
        """Send the remaining steps with `"complete": true` and return the last response.

        A session that never had a step is not sent at all (None is returned). A refusal raises
        (after the other steps were sent; steps refused because the session was completed
        meanwhile are recorded as standalone steps instead); a transient failure is logged
        and the completion stays queued for the next flush.
        Completing twice is a no-op.
        """
        if self.completed:
            return None
        self.completed = True
        if self._steps == 0:
            return None
        self.tally._request_completion(self)
        try:
            responses = self.tally._flush({(self.user_id, self.id)})
        except Unavailable as exc:
            logger.warning("tally: session %s completion kept queued for the next flush: %s", self.id, exc)
            return None
        return responses[-1] if responses else None

    def __enter__(self) -> Self:
        """Make this the current session (the wrappers record into it) and return it."""
        self._tokens.append(_current_session.set(self))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Complete the session; if the block raised, log any Tally error and re-raise the block's."""
        _current_session.reset(self._tokens.pop())
        if exc is None:
            self.complete()
            return
        try:
            self.complete()
        except Exception:
            logger.exception("tally: completing session %s after an exception failed", self.id)


class Reservation:
    """A hold on a user's budget (`reserve_spend`), settled by the first step it records, else released."""

    def __init__(
        self,
        tally: Tally,
        *,
        session: Session | None,
        user_id: str | None,
        reservation_id: str,
        response: Mapping[str, Any],
        provider: str | None = None,
        feature: str | None = None,
    ) -> None:
        """Wrap an allowed `reserve_spend` response (use Tally.reserve or Session.reserve to make one)."""
        self.tally = tally
        self.session = session
        self.user_id = user_id
        self.reservation_id = reservation_id
        self.provider = provider
        self.feature = feature
        self.response: dict[str, Any] = dict(response)
        self.allowed = bool(response.get("allowed"))
        self.reserved: Any = response.get("reserved")
        self.expires_at: str | None = response.get("expiresAt")
        usage = response.get("usage")
        self.usage: dict[str, Any] = dict(usage) if isinstance(usage, Mapping) else {}
        self.settled = False
        self.released = False
        self._keys: set[_GroupKey] = set()
        self._tokens: list[contextvars.Token[Reservation | None]] = []

    @classmethod
    def _open(
        cls,
        tally: Tally,
        *,
        session: Session | None,
        estimate: v.Money | Mapping[str, Any],
        user_id: str | None,
        is_billable_run: bool,
        ttl_seconds: int,
        reservation_id: str | None,
        provider: str | None = None,
        feature: str | None = None,
    ) -> Reservation:
        rid = v.check_id("reservationId", reservation_id) if reservation_id else v.new_reservation_id()
        if not isinstance(is_billable_run, bool):
            raise InvalidArgument.field("estimate.isBillableRun", "must be true or false")
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 10 <= ttl_seconds <= 3600:
            raise InvalidArgument.field("ttlSeconds", "must be an integer from 10 to 3600")
        if isinstance(estimate, Mapping):
            body_estimate: dict[str, Any] = {"units": v.units_body("estimate.units", estimate)}
        else:
            body_estimate = {"cost": v.cost_text("estimate.cost", estimate)}
        if provider is not None:
            body_estimate["provider"] = v.check_name("estimate.provider", provider)
        elif "units" in body_estimate:
            logger.warning(
                "tally: a units estimate without provider cannot be priced (Tally refuses it as UNPRICED); "
                "pass provider= to reserve()"
            )
        if feature is not None:
            body_estimate["feature"] = v.check_name("estimate.feature", feature)
        body_estimate["isBillableRun"] = is_billable_run
        body: dict[str, Any] = {}
        if user_id is not None:
            body["userId"] = v.check_user_id("userId", user_id)
        body.update({"reservationId": rid, "estimate": body_estimate, "ttlSeconds": ttl_seconds})
        response = tally._post("reserve_spend", body)
        if not response.get("allowed"):
            raise BudgetExceeded(response, reservation_id=rid)
        return cls(
            tally,
            session=session,
            user_id=user_id,
            reservation_id=rid,
            response=response,
            provider=provider,
            feature=feature,
        )

    def record(
        self,
        *,
        feature: str | None = None,
        provider: str | None = None,
        cost: v.Money | None = None,
        units: Mapping[str, Any] | None = None,
        usage_type: str | None = None,
        is_billable_run: bool = False,
        timestamp: v.Timestamp | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> str:
        """Queue the actual usage; the first step carries `reservationId`, which settles the hold.

        `provider` and `feature` default to the reservation's. In a reservation made by
        `Session.reserve`, the step goes into that session (and `feature` defaults to the
        session's). The step is sent when the block ends.
        """
        if self.released:
            raise TallyError(f"reservation {self.reservation_id} was released", status="FAILED_PRECONDITION")
        feature = feature if feature is not None else self.feature
        provider = provider if provider is not None else self.provider
        if provider is None:
            raise InvalidArgument.field("provider", "is required (the reservation has no provider)")
        reservation_id = None if self.settled else self.reservation_id
        if self.session is not None:
            operation = self.session.step(
                feature=feature,
                provider=provider,
                cost=cost,
                units=units,
                usage_type=usage_type,
                is_billable_run=is_billable_run,
                timestamp=timestamp,
                metadata=metadata,
                operation_id=operation_id,
                reservation_id=reservation_id,
            )
            self._keys.add((self.session.user_id, self.session.id))
        else:
            if feature is None:
                raise InvalidArgument.field("feature", "is required")
            operation = self.tally.record(
                feature=feature,
                provider=provider,
                cost=cost,
                units=units,
                usage_type=usage_type,
                is_billable_run=is_billable_run,
                timestamp=timestamp,
                metadata=metadata,
                user_id=self.user_id,
                operation_id=operation_id,
                reservation_id=reservation_id,
            )
            self._keys.add((self.user_id, None))
        self.settled = True
        return operation

    step = record

    def release(self) -> None:
        """Release the hold without recording (`release_spend`; idempotent on the server)."""
        body: dict[str, Any] = {"reservationId": self.reservation_id}
        if self.user_id is not None:
            body = {"userId": self.user_id, **body}
        self.tally._post("release_spend", body)
        self.released = True

    def __enter__(self) -> Self:
        """Make this the current reservation (the wrappers record against it) and return it."""
        self._tokens.append(_current_reservation.set(self))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Send what was recorded (settling the hold), else release it; release also if the block raised."""
        _current_reservation.reset(self._tokens.pop())
        if exc is None:
            if self.settled:
                try:
                    self.tally._flush(self._keys)
                except Unavailable as exc_unavailable:
                    logger.warning(
                        "tally: reservation %s: usage kept queued for the next flush: %s",
                        self.reservation_id,
                        exc_unavailable,
                    )
            elif not self.released:
                try:
                    self.release()
                except Unavailable as exc_unavailable:
                    logger.warning(
                        "tally: release of %s failed (the hold expires by itself): %s",
                        self.reservation_id,
                        exc_unavailable,
                    )
            return
        try:
            if self.settled:
                self.tally._flush(self._keys)
        except Exception:
            logger.exception("tally: sending the usage of reservation %s failed", self.reservation_id)
        try:
            if not self.released:
                self.release()
        except Exception:
            logger.exception("tally: releasing reservation %s failed", self.reservation_id)
