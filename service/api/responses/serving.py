"""POST /v1/responses, and GET and DELETE of a stored response. A Responses request is served as the chat request
it amounts to (service/api/responses/convert.py), through the same path as chat, strategies included, and rendered
as a Response or its event stream (rendering.py). With `store` (the default) the Response and its conversation are
kept for `previous_response_id`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError

from service.api import replies
from service.api.chat import ChatServing
from service.api.errors import APIError
from service.api.reasoning import Reasoning
from service.api.responses.convert import chat_request, input_messages, renamed
from service.api.responses.protocol import ResponsesRequest
from service.api.responses.rendering import ResponsesFormat
from service.api.serving import apply_preset, describe, parse, read_json
from service.api.tools import ToolUse
from service.settings import Settings
from service.state.ledger import Entry
from service.state.responses import ResponseStore
from strategies.names import split_model_name

log = logging.getLogger(__name__)
router = APIRouter()


def owner_of(request: Request) -> str | None:
    return getattr(request.state, "key_id", None)


def reply_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Response's output as the assistant turn a later request continues from."""
    text = "".join(part.get("text", "") for item in output if item["type"] == "message" for part in item["content"])
    calls = [
        {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
        for item in output
        if item["type"] == "function_call"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return [message]


class ResponsesServing:
    """POST /v1/responses, served through chat's `create` with a Response's rendering; GET and DELETE of a stored
    one, which only the API key that made it may reach."""

    def __init__(self, chat: ChatServing, settings: Settings) -> None:
        self.chat = chat
        self.settings = settings

    def store(self, request: Request) -> ResponseStore:
        return ResponseStore(request.app.state.redis, self.settings.ledger.ttl_s)

    async def create(self, request: Request) -> Response:
        data = await read_json(request, self.settings.max_body_bytes)
        entry: Entry = request.state.entry
        if isinstance(data.get("model"), str):
            entry.model = split_model_name(data["model"])[0]
        body: ResponsesRequest = parse(ResponsesRequest, data)
        store, owner = self.store(request), owner_of(request)
        earlier: list[dict[str, Any]] = []
        if body.previous_response_id is not None:
            record = await store.get(body.previous_response_id, owner)
            if record is None:
                raise APIError(404, f"No response with id {body.previous_response_id!r}", param="previous_response_id", code="response_not_found")
            earlier = record["conversation"]
        conversation = earlier + input_messages(body)
        chat = chat_request(body, conversation)
        apply_preset(chat, request.app.state.presets)
        describe(entry, chat)
        response_id = "resp_" + request.state.request_id

        async def keep(response: dict[str, Any]) -> None:
            try:
                await store.put(response_id, owner, response, conversation + reply_messages(response["output"]))
            except RedisError as exc:  # the answer still goes out; only continuing from it is lost, and said so
                log.warning("response %s not stored: %s", response_id, exc)

        def output(tools: ToolUse | None, reasoning: Reasoning | None) -> ResponsesFormat:
            return ResponsesFormat(chat=True, tools=tools, reasoning=reasoning, request=body, response_id=response_id, store=keep if body.store else None)

        try:
            return await self.chat.create(request, chat, output)
        except APIError as exc:
            raise renamed(exc) from exc

    async def retrieve(self, request: Request, response_id: str) -> JSONResponse:
        record = await self.store(request).get(response_id, owner_of(request))
        if record is None:
            raise APIError(404, f"No response with id {response_id!r}", param="response_id", code="response_not_found")
        return JSONResponse(record["response"])

    async def delete(self, request: Request, response_id: str) -> JSONResponse:
        if not await self.store(request).delete(response_id, owner_of(request)):
            raise APIError(404, f"No response with id {response_id!r}", param="response_id", code="response_not_found")
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def serving(request: Request) -> ResponsesServing:
    served: ResponsesServing = request.app.state.responses
    return served


@router.post("/v1/responses", responses=replies.generation(replies.ResponseObject, replies.ResponseEvent))
async def create_response(request: Request) -> Response:
    return await serving(request).create(request)


@router.get("/v1/responses/{response_id}", response_model=replies.ResponseObject, responses=replies.ERRORS)
async def get_response(request: Request, response_id: str) -> JSONResponse:
    return await serving(request).retrieve(request, response_id)


@router.delete("/v1/responses/{response_id}", response_model=replies.Deleted, responses=replies.ERRORS)
async def delete_response(request: Request, response_id: str) -> JSONResponse:
    return await serving(request).delete(request, response_id)
