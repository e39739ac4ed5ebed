"""Request validation: whatever JSON arrives, the validators either accept it or produce a 400 naming a parameter;
they never raise anything else (which would surface as a 500)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from compute.protocol import Structured
from service.api.errors import from_validation_error, param_path
from service.api.protocol import ChatCompletionRequest, CompletionRequest
from strategies.names import split_model_name

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "model",
    "messages",
    "prompt",
    "n",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
    "strategy",
    "budget",
    "seed",
    "user",
    "echo",
    "ignore_eos",
    "top_k",
    "min_p",
    "repetition_penalty",
    "min_tokens",
    "logit_bias",
    "response_format",
    "chat_template_kwargs",
]
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=8)


@given(bodies)
@settings(max_examples=300, deadline=None)
def test_any_body_validates_or_gives_a_400(body: dict[str, Any]) -> None:
    for model in (ChatCompletionRequest, CompletionRequest):
        try:
            model.model_validate(body)
        except ValidationError as exc:
            error = from_validation_error(exc)
            assert error.status == 400
            assert error.message
            assert error.body()["error"]["type"] == "invalid_request_error"


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_temperature_range(value: float) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": value}
    if 0 <= value <= 2:
        assert ChatCompletionRequest.model_validate(body).temperature == value
    else:
        with pytest.raises(ValidationError) as exc:
            ChatCompletionRequest.model_validate(body)
        assert from_validation_error(exc.value).param == "temperature"


@given(st.integers(min_value=-5, max_value=200))
def test_n_range(n: int) -> None:
    body = {"model": "m", "prompt": "x", "n": n}
    if 1 <= n <= 64:
        assert CompletionRequest.model_validate(body).n == n
    else:
        with pytest.raises(ValidationError):
            CompletionRequest.model_validate(body)


def test_prompt_forms() -> None:
    def prompts(value: Any) -> list:
        return CompletionRequest.model_validate({"model": "m", "prompt": value}).prompts()

    assert prompts("hi") == ["hi"]
    assert prompts(["a", "b"]) == ["a", "b"]
    assert prompts([1, 2, 3]) == [[1, 2, 3]]
    assert prompts([[1], [2, 3]]) == [[1], [2, 3]]


def test_chat_defaults_and_limits() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "max_completion_tokens": 7,
            "logprobs": True,
            "stop": "x",
        }
    )
    assert request.messages[0].text() == "ab"
    assert request.token_limit == 7
    assert request.logprobs_k == 0
    assert request.stop_list() == ("x",)
    assert request.strategy is None


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("messages", 0, "content", "str"), "messages[0].content"),
        (("prompt", "list[int]", 3), "prompt[3]"),
        (("budget", "deadline_s"), "budget.deadline_s"),
        ((), None),
    ],
)
def test_param_path(loc: tuple, expected: str | None) -> None:
    assert param_path(loc) == expected


@given(st.text(max_size=20), st.text(max_size=10))
def test_split_model_name(model: str, strategy: str) -> None:
    if "@" not in model:
        assert split_model_name(f"{model}@{strategy}") == (model, strategy)
        assert split_model_name(model) == (model, None)


# Request bodies whose response_format is drawn from the shapes a client might send, valid or not.
schemas = st.dictionaries(
    st.sampled_from(["type", "properties", "required", "items", "enum", "minimum", "$ref"]) | st.text(max_size=5), json_values, max_size=4
)
formats = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "json_object", "json_schema", "xml"])},
    optional={"json_schema": st.fixed_dictionaries({"name": st.text(max_size=70)}, optional={"schema": schemas, "strict": json_values})},
)


@given(formats)
@settings(max_examples=300, deadline=None)
def test_any_response_format_validates_or_names_the_field(fmt: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": fmt}
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        error = from_validation_error(exc)
        assert error.status == 400
        assert error.param is not None and error.param.startswith("response_format")
        return
    structured = request.structured
    if fmt["type"] == "text":
        assert structured is None
    else:
        assert structured is not None
        if structured.json_schema is not None:
            Draft202012Validator.check_schema(json.loads(structured.json_schema))


def test_an_invalid_schema_is_a_400_naming_it() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "integer", "minimum": "zero"}}},
    }
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(body)
    error = from_validation_error(caught.value)
    assert error.param == "response_format.json_schema.schema"
    assert "not a valid JSON Schema" in error.message


def test_a_schema_reaches_the_engine_as_its_json() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": False}
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}},
    }
    structured = ChatCompletionRequest.model_validate(body).structured
    assert structured is not None and structured.json_schema is not None
    assert json.loads(structured.json_schema) == schema
    assert ChatCompletionRequest.model_validate({**body, "response_format": {"type": "json_object"}}).structured == Structured(json_object=True)


@pytest.mark.parametrize("key", ["chat_template", "tokenize", "add_generation_prompt", "tools"])
def test_chat_template_kwargs_cannot_change_how_the_template_is_applied(key: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {key: "x"}}
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(body)
    assert from_validation_error(caught.value).param == "chat_template_kwargs"
    assert ChatCompletionRequest.model_validate({**body, "chat_template_kwargs": {"enable_thinking": False}}).chat_template_kwargs == {"enable_thinking": False}


@pytest.mark.parametrize(("bias", "ok"), [({"50256": -100}, True), ({"12": 100.0, "7": 0}, True), ({"a": 1}, False), ({"1": 101}, False), ({"-1": 1}, False)])
def test_logit_bias(bias: dict[str, float], ok: bool) -> None:
    body = {"model": "m", "prompt": "x", "logit_bias": bias}
    if ok:
        assert CompletionRequest.model_validate(body).logit_bias == {k: float(v) for k, v in bias.items()}
    else:
        with pytest.raises(ValidationError) as caught:
            CompletionRequest.model_validate(body)
        assert from_validation_error(caught.value).param.startswith("logit_bias")
