"""Real responses match the typed models `/openapi.json` describes them with (service/api/replies.py): chat and text
completions, whole and streamed, with logprobs, tool calls, reasoning and a strategy's report, Responses, and errors.
The models forbid unknown fields, so a field the server sends but the schema lacks fails here."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.api import replies
from tests.conftest import Server
from tests.e2e.payloads import ASK_WEATHER, MODEL, WEATHER

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "2+2?"}]


def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def events(server: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{server.base_url}{path}", json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200
        data = [line.removeprefix("data:").strip() for line in response.iter_lines() if line.startswith("data:")]
    assert data[-1] == "[DONE]" or path == "/v1/responses"
    return [json.loads(d) for d in data if d != "[DONE]"]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"logprobs": True, "top_logprobs": 2},
        {"tools": [WEATHER], "tool_choice": "required", "messages": ASK_WEATHER},
        {"chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 4},
        {"strategy": {"name": "majority", "n": 2}, "temperature": 0.7},
    ],
    ids=["plain", "logprobs", "tools", "reasoning", "strategy"],
)
def test_chat_completions_match_their_models(server: Server, extra: dict[str, Any]) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 24, "temperature": 0, **extra}
    response = post(server, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    replies.ChatCompletion.model_validate(response.json())
    for chunk in events(server, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}}):
        replies.ChatCompletionChunk.model_validate(chunk)


@pytest.mark.parametrize("extra", [{}, {"logprobs": 2}, {"strategy": {"name": "best_of_n", "n": 2}, "temperature": 0.7}], ids=["plain", "logprobs", "strategy"])
def test_text_completions_match_their_model(server: Server, extra: dict[str, Any]) -> None:
    body = {"model": MODEL, "prompt": "2+2=", "max_tokens": 8, "temperature": 0, **extra}
    response = post(server, "/v1/completions", body)
    assert response.status_code == 200, response.text
    replies.TextCompletion.model_validate(response.json())
    for chunk in events(server, "/v1/completions", body):
        replies.TextCompletion.model_validate(chunk)


def test_responses_and_their_events_match_their_models(server: Server) -> None:
    body = {"model": MODEL, "input": "2+2?", "max_output_tokens": 16, "temperature": 0}
    created = replies.ResponseObject.model_validate(post(server, "/v1/responses", body).json())
    streamed = events(server, "/v1/responses", body)
    assert [replies.ResponseEvent.model_validate(e).sequence_number for e in streamed] == list(range(len(streamed)))
    replies.ResponseObject.model_validate(streamed[-1]["response"])
    got = httpx.get(f"{server.base_url}/v1/responses/{created.id}", timeout=30)
    replies.ResponseObject.model_validate(got.json())
    deleted = httpx.delete(f"{server.base_url}/v1/responses/{created.id}", timeout=30)
    replies.Deleted.model_validate(deleted.json())


def test_errors_match_their_model(server: Server) -> None:
    for path, body, status in (
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400),
        ("/v1/chat/completions", {"model": "nope", "messages": ASK}, 404),
        ("/v1/responses", {"model": MODEL, "input": "x", "previous_response_id": "resp_nope"}, 404),
    ):
        response = post(server, path, body)
        assert response.status_code == status
        replies.ErrorReply.model_validate(response.json())
