"""Strategies over structured outputs and tool calls, through the real server, engine and official client: majority
keeps a `json_schema` on every sample and votes on canonical JSON (or one field of it), votes on forced tool calls by
name then arguments and answers with `tool_calls` (whole, or as tool-call deltas when streaming), and a strategy that
would not keep the constraint is a 400 naming the field. What holds for any sampled outcome is asserted: the answer
is inside the schema, and the report's tally, candidates and usage agree with each other."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from openai import OpenAI

from tests.e2e.payloads import ANSWER_SCHEMA, ASK_WEATHER, MODEL, TIME, WEATHER, schema_format

pytestmark = pytest.mark.slow

APPLES = [{"role": "user", "content": "I have 3 apples. Reply in JSON."}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def assert_the_report_adds_up(ponder: dict[str, Any], usage: Any, n: int) -> dict[str, Any]:
    """The tally counts exactly the voters, the chosen candidate is of the winning group, and usage is every
    sample's tokens. Returns the chosen candidate."""
    selection, candidates = ponder["selection"], ponder["candidates"]
    assert ponder["rollouts"] == len(candidates) == n
    voters = [c for c in candidates if c["group"] is not None]
    assert sum(row["votes"] for row in selection["tally"]) == len(voters)
    chosen = next(c for c in candidates if c["index"] == ponder["chosen"])
    if selection["winner"] is not None:
        assert chosen["group"] == selection["winner"]
    assert usage.completion_tokens == sum(c["tokens"] for c in candidates) == ponder["budget"]["used_tokens"]
    return chosen


def test_majority_keeps_the_schema_and_votes_on_canonical_json(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=APPLES,
        response_format=schema_format(ANSWER_SCHEMA),
        max_tokens=96,
        seed=7,
        extra_body={"strategy": {"name": "majority", "n": 4, "temperature": 0.8}},
    )
    content = response.choices[0].message.content
    jsonschema.validate(json.loads(content), ANSWER_SCHEMA)
    ponder = response.model_extra["ponder"]
    chosen = assert_the_report_adds_up(ponder, response.usage, 4)
    selection = ponder["selection"]
    assert selection["method"] == "majority" and selection["vote_on"] == {"format": "json", "pointer": ""}
    for row in selection["tally"]:  # keyed by canonical JSON, each inside the schema
        assert row["answer"] == canonical(json.loads(row["answer"]))
        jsonschema.validate(json.loads(row["answer"]), ANSWER_SCHEMA)
    assert chosen["text"] == content and chosen["answer"] == canonical(json.loads(content))
    for c in ponder["candidates"]:
        if c["finish_reason"] == "stop":
            jsonschema.validate(json.loads(c["text"]), ANSWER_SCHEMA)


def test_majority_votes_on_the_field_a_json_pointer_names(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=APPLES,
        response_format=schema_format(ANSWER_SCHEMA),
        max_tokens=96,
        seed=7,
        extra_body={"strategy": {"name": "majority", "n": 4, "temperature": 0.8, "vote_on": "/answer"}},
    )
    ponder = response.model_extra["ponder"]
    chosen = assert_the_report_adds_up(ponder, response.usage, 4)
    assert ponder["selection"]["vote_on"] == {"format": "json", "pointer": "/answer"}
    assert all(isinstance(json.loads(row["answer"]), int) for row in ponder["selection"]["tally"])
    assert chosen["answer"] == str(json.loads(response.choices[0].message.content)["answer"])


def test_majority_over_a_named_tool_choice_answers_with_the_winning_call(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=[WEATHER, TIME],
        tool_choice=NAMED,
        max_tokens=128,
        seed=7,
        extra_body={"strategy": {"name": "majority", "n": 4, "temperature": 0.6}},
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (called,) = choice.message.tool_calls
    arguments = json.loads(called.function.arguments)
    assert called.function.name == "get_weather" and called.id
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    ponder = response.model_extra["ponder"]
    chosen = assert_the_report_adds_up(ponder, response.usage, 4)
    selection = ponder["selection"]
    assert selection["vote_on"] == {"format": "tool_calls", "rounds": "names, then arguments"}
    assert selection["by_name"]["winner"] == ["get_weather"]
    assert all(row["answer"].startswith("get_weather(") for row in selection["tally"])  # the tally is by call
    assert chosen["answer"] == f"get_weather({canonical(arguments)})"


def test_a_streamed_vote_over_required_calls_ends_in_tool_call_deltas(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=96,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"strategy": {"name": "majority", "n": 3, "temperature": 0.8}},
    )
    calls: dict[int, dict[str, str]] = {}
    finish, ponder, usage, events, content = None, None, None, 0, ""
    for chunk in stream:
        extra = chunk.model_extra or {}
        events += "event" in extra.get("ponder", {})
        if "candidates" in extra.get("ponder", {}):
            ponder, usage = extra["ponder"], chunk.usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or ():
                entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert events >= 3  # each rollout's progress, then the tally, came before the answer
    assert ponder is not None and usage is not None
    chosen = assert_the_report_adds_up(ponder, usage, 3)
    if chosen["group"] is not None:  # a call that parsed: the response carries it, and no text
        assert finish == "tool_calls" and content == ""
        (call,) = calls.values()
        assert call["name"] in ("get_weather", "get_time") and ponder["selection"]["by_name"]["winner"] == [call["name"]]
        assert chosen["answer"] == f"{call['name']}({canonical(json.loads(call['arguments']))})"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"response_format": {"type": "json_object"}, "extra_body": {"strategy": {"name": "rtv"}}}, "response_format"),
        (
            {"response_format": schema_format(ANSWER_SCHEMA), "extra_body": {"strategy": {"name": "majority", "early_stop": {"name": "probe"}}}},
            "response_format",
        ),
        ({"tools": [WEATHER], "tool_choice": NAMED, "extra_body": {"strategy": {"name": "atts"}}}, "tools"),
        ({"extra_body": {"strategy": {"name": "majority", "vote_on": "/answer"}}}, "strategy.vote_on"),
        ({"response_format": {"type": "json_object"}, "extra_body": {"strategy": {"name": "majority", "vote_on": "answer"}}}, "strategy.vote_on"),
    ],
)
def test_what_a_strategy_cannot_keep_is_a_400_naming_the_field(client: OpenAI, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=APPLES, max_tokens=8, **kwargs)
    assert caught.value.body["param"] == param
