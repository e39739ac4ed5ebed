"""Tool calling as OpenAI defines it, on any served model.

A forced choice (`required`, or a named function) is generated inside a JSON schema by the engine's structured
outputs, so it always parses: a named function's output is its arguments object, `required` an array of
`{"name", "parameters"}` (one item when `parallel_tool_calls` is false). A forced choice outranks a JSON
`response_format`, which governs only text the model writes instead of calls (an agent's final turn, say). `auto` lets the model choose, and the
served model's tool parser (one of vLLM's, named by `tool_parser` in PONDER_MODELS) reads the calls out of its text.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from compute.protocol import Structured
from service.api.errors import APIError
from service.api.protocol import ChatCompletionRequest, NamedToolChoice, Tool
from service.execution.models import ServedModel


@dataclass
class Calls:
    """What a completion says once its tool calls are read out: the text around them, and the calls."""

    content: str | None
    tool_calls: list[dict[str, Any]]

    def finish_reason(self, engine_reason: str | None) -> str | None:
        return "tool_calls" if self.tool_calls and engine_reason == "stop" else engine_reason


@dataclass
class ToolUse:
    tools: list[Tool]
    choice: str
    """auto, required or named."""
    named: str | None
    parallel: bool
    parser: Any
    """A vLLM ToolParser class, for `auto`."""
    model: str
    tokenizer: Any
    """The served model's, which vLLM's parsers read the text with."""

    @property
    def rendered_tools(self) -> list[dict[str, Any]]:
        return [t.model_dump(exclude_none=True) for t in self.tools]

    @property
    def structured(self) -> Structured | None:
        if self.choice == "named":
            return Structured(json_schema=json.dumps(self._parameters(self.named)))
        if self.choice == "required":
            items = [
                {
                    "type": "object",
                    "properties": {"name": {"type": "string", "enum": [t.function.name]}, "parameters": self._parameters(t.function.name)},
                    "required": ["name", "parameters"],
                    "additionalProperties": False,
                }
                for t in self.tools
            ]
            schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": items}}
            if not self.parallel:
                schema["maxItems"] = 1
            return Structured(json_schema=json.dumps(schema))
        return None

    def _parameters(self, name: str | None) -> dict[str, Any]:
        function = next(t.function for t in self.tools if t.function.name == name)
        return function.parameters or {"type": "object"}

    def calls(self, text: str) -> Calls:
        """Model output is hostile input: what does not parse as the calls asked for stays text, never a call."""
        if self.choice == "named":
            arguments = _json(text)
            return Calls(None, [call(self.named or "", text)]) if isinstance(arguments, dict) else Calls(text, [])
        if self.choice == "required":
            items = _json(text)
            if not isinstance(items, list) or not all(isinstance(i, dict) and "name" in i for i in items):
                return Calls(text, [])
            return Calls(None, [call(i["name"], json.dumps(i.get("parameters", {}), ensure_ascii=False)) for i in items])
        return self._parsed(text)

    @cached_property
    def _parser_request(self) -> Any:
        """The vLLM request a parser reads the declared tools from: built once, though a strategy reads every sample."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VLLMRequest

        return VLLMRequest.model_validate({"model": self.model, "messages": [], "tools": self.rendered_tools, "tool_choice": "auto"})

    @cached_property
    def _parser(self) -> Any:
        return self.parser(self.tokenizer)

    def _parsed(self, text: str) -> Calls:
        extracted = self._parser.extract_tool_calls(text, self._parser_request)
        known = {t.function.name for t in self.tools}
        found = [c for c in extracted.tool_calls if c.function.name in known] if extracted.tools_called else []
        if not found:
            return Calls(text, [])
        if not self.parallel:
            found = found[:1]
        return Calls(extracted.content or None, [call(c.function.name, c.function.arguments) for c in found])


def call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": name, "arguments": arguments}}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def tool_use(body: ChatCompletionRequest, served: ServedModel) -> ToolUse | None:
    """The request's tools, checked against each other and the conversation; None when the model is not to call any.
    Each inconsistency is a 400 naming the field."""
    names = [t.function.name for t in body.tools or ()]
    if len(set(names)) != len(names):
        raise APIError(400, "tools: function names must be unique", param="tools", code="invalid_value")
    choice = body.tool_choice
    if choice not in (None, "none") and not names:
        raise APIError(400, "tool_choice needs tools", param="tool_choice", code="invalid_value")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise APIError(
            400, f"tool_choice names {choice.function.name!r}, which is not among the tools: {', '.join(names)}", param="tool_choice", code="invalid_value"
        )
    called: set[str] = set()
    for i, message in enumerate(body.messages):
        called.update(c.id for c in message.tool_calls or ())
        if message.tool_call_id is not None and message.tool_call_id not in called:
            raise APIError(
                400,
                f"messages[{i}] answers tool_call_id {message.tool_call_id!r}, which no earlier assistant message called",
                param=f"messages[{i}].tool_call_id",
                code="invalid_value",
            )
    if not body.tools or choice == "none":
        return None
    if choice in (None, "auto") and served.tool_parser is None:
        raise APIError(
            400,
            f"tool_choice auto needs a tool parser for {served.spec.name!r} (tool_parser in PONDER_MODELS); use required or a named function",
            param="tool_choice",
            code="invalid_value",
        )
    mode = "named" if isinstance(choice, NamedToolChoice) else (choice or "auto")
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    return ToolUse(list(body.tools), mode, named, body.parallel_tool_calls, served.tool_parser, served.spec.name, served.codec.tokenizer)
