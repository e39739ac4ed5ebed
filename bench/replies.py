"""The gateway's replies as the benchmarks read them through the OpenAI client, whose types leave optional what the
gateway always sends (`usage`) and keep Ponder's own `ponder` report among a response's extra fields."""

from __future__ import annotations

from typing import Any, cast

from openai.types import Completion, CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam


def chat_messages(messages: list[dict[str, str]]) -> list[ChatCompletionMessageParam]:
    """The suites' messages, plain role-and-content dicts, which are chat messages as the client types them."""
    return cast(list[ChatCompletionMessageParam], messages)


def usage(response: ChatCompletion | Completion) -> CompletionUsage:
    if response.usage is None:
        raise RuntimeError(f"the gateway's reply {response.id} carries no usage")
    return response.usage


def ponder(response: ChatCompletion | Completion) -> dict[str, Any]:
    if response.model_extra is None:
        raise RuntimeError(f"the gateway's reply {response.id} carries no ponder report")
    report: dict[str, Any] = response.model_extra["ponder"]
    return report
