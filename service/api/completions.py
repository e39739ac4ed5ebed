"""Serving a text completion: its prompts (text, or token ids checked against the vocabulary), then a plain call or
a strategy over its one prompt."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import Response

from service.api.errors import APIError
from service.api.protocol import CompletionRequest
from service.api.rendering import OutputFormat
from service.api.serving import resolve_model, serve
from service.api.strategy_serving import StrategyRun, serve_strategy, strategy_params
from service.execution.models import ServedModel
from service.settings import Settings

MAX_COMPLETIONS = 128


class CompletionServing:
    """POST /v1/completions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def create(self, request: Request, body: CompletionRequest) -> Response:
        served = resolve_model(body, request.app.state.models, request.app.state.presets)
        prompts = await self.prompts(body, served)
        if len(prompts) * body.n > MAX_COMPLETIONS:
            raise APIError(400, f"len(prompt) * n may not exceed {MAX_COMPLETIONS} completions", param="n", code="invalid_value")
        params = strategy_params(body)
        if params is not None:
            if len(prompts) != 1:
                raise APIError(400, "A strategy takes one prompt per request", param="prompt", code="invalid_value")
            text = body.prompt if isinstance(body.prompt, str) else served.codec.decode(prompts[0])
            run = StrategyRun(request, body, served, prompts[0], text, params, self.settings)
            return await serve_strategy(request, run, body, served, OutputFormat(chat=False))
        return await serve(request, body, served, prompts, OutputFormat(chat=False), self.settings)

    @staticmethod
    async def prompts(body: CompletionRequest, served: ServedModel) -> list[list[int]]:
        prompts = []
        for prompt in body.prompts():
            if isinstance(prompt, str):
                ids = await asyncio.to_thread(served.codec.encode, prompt)
                if not ids:  # text the tokenizer drops entirely (control characters) leaves the engine nothing to decode from
                    raise APIError(400, "prompt encodes to no tokens", param="prompt", code="invalid_value")
                prompts.append(ids)
            elif max(prompt) >= served.codec.vocab_size:
                raise APIError(400, f"prompt token ids must be below the vocabulary size {served.codec.vocab_size}", param="prompt", code="invalid_value")
            else:
                prompts.append(prompt)
        return prompts
