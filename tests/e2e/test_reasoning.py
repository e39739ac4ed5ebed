"""A reasoning model's format, end to end, made by the packaged model: its chat template opens a think block when a
request asks to think (`chat_template_kwargs.enable_thinking`, or a `reasoning_effort`), Ponder's `think_tags` parser
splits the output, and vLLM's thinking budget closes the block at its cap so that the answer follows. SmolLM2 never
closes a block by itself, so the budget is what every test here sees doing it; `min_tokens` keeps the model from
ending inside the block first."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from openai import OpenAI
from transformers import AutoTokenizer

from tests.conftest import Server
from tests.e2e.payloads import ANSWER_SCHEMA, MODEL, schema_format

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is 17+25?"}]
THINK = {"chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 8}


@pytest.fixture(scope="module")
def tokenizer(server: Server):
    return AutoTokenizer.from_pretrained(server.state_dir / "models" / MODEL)


def test_the_think_block_is_closed_at_the_budget_and_the_answer_follows(client: OpenAI, tokenizer) -> None:
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=48, temperature=0, extra_body={**THINK, "min_tokens": 24})
    message = response.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning and message.content
    assert "think>" not in reasoning and "think>" not in message.content
    # The budget counts generated tokens; the text encoded again may split a little differently.
    assert len(tokenizer.encode(reasoning, add_special_tokens=False)) <= 8 + 2
    assert response.usage.completion_tokens >= 24


def test_a_plain_request_has_no_reasoning(client: OpenAI) -> None:
    message = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0).choices[0].message
    assert message.content and message.model_extra.get("reasoning_content") is None


def test_reasoning_streams_as_its_own_deltas_before_the_answer(client: OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=48, temperature=0, stream=True, extra_body={**THINK, "min_tokens": 24})
    order, reasoning, content = [], "", ""
    for chunk in stream:
        for choice in chunk.choices:
            if part := (choice.delta.model_extra or {}).get("reasoning_content"):
                reasoning += part
                order.append("reasoning")
            if choice.delta.content:
                content += choice.delta.content
                order.append("content")
    assert reasoning and content and "think>" not in reasoning + content
    assert order == sorted(order, key=lambda kind: kind == "content"), "a reasoning delta came after the answer began"


def test_structured_output_starts_after_the_think_block(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=96, temperature=0, response_format=schema_format(ANSWER_SCHEMA), extra_body=THINK
    )
    message = response.choices[0].message
    assert message.model_extra["reasoning_content"]
    jsonschema.validate(json.loads(message.content), ANSWER_SCHEMA)


def test_majority_votes_on_the_answers_never_the_reasoning(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=160,
        temperature=0.7,
        response_format=schema_format(ANSWER_SCHEMA),
        extra_body={**THINK, "strategy": {"name": "majority", "n": 3}},
    )
    ponder = response.model_extra["ponder"]
    message = response.choices[0].message
    assert message.model_extra["reasoning_content"]
    voted = [c for c in ponder["candidates"] if c["group"] is not None]
    assert voted, ponder["candidates"]
    for row in ponder["selection"]["tally"]:  # every ballot is an answer in the schema, none a piece of reasoning
        jsonschema.validate(json.loads(row["answer"]), ANSWER_SCHEMA)
    jsonschema.validate(json.loads(message.content), ANSWER_SCHEMA)


@pytest.mark.parametrize(
    ("extra", "param"), [({**THINK, "strategy": {"name": "rtv"}}, "thinking_token_budget"), ({"thinking_token_budget": 48}, "thinking_token_budget")]
)
def test_what_cannot_be_kept_is_a_400_naming_the_field(client: OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=48, extra_body=extra)
    assert caught.value.body["param"] == param


def test_responses_carry_a_reasoning_item_and_its_events(client: OpenAI) -> None:
    """`reasoning.effort` opens the block, and its budget is cut to half of max_output_tokens."""
    response = client.responses.create(model=MODEL, input="What is 17+25?", max_output_tokens=32, temperature=0, reasoning={"effort": "low"})
    kinds = [item.type for item in response.output]
    assert kinds[0] == "reasoning" and "message" in kinds
    assert response.output[0].content[0].text
    with client.responses.stream(model=MODEL, input="What is 17+25?", max_output_tokens=32, temperature=0, reasoning={"effort": "low"}) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    # Without min_tokens (which Responses lacks) SmolLM2 may end inside its block: the message is then empty, but it
    # still comes after the reasoning item, which is closed first.
    assert "response.reasoning_text.delta" in events
    assert events.index("response.reasoning_text.done") < events.index("response.content_part.added")
    assert [item.type for item in final.output][0] == "reasoning"
