"""wrap_openai with the real `openai` package against a local server that answers like OpenAI."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import openai
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tally_client import Tally, wrap_openai
from tally_fakes import FakeTally, error_body

MODEL = "gpt-4o-2024-08-06"
USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 350,
    "total_tokens": 1550,
    "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 64},
}
EXPECTED_UNITS = {
    "model": MODEL,
    "inputTokens": 1000,
    "outputTokens": 350,
    "cacheReadTokens": 200,
    "cacheWriteTokens": 0,
    "requests": 1,
}
COMPLETION = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1_760_436_245,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Bonjour !", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": USAGE,
}
TEXT_PIECES = ["Bon", "jour", " !"]
RESPONSE_USAGE = {
    "input_tokens": 500,
    "input_tokens_details": {"cached_tokens": 100},
    "output_tokens": 40,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 540,
}
RESPONSE = {
    "id": "resp_abc123",
    "object": "response",
    "created_at": 1_760_436_245,
    "status": "completed",
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Salut", "annotations": []}],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": RESPONSE_USAGE,
}
RESPONSE_UNITS = {
    "model": "gpt-4.1-2025-04-14",
    "inputTokens": 400,
    "outputTokens": 40,
    "cacheReadTokens": 100,
    "cacheWriteTokens": 0,
    "requests": 1,
}


def _sse(events: list[Any]) -> str:
    return "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1_760_436_245,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


class FakeOpenAI:
    """Answers /v1/chat/completions and /v1/responses like OpenAI; keeps the requests."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.requests: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(self._chat)
        server.expect_request("/v1/responses", method="POST").respond_with_handler(self._responses)

    @property
    def base_url(self) -> str:
        return self.server.url_for("/v1")

    def _chat(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        self.requests.append(body)
        if self.fail_with is not None:
            error = {"error": {"message": "overloaded", "type": "server_error", "code": None}}
            return Response(json.dumps(error), status=self.fail_with, content_type="application/json")
        if not body.get("stream"):
            return Response(json.dumps(COMPLETION), content_type="application/json")
        chunks = [_chunk({"role": "assistant", "content": ""})]
        chunks += [_chunk({"content": piece}) for piece in TEXT_PIECES]
        chunks.append(_chunk({}, finish="stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            for chunk in chunks:
                chunk["usage"] = None
            chunks.append({**_chunk({}), "choices": [], "usage": USAGE})
        return Response(_sse(chunks), content_type="text/event-stream")

    def _responses(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        self.requests.append(body)
        if not body.get("stream"):
            return Response(json.dumps(RESPONSE), content_type="application/json")
        started = {**RESPONSE, "status": "in_progress", "output": [], "usage": None}
        events = [
            {"type": "response.created", "sequence_number": 0, "response": started},
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "Salut",
                "logprobs": [],
            },
            {"type": "response.completed", "sequence_number": 2, "response": RESPONSE},
        ]
        text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
        return Response(text, content_type="text/event-stream")


@pytest.fixture
def api(httpserver: HTTPServer) -> FakeOpenAI:
    return FakeOpenAI(httpserver)


@pytest.fixture
def client(api: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=api.base_url, max_retries=0)


def test_a_chat_completion_is_recorded_and_returned_unchanged(
    tally: Tally, fake: FakeTally, api: FakeOpenAI, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat", user_id="user-1")

    completion = wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    tally.flush()

    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.model_dump(exclude_unset=True) == COMPLETION
    (body,) = fake.bodies()
    assert body["userId"] == "user-1"
    (step,) = body["steps"]
    assert step["usageType"] == "AI"
    assert step["provider"] == "openai"
    assert step["feature"] == "chat"
    assert step["units"] == EXPECTED_UNITS
    assert "cost" not in step
    assert step["metadata"] == {"api": "chat.completions", "stream": False, "responseId": "chatcmpl-abc123"}


def test_per_call_keywords_are_used_and_removed(
    tally: Tally, fake: FakeTally, api: FakeOpenAI, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")

    wrapped.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hi"}],
        tally_feature="summarize",
        tally_user_id="user-2",
        tally_is_billable_run=True,
        tally_metadata={"doc": 7},
    )
    tally.flush()

    assert api.requests == [{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}]
    (body,) = fake.bodies()
    assert body["userId"] == "user-2"
    step = body["steps"][0]
    assert (step["feature"], step["isBillableRun"], step["metadata"]["doc"]) == ("summarize", True, 7)


def test_calls_inside_a_session_join_it(tally: Tally, fake: FakeTally, client: openai.OpenAI) -> None:
    wrapped = wrap_openai(client, tally=tally)

    with tally.session(feature="assistant", user_id="user-1") as session:
        wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "1"}])
        wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "2"}])

    (body,) = fake.bodies()
    assert body["session"] == {"id": session.id, "feature": "assistant", "complete": True}
    assert [s["feature"] for s in body["steps"]] == ["assistant", "assistant"]
    assert body["userId"] == "user-1"


