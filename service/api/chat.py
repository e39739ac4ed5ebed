"""Serving a chat conversation: its tools and thinking checked, its messages rendered by the served model's template,
then a plain call or a strategy. The Responses endpoint serves through here too, rendering the result its own way (the
`OutputFormat` it passes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import Response

from service.api.errors import APIError
from service.api.protocol import ChatCompletionRequest
from service.api.reasoning import Reasoning, thinking
from service.api.rendering import OutputFormat
from service.api.serving import resolve_model, serve
from service.api.strategy_serving import StrategyRun, serve_strategy, strategy_params
from service.api.tools import ToolUse, tool_use
from service.settings import Settings


def chat_format(tools: ToolUse | None, reasoning: Reasoning | None) -> OutputFormat:
    return OutputFormat(chat=True, tools=tools, reasoning=reasoning)


class ChatServing:
    """POST /v1/chat/completions. The Responses endpoint serves through `create` too, passing an `output` that
    renders the result as a Response."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def create(
        self, request: Request, body: ChatCompletionRequest, output: Callable[[ToolUse | None, Reasoning | None], OutputFormat] = chat_format
    ) -> Response:
        served = resolve_model(body, request.app.state.models, request.app.state.presets)
        tools = tool_use(body, served)
        asked = thinking(body, served)
        messages = [m.rendered() for m in body.messages]
        try:
            prompt = await asyncio.to_thread(served.codec.chat, messages, asked.template_vars, tools.rendered_tools if tools else None)
        except Exception as exc:  # a template that rejects the conversation (e.g. roles out of order)
            raise APIError(400, f"messages could not be rendered with the chat template: {exc}", param="messages", code="invalid_messages") from exc
        reasoning = Reasoning(served.reasoning_parser, served.codec.tokenizer, prompt, asked) if served.reasoning_parser is not None else None
        fmt = output(tools, reasoning)
        params = strategy_params(body)
        if params is not None:
            question = next((m.text() for m in reversed(body.messages) if m.role == "user"), body.messages[-1].text())
            run = StrategyRun(request, body, served, prompt, question, params, self.settings, messages, tools, reasoning)
            return await serve_strategy(request, run, body, served, fmt)
        return await serve(request, body, served, [prompt], fmt, self.settings)
