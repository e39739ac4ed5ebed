"""Every bad request gets the right status and an OpenAI-shaped error body naming the offending parameter."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
LONG_TEXT = "word " * 9000

CASES = [
    # (id, path, body or raw bytes, headers, status, param, code)
    ("malformed json", "chat/completions", b'{"model": "smollm2-135m", "messages": [', None, 400, None, "invalid_json"),
    ("body not an object", "chat/completions", b"[1, 2]", None, 400, None, "invalid_json"),
    (
        "wrong content type",
        "chat/completions",
        b"model=smollm2-135m",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        None,
        "unsupported_media_type",
    ),
    ("oversized body", "chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x" * 300_000}]}, None, 413, None, "request_too_large"),
    ("missing messages", "chat/completions", {"model": MODEL}, None, 400, "messages", "missing"),
    ("empty messages", "chat/completions", {**CHAT, "messages": []}, None, 400, "messages", None),
    ("bad role", "chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, None, 400, "messages[0].role", None),
    (
        "image content",
        "chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        None,
        400,
        None,
        None,
    ),
    ("unknown model", "chat/completions", {**CHAT, "model": "gpt-5"}, None, 404, "model", "model_not_found"),
    ("unknown strategy", "chat/completions", {**CHAT, "strategy": {"name": "telepathy"}}, None, 400, "strategy.name", None),
    ("unknown strategy in model name", "chat/completions", {**CHAT, "model": f"{MODEL}@telepathy"}, None, 400, "model", "unknown_strategy"),
    ("temperature out of range", "chat/completions", {**CHAT, "temperature": 3.5}, None, 400, "temperature", None),
    ("top_p zero", "chat/completions", {**CHAT, "top_p": 0}, None, 400, "top_p", None),
    ("n zero", "chat/completions", {**CHAT, "n": 0}, None, 400, "n", None),
    ("n huge", "chat/completions", {**CHAT, "n": 100000}, None, 400, "n", None),
    ("max_tokens zero", "chat/completions", {**CHAT, "max_tokens": 0}, None, 400, "max_tokens", None),
    ("max_tokens past context", "chat/completions", {**CHAT, "max_tokens": 100000}, None, 400, "max_tokens", "context_length_exceeded"),
    ("prompt of no tokens", "completions", {"model": MODEL, "prompt": ["hi", "\x14"], "max_tokens": 4}, None, 400, "prompt", "invalid_value"),
    ("prompt past context", "completions", {"model": MODEL, "prompt": LONG_TEXT[:120_000], "max_tokens": 4}, None, 400, "prompt", "context_length_exceeded"),
    ("top_logprobs too many", "chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 50}, None, 400, "top_logprobs", None),
    ("top_logprobs without logprobs", "chat/completions", {**CHAT, "top_logprobs": 2}, None, 400, None, None),
    ("too many stop strings", "chat/completions", {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, None, 400, "stop", None),
    ("unrecognized field", "chat/completions", {**CHAT, "temprature": 0.5}, None, 400, "temprature", "extra_forbidden"),
    ("negative budget", "chat/completions", {**CHAT, "budget": {"max_total_tokens": -5}}, None, 400, "budget.max_total_tokens", None),
    ("deadline past the ceiling", "chat/completions", {**CHAT, "budget": {"deadline_s": 10**7}}, None, 400, "budget.deadline_s", None),
    ("stream_options without stream", "chat/completions", {**CHAT, "stream_options": {"include_usage": True}}, None, 400, None, None),
    ("token id past vocabulary", "completions", {"model": MODEL, "prompt": [1, 2, 10**7], "max_tokens": 4}, None, 400, "prompt", None),
    ("completion logprobs too many", "completions", {"model": MODEL, "prompt": "hi", "logprobs": 99}, None, 400, "logprobs", None),
    ("echo unsupported", "completions", {"model": MODEL, "prompt": "hi", "echo": True}, None, 400, "echo", None),
    ("empty prompt", "completions", {"model": MODEL, "prompt": ""}, None, 400, "prompt", None),
    ("n > 1 with greedy decoding", "chat/completions", {**CHAT, "n": 2, "temperature": 0}, None, 400, None, None),
    ("messages not a list", "chat/completions", {**CHAT, "messages": "hello"}, None, 400, "messages", None),
    ("strategy samples zero", "chat/completions", {**CHAT, "strategy": {"name": "majority", "n": 0}}, None, 400, "strategy.n", None),
    ("strategy samples too many", "chat/completions", {**CHAT, "strategy": {"name": "best_of_n", "n": 1000}}, None, 400, "strategy.n", None),
    ("strategy greedy temperature", "chat/completions", {**CHAT, "strategy": {"name": "majority", "temperature": 0}}, None, 400, "strategy.temperature", None),
    ("strategy unknown selector", "chat/completions", {**CHAT, "strategy": {"name": "best_of_n", "select": "vibes"}}, None, 400, "strategy.select", None),
    ("strategy unknown knob", "chat/completions", {**CHAT, "strategy": {"name": "majority", "beams": 3}}, None, 400, "strategy.beams", "extra_forbidden"),
    ("strategy without a name", "chat/completions", {**CHAT, "strategy": {"n": 3}}, None, 400, "strategy.name", None),
    ("n > 1 with a strategy", "chat/completions", {**CHAT, "n": 2, "strategy": {"name": "majority"}}, None, 400, "n", None),
    (
        "model name and strategy disagree",
        "chat/completions",
        {**CHAT, "model": f"{MODEL}@majority", "strategy": {"name": "best_of_n"}},
        None,
        400,
        "strategy",
        "conflicting_strategy",
    ),
    ("code_tests without tests", "chat/completions", {**CHAT, "strategy": {"name": "best_of_n", "select": "code_tests"}}, None, 400, "verifier.tests", None),
    (
        "code_tests without tests, streaming",
        "chat/completions",
        {**CHAT, "stream": True, "strategy": {"name": "best_of_n", "select": "code_tests"}},
        None,
        400,
        "verifier.tests",
        None,
    ),
    ("verifier timeout too long", "chat/completions", {**CHAT, "verifier": {"timeout_s": 3600}}, None, 400, "verifier.timeout_s", None),
    ("verifier entry point not a name", "chat/completions", {**CHAT, "verifier": {"entry_point": "os.system('x')"}}, None, 400, "verifier.entry_point", None),
    ("strategy with a batch of prompts", "completions", {"model": MODEL, "prompt": ["a", "b"], "strategy": {"name": "majority"}}, None, 400, "prompt", None),
]


@pytest.mark.parametrize(("path", "body", "headers", "status", "param", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request(server: Server, path: str, body, headers, status: int, param: str | None, code: str | None) -> None:
    url = f"{server.api}/{path}"
    if isinstance(body, bytes):
        response = httpx.post(url, content=body, headers=headers or {"content-type": "application/json"}, timeout=30)
    else:
        response = httpx.post(url, json=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert response.headers["x-request-id"]


def test_wrong_method_and_unknown_route(server: Server) -> None:
    wrong = httpx.get(f"{server.api}/chat/completions", timeout=10)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.post(f"{server.api}/embeddings", json={}, timeout=10)
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_openai_client_raises_typed_errors(server: Server) -> None:
    client = openai.OpenAI(base_url=server.api, api_key="none", max_retries=0)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=9)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, n=0)


def test_server_still_healthy_after_bad_input(server: Server) -> None:
    assert server.health().status_code == 200
