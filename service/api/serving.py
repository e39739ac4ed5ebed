"""The two generation endpoints. Both read and validate the body the same way, open the request's budget, run the
metered engine call, and differ only in how a completion is rendered (a chat message or text) — `OutputFormat`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse

from compute.protocol import EngineRequestError, SamplingSpec
from service.api.errors import APIError, error_body, from_validation_error
from service.api.presets import Preset
from service.api.protocol import Budget as BudgetRequest
from service.api.protocol import ChatCompletionRequest, RequestBody
from service.api.reasoning import held_to_budget
from service.api.rendering import OutputFormat
from service.budget import Budget
from service.engines.pool import EngineUnavailable
from service.execution.generation import MeteredRun
from service.execution.models import ServedModel
from service.execution.pricing import Priced, Pricing
from service.settings import Settings
from service.state.ledger import Entry
from strategies.names import STRATEGY_NAMES, split_model_name

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)
# A non-streaming response needs the engine's output only to meter it: batching it per quarter second cuts the
# Ray objects (and the CPU they take from the engine) several-fold. The deadline is enforced in the gateway
# regardless, and the token cap is exact (truncated); the engine may run up to this long past a spent budget.
NON_STREAM_FLUSH_S = 0.25


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise APIError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}", code="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"Request body exceeds {limit} bytes", code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body.extend(part)
        if len(body) > limit:
            raise APIError(413, f"Request body exceeds {limit} bytes", code="request_too_large")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise APIError(400, "Request body must be a JSON object", code="invalid_json")
    return data


def query_fields(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A GET route's query: empty values count as absent (a form's "all"); a repeated key is refused rather than
    silently picking one."""
    given: dict[str, str] = {}
    for key, value in items:
        if key in given:
            raise APIError(400, f"Query parameter {key!r} given more than once", param=key, code="invalid_value")
        given[key] = value
    return {k: v for k, v in given.items() if v != ""}


