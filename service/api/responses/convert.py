"""A Responses request as the chat request Ponder serves it by, and a chat result as a Response.

Input items become chat messages (a `function_call` item an assistant turn with `tool_calls`, a
`function_call_output` a `tool` message; reasoning a client sends back is not re-read), `instructions` the system
message, and the stored conversation of `previous_response_id` comes first. Errors of the chat request are named
by the Responses field they came from.
"""

from __future__ import annotations

import re
from typing import Any

from service.api.errors import APIError
from service.api.protocol import ChatCompletionRequest
from service.api.responses.protocol import FunctionCallItem, FunctionCallOutputItem, MessageItem, NamedFunction, ResponsesRequest
from service.api.serving import parse

# Chat field -> the Responses field a request gave it as (by prefix).
PARAMS = (
    (re.compile(r"^messages.*"), "input"),
    (re.compile(r"^max_tokens"), "max_output_tokens"),
    (re.compile(r"^reasoning_effort"), "reasoning.effort"),
    (re.compile(r"^response_format(\.json_schema)?"), "text.format"),
    (re.compile(r"^(tools\[\d+\])\.function"), r"\1"),
)


def responses_param(param: str | None) -> str | None:
    if param is None:
        return None
    for pattern, replacement in PARAMS:
        if pattern.match(param):
            return pattern.sub(replacement, param, count=1)
    return param


def input_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    items = [MessageItem(role="user", content=request.input)] if isinstance(request.input, str) else request.input
    messages: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, MessageItem):
            messages.append({"role": "system" if item.role == "developer" else item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and (last.get("tool_calls") or not last.get("content")):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return messages


def chat_request(request: ResponsesRequest, conversation: list[dict[str, Any]]) -> ChatCompletionRequest:
    """`conversation`: the chat messages of the whole exchange, instructions excluded (they do not carry over)."""
    messages = ([{"role": "system", "content": request.instructions}] if request.instructions else []) + conversation
    fields: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "user": request.user,
        "metadata": request.metadata,
        "chat_template_kwargs": request.chat_template_kwargs,
        "reasoning_effort": request.reasoning.effort if request.reasoning else None,
        "stream": request.stream,
        "stream_options": {"include_usage": True} if request.stream else None,
        "parallel_tool_calls": request.parallel_tool_calls,
        "strategy": request.strategy.model_dump() if request.strategy else None,
        "budget": request.budget.model_dump(exclude_none=True) if request.budget else None,
        "verifier": request.verifier.model_dump(exclude_none=True) if request.verifier else None,
    }
    if request.tools:
        fields["tools"] = [{"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)} for t in request.tools]
    choice = request.tool_choice
    if choice is not None:
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}} if isinstance(choice, NamedFunction) else choice
    fmt = request.text.format if request.text else None
    if fmt is not None:
        if fmt.type == "json_schema":
            spec = fmt.model_dump(by_alias=True, exclude={"type"}, exclude_none=True)
            fields["response_format"] = {"type": "json_schema", "json_schema": spec}
        else:
            fields["response_format"] = {"type": fmt.type}
    try:
        body: ChatCompletionRequest = parse(ChatCompletionRequest, {k: v for k, v in fields.items() if v is not None})
    except APIError as exc:
        raise renamed(exc) from exc
    return body


def renamed(exc: APIError) -> APIError:
    """A chat request's error, naming the Responses field instead."""
    param = responses_param(exc.param)
    message = exc.message.replace(exc.param, param) if exc.param and param else exc.message
    return APIError(exc.status, message, param=param, code=exc.code, headers=exc.headers)


def output_items(message: dict[str, Any], item_id: str) -> list[dict[str, Any]]:
    """A chat message as Responses output items: its reasoning, its text (when it has some, or nothing else), then
    its calls."""
    items: list[dict[str, Any]] = []
    if (reasoning := message.get("reasoning_content")) is not None:
        items.append(reasoning_item(item_id, reasoning))
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        text: dict[str, Any] = {"type": "output_text", "text": message.get("content") or "", "annotations": [], "logprobs": []}
        items.append({"type": "message", "id": f"msg_{item_id}", "status": "completed", "role": "assistant", "content": [text]})
    for i, c in enumerate(calls):
        function = c["function"]
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{item_id}_{i}",
                "call_id": c["id"],
                "name": function["name"],
                "arguments": function["arguments"],
                "status": "completed",
            }
        )
    return items


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": f"rs_{item_id}", "summary": [], "content": [{"type": "reasoning_text", "text": text}], "status": "completed"}


def usage(chat_usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_tokens": chat_usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": chat_usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)},
        "output_tokens": chat_usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": chat_usage["total_tokens"],
    }


def status_of(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """`length` is OpenAI's `max_output_tokens`; Ponder's budget and deadline say themselves."""
    if finish_reason in ("stop", "tool_calls"):
        return "completed", None
    return "incomplete", {"reason": "max_output_tokens" if finish_reason in ("length", None) else finish_reason}


def echoed(request: ResponsesRequest) -> dict[str, Any]:
    """What a Response repeats of its request."""
    return {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tools": [t.model_dump(exclude_none=True) for t in request.tools or ()],
        "tool_choice": (request.tool_choice.model_dump() if isinstance(request.tool_choice, NamedFunction) else request.tool_choice) or "auto",
        "parallel_tool_calls": request.parallel_tool_calls,
        "text": {"format": request.text.format.model_dump(by_alias=True, exclude_none=True)}
        if request.text and request.text.format
        else {"format": {"type": "text"}},
        "reasoning": request.reasoning.model_dump(exclude_none=True) if request.reasoning else None,
        "previous_response_id": request.previous_response_id,
        "store": request.store,
        "metadata": request.metadata or {},
        "user": request.user,
        "truncation": "disabled",
        "error": None,
    }
