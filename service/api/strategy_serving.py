"""Serving a request that names a strategy: the strategy runs as one task against a `RequestContext`; the response
is the chosen candidate as a normal choice, `usage` over every rollout, and the `ponder` report (candidates, scores
or votes, what was chosen and why, tokens by stage, budget use). A stream sends the strategy's progress as chunks
with an empty delta and a `ponder` event, then the chosen answer (its tool calls as tool-call deltas, when the
request has tools), then the report.

A `response_format` or forced `tool_choice` constrains every sample of the request's own prompt; the strategies that
answer with such a sample keep it, and vote on answers in that form (strategies/ballots.py). The others are a 400
naming the field."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from compute.protocol import CompletionDelta, EngineRequestError, TokenLogprob
from service.api.errors import APIError
from service.api.protocol import RequestBody
from service.api.reasoning import Reasoning, held_to_budget
from service.api.rendering import OutputFormat
from service.api.serving import NON_STREAM_FLUSH_S, event_stream, open_budget, sampling_for, stream_error, until_disconnected
from service.api.tools import ToolUse
from service.engines.pool import EngineUnavailable
from service.execution.context import RequestContext
from service.execution.generation import Completion
from service.execution.models import ServedModel
from service.execution.pricing import Pricing
from service.settings import Settings
from service.state.cache import RequestCache
from service.state.calibration import RedisCalibration
from service.state.ledger import Entry
from strategies.base import AnswerFormat, StrategyInputError, StrategyResult, Task, VerifierSpec
from strategies.names import split_model_name
from strategies.registry import STRATEGIES, StrategyParams, check_input, default_params, keeps_format
from verifiers.answers import AnswerGrouper, extract_answer
from verifiers.sandbox import Sandbox, SandboxUnavailable

log = logging.getLogger(__name__)

# What the ledger keeps of a strategy's own plan (Kinetics, auto), for the tables that learn from it.
PLAN_KEYS = ("n", "max_tokens", "kv_budget", "bin", "choice", "agreement")


def strategy_params(body: RequestBody) -> StrategyParams | None:
    """The strategy a request asks for (its field or its preset's, else the one in `<model>@<strategy>`), or None for
    a plain call."""
    params = body.strategy or (default_params(name) if (name := split_model_name(body.model)[1]) else None)
    return None if params is None or params.name == "none" else params


def task_for(body: RequestBody, text: str, tools: ToolUse | None = None, reasoning: Reasoning | None = None) -> Task:
    v = body.verifier
    spec = VerifierSpec(tests=v.tests, entry_point=v.entry_point, reference=v.reference, timeout_s=v.timeout_s) if v else VerifierSpec()
    return Task(
        text=text,
        verifier=spec,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.token_limit,
        answer_format=answer_format(body, tools, reasoning),
    )


def answer_format(body: RequestBody, tools: ToolUse | None, reasoning: Reasoning | None = None) -> AnswerFormat:
    """What the request's samples are: tool calls (read as the response renders them), a JSON document, or text;
    after a reasoning model's think block, which never votes."""
    final = reasoning.answer if reasoning is not None else None
    if tools is not None:

        def read_calls(text: str) -> list[tuple[str, str]]:
            return [(str(c["function"]["name"]), c["function"]["arguments"]) for c in tools.calls(text).tool_calls]

        return AnswerFormat("tool_calls", read_calls, must_call=tools.choice != "auto", final=final)
    if body.structured is not None:
        return AnswerFormat("json", final=final)
    return AnswerFormat(final=final)


async def grade(result: StrategyResult, reference: str | None, answers: AnswerGrouper) -> None:
    """With a reference answer, every candidate (and so the chosen one) is marked correct or not, by math-verify."""
    if reference is None:
        return
    for c in result.candidates:
        c.correct = await answers.equivalent(reference, c.answer if c.answer is not None else extract_answer(c.rollout.text))


def check_models(params: BaseModel, models: dict[str, ServedModel], at: str = "strategy") -> None:
    """A strategy that calls more than one model (ATTS) may name any served model, and only those; so may the strategy
    a composed rollout runs."""
    if isinstance(inner := getattr(params, "rollout", None), BaseModel):
        check_models(inner, models, f"{at}.rollout")
    named: dict[str, str | None] = getattr(params, "served_models", dict)()
    for field_name, name in named.items():
        param = f"{at}.{field_name}"
        if name is None:
            continue
        served = models.get(name)
        if served is None:
            raise APIError(400, f"{param}: the model {name!r} is not served here; served models: {', '.join(models)}", param=param, code="model_not_found")
        if served.pool.info is None:
            raise APIError(503, f"{param}: the model {name!r} is not ready yet", param=param, code="engine_unavailable")


def check_format(params: BaseModel, field: str) -> None:
    """`field` (response_format, tools) is kept only by a strategy whose answer is a sample of the request's own
    prompt, where the engine holds every sample to it (`keeps_format`)."""
    if keeps_format(params):
        return
    name = getattr(params, "name", "none")
    raise APIError(
        400,
        f"{field} is kept by majority, best_of_n, ahead_by_k, kinetics and auto, which answer with a sample of the request's own prompt "
        f"(not with early_stop probe, nor over rollouts of rtv, pdr or atts); strategy {name!r} as asked writes its answer from prompts of its own",
        param=field,
        code="unsupported_strategy",
    )


class StrategyRun:
    """One request's strategy: its context, its task, and the report the response carries."""

    def __init__(
        self,
        request: Request,
        body: RequestBody,
        served: ServedModel,
        prompt: list[int],
        text: str,
        params: StrategyParams,
        settings: Settings,
        messages: list[dict[str, str]] | None = None,
        tools: ToolUse | None = None,
        reasoning: Reasoning | None = None,
    ) -> None:
        if body.n != 1:
            raise APIError(400, "n must be 1 with a strategy; the strategy's own `n` sets how many samples it draws", param="n", code="invalid_value")
        self.request_id: str = request.state.request_id
        self.params: StrategyParams = params
        self.budget = open_budget(body.budget, settings)
        self.logprobs_k = body.logprobs_k
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sampling = sampling_for(body, [prompt], served, self.logprobs_k)
        if tools is not None and tools.structured is not None:  # a forced call: every sample of the prompt makes one
            sampling = replace(sampling, structured=tools.structured)
        sampling = held_to_budget(sampling, reasoning)
        self.ctx = RequestContext(
            served=served,
            request_id=self.request_id,
            prompt=prompt,
            task=task_for(body, text, tools, reasoning),
            budget=self.budget,
            answers=request.app.state.answers,
            sandbox=request.app.state.sandbox,
            cache=RequestCache(request.app.state.redis, settings.cache_ttl_s),
            hardware=request.app.state.pricing.hardware,
            accuracy=request.app.state.accuracy,
            calibration=RedisCalibration(request.app.state.redis, settings.calibration.window, settings.calibration.question_ttl_s),
            models=request.app.state.models,
            messages=messages,
            base_sampling=sampling,
            flush_interval_s=0.0 if body.stream else NON_STREAM_FLUSH_S,
            on_event=self.events.put_nowait if body.stream else None,
        )
        self.pricing: Pricing = request.app.state.pricing
        self.entry: Entry = request.state.entry
        self.entry.usage, self.entry.stages, self.entry.budget = self.ctx.usage, self.ctx.stages, self.budget
        self.started = time.monotonic()
        check_models(params, request.app.state.models)
        if body.structured is not None:
            check_format(params, "response_format")
        if tools is not None:
            check_format(params, "tools")
        if reasoning is not None and reasoning.thinking.asked_by is not None:
            check_format(params, reasoning.thinking.asked_by)
        try:
            check_input(self.ctx.task, params)
        except StrategyInputError as exc:
            raise APIError(400, str(exc), param=exc.param, code="invalid_value") from exc

    async def run(self) -> StrategyResult:
        """A strategy may find the request unservable only once it has looked (Kinetics: a budget that buys not one
        token): that is still the caller's 400, raised before any engine work."""
        try:
            result = await STRATEGIES[self.params.name](self.ctx, self.params)
        except StrategyInputError as exc:
            raise APIError(400, str(exc), param=exc.param, code="invalid_value") from exc
        except SandboxUnavailable as exc:
            raise APIError(503, str(exc), param="strategy", code="sandbox_unavailable") from exc
        if isinstance(plan := result.selection.get("plan"), dict):  # it planned its own sampling: the accuracy table learns it
            self.entry.params = {**self.entry.params, "plan": {k: plan[k] for k in PLAN_KEYS if k in plan}}
        await grade(result, self.ctx.task.verifier.reference, self.ctx.answers)
        return result

    def finish_reason(self, result: StrategyResult) -> str:
        if self.budget.exhausted:
            return self.budget.exhausted
        return (result.chosen.rollout.finish_reason if result.chosen else None) or "stop"

    def choice(self, result: StrategyResult) -> Completion:
        chosen = result.chosen.rollout if result.chosen else None
        k = self.logprobs_k or 0
        logprobs = [TokenLogprob(t.token, t.logprob, t.top[:k]) for t in chosen.logprobs] if chosen else []
        return Completion(
            index=0, text=result.text, token_ids=list(chosen.token_ids) if chosen else [], logprobs=logprobs, finish_reason=self.finish_reason(result)
        )

    def report(self, result: StrategyResult) -> dict[str, Any]:
        usage = self.ctx.usage
        return {
            "request_id": self.request_id,
            "strategy": self.params.model_dump(),
            "rollouts": len(result.candidates),
            "engine_requests": self.ctx.engine_requests,
            "tokens": {stage: u.as_openai() for stage, u in self.ctx.stages.items()},
            "cached_prompt_tokens": usage.cached_tokens,
            "cache": self.ctx.cache.report(),
            "latency_s": round(time.monotonic() - self.started, 4),
            "candidates": [c.report() for c in result.candidates],
            "chosen": result.chosen.index if result.chosen else None,
            "selection": result.selection,
            "trace": self.ctx.trace,
            "correct": result.chosen.correct if result.chosen else None,
            "budget": self.budget.report(),
            "finish": self.budget.exhausted,
            "cost": self.pricing.report(self.ctx.calls),
        }


async def serve_strategy(request: Request, run: StrategyRun, body: RequestBody, served: ServedModel, fmt: OutputFormat) -> Response:
    header = {"id": fmt.id_prefix + run.request_id, "created": int(time.time()), "model": served.spec.name}
    with_logprobs = run.logprobs_k is not None
    if body.stream:
        return event_stream(request, fmt.stream(stream_strategy(run, fmt, header, with_logprobs, body.include_usage)))
    result = await until_disconnected(request, run.run())
    if result is None:
        log.info("client disconnected; strategy cancelled and its engine requests aborted")
        return Response(status_code=499)
    payload: dict[str, Any] = {
        **header,
        "object": fmt.object,
        "choices": [fmt.choice(run.choice(result), with_logprobs)],
        "usage": run.ctx.usage.as_openai(),
        "ponder": run.report(result),
    }
    run.entry.done(payload["choices"][0]["finish_reason"], payload["ponder"], payload["ponder"]["correct"])
    log.info(
        "strategy %s: %d rollouts, %d tokens, finish %s",
        run.params.name,
        len(result.candidates),
        run.ctx.usage.completion_tokens,
        run.budget.exhausted,
        extra={"model": served.spec.name, "strategy": run.params.name, "user": body.user},
    )
    return JSONResponse(await fmt.whole(payload), headers={"x-request-id": run.request_id})


async def stream_strategy(
    run: StrategyRun, fmt: OutputFormat, header: dict[str, Any], with_logprobs: bool, include_usage: bool
) -> AsyncIterator[dict[str, str]]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, str]:
        return {"data": json.dumps({**header, "object": fmt.chunk_object, "choices": choices, **extra}, separators=(",", ":"))}

    def empty(finish_reason: str | None = None) -> dict[str, Any]:
        if fmt.chat:
            return {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason}

    task = asyncio.ensure_future(run.run())
    try:
        if fmt.chat:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
        while not (task.done() and run.events.empty()):
            getter = asyncio.ensure_future(run.events.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield chunk([empty()], ponder={"event": getter.result()})
            else:
                getter.cancel()
        result = task.result()
        answer = run.choice(result)
        run.entry.first_token()
        finish_reason = answer.finish_reason
        if fmt.tools is not None:  # the chosen sample's calls, whole, as tool-call deltas with its finish reason
            called = fmt.tool_call_choice(answer)
            finish_reason = called["finish_reason"]
            yield chunk([called])
        else:
            delta = CompletionDelta(index=0, text=answer.text, token_ids=answer.token_ids, logprobs=answer.logprobs)
            yield chunk([fmt.delta_choice(delta, 0, False, with_logprobs, whole=True)])
            yield chunk([empty(answer.finish_reason)])
        final: dict[str, Any] = {"ponder": run.report(result)}
        if include_usage:
            final["usage"] = run.ctx.usage.as_openai()
        run.entry.done(finish_reason, final["ponder"], final["ponder"]["correct"])
        yield chunk([], **final)
        yield {"data": "[DONE]"}
    except (EngineUnavailable, EngineRequestError) as exc:
        log.error("strategy stream failed: %s", exc)
        yield {"data": json.dumps(stream_error(exc, run.entry))}
        yield {"data": "[DONE]"}
    except APIError as exc:
        run.entry.fail(exc.status, exc.message, exc.code)
        yield {"data": json.dumps(exc.body())}
        yield {"data": "[DONE]"}
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def verifier_services(settings: Settings) -> tuple[AnswerGrouper, Sandbox]:
    return AnswerGrouper(timeout_s=settings.answer_timeout_s), Sandbox(settings.sandbox)