def parse(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


async def read_request(request: Request, model: type[BaseModel], limit: int) -> Any:
    """The validated body of a generation request. Its ledger entry learns the model as soon as the JSON names one
    (so a rejected request is still ledgered under its model), and the rest once the body is valid."""
    data = await read_json(request, limit)
    entry: Entry = request.state.entry
    if isinstance(data.get("model"), str):
        entry.model = split_model_name(data["model"])[0]
    body = parse(model, data)
    apply_preset(body, request.app.state.presets)
    describe(entry, body)
    return body


def apply_preset(body: RequestBody, presets: dict[str, Preset]) -> None:
    """`<model>@<preset>` fills the strategy (and the budget, unless the request sets its own) from the preset."""
    preset = presets.get(split_model_name(body.model)[1] or "")
    if preset is None:
        return
    if body.strategy is not None:
        raise APIError(
            400,
            f"Model name asks for preset {preset.name!r}, which sets the strategy; leave out the strategy field",
            param="strategy",
            code="conflicting_strategy",
        )
    body.strategy = preset.strategy
    body.budget = body.budget or preset.budget


def describe(entry: Entry, body: RequestBody) -> None:
    """What the ledger knows of a request once its body is valid: model, strategy and its knobs, streaming."""
    entry.model, strategy = split_model_name(body.model)
    entry.stream = body.stream
    if body.strategy is not None:
        entry.strategy, entry.params = body.strategy.name, body.strategy.model_dump()
    elif strategy is not None:
        entry.strategy = strategy
    else:
        entry.params = {"n": body.n, "temperature": body.temperature, "max_tokens": body.token_limit}


def resolve_model(body: RequestBody, models: dict[str, ServedModel], presets: dict[str, Preset]) -> ServedModel:
    name, strategy = split_model_name(body.model)
    if strategy is not None and strategy not in presets:
        if strategy not in STRATEGY_NAMES:
            known = ", ".join([*STRATEGY_NAMES, *presets])
            raise APIError(400, f"Unknown strategy or preset {strategy!r} in model name; available: {known}", param="model", code="unknown_strategy")
        if body.strategy is not None and body.strategy.name != strategy:
            raise APIError(
                400,
                f"Model name asks for strategy {strategy!r} but the strategy field names {body.strategy.name!r}",
                param="strategy",
                code="conflicting_strategy",
            )
    served = models.get(name)
    if served is None:
        raise APIError(404, f"The model {name!r} does not exist; served models: {', '.join(models)}", param="model", code="model_not_found")
    if served.pool.info is None:  # never started yet; during a restart requests wait for the replacement
        raise APIError(503, f"The model {name!r} is not ready yet", code="engine_unavailable")
    return served


def open_budget(requested: BudgetRequest | None, settings: Settings) -> Budget:
    defaults = settings.budget
    max_total = (requested.max_total_tokens if requested and requested.max_total_tokens else None) or defaults.max_total_tokens
    deadline = (requested.deadline_s if requested and requested.deadline_s else None) or defaults.deadline_s
    if deadline > defaults.max_deadline_s:
        raise APIError(400, f"budget.deadline_s may not exceed {defaults.max_deadline_s}", param="budget.deadline_s", code="invalid_value")
    return Budget(max_total_tokens=max_total, deadline_s=deadline)


def sampling_for(body: RequestBody, prompts: list[list[int]], served: ServedModel, logprobs: int | None) -> SamplingSpec:
    """The engine's sampling for a request: each field it leaves out takes the served model's default, and a
    request that names no token limit gets the model's cap (never more than the context leaves)."""
    info = served.pool.info
    assert info is not None
    longest = max(len(p) for p in prompts)
    if longest >= info.max_model_len:
        raise APIError(
            400,
            f"This model's maximum context length is {info.max_model_len} tokens; the prompt has {longest}",
            param="messages" if isinstance(body, ChatCompletionRequest) else "prompt",
            code="context_length_exceeded",
        )
    room = info.max_model_len - longest
    limit = body.token_limit
    if limit is not None and limit > room:
        raise APIError(
            400,
            f"This model's maximum context length is {info.max_model_len} tokens; the prompt has {longest} and max_tokens asks for {limit}",
            param="max_tokens",
            code="context_length_exceeded",
        )
    defaults = served.defaults
    max_tokens = limit or min(defaults.max_tokens, room)
    if body.min_tokens > max_tokens:
        raise APIError(400, f"min_tokens ({body.min_tokens}) exceeds the token limit of this request ({max_tokens})", param="min_tokens", code="invalid_value")
    return SamplingSpec(
        n=body.n,
        temperature=defaults.temperature if body.temperature is None else body.temperature,
        top_p=defaults.top_p if body.top_p is None else body.top_p,
        top_k=max(defaults.top_k if body.top_k is None else body.top_k, 0),
        min_p=defaults.min_p if body.min_p is None else body.min_p,
        repetition_penalty=defaults.repetition_penalty if body.repetition_penalty is None else body.repetition_penalty,
        max_tokens=max_tokens,
        min_tokens=body.min_tokens,
        logit_bias=logit_bias(body, served.codec.vocab_size),
        structured=body.structured,
        stop=body.stop_list(),
        logprobs=logprobs,
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        ignore_eos=body.ignore_eos,
    )


def logit_bias(body: RequestBody, vocab_size: int) -> tuple[tuple[int, float], ...]:
    bias = tuple((int(token), value) for token, value in (body.logit_bias or {}).items())
    unknown = [token for token, _ in bias if token >= vocab_size]
    if unknown:
        raise APIError(400, f"logit_bias names token ids outside the vocabulary (size {vocab_size}): {unknown[:5]}", param="logit_bias", code="invalid_value")
    return bias


async def serve(
    request: Request,
    body: RequestBody,
    served: ServedModel,
    prompts: list[list[int]],
    fmt: OutputFormat,
    settings: Settings,
) -> Response:
    request_id: str = request.state.request_id
    budget = open_budget(body.budget, settings)
    logprobs_k = body.logprobs_k
    sampling = sampling_for(body, prompts, served, logprobs_k)
    if fmt.tools is not None and fmt.tools.structured is not None:
        sampling = replace(sampling, structured=fmt.tools.structured)
    sampling = held_to_budget(sampling, fmt.reasoning)
    run = MeteredRun(
        served.pool,
        request_id,
        prompts,
        sampling,
        budget,
        served.codec.decode,
        requested_max_tokens=sampling.max_tokens,
        flush_interval_s=0.0 if body.stream else NON_STREAM_FLUSH_S,
    )
    entry: Entry = request.state.entry
    entry.usage, entry.stages, entry.budget = run.usage, {"sample": run.usage}, budget
    created = int(time.time())
    strategy = body.strategy.model_dump() if body.strategy else {"name": "none"}
    header = {"id": fmt.id_prefix + request_id, "created": created, "model": served.spec.name}

    pricing: Pricing = request.app.state.pricing
    priced = Priced(served.spec.name, served.shape, served.attention, run)

    def ponder() -> dict[str, Any]:
        return {"request_id": request_id, "strategy": strategy, "budget": budget.report(), "finish": budget.exhausted, "cost": pricing.report([priced])}

    if body.stream:
        return event_stream(request, fmt.stream(stream_events(run, fmt, header, logprobs_k is not None, body.include_usage, ponder, entry)))
    completions = await until_disconnected(request, run.collect())
    if completions is None:
        log.info("client disconnected; engine requests aborted")
        return Response(status_code=499)
    payload: dict[str, Any] = {
        **header,
        "object": fmt.object,
        "choices": [fmt.choice(c, logprobs_k is not None) for c in completions],
        "usage": run.usage.as_openai(),
        "ponder": ponder(),
    }
    entry.done(completions[0].finish_reason if len(completions) == 1 else None, payload["ponder"])
    log.info(
        "served %d completions, %d tokens, finish %s",
        len(completions),
        run.usage.completion_tokens,
        budget.exhausted,
        extra={"model": served.spec.name, "strategy": strategy["name"], "user": body.user},
    )
    return JSONResponse(await fmt.whole(payload), headers={"x-request-id": request_id})


async def stream_events(
    run: MeteredRun, fmt: OutputFormat, header: dict[str, Any], with_logprobs: bool, include_usage: bool, ponder: Any, entry: Entry
) -> AsyncIterator[dict[str, str]]:
    text_offsets = {c.index: 0 for c in run.completions}

    def event(payload: dict[str, Any]) -> dict[str, str]:
        return {"data": json.dumps(payload, separators=(",", ":"))}

    try:
        if fmt.chat:
            for c in run.completions:
                yield event(
                    {
                        **header,
                        "object": fmt.chunk_object,
                        "choices": [{"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
                    }
                )
        async for deltas in run.deltas():
            if any(d.token_ids for d in deltas):
                entry.first_token()
            if fmt.tools is not None:
                continue
            choices = []
            for d in deltas:
                choices.append(fmt.delta_choice(d, text_offsets[d.index], False, with_logprobs))
                text_offsets[d.index] += len(d.text)
            yield event({**header, "object": fmt.chunk_object, "choices": choices})
        if fmt.tools is not None:
            yield event({**header, "object": fmt.chunk_object, "choices": [fmt.tool_call_choice(c) for c in run.completions]})
        final: dict[str, Any] = {**header, "object": fmt.chunk_object, "choices": [], "ponder": ponder()}
        if include_usage:
            final["usage"] = run.usage.as_openai()
        entry.done(run.completions[0].finish_reason if len(run.completions) == 1 else None, final["ponder"])
        yield event(final)
        yield {"data": "[DONE]"}
    except (EngineUnavailable, EngineRequestError) as exc:
        log.error("stream failed: %s", exc)
        yield event(stream_error(exc, entry))
        yield {"data": "[DONE]"}


def stream_error(exc: EngineUnavailable | EngineRequestError, entry: Entry) -> dict[str, Any]:
    """An engine failure after the stream's 200 went out: an error event in OpenAI's shape, noted in the ledger."""
    status, code = (503, "engine_unavailable") if isinstance(exc, EngineUnavailable) else (400, "invalid_request")
    entry.fail(status, str(exc), code)
    return error_body(status, str(exc), code=code)


def event_stream(request: Request, events: AsyncIterator[dict[str, str]]) -> EventSourceResponse:
    """SSE with the request id header. On shutdown a stream gets the drain timeout to finish (sse-starlette would
    otherwise cancel it the moment the server starts stopping)."""
    grace = request.app.state.settings.drain.timeout_s
    return EventSourceResponse(events, sep="\n", headers={"x-request-id": request.state.request_id}, shutdown_grace_period=grace)


async def until_disconnected(request: Request, work: Any) -> Any:
    """Runs `work` unless the client goes away first, in which case it is cancelled (aborting engine requests)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return None
    try:
        return task.result()
    except EngineUnavailable as exc:
        raise APIError(503, str(exc), code="engine_unavailable") from exc
    except EngineRequestError as exc:
        raise APIError(400, str(exc), code="invalid_request") from exc
