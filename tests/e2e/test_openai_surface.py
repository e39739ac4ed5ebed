"""The OpenAI surface beyond plain text, through the official client against the real server and engine: the served
model's sampling defaults, vLLM's extra sampling fields, and structured outputs (`response_format`), plainly and
through a strategy."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel
from transformers import AutoTokenizer

from tests.conftest import Server
from tests.e2e.payloads import ANSWER_SCHEMA, ASK_WEATHER, MODEL, TIME, WEATHER, schema_format

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "2+2?"}]
DEFAULT_MAX_TOKENS = 1024


class Sum(BaseModel):
    answer: int


@pytest.fixture(scope="module")
def tokenizer(server: Server):
    return AutoTokenizer.from_pretrained(server.state_dir / "models" / MODEL)


def test_the_quick_start_answers_with_the_models_defaults(client: OpenAI) -> None:
    """No max_tokens, no temperature: the card's sampling and the server's cap, so the answer ends by itself."""
    response = client.chat.completions.create(model=MODEL, messages=QUESTION)
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.content
    assert response.usage is not None and response.usage.completion_tokens < DEFAULT_MAX_TOKENS


def test_a_request_without_max_tokens_stops_at_the_servers_cap(client: OpenAI) -> None:
    response = client.completions.create(model=MODEL, prompt="Count:", max_tokens=None, extra_body={"ignore_eos": True})
    assert response.usage is not None and response.usage.completion_tokens == DEFAULT_MAX_TOKENS
    assert response.choices[0].finish_reason == "length"


def test_top_k_one_is_greedy(client: OpenAI) -> None:
    greedy = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=16, temperature=0)
    top_one = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=16, temperature=1.0, extra_body={"top_k": 1})
    assert top_one.choices[0].text == greedy.choices[0].text


def test_logit_bias_forces_a_token(client: OpenAI, tokenizer) -> None:
    token_id = tokenizer.encode(" banana", add_special_tokens=False)[0]
    token = tokenizer.convert_ids_to_tokens(token_id)
    response = client.completions.create(model=MODEL, prompt="My favourite word is", max_tokens=4, temperature=0, logprobs=0, logit_bias={str(token_id): 100})
    tokens = response.choices[0].logprobs.tokens
    assert len(tokens) == 4
    assert all(tokenizer.convert_tokens_to_ids(t) == token_id or t == tokenizer.decode([token_id]) for t in tokens), (token, tokens)


def test_min_tokens_holds_back_the_end(client: OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=64, temperature=0)
    assert plain.choices[0].finish_reason == "stop"
    held = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=64, temperature=0, extra_body={"min_tokens": plain.usage.completion_tokens + 8}
    )
    assert held.usage.completion_tokens >= plain.usage.completion_tokens + 8


def test_parse_returns_the_pydantic_model(client: OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "What is 2+2? Reply in JSON."}], response_format=Sum, max_tokens=64, temperature=0
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Sum)


def test_json_schema_holds_when_streaming(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "I have 3 apples. Reply in JSON."}],
        response_format=schema_format(ANSWER_SCHEMA),
        max_tokens=64,
        temperature=0.8,
        seed=7,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    jsonschema.validate(json.loads(text), ANSWER_SCHEMA)


def test_json_object_is_json(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": 'What is 2+2? Reply with a JSON object like {"answer": 0}.'}],
        response_format={"type": "json_object"},
        max_tokens=128,
        temperature=0,
    )
    assert response.choices[0].finish_reason == "stop", repr(response.choices[0].message.content)
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_best_of_n_samples_inside_the_schema(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "I have 3 pears. Reply in JSON."}],
        response_format=schema_format(ANSWER_SCHEMA),
        max_tokens=64,
        extra_body={"strategy": {"name": "best_of_n", "n": 3, "temperature": 0.8}},
    )
    jsonschema.validate(json.loads(response.choices[0].message.content), ANSWER_SCHEMA)
    candidates = response.model_extra["ponder"]["candidates"]
    assert len(candidates) == 3
    for c in candidates:
        if c["finish_reason"] == "stop":
            jsonschema.validate(json.loads(c["text"]), ANSWER_SCHEMA)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"response_format": schema_format({"type": "integer", "minimum": "zero"})}, "response_format.json_schema.schema"),
        ({"response_format": schema_format(ANSWER_SCHEMA), "extra_body": {"strategy": {"name": "pdr"}}}, "response_format"),
        ({"response_format": {"type": "json_object"}, "extra_body": {"strategy": {"name": "rtv"}}}, "response_format"),
        ({"logit_bias": {"99999999": 5}}, "logit_bias"),
        ({"extra_body": {"chat_template_kwargs": {"chat_template": "{{ 1 }}"}}}, "chat_template_kwargs"),
        ({"extra_body": {"top_k": -2}}, "top_k"),
        ({"extra_body": {"min_tokens": 9}}, "min_tokens"),
    ],
)
def test_bad_fields_are_a_400_naming_them(client: OpenAI, kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, **kwargs)
    assert caught.value.body["param"] == param


def test_chat_template_kwargs_reach_the_template(client: OpenAI) -> None:
    """SmolLM2's template reads no extra variable, so passing one changes nothing: the same greedy answer."""
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    given = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=12, temperature=0, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
    )
    assert given.choices[0].message.content == plain.choices[0].message.content
    assert given.usage.prompt_tokens == plain.usage.prompt_tokens


