"""The FastAPI app: lifespan (Ray, engine pools, Redis) and routes."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import cost_routes, ledger_routes, replies
from service.api.auth import AuthMiddleware, KeyRing, Quotas
from service.api.chat import ChatServing
from service.api.completions import CompletionServing
from service.api.errors import install_error_handlers
from service.api.middleware import RequestIdMiddleware
from service.api.openapi import document_requests
from service.api.presets import load_presets
from service.api.protocol import ChatCompletionRequest, CompletionRequest
from service.api.responses import serving as responses
from service.api.responses.protocol import ResponsesRequest
from service.api.serving import read_request
from service.api.strategy_serving import verifier_services
from service.dashboard import routes as dashboard
from service.engines.prepare import GGUF_PACKAGE_PREFIX, prepare_model
from service.execution.models import ServedModel, build_served_model
from service.execution.pricing import Pricing, hardware_profile
from service.planning.accuracy import AccuracyBook
from service.planning.evidence import ReferenceRuns
from service.planning.hardware import host_info
from service.settings import Settings
from service.state import store
from service.state.ledger import Ledger

log = logging.getLogger(__name__)


def init_ray(settings: Settings) -> None:
    """Joins `ray_address` when set; otherwise starts a local Ray sized to this machine ("local", because a bare
    `ray.init()` would join whatever cluster `ray start` last left on this host)."""
    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=settings.ray_namespace)
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), namespace=settings.ray_namespace, include_dashboard=False)


def load_models(settings: Settings) -> dict[str, ServedModel]:
    state_dir = settings.state_path
    for spec in settings.models:
        if spec.source.startswith(GGUF_PACKAGE_PREFIX):
            prepare_model(spec, state_dir)
    return {spec.name: build_served_model(spec, settings, state_dir) for spec in settings.models}


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = store.connect(settings.redis_url)
        app.state.ledger = Ledger(app.state.redis, settings.ledger)
        app.state.quotas = Quotas(app.state.redis, settings.quota)
        app.state.references = ReferenceRuns(app.state.redis, settings.results_dir)
        app.state.accuracy = AccuracyBook(app.state.ledger, app.state.references)
        app.state.answers, app.state.sandbox = verifier_services(settings)
        app.state.pricing = Pricing(await hardware_profile(settings.hardware, settings.state_path, settings.hardware_price_per_hour))
        await asyncio.to_thread(init_ray, settings)
        app.state.models = await asyncio.to_thread(load_models, settings)
        for served in app.state.models.values():
            served.pool.start()
        log.info("gateway up; engines starting: %s", ", ".join(app.state.models))
        try:
            yield
        finally:
            for served in app.state.models.values():
                await served.pool.stop()
            await app.state.ledger.drain(settings.ledger.write_timeout_s)
            await app.state.redis.aclose()
            await app.state.answers.aclose()
            await asyncio.to_thread(ray.shutdown)

    app = FastAPI(title="Ponder", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.draining = False
    app.state.presets = load_presets(settings.presets)
    app.state.keys = KeyRing(settings.api_keys, settings.api_keys_file)
    chat, text = ChatServing(settings), CompletionServing(settings)
    app.state.responses = responses.ResponsesServing(chat, settings)
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware)
    app.add_middleware(RequestIdMiddleware)  # added last, so outermost: refusals get an id, a log line, a record
    app.include_router(ledger_routes.router)
    app.include_router(cost_routes.router)
    app.include_router(responses.router)
    app.include_router(dashboard.router)

    def served_models(request: Request) -> dict[str, ServedModel]:
        models: dict[str, ServedModel] = request.app.state.models
        return models

    @app.post("/v1/chat/completions", responses=replies.generation(replies.ChatCompletion, replies.ChatCompletionChunk))
    async def chat_completions(request: Request) -> Response:
        body: ChatCompletionRequest = await read_request(request, ChatCompletionRequest, settings.max_body_bytes)
        return await chat.create(request, body)

    @app.post("/v1/completions", responses=replies.generation(replies.TextCompletion, replies.TextCompletion))
    async def completions(request: Request) -> Response:
        body: CompletionRequest = await read_request(request, CompletionRequest, settings.max_body_bytes)
        return await text.create(request, body)

    @app.get("/v1/presets")
    async def list_presets(request: Request) -> dict[str, Any]:
        """Named strategy configurations, each usable as `model="<model>@<preset>"`."""
        return {"object": "list", "data": [p.listing() for p in request.app.state.presets.values()]}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "ponder",
                    "max_model_len": served.pool.info.max_model_len if served.pool.info else None,
                    "ready": served.pool.ready,
                }
                for name, served in served_models(request).items()
            ],
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """Ready (200) only when every served model has a ready replica; the body says what each replica is doing."""
        models = served_models(request)
        engines = {name: await served.pool.stats() for name, served in models.items()}
        redis_ok = await store.healthy(request.app.state.redis)
        ready = all(served.pool.ready for served in models.values()) and redis_ok and not request.app.state.draining
        status = "draining" if request.app.state.draining else ("ok" if ready else "starting")
        body = {"status": status, "models": engines, "redis": redis_ok, "sandbox": request.app.state.sandbox.report(), "host": host_info()}
        return JSONResponse(body, status_code=200 if ready else 503)

    document_requests(
        app,
        bodies={
            ("post", "/v1/chat/completions"): ChatCompletionRequest,
            ("post", "/v1/completions"): CompletionRequest,
            ("post", "/v1/responses"): ResponsesRequest,
            ("post", "/v1/feedback"): ledger_routes.FeedbackRequest,
        },
        queries={("get", "/v1/cost-model"): cost_routes.CostModelQuery, ("get", "/dashboard/data"): dashboard.DashboardQuery},
    )
    return app