def test_a_call_inside_a_reservation_settles_it(tally: Tally, fake: FakeTally, client: openai.OpenAI) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")

    with tally.reserve(estimate={"model": "gpt-4o", "inputTokens": 2000, "outputTokens": 500}) as reservation:
        wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

    (step,) = fake.steps()
    assert step["reservationId"] == reservation.reservation_id
    assert fake.bodies("release_spend") == []


def test_a_call_inside_a_reservation_records_the_reservations_feature(
    tally: Tally, fake: FakeTally, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally)
    estimate = {"model": "gpt-4o", "inputTokens": 2000, "outputTokens": 500}

    with tally.reserve(estimate=estimate, provider="openai", feature="summarize"):
        wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

    assert fake.bodies("reserve_spend")[0]["estimate"]["provider"] == "openai"
    (step,) = fake.steps()
    assert (step["provider"], step["feature"]) == ("openai", "summarize")
    assert step["units"]["model"] == MODEL


def test_a_stream_passes_chunks_through_and_records_the_final_usage(
    tally: Tally, fake: FakeTally, api: FakeOpenAI, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")

    stream = wrapped.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = list(stream)
    tally.flush()

    assert api.requests[0]["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(TEXT_PIECES)
    assert all(c.choices for c in chunks)  # the usage-only chunk the wrapper asked for is not shown
    assert chunks[-1].choices[0].finish_reason == "stop"
    (step,) = fake.steps()
    assert step["units"] == EXPECTED_UNITS
    assert step["metadata"]["stream"] is True


def test_a_stream_that_asked_for_usage_itself_gets_the_usage_chunk(
    tally: Tally, fake: FakeTally, api: FakeOpenAI, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")

    with wrapped.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    tally.flush()

    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 1200
    assert fake.steps()[0]["units"] == EXPECTED_UNITS


def test_a_stream_without_usage_is_not_recorded_and_is_logged(
    tally: Tally,
    fake: FakeTally,
    api: FakeOpenAI,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")
    caplog.set_level(logging.WARNING, logger="tally_client")

    stream = wrapped.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": False},
    )
    pieces = [c.choices[0].delta.content for c in stream]
    tally.flush()

    assert len(pieces) == 5
    assert fake.steps() == []
    assert any("without usage" in r.getMessage() for r in caplog.records)


def test_a_stream_closed_early_records_nothing_and_closes_the_response(
    tally: Tally, fake: FakeTally, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")

    stream = wrapped.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    next(iter(stream))
    stream.close()
    tally.flush()

    assert stream.response.is_closed
    assert fake.steps() == []


def test_a_responses_call_is_recorded(tally: Tally, fake: FakeTally, client: openai.OpenAI) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="agent")

    response = wrapped.responses.create(model="gpt-4.1", input="Hi")
    tally.flush()

    assert response.output_text == "Salut"
    assert response.id == "resp_abc123"
    (step,) = fake.steps()
    assert step["units"] == RESPONSE_UNITS
    assert step["metadata"]["api"] == "responses"


def test_a_responses_stream_is_recorded_from_its_completed_event(
    tally: Tally, fake: FakeTally, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="agent")

    events = list(wrapped.responses.create(model="gpt-4.1", input="Hi", stream=True))
    tally.flush()

    assert [e.type for e in events] == [
        "response.created",
        "response.output_text.delta",
        "response.completed",
    ]
    assert fake.steps()[0]["units"] == RESPONSE_UNITS


def test_an_api_error_propagates_and_records_nothing(
    tally: Tally, fake: FakeTally, api: FakeOpenAI, client: openai.OpenAI
) -> None:
    api.fail_with = 500
    wrapped = wrap_openai(client, tally=tally, feature="chat")

    with pytest.raises(openai.InternalServerError):
        wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    tally.flush()

    assert fake.steps() == []


def test_a_tally_outage_never_breaks_the_call(
    make_tally: Callable[..., Tally],
    fake: FakeTally,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.inject("record_steps", 503, error_body("UNAVAILABLE", "down"), times=2)
    tally = make_tally(flush_interval=0.05, max_retries=0)
    wrapped = wrap_openai(client, tally=tally, feature="chat")
    caplog.set_level(logging.WARNING, logger="tally_client")

    completion = wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

    assert completion.choices[0].message.content == "Bonjour !"
    fake.wait_for(lambda: len(fake.received) >= 3 and tally.pending == 0)
    assert len({s["operationId"] for s in fake.steps()}) == 1
    assert any("background flush failed" in r.getMessage() for r in caplog.records)


def test_an_invalid_step_is_logged_not_raised(
    tally: Tally, fake: FakeTally, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")
    caplog.set_level(logging.ERROR, logger="tally_client")

    completion = wrapped.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], tally_user_id="not a uid"
    )

    assert completion.id == "chatcmpl-abc123"
    assert tally.pending == 0
    assert any("recording a openai chat.completions call failed" in r.getMessage() for r in caplog.records)


def test_everything_else_is_the_clients_own(client: openai.OpenAI, tally: Tally) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")

    assert wrapped.api_key == "sk-test"
    assert wrapped.models is client.models
    assert wrapped.chat.completions.with_raw_response is not None
    assert "chat" in dir(wrapped)


def test_with_options_keeps_the_wrapper(
    tally: Tally, fake: FakeTally, api: FakeOpenAI, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally, feature="chat")

    wrapped.with_options(timeout=5).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
    )
    tally.flush()

    assert len(fake.steps()) == 1


def test_the_async_client_is_recorded_too(tally: Tally, fake: FakeTally, api: FakeOpenAI) -> None:
    async def main() -> tuple[str | None, str]:
        async with openai.AsyncOpenAI(api_key="sk-test", base_url=api.base_url, max_retries=0) as raw:
            wrapped = wrap_openai(raw, tally=tally, feature="chat")
            completion = await wrapped.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
            )
            stream = await wrapped.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            return completion.choices[0].message.content, text

    content, streamed = asyncio.run(main())
    tally.flush()

    assert content == "Bonjour !"
    assert streamed == "".join(TEXT_PIECES)
    assert [s["units"] for s in fake.steps()] == [EXPECTED_UNITS, EXPECTED_UNITS]
    assert [s["metadata"]["stream"] for s in fake.steps()] == [False, True]


def test_a_stream_records_into_the_session_it_was_created_in(
    tally: Tally, fake: FakeTally, client: openai.OpenAI
) -> None:
    wrapped = wrap_openai(client, tally=tally)

    with tally.session(feature="assistant", user_id="user-1") as session:
        stream = wrapped.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        for _ in stream:
            pass

    (body,) = fake.bodies()
    assert body["session"] == {"id": session.id, "feature": "assistant", "complete": True}
    assert body["steps"][0]["units"] == EXPECTED_UNITS
