"""Agent frameworks as their users run them, against the real server: the OpenAI Agents SDK through the Responses
API, and langchain-openai's tools and structured output through chat."""

from __future__ import annotations

import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from agents.items import ToolCallItem, ToolCallOutputItem
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import BaseModel

from tests.conftest import Server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
set_tracing_disabled(True)


class Sum(BaseModel):
    answer: int


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny and 21 degrees in {city}"


async def test_an_agent_calls_its_tool_and_answers(aclient: AsyncOpenAI) -> None:
    """The tool choice is forced on the first turn (a 135M model seldom calls a tool by itself); the SDK then resets
    it, so the agent answers with the tool's result in its conversation."""
    agent = Agent(
        name="weather",
        instructions="You answer questions about the weather.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=MODEL, openai_client=aclient),
        model_settings=ModelSettings(tool_choice="get_weather", max_tokens=48, temperature=0),
    )
    result = await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
    calls = [i for i in result.new_items if isinstance(i, ToolCallItem)]
    outputs = [i for i in result.new_items if isinstance(i, ToolCallOutputItem)]
    assert len(calls) == 1 and calls[0].raw_item.name == "get_weather"
    assert outputs and "Sunny" in outputs[0].output
    assert isinstance(result.final_output, str) and result.final_output


class Forecast(BaseModel):
    sunny: bool


async def test_an_agent_runs_on_a_strategy_preset(aclient: AsyncOpenAI) -> None:
    """`<model>@<preset>` is all an agent framework can set: each of the agent's turns is then a majority vote (the
    test server's `quick-vote` preset: three samples), over tool calls on the first turn and over the structured
    answer (canonical JSON) on the last; the schema keeps each sample short enough for the preset's budget."""
    agent = Agent(
        name="weather",
        instructions="You answer questions about the weather.",
        tools=[get_weather],
        output_type=Forecast,
        model=OpenAIResponsesModel(model=f"{MODEL}@quick-vote", openai_client=aclient),
        model_settings=ModelSettings(tool_choice="get_weather", max_tokens=48),
    )
    result = await Runner.run(agent, "Is it sunny in Oslo?", max_turns=4)
    assert [i.raw_item.name for i in result.new_items if isinstance(i, ToolCallItem)] == ["get_weather"]
    assert isinstance(result.final_output, Forecast)
    for turn in result.raw_responses:
        assert turn.response_id is not None
        ponder = (await aclient.responses.retrieve(turn.response_id)).model_extra["ponder"]
        assert ponder["strategy"]["name"] == "majority" and ponder["rollouts"] == 3


def langchain_model(server: Server) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=server.api, api_key="none", temperature=0, max_tokens=64, max_retries=0)


def test_langchain_bind_tools(server: Server) -> None:
    def lookup_weather(city: str) -> str:
        """The current weather in a city."""
        return city

    message = langchain_model(server).bind_tools([lookup_weather], tool_choice="lookup_weather").invoke("What is the weather in Rome?")
    (call,) = message.tool_calls
    assert call["name"] == "lookup_weather" and isinstance(call["args"].get("city"), str)


def test_langchain_with_structured_output(server: Server) -> None:
    result = langchain_model(server).with_structured_output(Sum, method="json_schema").invoke("What is 2+2? Reply in JSON.")
    assert isinstance(result, Sum)
