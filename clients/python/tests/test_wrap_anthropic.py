"""wrap_anthropic with the real `anthropic` package against a local server that answers like Anthropic."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tally_client import Tally, wrap_anthropic
from tally_fakes import FakeTally

MODEL = "claude-haiku-4-5-20251001"
MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 300,
    },
}
MESSAGE_UNITS = {
    "model": MODEL,
    "inputTokens": 100,
    "outputTokens": 50,
    "cacheReadTokens": 2000,
    "cacheWriteTokens": 300,
    "requests": 1,
}
STREAM_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            **MESSAGE,
            "content": [],
            "stop_reason": None,
            "usage": {
                "input_tokens": 25,
                "output_tokens": 1,
                "cache_read_input_tokens": 10,
                "cache_creation_input_tokens": 5,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " world"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 15},
    },
    {"type": "message_stop"},
]
STREAM_UNITS = {
    "model": MODEL,
    "inputTokens": 25,
    "outputTokens": 15,
    "cacheReadTokens": 10,
    "cacheWriteTokens": 5,
    "requests": 1,
}


class FakeAnthropic:
    """Answers /v1/messages like Anthropic (JSON, or SSE for stream=true); keeps the requests."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.requests: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        """Usage to answer with instead of MESSAGE's (and message_start's in a stream)."""
        self.delta_usage: dict[str, Any] | None = None
        """Usage of a stream's message_delta instead of STREAM_EVENTS'."""
        server.expect_request("/v1/messages", method="POST").respond_with_handler(self._messages)

    @property
    def base_url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def _messages(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        self.requests.append(body)
        if not body.get("stream"):
            message = MESSAGE if self.usage is None else {**MESSAGE, "usage": self.usage}
            return Response(json.dumps(message), content_type="application/json")
        events = json.loads(json.dumps(STREAM_EVENTS))
        if self.usage is not None:
            events[0]["message"]["usage"] = self.usage
        if self.delta_usage is not None:
            events[-2]["usage"] = self.delta_usage
        text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
        return Response(text, content_type="text/event-stream")


@pytest.fixture
def api(httpserver: HTTPServer) -> FakeAnthropic:
    return FakeAnthropic(httpserver)


@pytest.fixture
def client(api: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=api.base_url, max_retries=0)


def test_a_message_is_recorded_with_its_cache_tokens_and_returned_unchanged(
    tally: Tally, fake: FakeTally, api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    wrapped = wrap_anthropic(client, tally=tally, feature="support_chat", user_id="user-1")

    message = wrapped.messages.create(
        model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": "Hi"}]
    )
    tally.flush()

    assert isinstance(message, anthropic.types.Message)
    assert message.model_dump(exclude_unset=True) == MESSAGE
    (body,) = fake.bodies()
    assert body["userId"] == "user-1"
    (step,) = body["steps"]
    assert (step["usageType"], step["provider"], step["feature"]) == ("AI", "anthropic", "support_chat")
    assert step["units"] == MESSAGE_UNITS
    assert step["metadata"] == {"api": "messages", "stream": False, "responseId": MESSAGE["id"]}


def test_tally_keywords_never_reach_the_api(
    tally: Tally, fake: FakeTally, api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    wrapped = wrap_anthropic(client, tally=tally)

    wrapped.messages.create(  # type: ignore[call-overload]
        model="claude-haiku-4-5",
        max_tokens=10,
        messages=[{"role": "user", "content": "Hi"}],
        tally_feature="classify",
    )
    tally.flush()

    assert not any(key.startswith("tally_") for key in api.requests[0])
    assert fake.steps()[0]["feature"] == "classify"


def test_a_stream_passes_events_through_and_records_start_and_delta_usage(
    tally: Tally, fake: FakeTally, client: anthropic.Anthropic
) -> None:
    wrapped = wrap_anthropic(client, tally=tally, feature="support_chat")

    with wrapped.messages.create(
        model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": "Hi"}], stream=True
    ) as stream:
        events = list(stream)
    tally.flush()

    assert [e.type for e in events] == [e["type"] for e in STREAM_EVENTS if e["type"] != "ping"]
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "Hello world"
    (step,) = fake.steps()
    assert step["units"] == STREAM_UNITS
    assert step["metadata"]["stream"] is True


def test_a_stream_closed_early_records_what_message_start_reported(
    tally: Tally, fake: FakeTally, client: anthropic.Anthropic
) -> None:
    wrapped = wrap_anthropic(client, tally=tally, feature="support_chat")

    stream = wrapped.messages.create(
        model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    first = next(stream)
    stream.close()
    tally.flush()

    assert first.type == "message_start"
    assert fake.steps()[0]["units"] == {**STREAM_UNITS, "outputTokens": 1}


def test_a_session_collects_anthropic_calls(
    tally: Tally, fake: FakeTally, client: anthropic.Anthropic
) -> None:
    wrapped = wrap_anthropic(client, tally=tally, feature="ignored_in_favour_of_call")

    with tally.session(feature="assistant") as session:
        wrapped.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )

    (body,) = fake.bodies()
    assert body["session"]["id"] == session.id
    assert body["steps"][0]["feature"] == "ignored_in_favour_of_call"


def test_the_async_client_and_its_stream_are_recorded(
    tally: Tally, fake: FakeTally, api: FakeAnthropic
) -> None:
    async def main() -> tuple[str, list[str]]:
        async with anthropic.AsyncAnthropic(api_key="k", base_url=api.base_url, max_retries=0) as raw:
            wrapped = wrap_anthropic(raw, tally=tally, feature="support_chat")
            message = await wrapped.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
            )
            stream = await wrapped.messages.create(
                model="claude-haiku-4-5",
                max_tokens=10,
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
            )
            async with stream:
                kinds: list[str] = [event.type async for event in stream]
            block = message.content[0]
            assert block.type == "text"
            return block.text, kinds

    text, kinds = asyncio.run(main())
    tally.flush()

    assert text == "Hello!"
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert [s["units"] for s in fake.steps()] == [MESSAGE_UNITS, STREAM_UNITS]


def test_one_hour_cache_writes_are_counted_apart_from_five_minute_ones(
    tally: Tally, fake: FakeTally, api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    api.usage = {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 1500,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
    }
    wrapped = wrap_anthropic(client, tally=tally, feature="support_chat")

    message = wrapped.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    )
    tally.flush()

    assert message.usage.cache_creation is not None
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 1000
    (step,) = fake.steps()
    assert step["units"] == {
        "model": MODEL,
        "inputTokens": 100,
        "outputTokens": 50,
        "cacheReadTokens": 0,
        "cacheWriteTokens": 500,
        "cacheWrite1hTokens": 1000,
        "requests": 1,
    }


def test_a_stream_counts_one_hour_cache_writes_apart(
    tally: Tally, fake: FakeTally, api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    api.usage = {
        "input_tokens": 25,
        "output_tokens": 1,
        "cache_read_input_tokens": 10,
        "cache_creation_input_tokens": 40,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 40},
    }
    api.delta_usage = {
        "output_tokens": 15,
        "input_tokens": 25,
        "cache_read_input_tokens": 10,
        "cache_creation_input_tokens": 40,
    }
    wrapped = wrap_anthropic(client, tally=tally, feature="support_chat")

    with wrapped.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}], stream=True
    ) as stream:
        for _ in stream:
            pass
    tally.flush()

    (step,) = fake.steps()
    assert step["units"] == {
        **STREAM_UNITS,
        "cacheWriteTokens": 0,
        "cacheWrite1hTokens": 40,
    }


def test_without_a_breakdown_every_cache_write_counts_as_five_minute(
    tally: Tally, fake: FakeTally, api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    wrapped = wrap_anthropic(client, tally=tally, feature="support_chat")

    wrapped.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    )
    tally.flush()

    units = fake.steps()[0]["units"]
    assert units["cacheWriteTokens"] == 300
    assert "cacheWrite1hTokens" not in units
