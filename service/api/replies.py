"""What the generation routes answer, as typed models: `/openapi.json` describes the responses from these, and the
end-to-end tests validate real responses against them, so the description cannot drift from what is sent.

The bodies are rendered as dicts on the hot path (service/api/rendering.py); these models are their contract.
Ponder's report (`ponder`) is described by its stable keys and left open for the strategy-specific rest.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Reply):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorReply(Reply):
    error: ErrorDetail


class PromptTokensDetails(Reply):
    cached_tokens: int


class Usage(Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class BudgetReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    max_total_tokens: int
    used_tokens: int
    deadline_s: float
    elapsed_s: float
    exhausted: str | None


class PonderReport(BaseModel):
    """The request's id, strategy, budget and compute; a strategy adds its candidates, selection and trace."""

    model_config = ConfigDict(extra="allow")

    request_id: str
    strategy: dict[str, Any]
    budget: BudgetReport
    cost: dict[str, Any]


class TopLogprob(Reply):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Reply):
    content: list[TokenLogprob]


class FunctionCall(Reply):
    name: str
    arguments: str = Field(description="the arguments as a JSON object, in text")


class ToolCall(Reply):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(Reply):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = Field(None, description="a reasoning model's think block (docs/api.md#reasoning-models)")
    tool_calls: list[ToolCall] | None = None


class ChatChoice(Reply):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str | None = Field(description="stop, length, tool_calls, or Ponder's budget and deadline")


class ChatCompletion(Reply):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    ponder: PonderReport


class ToolCallDelta(ToolCall):
    index: int


class ChatDelta(Reply):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(Reply):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletionChunk(Reply):
    """One SSE event's data; the stream ends with `[DONE]`. The last chunk has no choices and carries `ponder` (and
    `usage` when `stream_options.include_usage`); a strategy's progress events come as chunks whose `ponder` is
    `{"event": ...}`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    ponder: dict[str, Any] | None = None


class TextLogprobs(Reply):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class TextChoice(Reply):
    index: int
    text: str
    logprobs: TextLogprobs | None
    finish_reason: str | None


class TextCompletion(Reply):
    """A whole completion, or (streamed) one SSE event's data, with the same object name as OpenAI's."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
    ponder: PonderReport | dict[str, Any] | None = None


class ResponseUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_tokens: int
    output_tokens: int
    total_tokens: int


class ResponseObject(BaseModel):
    """A Response as OpenAI's Responses API defines it (docs/api.md); the request's settings are echoed alongside."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    model: str
    output: list[dict[str, Any]] = Field(description="reasoning, message and function_call items")
    usage: ResponseUsage | None
    incomplete_details: dict[str, str] | None
    ponder: PonderReport | None = None


class ResponseEvent(BaseModel):
    """One event of a streamed Response: its `type` (also the SSE event name), its `sequence_number`, and the fields
    of that type (docs/api.md lists the types)."""

    model_config = ConfigDict(extra="allow")

    type: str
    sequence_number: int


class Deleted(Reply):
    id: str
    object: Literal["response"]
    deleted: bool


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorReply, "description": what}
    for status, what in {
        400: "a field is invalid; `param` names it",
        401: "no API key, or an unknown one",
        404: "an unknown model (or stored response)",
        413: "the body is too large",
        415: "the body is not JSON",
        429: "the key's quota is spent (Retry-After)",
        503: "no engine ready, or the engine failed (Retry-After)",
    }.items()
}


def generation(whole: type[BaseModel], chunk: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A generation route's responses: the whole body, or (with `stream`) SSE events of `chunk`, and the errors."""
    return {
        200: {
            "model": whole,
            "description": f"{whole.__name__}, or with `stream: true` server-sent events whose data are {chunk.__name__}",
            "content": {"text/event-stream": {"schema": {"type": "string", "description": f"`data: <{chunk.__name__}>` lines, then `data: [DONE]`"}}},
        },
        **ERRORS,
    }
