"""The OpenAI API through the official client against the real server: real vLLM engine in a real Ray actor."""

from __future__ import annotations

import asyncio
import json

import pytest
from openai import AsyncOpenAI, OpenAI
from transformers import AutoTokenizer

from tests.conftest import Server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
QUESTION = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def tokenizer(server: Server):
    return AutoTokenizer.from_pretrained(server.state_dir / "models" / MODEL)


def chat_prompt_tokens(tokenizer, messages) -> int:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "input_ids") else ids)


def test_models_lists_the_packaged_model(client: OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_chat_non_stream_usage_matches_tokens(client: OpenAI, tokenizer) -> None:
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0, logprobs=True)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens == len(choice.logprobs.content)
    assert response.usage.prompt_tokens == chat_prompt_tokens(tokenizer, QUESTION)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    # the end-of-sequence token is counted and has a log-probability, but is not part of the text
    assert "".join(t.token for t in choice.logprobs.content).removesuffix("<|im_end|>") == choice.message.content
    ponder = response.model_extra["ponder"]
    assert ponder["strategy"] == {"name": "none"}
    assert response.id == f"chatcmpl-{ponder['request_id']}"
    assert ponder["budget"]["used_tokens"] == response.usage.completion_tokens


def test_request_id_in_header_and_body(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, max_tokens=4)
    body = raw.parse()
    assert raw.headers["x-request-id"] == body.model_extra["ponder"]["request_id"]


def test_greedy_is_deterministic(client: OpenAI) -> None:
    texts = {client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0).choices[0].message.content for _ in range(2)}
    assert len(texts) == 1


def test_chat_stream_with_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=20,
        temperature=0,
        stream=True,
        logprobs=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    tokens = sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert content
    assert finish in (["stop"], ["length"])
    assert chunks[-1].usage.completion_tokens == tokens
    greedy = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=20, temperature=0)
    assert content == greedy.choices[0].message.content


def test_n_greater_than_one(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, n=4, temperature=1.0, logprobs=True)
    assert sorted(c.index for c in response.choices) == [0, 1, 2, 3]
    assert response.usage.completion_tokens == sum(len(c.logprobs.content) for c in response.choices)
    assert len({c.message.content for c in response.choices}) > 1


def test_top_logprobs(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=5, logprobs=True, top_logprobs=3, temperature=0)
    for token in response.choices[0].logprobs.content:
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
        assert token.logprob <= 0
        # greedy: the chosen token is the most likely one
        assert token.token == token.top_logprobs[0].token


def test_completions_with_logprobs(client: OpenAI, tokenizer) -> None:
    prompt = "The capital of France is"
    response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, logprobs=2, temperature=0)
    choice = response.choices[0]
    assert choice.text == "".join(choice.logprobs.tokens)
    assert len(choice.logprobs.tokens) == response.usage.completion_tokens == len(choice.logprobs.top_logprobs)
    assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs)
    assert response.usage.prompt_tokens == len(tokenizer.encode(prompt))
    assert response.id.startswith("cmpl-")


def test_completions_batch_of_prompts_and_token_ids(client: OpenAI, tokenizer) -> None:
    ids = tokenizer.encode("Once upon a time")
    response = client.completions.create(model=MODEL, prompt=[ids, ids], max_tokens=6, n=2, temperature=0.8)
    assert sorted(c.index for c in response.choices) == [0, 1, 2, 3]
    assert response.usage.prompt_tokens == 2 * len(ids)
    greedy = client.completions.create(model=MODEL, prompt=["Once upon a time", "Once upon a time"], max_tokens=6, temperature=0)
    assert greedy.choices[0].text == greedy.choices[1].text


async def test_async_completions_stream(aclient: AsyncOpenAI) -> None:
    stream = await aclient.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=12, stream=True, temperature=0, stream_options={"include_usage": True})
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].text
        if chunk.usage:
            usage = chunk.usage
    assert text
    assert usage is not None and usage.completion_tokens > 0


async def test_async_chat(aclient: AsyncOpenAI) -> None:
    response = await aclient.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)
    assert response.choices[0].message.content


async def test_sixteen_concurrent_requests(aclient: AsyncOpenAI) -> None:
    """Half of them seeded: per-request seeds once crashed the CPU engine when prefills were chunked."""

    async def one(i: int):
        return await aclient.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Count to {i + 3}."}],
            max_tokens=32,
            temperature=0.8,
            seed=i if i % 2 else None,
            extra_body={"ignore_eos": True},
        )

    responses = await asyncio.gather(*(one(i) for i in range(16)))
    assert all(r.usage.completion_tokens == 32 for r in responses)
    assert len({r.model_extra["ponder"]["request_id"] for r in responses}) == 16


def test_seed_is_reproducible(client: OpenAI) -> None:
    texts = {
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=1.0, seed=7).choices[0].message.content for _ in range(2)
    }
    assert len(texts) == 1


def test_model_name_may_carry_the_strategy(client: OpenAI) -> None:
    response = client.chat.completions.create(model=f"{MODEL}@none", messages=QUESTION, max_tokens=4)
    assert response.model == MODEL
    assert response.model_extra["ponder"]["strategy"]["name"] == "none"


def test_token_budget_fires(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=64, n=3, extra_body={"ignore_eos": True, "budget": {"max_total_tokens": 40}}
    )
    assert response.usage.completion_tokens == 40
    assert {c.finish_reason for c in response.choices} == {"budget"}
    assert response.model_extra["ponder"]["finish"] == "budget"
    assert response.model_extra["ponder"]["budget"]["used_tokens"] == 40


def test_token_budget_fires_in_a_stream(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=64,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, "budget": {"max_total_tokens": 21}},
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 21
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert sorted(finishes) == ["budget", "budget"]


def test_deadline_fires(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4000, extra_body={"ignore_eos": True, "budget": {"deadline_s": 1.5}})
    ponder = response.model_extra["ponder"]
    assert response.choices[0].finish_reason == "deadline"
    assert ponder["finish"] == "deadline"
    assert 1.5 <= ponder["budget"]["elapsed_s"] < 4
    assert 0 < response.usage.completion_tokens < 4000


def test_deadline_fires_in_a_stream(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=4000, stream=True, extra_body={"ignore_eos": True, "budget": {"deadline_s": 1}}
    )
    finishes = [ch.finish_reason for c in stream for ch in c.choices if ch.finish_reason]
    assert finishes == ["deadline"]


def test_bodies_are_openai_shaped_json(server: Server) -> None:
    import httpx

    response = httpx.post(f"{server.api}/chat/completions", json={"model": MODEL, "messages": QUESTION, "max_tokens": 3}, timeout=60)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert json.loads(response.text) == body
