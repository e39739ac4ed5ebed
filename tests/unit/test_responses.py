"""The Responses API's translation to and from chat: input items to messages, errors named by Responses fields, a
chat result to a Response, and the chat stream to typed events (the real server is in tests/e2e/test_responses.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.api.errors import APIError, from_validation_error
from service.api.responses.convert import chat_request, input_messages, output_items, responses_param, status_of
from service.api.responses.protocol import ResponsesRequest
from service.api.responses.rendering import ResponsesFormat
from service.api.responses.serving import reply_messages


def request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})


def test_items_become_chat_messages() -> None:
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather "}, {"type": "input_text", "text": "in Paris?"}]},
        {"type": "reasoning", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    messages = input_messages(request(input=items))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[1]["content"] == "Weather in Paris?"
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


def test_the_chat_request_carries_every_field() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    fmt = {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": True}
    body = request(
        instructions="Be brief.",
        max_output_tokens=9,
        temperature=0.5,
        tools=[tool],
        tool_choice={"type": "function", "name": "f"},
        text={"format": fmt},
        stream=True,
    )
    chat = chat_request(body, input_messages(body))
    assert [m.role for m in chat.messages] == ["system", "user"]
    assert (chat.max_tokens, chat.temperature, chat.include_usage) == (9, 0.5, True)
    assert chat.tools is not None and chat.tools[0].function.name == "f"
    assert chat.structured is not None and json.loads(chat.structured.json_schema or "") == {"type": "object"}


@pytest.mark.parametrize(
    ("chat", "responses"),
    [
        ("messages[3].content", "input"),
        ("max_tokens", "max_output_tokens"),
        ("response_format.json_schema.schema", "text.format.schema"),
        ("tools[2].function.name", "tools[2].name"),
        ("n", "n"),
    ],
)
def test_chat_params_are_named_as_responses_fields(chat: str, responses: str) -> None:
    assert responses_param(chat) == responses


def test_a_chat_error_names_the_responses_field() -> None:
    body = request(input=[{"type": "function_call_output", "call_id": "c9", "output": "x"}])
    with pytest.raises(APIError) as caught:
        chat_request(body, [{"role": "user", "content": None}])
    assert caught.value.param is not None and caught.value.param.startswith("input")


@given(
    st.dictionaries(
        st.sampled_from(["input", "text", "tools", "tool_choice", "max_output_tokens", "reasoning", "store", "x"]),
        st.integers() | st.text(max_size=4),
        max_size=4,
    )
)
@settings(max_examples=200, deadline=None)
def test_any_body_validates_or_names_a_field(fields: dict[str, Any]) -> None:
    try:
        ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})
    except ValidationError as exc:
        error = from_validation_error(exc)
        assert error.status == 400 and error.param is not None


def test_output_items_and_status() -> None:
    message = {"content": "Let me look.", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    items = output_items(message, "abc")
    assert [i["type"] for i in items] == ["message", "function_call"]
    assert items[1]["call_id"] == "c1" and items[1]["id"] == "fc_abc_0"
    assert reply_messages(items) == [{"role": "assistant", "content": "Let me look.", "tool_calls": message["tool_calls"]}]
    assert status_of("stop") == ("completed", None) and status_of("tool_calls") == ("completed", None)
    assert status_of("length") == ("incomplete", {"reason": "max_output_tokens"})
    assert status_of("deadline") == ("incomplete", {"reason": "deadline"})


async def chat_chunks(payloads: list[dict[str, Any]]) -> AsyncIterator[dict[str, str]]:
    for p in payloads:
        yield {"data": json.dumps(p)}
    yield {"data": "[DONE]"}


async def test_the_chat_stream_becomes_typed_events() -> None:
    stored: list[dict[str, Any]] = []

    async def keep(body: dict[str, Any]) -> None:
        stored.append(body)

    fmt = ResponsesFormat(chat=True, request=request(), response_id="resp_r1", store=keep)
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 0}}
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [], "ponder": {"request_id": "r1"}, "usage": usage},
    ]
    events = [json.loads(e["data"]) async for e in fmt.stream(chat_chunks(chunks))]
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello" and final["usage"]["output_tokens"] == 2
    assert stored == [final]


async def test_an_error_in_the_stream_fails_the_response() -> None:
    fmt = ResponsesFormat(chat=True, request=request(), response_id="resp_r2")
    chunks = [{"error": {"message": "engine gone", "type": "server_error", "param": None, "code": "engine_unavailable"}}]
    events = [json.loads(e["data"]) async for e in fmt.stream(chat_chunks(chunks))]
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "engine_unavailable"
