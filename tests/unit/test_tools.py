"""Reading tool calls out of model output, which is hostile input: vLLM's real `hermes` parser for `auto`, JSON for
a forced choice. What does not parse as a call of a declared tool stays text, and is never counted as a call."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from service.api.protocol import Tool
from service.api.tools import ToolUse
from service.execution.models import PACKAGED_TOOL_PARSER, tool_parser_class

WEATHER = Tool.model_validate(
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    }
)
TIME = Tool.model_validate({"type": "function", "function": {"name": "get_time"}})


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A real tokenizer with a tiny vocabulary: reading finished output needs one, but none of its words."""
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "<tool_call>": 1, "</tool_call>": 2}, unk_token="<unk>")))


def use(choice: str, parallel: bool = True, named: str | None = None) -> ToolUse:
    return ToolUse([WEATHER, TIME], choice, named, parallel, tool_parser_class(PACKAGED_TOOL_PARSER), "m", word_tokenizer())


def hermes(name: str, arguments: dict[str, Any]) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def test_auto_reads_hermes_calls_and_the_text_before_them() -> None:
    calls = use("auto").calls("Let me check. " + hermes("get_weather", {"city": "Paris"}) + hermes("get_time", {}))
    assert calls.content == "Let me check. "
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls.tool_calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert calls.finish_reason("stop") == "tool_calls" and calls.finish_reason("length") == "length"
    assert len({c["id"] for c in calls.tool_calls}) == 2


def test_auto_without_parallel_calls_keeps_the_first() -> None:
    calls = use("auto", parallel=False).calls(hermes("get_time", {}) + hermes("get_weather", {"city": "Oslo"}))
    assert [c["function"]["name"] for c in calls.tool_calls] == ["get_time"]


@pytest.mark.parametrize(
    "text",
    [
        "It is sunny.",
        hermes("launch_missiles", {"target": "x"}),
        "<tool_call>\n{not json}\n</tool_call>",
        "<tool_call>\n" + json.dumps({"arguments": {}}) + "\n</tool_call>",
    ],
)
def test_auto_leaves_anything_but_a_declared_call_as_text(text: str) -> None:
    calls = use("auto").calls(text)
    assert calls.tool_calls == [] and calls.content == text
    assert calls.finish_reason("stop") == "stop"


def test_a_named_choice_is_its_arguments() -> None:
    named = use("named", named="get_weather")
    calls = named.calls('{"city": "Rome"}')
    assert calls.content is None and [c["function"]["name"] for c in calls.tool_calls] == ["get_weather"]
    assert json.loads(named.structured.json_schema) == WEATHER.function.parameters  # type: ignore[union-attr]
    assert named.calls('{"city": "Ro').tool_calls == []


def test_required_is_an_array_of_declared_calls() -> None:
    required = use("required", parallel=False)
    schema = json.loads(required.structured.json_schema)  # type: ignore[union-attr]
    assert schema["minItems"] == 1 and schema["maxItems"] == 1
    assert [i["properties"]["name"]["enum"] for i in schema["items"]["anyOf"]] == [["get_weather"], ["get_time"]]
    calls = required.calls('[{"name": "get_time", "parameters": {}}]')
    assert [c["function"]["name"] for c in calls.tool_calls] == ["get_time"]


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_any_output_is_read_without_raising(text: str) -> None:
    for choice in ("auto", "required", "named"):
        calls = use(choice, named="get_weather").calls(text)
        assert all(c["function"]["name"] in ("get_weather", "get_time") for c in calls.tool_calls)
        assert calls.tool_calls or calls.content == text
