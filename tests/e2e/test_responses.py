"""The Responses API through the official client against the real server and engine: created and streamed,
stored and continued with `previous_response_id`, with tools, structured text and a strategy."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI

from tests.conftest import Server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
}
ANSWER = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": False}


def test_create_answers_with_a_response_object(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="2+2?", max_output_tokens=48, temperature=0)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 48
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.model_extra["ponder"]["request_id"]


def test_a_cut_short_response_is_incomplete(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Tell me a long story.", max_output_tokens=4, temperature=0)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"


def test_streaming_sends_typed_events_that_add_up(client: OpenAI) -> None:
    with client.responses.stream(
        model=MODEL, input=[{"role": "user", "content": "Name a colour."}], instructions="Answer in one word.", max_output_tokens=200, temperature=0
    ) as stream:
        kinds = []
        deltas = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.done", "response.output_item.done"):
        assert kind in kinds
    assert "".join(deltas) == final.output_text
    assert final.usage.output_tokens > 0


def test_previous_response_id_continues_the_conversation(client: OpenAI, server: Server) -> None:
    first = client.responses.create(model=MODEL, input="My name is Ada. Say hello.", max_output_tokens=24, temperature=0)
    second = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id, max_output_tokens=24, temperature=0)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    stored = client.responses.retrieve(first.id)
    assert stored.output_text == first.output_text
    unstored = client.responses.create(model=MODEL, input="Hi", max_output_tokens=4, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=MODEL, input="Hi", previous_response_id="resp_nothing", max_output_tokens=4)
    assert caught.value.body["param"] == "previous_response_id"
    client.responses.delete(first.id)
    assert httpx.get(f"{server.api}/responses/{first.id}").status_code == 404


def test_a_forced_function_call_and_its_output_round_trip(client: OpenAI) -> None:
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=64,
        temperature=0,
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 degrees"}],
        tools=[WEATHER],
        max_output_tokens=48,
        temperature=0,
    )
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.output


def test_a_streamed_function_call(client: OpenAI) -> None:
    events = list(
        client.responses.create(
            model=MODEL, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required", max_output_tokens=64, temperature=0, stream=True
        )
    )
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].name == "get_weather"
    completed = events[-1].response
    assert [i.type for i in completed.output] == ["function_call"]
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_text_format_json_schema(client: OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input="What is 2+2? Reply in JSON.",
        text={"format": {"type": "json_schema", "name": "answer", "schema": ANSWER, "strict": True}},
        max_output_tokens=48,
        temperature=0,
    )
    jsonschema.validate(json.loads(response.output_text), ANSWER)


def test_a_strategy_serves_a_response(client: OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="What is 3+4? Reply with just the number.", max_output_tokens=16, extra_body={"strategy": {"name": "majority", "n": 3}}
    )
    ponder = response.model_extra["ponder"]
    assert ponder["strategy"]["name"] == "majority" and ponder["rollouts"] == 3
    assert response.usage.output_tokens >= sum(c["tokens"] for c in ponder["candidates"])


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "nonsense"}}}}, "text.format.schema"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "launch"}}, "tool_choice"),
        ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": [{"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content"),
    ],
)
def test_bad_fields_are_a_400_naming_them(client: OpenAI, kwargs: dict, param: str) -> None:
    request = {"model": MODEL, "input": "Hi", "max_output_tokens": 8, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(**request)
    assert caught.value.body["param"].startswith(param)
