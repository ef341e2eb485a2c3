"""Wrap OpenAI and Anthropic clients so that each model call is recorded as one AI step.

Nothing here imports `openai` or `anthropic`: the wrappers work on whatever client object
they are given (duck typing) and read usage from the response's own fields.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tally_client import _values as v
from tally_client.client import Reservation, Session, Tally, current_reservation, current_session

__all__ = ["wrap_anthropic", "wrap_openai"]

logger = logging.getLogger("tally_client")

C = TypeVar("C")

TALLY_KWARGS = ("tally_feature", "tally_user_id", "tally_is_billable_run", "tally_metadata")
"""Keyword arguments the wrapped `create` methods take for Tally and remove before calling the API."""

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-.:/]")


@dataclass(frozen=True)
class _Config:
    """What a wrapped client records with, unless a call says otherwise."""

    tally: Tally
    provider: str
    feature: str | None
    user_id: str | None
    is_billable_run: bool


@dataclass(frozen=True)
class _Call:
    """One intercepted call: where it is recorded and how."""

    config: _Config
    api: str
    feature: str | None
    user_id: str | None
    is_billable_run: bool
    metadata: Mapping[str, Any] | None
    stream: bool
    session: Session | None
    reservation: Reservation | None

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any], config: _Config, api: str) -> _Call:
        """Take the `tally_*` keyword arguments out of a call's kwargs."""
        feature = kwargs.pop("tally_feature", None)
        user_id = kwargs.pop("tally_user_id", None)
        billable = kwargs.pop("tally_is_billable_run", None)
        metadata = kwargs.pop("tally_metadata", None)
        return cls(
            config=config,
            api=api,
            feature=feature if feature is not None else config.feature,
            user_id=user_id if user_id is not None else config.user_id,
            is_billable_run=bool(billable) if billable is not None else config.is_billable_run,
            metadata=metadata,
            stream=kwargs.get("stream") is True,
            session=current_session(),
            reservation=current_reservation(),
        )

    def record(self, units: dict[str, Any], response_id: object) -> None:
        """Record the call as one AI step; log, never raise, if that fails."""
        try:
            self._record(units, response_id)
        except Exception:
            logger.exception("tally: recording a %s %s call failed", self.config.provider, self.api)

    def _record(self, units: dict[str, Any], response_id: object) -> None:
        tally = self.config.tally
        metadata: dict[str, Any] = {"api": self.api, "stream": self.stream}
        if isinstance(response_id, str) and response_id:
            metadata["responseId"] = response_id[:200]
        if self.metadata:
            metadata.update(self.metadata)
        fallback = f"{self.config.provider}.{self.api}"
        common: dict[str, Any] = {
            "provider": self.config.provider,
            "units": units,
            "usage_type": "AI",
            "is_billable_run": self.is_billable_run,
            "metadata": metadata,
        }
        reservation = self.reservation  # the blocks around the call, not around the end of its stream
        if (
            reservation is not None
            and reservation.tally is tally
            and not reservation.released
            and self.user_id in {None, reservation.user_id}
        ):
            session_feature = reservation.session.feature if reservation.session is not None else None
            feature = self.feature or reservation.feature or session_feature or fallback
            reservation.record(feature=feature, **common)
            return
        session = self.session
        if (
            session is not None
            and session.tally is tally
            and not session.completed
            and self.user_id in {None, session.user_id}
        ):
            session.step(feature=self.feature or session.feature or fallback, **common)
            return
        tally.record(feature=self.feature or fallback, user_id=self.user_id, **common)


class _Proxy:
    """Stand in for an object: the names in `overrides` are intercepted, everything else is the target's."""

    def __init__(self, target: Any, overrides: Mapping[str, Callable[[], Any]]) -> None:
        object.__setattr__(self, "_tally_target", target)
        object.__setattr__(self, "_tally_overrides", overrides)

    def __getattr__(self, name: str) -> Any:
        overrides: Mapping[str, Callable[[], Any]] = object.__getattribute__(self, "_tally_overrides")
        if name in overrides:
            return overrides[name]()
        return getattr(object.__getattribute__(self, "_tally_target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_tally_target"), name, value)

    def __dir__(self) -> list[str]:
        return dir(object.__getattribute__(self, "_tally_target"))

    def __repr__(self) -> str:
        return f"<tally-wrapped {object.__getattribute__(self, '_tally_target')!r}>"

    def __enter__(self) -> Any:
        object.__getattribute__(self, "_tally_target").__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return object.__getattribute__(self, "_tally_target").__exit__(*exc_info)

    async def __aenter__(self) -> Any:
        await object.__getattribute__(self, "_tally_target").__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await object.__getattribute__(self, "_tally_target").__aexit__(*exc_info)


