"""How a completion is rendered for each endpoint: a `chat.completion` message (with its tool calls read out of
the text when the request has tools) or `text_completion` text, whole or as stream deltas, with OpenAI's logprobs
shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from compute.protocol import CompletionDelta, TokenLogprob
from service.api.reasoning import Reasoning, ReasoningStream
from service.api.tools import ToolUse
from service.execution.generation import Completion

# What a logprob of -inf (a token that structured outputs masked out) is shown as: JSON has no infinity, and vLLM's
# own server shows the same floor.
LOGPROB_FLOOR = -9999.0


@dataclass
class OutputFormat:
    """How one endpoint renders completions: `chat.completion` messages or `text_completion` text. With tools, a
    chat completion's text is read for tool calls before it is rendered. A reasoning model's output is split first:
    its reasoning goes out as `reasoning_content`, and only the answer is read for calls."""

    chat: bool
    tools: ToolUse | None = None
    reasoning: Reasoning | None = None
    streams: dict[int, ReasoningStream] = field(default_factory=dict)

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    @property
    def id_prefix(self) -> str:
        return "chatcmpl-" if self.chat else "cmpl-"

    def split(self, text: str) -> tuple[str | None, str | None]:
        """(reasoning, answer) of a chat output."""
        return self.reasoning.split(text) if self.reasoning is not None else (None, text)

    def choice(self, completion: Completion, with_logprobs: bool) -> dict[str, Any]:
        logprobs = self.logprobs(completion.logprobs, 0) if with_logprobs else None
        if self.chat:
            reasoning, content = self.split(completion.text)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if reasoning is not None:
                message["reasoning_content"] = reasoning
            finish_reason = completion.finish_reason
            if self.tools is not None:
                calls = self.tools.calls(content or "")
                message["content"] = calls.content if calls.tool_calls or content else content
                if calls.tool_calls:
                    message["tool_calls"] = calls.tool_calls
                finish_reason = calls.finish_reason(finish_reason)
            return {"index": completion.index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
        return {"index": completion.index, "text": completion.text, "logprobs": logprobs, "finish_reason": completion.finish_reason}

    async def whole(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The response body, from the chat or text completion payload (another API's shape in a subclass)."""
        return payload

    def stream(self, events: AsyncIterator[dict[str, str]]) -> AsyncIterator[dict[str, str]]:
        """The SSE events sent, from the chat or text completion chunks."""
        return events

    def tool_call_choice(self, completion: Completion) -> dict[str, Any]:
        """A streamed completion's tool calls, sent whole once the completion ends (a call is only known to be one
        once it parses)."""
        assert self.tools is not None
        reasoning, content = self.split(completion.text)
        calls = self.tools.calls(content or "")
        delta: dict[str, Any] = {"content": calls.content} if calls.content else {}
        if reasoning is not None:
            delta["reasoning_content"] = reasoning
        if calls.tool_calls:
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(calls.tool_calls)]
        return {"index": completion.index, "delta": delta, "logprobs": None, "finish_reason": calls.finish_reason(completion.finish_reason)}

    def delta_choice(self, delta: CompletionDelta, offset: int, first: bool, with_logprobs: bool, whole: bool = False) -> dict[str, Any]:
        """`whole`: the delta is all of the output (a strategy's chosen answer), so nothing may be held back."""
        logprobs = self.logprobs(delta.logprobs or [], offset) if with_logprobs and delta.logprobs else None
        if self.chat and self.reasoning is not None:
            parts = self.streams.setdefault(delta.index, self.reasoning.stream()).feed(delta.text, delta.token_ids, whole or delta.finish_reason is not None)
            message = {"role": "assistant"} if first else {}
            if "reasoning" in parts:
                message["reasoning_content"] = parts["reasoning"]
            if "content" in parts:
                message["content"] = parts["content"]
            return {"index": delta.index, "delta": message, "logprobs": logprobs, "finish_reason": delta.finish_reason}
        if self.chat:
            message = {"role": "assistant", "content": delta.text} if first else ({"content": delta.text} if delta.text else {})
            return {"index": delta.index, "delta": message, "logprobs": logprobs, "finish_reason": delta.finish_reason}
        return {"index": delta.index, "text": delta.text, "logprobs": logprobs, "finish_reason": delta.finish_reason}

    def logprobs(self, tokens: list[TokenLogprob], text_offset: int) -> dict[str, Any]:
        if self.chat:
            return {
                "content": [
                    {
                        "token": t.token,
                        "logprob": shown(t.logprob),
                        "bytes": list(t.token.encode()),
                        "top_logprobs": [{"token": tok, "logprob": shown(lp), "bytes": list(tok.encode())} for tok, lp in t.top],
                    }
                    for t in tokens
                ]
            }
        offsets, position = [], text_offset
        for t in tokens:
            offsets.append(position)
            position += len(t.token)
        return {
            "tokens": [t.token for t in tokens],
            "token_logprobs": [shown(t.logprob) for t in tokens],
            "top_logprobs": [{tok: shown(lp) for tok, lp in t.top} for t in tokens],
            "text_offset": offsets,
        }


def shown(logprob: float) -> float:
    return max(logprob, LOGPROB_FLOOR)