def test_a_named_tool_choice_is_a_call_of_that_function(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (called,) = choice.message.tool_calls
    assert called.function.name == "get_weather" and called.id
    jsonschema.validate(json.loads(called.function.arguments), WEATHER["function"]["parameters"])


def test_required_without_parallel_calls_makes_exactly_one_call(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False, max_tokens=96, temperature=0
    )
    (called,) = response.choices[0].message.tool_calls
    assert called.function.name in ("get_weather", "get_time")
    assert isinstance(json.loads(called.function.arguments), dict)


def test_a_tool_result_round_trips_under_auto(client: OpenAI) -> None:
    """A call made (forced here: a 135M model seldom decides to call a tool by itself), its result sent back, and the
    conversation continued under `auto`, where the packaged model's template renders the call and the result and
    vLLM's hermes parser reads the reply (tests/unit/test_tools.py parses its format)."""
    forced = {"type": "function", "function": {"name": "get_weather"}}
    first = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=forced, max_tokens=64, temperature=0)
    message = first.choices[0].message
    (called,) = message.tool_calls
    result = {"role": "tool", "tool_call_id": called.id, "content": "Sunny, 21 degrees"}
    followed = client.chat.completions.create(
        model=MODEL, messages=[*ASK_WEATHER, message.model_dump(exclude_none=True), result], tools=[WEATHER], tool_choice="auto", max_tokens=48, temperature=0
    )
    assert followed.usage.prompt_tokens > first.usage.prompt_tokens + 10
    reply = followed.choices[0]
    if reply.message.tool_calls:
        assert reply.finish_reason == "tool_calls"
        assert all(c.function.name == "get_weather" and isinstance(json.loads(c.function.arguments), dict) for c in reply.message.tool_calls)
    else:
        assert reply.message.content


def test_a_streamed_tool_call_arrives_as_tool_call_deltas(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
        temperature=0,
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "launch"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "extra_body": {"strategy": {"name": "rtv"}}}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]}, "tools[0].function.parameters"),
    ],
)
def test_bad_tool_fields_are_a_400_naming_them(client: OpenAI, kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, max_tokens=8, **kwargs)
    assert caught.value.body["param"] == param


def test_a_tool_result_that_answers_no_call_is_a_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[*ASK_WEATHER, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}], tools=[WEATHER], max_tokens=8
        )
    assert caught.value.body["param"] == "messages[1].tool_call_id"
