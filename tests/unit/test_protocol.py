"""Request validation: whatever JSON arrives, the validators either accept it or produce a 400 naming a parameter;
they never raise anything else (which would surface as a 500)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

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
