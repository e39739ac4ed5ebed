"""A reasoning model's output split into its think block and its answer, by the `think_tags` parser the packaged
model uses: whole, and as it streams (in any chunking, the deltas add up to the whole split), and the engine's view
of whether reasoning is still running, which decides when structured outputs start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from compute.protocol import SamplingSpec
from service.api.errors import APIError
from service.api.protocol import ChatCompletionRequest
from service.api.reasoning import EFFORT_BUDGET, Reasoning, Thinking, held_to_budget, thinking
from service.execution.models import reasoning_parser_class

VOCAB = {"<unk>": 0, "<": 1, "Ġ<": 2, "</": 3, "Ġ</": 4, "think": 5, ">": 6, "x": 7}
OPEN, CLOSE = [1, 5, 6], [3, 5, 6]
TOKENIZER = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(VOCAB, unk_token="<unk>")))
PARSER = reasoning_parser_class("think_tags")


def reasoning(prompt: list[int]) -> Reasoning:
    return Reasoning(PARSER, TOKENIZER, prompt, Thinking(None))


def test_reasoning_runs_while_a_block_is_open() -> None:
    parser = PARSER(TOKENIZER)
    assert parser.is_reasoning_end([7, 7])  # a prompt that never opened a block: structured outputs start at once
    parser = PARSER(TOKENIZER)
    assert not parser.is_reasoning_end([7, *OPEN, 7])
    assert not parser.is_reasoning_end([7, *OPEN, 7, 7, 3])  # half a tag
    assert parser.is_reasoning_end([7, *OPEN, 7, 7, *CLOSE])


@given(st.lists(st.sampled_from(list(VOCAB.values())), max_size=40), st.integers(0, 40))
def test_the_running_scan_agrees_with_a_fresh_one(ids: list[int], cut: int) -> None:
    running = PARSER(TOKENIZER)
    running.is_reasoning_end(ids[:cut])
    assert running.is_reasoning_end(ids) == PARSER(TOKENIZER).is_reasoning_end(ids)


def test_a_block_the_prompt_opened_is_reasoning_until_closed() -> None:
    opened = reasoning([7, *OPEN])
    assert opened.split("17 and 25 make 42\n</think>\n\nThe answer is 42.") == ("17 and 25 make 42\n", "\n\nThe answer is 42.")
    assert opened.split("still thinking") == ("still thinking", None)
    assert reasoning([7]).split("The answer is 42.") == (None, "The answer is 42.")
    assert opened.answer("a</think>42") == "42" and opened.answer("a") == ""


plain = st.text(st.sampled_from(["a", " ", "\n", "4", "2", "<", "/", ">", "k"]), max_size=30).filter(lambda t: "think>" not in t)


@st.composite
def outputs(draw: st.DrawFn) -> tuple[bool, str]:
    """What a model writes: after a prompt that opened the block, reasoning then perhaps `</think>` and the answer;
    after one that did not, an answer, perhaps after a block of its own."""
    opened = draw(st.booleans())
    thought, answer = draw(plain), draw(plain)
    if opened:
        return True, thought + ("</think>" + answer if draw(st.booleans()) else "")
    return False, ("<think>" + thought + "</think>" if draw(st.booleans()) else "") + answer


@given(outputs(), st.lists(st.integers(1, 6), max_size=12))
@settings(max_examples=300, deadline=None)
def test_streamed_deltas_add_up_to_the_whole_split(output: tuple[bool, str], cuts: list[int]) -> None:
    opened, text = output
    model = reasoning([7, *OPEN] if opened else [7])
    chunks, start = [], 0
    for size in cuts:
        chunks.append(text[start : start + size])
        start += size
    chunks.append(text[start:])
    stream, sent = model.stream(), {"reasoning": "", "content": ""}
    for i, chunk in enumerate(chunks):
        for key, value in stream.feed(chunk, [], i == len(chunks) - 1).items():
            sent[key] += value
    whole_reasoning, whole_content = model.split(text)
    assert sent == {"reasoning": whole_reasoning or "", "content": whole_content or ""}


def served(parser: object) -> Any:
    return SimpleNamespace(reasoning_parser=parser, spec=SimpleNamespace(name="m"))


ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"thinking_token_budget": 8}, "thinking_token_budget"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"chat_template_kwargs": {"enable_thinking": True}}, "chat_template_kwargs"),
    ],
)
def test_asking_a_model_that_cannot_think_is_a_400_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        thinking(ChatCompletionRequest.model_validate({**ASK, **fields}), served(None))
    assert caught.value.param == param


def test_an_effort_opens_the_block_and_sets_a_budget_a_request_may_override() -> None:
    asked = thinking(ChatCompletionRequest.model_validate({**ASK, "reasoning_effort": "low"}), served(PARSER))
    assert (asked.template_vars, asked.budget, asked.explicit_budget, asked.asked_by) == (
        {"enable_thinking": True},
        EFFORT_BUDGET["low"],
        False,
        "reasoning_effort",
    )
    off = thinking(ChatCompletionRequest.model_validate({**ASK, "reasoning_effort": "none"}), served(None))
    assert (off.template_vars, off.budget, off.asked_by) == ({"enable_thinking": False}, None, None)
    own = thinking(ChatCompletionRequest.model_validate({**ASK, "reasoning_effort": "high", "thinking_token_budget": 5}), served(PARSER))
    assert (own.budget, own.explicit_budget) == (5, True)


def test_a_budget_leaves_room_for_the_answer() -> None:
    def held(budget: int, explicit: bool) -> int | None:
        model = Reasoning(PARSER, TOKENIZER, [7], Thinking(None, budget, explicit, "x"))
        return held_to_budget(SamplingSpec(max_tokens=64), model).thinking_budget

    assert held(16, True) == 16
    assert held(1024, False) == 32
    with pytest.raises(APIError) as caught:
        held(64, True)
    assert caught.value.param == "thinking_token_budget"
