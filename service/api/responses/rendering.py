"""A chat result rendered as the Responses API's: one Response object, or its typed event stream.

The stream is made from the chat stream's chunks: `response.created` and `response.in_progress`, then a reasoning
model's think block as a `reasoning` item (`response.reasoning_text.delta`s and `.done`), then for the text
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`s and their `.done`
events, then each tool call as a `function_call` item with its arguments, then `response.completed` (or
`response.incomplete`, or `response.failed` after an `error` event) carrying the whole Response, `ponder` report
included. Every event has its `sequence_number`; the SSE event name is its type.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from service.api.rendering import OutputFormat
from service.api.responses.convert import echoed, output_items, reasoning_item, status_of, usage
from service.api.responses.protocol import ResponsesRequest

Store = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ResponsesFormat(OutputFormat):
    request: ResponsesRequest | None = None
    response_id: str = ""
    store: Store | None = None
    """Keeps a finished Response (and its conversation) for `previous_response_id`; None when `store` is false."""
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(self, status: str, output: list[dict[str, Any]], chat_usage: dict[str, Any] | None, ponder: dict[str, Any] | None) -> dict[str, Any]:
        assert self.request is not None
        body: dict[str, Any] = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.request.model,
            "output": output,
            "usage": usage(chat_usage) if chat_usage else None,
            "incomplete_details": None,
            **echoed(self.request),
        }
        if ponder is not None:
            body["ponder"] = ponder
        return body

    def finished(self, message: dict[str, Any], finish_reason: str | None, chat_usage: dict[str, Any], ponder: dict[str, Any]) -> dict[str, Any]:
        status, incomplete = status_of(finish_reason)
        body = self.response(status, output_items(message, self.response_id.removeprefix("resp_")), chat_usage, ponder)
        body["incomplete_details"] = incomplete
        return body

    async def whole(self, payload: dict[str, Any]) -> dict[str, Any]:
        choice = payload["choices"][0]
        body = self.finished(choice["message"], choice["finish_reason"], payload["usage"], payload["ponder"])
        if self.store is not None:
            await self.store(body)
        return body

    def stream(self, events: AsyncIterator[dict[str, str]]) -> AsyncIterator[dict[str, str]]:
        return EventStream(self).run(events)


@dataclass
class EventStream:
    fmt: ResponsesFormat
    sequence: int = 0
    text: str = ""
    text_open: bool = False
    reasoning: str | None = None
    """The think block so far; None until it opens (and on a model that does not reason)."""
    reasoning_done: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def item_id(self) -> str:
        return "msg_" + self.fmt.response_id.removeprefix("resp_")

    @property
    def text_index(self) -> int:
        """The message's output index: after the reasoning item, if there is one."""
        return 0 if self.reasoning is None else 1

    @property
    def reasoning_id(self) -> str:
        return "rs_" + self.fmt.response_id.removeprefix("resp_")

    def reasoning_delta(self, delta: str) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if self.reasoning is None:
            self.reasoning = ""
            item = {**reasoning_item(self.reasoning_id.removeprefix("rs_"), ""), "content": [], "status": "in_progress"}
            out.append(self.event("response.output_item.added", output_index=0, item=item))
        self.reasoning += delta
        out.append(self.event("response.reasoning_text.delta", item_id=self.reasoning_id, output_index=0, content_index=0, delta=delta))
        return out

    def close_reasoning(self) -> list[dict[str, str]]:
        if self.reasoning is None or self.reasoning_done:
            return []
        self.reasoning_done = True
        item = reasoning_item(self.reasoning_id.removeprefix("rs_"), self.reasoning)
        return [
            self.event("response.reasoning_text.done", item_id=self.reasoning_id, output_index=0, content_index=0, text=self.reasoning),
            self.event("response.output_item.done", output_index=0, item=item),
        ]

    def event(self, kind: str, **fields: Any) -> dict[str, str]:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return {"event": kind, "data": json.dumps(payload, separators=(",", ":"))}

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def open_text(self) -> list[dict[str, str]]:
        out = self.close_reasoning()
        self.text_open = True
        item = {"type": "message", "id": self.item_id, "status": "in_progress", "role": "assistant", "content": []}
        return out + [
            self.event("response.output_item.added", output_index=self.text_index, item=item),
            self.event("response.content_part.added", item_id=self.item_id, output_index=self.text_index, content_index=0, part=self.part("")),
        ]

    def close_text(self) -> list[dict[str, str]]:
        item = {"type": "message", "id": self.item_id, "status": "completed", "role": "assistant", "content": [self.part(self.text)]}
        return [
            self.event("response.output_text.done", item_id=self.item_id, output_index=self.text_index, content_index=0, text=self.text, logprobs=[]),
            self.event("response.content_part.done", item_id=self.item_id, output_index=self.text_index, content_index=0, part=self.part(self.text)),
            self.event("response.output_item.done", output_index=self.text_index, item=item),
        ]

    def call_events(self) -> list[dict[str, str]]:
        out = self.close_reasoning()
        first = self.text_index + (1 if self.text_open else 0)
        message = {"content": self.text, "tool_calls": self.calls}
        for index, item in enumerate(i for i in output_items(message, self.item_id.removeprefix("msg_")) if i["type"] == "function_call"):
            position = first + index
            out.append(self.event("response.output_item.added", output_index=position, item={**item, "arguments": "", "status": "in_progress"}))
            out.append(self.event("response.function_call_arguments.delta", item_id=item["id"], output_index=position, delta=item["arguments"]))
            out.append(
                self.event("response.function_call_arguments.done", item_id=item["id"], output_index=position, name=item["name"], arguments=item["arguments"])
            )
            out.append(self.event("response.output_item.done", output_index=position, item=item))
        return out

    def chunk(self, choice: dict[str, Any]) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        delta = choice.get("delta") or {}
        if delta.get("reasoning_content"):
            out += self.reasoning_delta(delta["reasoning_content"])
        if delta.get("content"):
            if not self.text_open:
                out += self.open_text()
            self.text += delta["content"]
            out.append(
                self.event(
                    "response.output_text.delta", item_id=self.item_id, output_index=self.text_index, content_index=0, delta=delta["content"], logprobs=[]
                )
            )
        self.calls += [{"id": c["id"], "type": "function", "function": c["function"]} for c in delta.get("tool_calls") or ()]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return out

    async def run(self, chunks: AsyncIterator[dict[str, str]]) -> AsyncIterator[dict[str, str]]:
        in_progress = self.fmt.response("in_progress", [], None, None)
        yield self.event("response.created", response=in_progress)
        yield self.event("response.in_progress", response=in_progress)
        async for chunk in chunks:
            if chunk["data"] == "[DONE]":
                continue
            payload = json.loads(chunk["data"])
            if "error" in payload:
                error = payload["error"]
                yield self.event("error", code=error.get("code"), message=error["message"], param=error.get("param"))
                failed = self.fmt.response("failed", [], None, None)
                failed["error"] = {"code": error.get("code") or "server_error", "message": error["message"]}
                yield self.event("response.failed", response=failed)
                return
            for choice in payload.get("choices") or ():
                for event in self.chunk(choice):
                    yield event
            if "ponder" in payload and "usage" in payload:
                for event in self.finish(payload):
                    yield event
                message = {"content": self.text, "tool_calls": self.calls, "reasoning_content": self.reasoning}
                body = self.fmt.finished(message, self.finish_reason, payload["usage"], payload["ponder"])
                if self.fmt.store is not None:
                    await self.fmt.store(body)
                yield self.event("response.completed" if body["status"] == "completed" else "response.incomplete", response=body)

    def finish(self, payload: dict[str, Any]) -> list[dict[str, str]]:
        if not self.text_open and not self.calls:
            out = self.open_text()
        else:
            out = []
        if self.text_open:
            out += self.close_text()
        return out + self.call_events()
