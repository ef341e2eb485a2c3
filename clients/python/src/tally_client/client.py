"""The Tally client: a thread-safe queue of steps, batched within the SPEC's limits, sessions and the gate."""

from __future__ import annotations

import atexit
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

__all__ = ["Reservation", "Session", "Tally", "current_reservation", "current_session"]

logger = logging.getLogger("tally_client")

MAX_BODY_BYTES = 200_000
"""Bytes of JSON per request the batcher stays under (the server refuses bodies over 256 KiB)."""

_GroupKey = tuple[str | None, str | None]  # (userId, session id)

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


@dataclass
class _Pending:
    """One checked step, as it goes on the wire."""

    body: dict[str, Any]
    size: int


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
    """One `record_steps` request: within 100 steps, 20 features, 20 providers and MAX_BODY_BYTES."""

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


def split_batches(key: _GroupKey, group: _Group) -> list[_Batch]:
    """Split a group's steps into requests within the SPEC's limits; the last one carries `complete`."""
    batches: list[_Batch] = []
    current: list[_Pending] = []
    features: set[str] = set()
    providers: set[str] = set()
    size = 0
    for step in group.steps:
        feature, provider = step.body["feature"], step.body["provider"]
        new_features = features | {feature}
        new_providers = providers | {provider}
        if current and (
            len(current) >= v.MAX_STEPS
            or len(new_features) > v.MAX_NAMES
            or len(new_providers) > v.MAX_NAMES
            or size + step.size > MAX_BODY_BYTES
        ):
            batches.append(_Batch(key, group, current, complete=False))
            current, features, providers, size = [], set(), set(), 0
            new_features, new_providers = {feature}, {provider}
        current.append(step)
        features, providers = new_features, new_providers
        size += step.size + 1
    if current or group.complete:
        batches.append(_Batch(key, group, current, complete=False))
    if batches and group.complete:
        batches[-1].complete = True
    return batches


class Tally:
    """Record paid calls to Tally's functions; thread-safe; use one per process (or per caller identity).

    `record()` and `Session.step()` only queue a step (they never do network I/O); a
    background thread sends the queue every `flush_interval` seconds and as soon as 100
    steps wait; `flush()`, `close()`, the end of a session and the end of a reservation
    send at once. Each step gets its `operationId` when it is queued, and a retried
    request resends the very same bytes, so nothing is counted twice.
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
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._send_lock = threading.RLock()
        self._groups: dict[_GroupKey, _Group] = {}
        self._queued = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pause_until = 0.0
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
    ) -> Reservation:
        """Hold `estimate` (a cost or a units dict) on the user's budget now, or raise BudgetExceeded."""
        return Reservation._open(
            self,
            session=None,
            estimate=estimate,
            user_id=user_id,
            is_billable_run=is_billable_run,
            ttl_seconds=ttl_seconds,
            reservation_id=reservation_id,
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

        Raises the TallyError of the first request that fails: a 4xx drops that request's
        steps (resending cannot succeed; they are on the error as `.steps`), a transient
        failure (Unavailable) keeps them and everything after them queued for the next flush.
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
        step = _step_body(
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
            group.steps.append(_Pending(step, len(v.encode(step))))
            self._queued += 1
            if session is not None:
                session._steps += 1
            self._start_thread_locked()
            if self._queued >= v.MAX_STEPS:
                self._wakeup.notify_all()
        return str(step["operationId"])

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
            except TallyError as exc:
                logger.warning("tally: background flush failed, steps kept for the next one: %s", exc)
                with self._lock:
                    self._pause_until = time.monotonic() + (self._flush_interval or 1.0)
            except Exception:
                logger.exception("tally: background flush failed unexpectedly")
                with self._lock:
                    self._pause_until = time.monotonic() + (self._flush_interval or 1.0)

    def _flush(self, keys: set[_GroupKey] | None) -> list[dict[str, Any]]:
        """Send the groups named by `keys` (every group if None), one request per batch, in order."""
        with self._send_lock:
            with self._lock:
                taken = [
                    (key, self._groups.pop(key)) for key in list(self._groups) if keys is None or key in keys
                ]
            batches = [batch for key, group in taken for batch in split_batches(key, group)]
            responses: list[dict[str, Any]] = []
            for index, batch in enumerate(batches):
                try:
                    response = self._post("record_steps", batch.body())
                except Unavailable:
                    self._requeue(batches[index:])
                    raise
                except TallyError as exc:
                    self._requeue(batches[index + 1 :])
                    self._drop(batch)
                    exc.steps = [step.body for step in batch.steps]
                    logger.error(
                        "tally: record_steps refused %d step(s) (%s); they are dropped", len(batch.steps), exc
                    )
                    raise
                except BaseException:
                    self._requeue(batches[index:])
                    raise
                self._drop(batch)
                warnings = response.get("warnings")
                if warnings:
                    logger.warning("tally: record_steps warnings: %s", warnings)
                responses.append(response)
            return responses

    def _drop(self, batch: _Batch) -> None:
        with self._lock:
            self._queued -= len(batch.steps)

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
    ) -> Reservation:
        """Hold `estimate` for this session's user; what the reservation records goes into this session."""
        return Reservation._open(
            self.tally,
            session=self,
            estimate=estimate,
            user_id=self.user_id,
            is_billable_run=is_billable_run,
            ttl_seconds=ttl_seconds,
            reservation_id=reservation_id,
        )

    def flush(self) -> list[dict[str, Any]]:
        """Send this session's queued steps now, without completing it."""
        return self.tally._flush({(self.user_id, self.id)})

    def complete(self) -> dict[str, Any] | None:
        """Send the remaining steps with `"complete": true` and return the last response.

        A session that never had a step is not sent at all (None is returned). A 4xx raises;
        a transient failure is logged and the completion stays queued for the next flush.
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
    ) -> None:
        """Wrap an allowed `reserve_spend` response (use Tally.reserve or Session.reserve to make one)."""
        self.tally = tally
        self.session = session
        self.user_id = user_id
        self.reservation_id = reservation_id
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
        body_estimate["isBillableRun"] = is_billable_run
        body: dict[str, Any] = {}
        if user_id is not None:
            body["userId"] = v.check_user_id("userId", user_id)
        body.update({"reservationId": rid, "estimate": body_estimate, "ttlSeconds": ttl_seconds})
        response = tally._post("reserve_spend", body)
        if not response.get("allowed"):
            raise BudgetExceeded(response, reservation_id=rid)
        return cls(tally, session=session, user_id=user_id, reservation_id=rid, response=response)

    def record(
        self,
        *,
        feature: str | None = None,
        provider: str,
        cost: v.Money | None = None,
        units: Mapping[str, Any] | None = None,
        usage_type: str | None = None,
        is_billable_run: bool = False,
        timestamp: v.Timestamp | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> str:
        """Queue the actual usage; the first step carries `reservationId`, which settles the hold.

        In a reservation made by `Session.reserve`, the step goes into that session (and
        `feature` defaults to the session's). The step is sent when the block ends.
        """
        if self.released:
            raise TallyError(f"reservation {self.reservation_id} was released", status="FAILED_PRECONDITION")
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