# --- usage extraction (attribute objects or plain dicts) ------------------------------


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _model(value: Any) -> str:
    text = _INVALID_NAME_CHARS.sub("_", value)[:100] if isinstance(value, str) else ""
    return text or "unknown"


def _openai_units(model: Any, usage: Any, *, api: str) -> dict[str, Any]:
    """Tally units of an OpenAI usage object: inputTokens excludes the cached tokens."""
    if api == "chat.completions":
        total_in = _count(_get(usage, "prompt_tokens"))
        out = _count(_get(usage, "completion_tokens"))
        cached = _count(_get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
    else:
        total_in = _count(_get(usage, "input_tokens"))
        out = _count(_get(usage, "output_tokens"))
        cached = _count(_get(_get(usage, "input_tokens_details"), "cached_tokens"))
    cached = min(cached, total_in)
    return {
        "model": _model(model),
        "inputTokens": total_in - cached,
        "outputTokens": out,
        "cacheReadTokens": cached,
        "cacheWriteTokens": 0,
        "requests": 1,
    }


_ANTHROPIC_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


_ANTHROPIC_CACHE_TTLS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


def _anthropic_usage(usage: Any) -> dict[str, int]:
    """Return the usage fields that are set, as ints (`cache_creation`'s breakdown by TTL as its own keys)."""
    found: dict[str, int] = {}
    for name in _ANTHROPIC_FIELDS:
        value = _get(usage, name)
        if isinstance(value, int) and not isinstance(value, bool):
            found[name] = value
    cache_creation = _get(usage, "cache_creation")
    for name in _ANTHROPIC_CACHE_TTLS:
        value = _get(cache_creation, name)
        if isinstance(value, int) and not isinstance(value, bool):
            found[name] = value
    return found


def _anthropic_units(model: Any, usage: Mapping[str, int]) -> dict[str, Any]:
    """Tally units of Anthropic usage, as Anthropic counts them (input_tokens excludes cache tokens).

    `cache_creation_input_tokens` counts every cache write; `cache_creation` (newer API
    versions) splits it by TTL. The 1-hour writes go to `cacheWrite1hTokens` (sent only
    when there are some), the rest to `cacheWriteTokens`, so the two add up to the total.
    """
    one_hour = _count(usage.get("ephemeral_1h_input_tokens"))
    if "cache_creation_input_tokens" in usage:
        total = _count(usage.get("cache_creation_input_tokens"))
        one_hour = min(one_hour, total)
        five_minutes = total - one_hour
    else:
        five_minutes = _count(usage.get("ephemeral_5m_input_tokens"))
    units: dict[str, Any] = {
        "model": _model(model),
        "inputTokens": _count(usage.get("input_tokens")),
        "outputTokens": _count(usage.get("output_tokens")),
        "cacheReadTokens": _count(usage.get("cache_read_input_tokens")),
        "cacheWriteTokens": five_minutes,
        "requests": 1,
    }
    if one_hour:
        units["cacheWrite1hTokens"] = one_hour
    return units


def _record_response(call: _Call, response: Any) -> None:
    usage = _get(response, "usage")
    if usage is None:
        logger.warning("tally: a %s response carried no usage; nothing recorded", call.api)
        return
    if call.api == "messages":
        units = _anthropic_units(_get(response, "model"), _anthropic_usage(usage))
    else:
        units = _openai_units(_get(response, "model"), usage, api=call.api)
    call.record(units, _get(response, "id"))


# --- streams --------------------------------------------------------------------------


class _Accumulator(Protocol):
    def observe(self, item: Any) -> bool:
        """Note an item's usage; return True to hold the item back from the app."""

    def finish(self) -> None:
        """Record what was gathered (once)."""


class _ChatStream:
    """Usage of an OpenAI chat completion stream: the last chunk's `usage` (needs include_usage)."""

    def __init__(self, call: _Call, *, hide_usage_chunk: bool) -> None:
        self.call = call
        self.hide_usage_chunk = hide_usage_chunk
        self.model: Any = None
        self.id: Any = None
        self.usage: Any = None

    def observe(self, item: Any) -> bool:
        self.model = _get(item, "model") or self.model
        self.id = _get(item, "id") or self.id
        usage = _get(item, "usage")
        if usage is None:
            return False
        self.usage = usage
        return self.hide_usage_chunk and not _get(item, "choices")

    def finish(self) -> None:
        if self.usage is None:
            logger.warning(
                "tally: a chat completion stream ended without usage (closed early, or "
                "stream_options include_usage false); nothing recorded"
            )
            return
        self.call.record(_openai_units(self.model, self.usage, api=self.call.api), self.id)


class _ResponsesStream:
    """Usage of an OpenAI Responses stream: the `response` of its final event."""

    _FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.response: Any = None

    def observe(self, item: Any) -> bool:
        if _get(item, "type") in self._FINAL:
            self.response = _get(item, "response")
        return False

    def finish(self) -> None:
        if self.response is None or _get(self.response, "usage") is None:
            logger.warning("tally: a responses stream ended without a final response; nothing recorded")
            return
        usage = _get(self.response, "usage")
        units = _openai_units(_get(self.response, "model"), usage, api=self.call.api)
        self.call.record(units, _get(self.response, "id"))


class _AnthropicStream:
    """Usage of an Anthropic message stream: message_start's usage, updated by message_delta's."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.model: Any = None
        self.id: Any = None
        self.usage: dict[str, int] = {}

    def observe(self, item: Any) -> bool:
        kind = _get(item, "type")
        if kind == "message_start":
            message = _get(item, "message")
            self.model = _get(message, "model")
            self.id = _get(message, "id")
            self.usage.update(_anthropic_usage(_get(message, "usage")))
        elif kind == "message_delta":
            self.usage.update(_anthropic_usage(_get(item, "usage")))  # cumulative counts
        return False

    def finish(self) -> None:
        if not self.usage:
            logger.warning("tally: an Anthropic stream ended before message_start; nothing recorded")
            return
        self.call.record(_anthropic_units(self.model, self.usage), self.id)


class _StreamProxy:
    """A stream's stand-in: other attributes are the stream's; its usage is recorded once."""

    def __init__(self, stream: Any, accumulator: _Accumulator) -> None:
        object.__setattr__(self, "_tally_stream", stream)
        object.__setattr__(self, "_tally_acc", accumulator)
        object.__setattr__(self, "_tally_iter", None)
        object.__setattr__(self, "_tally_done", False)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_tally_stream"), name)

    def _tally_finish(self) -> None:
        if not self._tally_done:
            object.__setattr__(self, "_tally_done", True)
            try:
                self._tally_acc.finish()
            except Exception:
                logger.exception("tally: recording a stream's usage failed")


class _RecordingStream(_StreamProxy):
    """Pass a stream's items through unchanged; record its usage when it ends or is closed."""

    def __iter__(self) -> _RecordingStream:
        return self

    def __next__(self) -> Any:
        if self._tally_iter is None:
            object.__setattr__(self, "_tally_iter", iter(self._tally_stream))
        while True:
            try:
                item = next(self._tally_iter)
            except BaseException:
                self._tally_finish()
                raise
            if not self._tally_acc.observe(item):
                return item

    def close(self) -> None:
        """Close the underlying stream and record what it reported."""
        try:
            close = getattr(self._tally_stream, "close", None)
            if close is not None:
                close()
        finally:
            self._tally_finish()

    def __enter__(self) -> _RecordingStream:
        enter = getattr(self._tally_stream, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _AsyncRecordingStream(_StreamProxy):
    """The async form of _RecordingStream."""

    def __aiter__(self) -> _AsyncRecordingStream:
        return self

    async def __anext__(self) -> Any:
        if self._tally_iter is None:
            object.__setattr__(self, "_tally_iter", self._tally_stream.__aiter__())
        while True:
            try:
                item = await self._tally_iter.__anext__()
            except BaseException:
                self._tally_finish()
                raise
            if not self._tally_acc.observe(item):
                return item

    async def close(self) -> None:
        """Close the underlying stream and record what it reported."""
        try:
            close = getattr(self._tally_stream, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result
        finally:
            self._tally_finish()

    async def __aenter__(self) -> _AsyncRecordingStream:
        enter = getattr(self._tally_stream, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


# --- interception ---------------------------------------------------------------------


def _accumulator(call: _Call, *, injected_include_usage: bool) -> _Accumulator:
    if call.api == "messages":
        return _AnthropicStream(call)
    if call.api == "responses":
        return _ResponsesStream(call)
    return _ChatStream(call, hide_usage_chunk=injected_include_usage)


def _add_include_usage(kwargs: dict[str, Any]) -> bool:
    """Ask a chat stream for its usage chunk unless the caller chose; return True if added."""
    options = kwargs.get("stream_options")
    if isinstance(options, Mapping):
        if "include_usage" in options:
            return False
        kwargs["stream_options"] = {**options, "include_usage": True}
        return True
    kwargs["stream_options"] = {"include_usage": True}
    return True


def _finish(result: Any, call: _Call, injected: bool) -> Any:
    if call.stream:
        return _RecordingStream(result, _accumulator(call, injected_include_usage=injected))
    try:
        _record_response(call, result)
    except Exception:
        logger.exception("tally: reading the usage of a %s response failed", call.api)
    return result


async def _finish_async(awaitable: Awaitable[Any], call: _Call, injected: bool) -> Any:
    result = await awaitable
    if call.stream:
        return _AsyncRecordingStream(result, _accumulator(call, injected_include_usage=injected))
    return _finish(result, call, injected)


def _intercept(original: Callable[..., Any], config: _Config, api: str) -> Callable[..., Any]:
    """Return `original` (a create method) recording each call; async methods stay async."""

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        call = _Call.pop_from(kwargs, config, api)
        injected = call.stream and api == "chat.completions" and _add_include_usage(kwargs)
        result = original(*args, **kwargs)
        if inspect.isawaitable(result):
            return _finish_async(result, call, injected)
        return _finish(result, call, injected)

    return create


def _config(
    tally: Tally, *, provider: str, feature: str | None, user_id: str | None, is_billable_run: bool
) -> _Config:
    return _Config(
        tally=tally,
        provider=v.check_name("provider", provider),
        feature=v.check_name("feature", feature) if feature is not None else None,
        user_id=v.check_user_id("userId", user_id) if user_id is not None else None,
        is_billable_run=is_billable_run,
    )


def _method(owner: Any, name: str, config: _Config, api: str) -> Callable[[], Any]:
    return lambda: _intercept(getattr(owner, name), config, api)


def _rewrap(factory: Callable[..., Any], rewrap: Callable[[Any], Any]) -> Callable[[], Any]:
    @functools.wraps(factory)
    def call(*args: Any, **kwargs: Any) -> Any:
        return rewrap(factory(*args, **kwargs))

    return lambda: call


def _openai_proxy(client: Any, config: _Config) -> Any:
    def chat() -> Any:
        target = client.chat
        completions = target.completions
        return _Proxy(
            target,
            {
                "completions": lambda: _Proxy(
                    completions, {"create": _method(completions, "create", config, "chat.completions")}
                )
            },
        )

    def responses() -> Any:
        target = client.responses
        return _Proxy(target, {"create": _method(target, "create", config, "responses")})

    overrides: dict[str, Callable[[], Any]] = {"chat": chat, "responses": responses}
    for name in ("with_options", "copy"):
        if callable(getattr(client, name, None)):
            overrides[name] = _rewrap(getattr(client, name), lambda new: _openai_proxy(new, config))
    return _Proxy(client, overrides)


def _anthropic_proxy(client: Any, config: _Config) -> Any:
    def messages() -> Any:
        target = client.messages
        return _Proxy(target, {"create": _method(target, "create", config, "messages")})

    overrides: dict[str, Callable[[], Any]] = {"messages": messages}
    for name in ("with_options", "copy"):
        if callable(getattr(client, name, None)):
            overrides[name] = _rewrap(getattr(client, name), lambda new: _anthropic_proxy(new, config))
    return _Proxy(client, overrides)


def wrap_openai(
    client: C,
    *,
    tally: Tally,
    feature: str | None = None,
    user_id: str | None = None,
    provider: str = "openai",
    is_billable_run: bool = False,
) -> C:
    """Return `client` (OpenAI or AsyncOpenAI) recording `chat.completions.create` and `responses.create`.

    The proxy behaves like the client (typed as it, too); each call is one AI step with
    `units` from the response's usage. Per call, `tally_feature=`, `tally_user_id=`,
    `tally_is_billable_run=` and `tally_metadata=` override the defaults and are removed
    before the API sees the call. A chat stream (`stream=True`) gets
    `stream_options={"include_usage": True}` unless the caller set `include_usage`; the
    extra usage-only chunk this adds is then kept from the app.
    """
    config = _config(
        tally, provider=provider, feature=feature, user_id=user_id, is_billable_run=is_billable_run
    )
    proxy: C = _openai_proxy(client, config)
    return proxy


def wrap_anthropic(
    client: C,
    *,
    tally: Tally,
    feature: str | None = None,
    user_id: str | None = None,
    provider: str = "anthropic",
    is_billable_run: bool = False,
) -> C:
    """Return `client` (Anthropic or AsyncAnthropic) recording `messages.create`, streams included.

    Usage is read from the message (or, for `stream=True`, from the `message_start` and
    `message_delta` events); the `tally_*` keyword arguments work as in wrap_openai.
    """
    config = _config(
        tally, provider=provider, feature=feature, user_id=user_id, is_billable_run=is_billable_run
    )
    proxy: C = _anthropic_proxy(client, config)
    return proxy
