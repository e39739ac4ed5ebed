"""API keys and quotas on a light app (the real middlewares, the real Redis server, no engine): missing, wrong and
revoked keys, the Basic challenge for browsers, quotas with Retry-After, and keys kept out of logs and the ledger."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from service.api.auth import AuthMiddleware, KeyRing, Quotas, digest, presented_key
from service.api.errors import install_error_handlers
from service.api.middleware import RequestIdMiddleware
from service.budget import Usage
from service.settings import LedgerSettings, QuotaSettings, Settings
from service.state import store
from service.state.ledger import Ledger

from ..conftest import empty_database, free_port

KEY = "sk-ponder-test-0123456789"


def light_app(redis: Redis, settings: Settings) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    app.state.keys = KeyRing(settings.api_keys, settings.api_keys_file)
    app.state.quotas = Quotas(redis, settings.quota)
    app.state.ledger = Ledger(redis, LedgerSettings())
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware)
    app.add_middleware(RequestIdMiddleware)

    @app.post("/v1/chat/completions")
    async def generate(request: Request) -> dict[str, str]:
        entry = request.state.entry
        entry.usage = Usage(prompt_tokens=3, completion_tokens=10)
        entry.done("stop", {})
        return {"ok": "yes"}

    @app.get("/dashboard")
    async def page() -> dict[str, str]:
        return {"page": "yes"}

    @app.get("/metrics")
    async def scrape() -> dict[str, str]:
        return {"metrics": "yes"}

    return app


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with empty_database(redis_url, "auth") as client:
        yield client


def client_for(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ponder", headers=headers)


async def ask(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={})


async def test_without_keys_configured_everything_is_open(redis: Redis) -> None:
    async with client_for(light_app(redis, Settings())) as client:
        assert (await ask(client)).status_code == 200


async def test_missing_and_wrong_keys_get_401_in_openai_shape(redis: Redis) -> None:
    app = light_app(redis, Settings(api_keys=f"{KEY}, another-key"))
    for key in (None, "wrong", KEY + "x"):
        async with client_for(app, key) as client:
            response = await ask(client)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key" and response.json()["error"]["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer" and response.headers["x-request-id"]
    async with client_for(app, "another-key") as client:
        assert (await ask(client)).status_code == 200


async def test_a_key_never_reaches_the_logs_or_the_ledger(redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    app = light_app(redis, Settings(api_keys=KEY))
    caplog.set_level(logging.DEBUG)
    async with client_for(app, KEY) as client:
        response = await ask(client)
    await app.state.ledger.drain(5)
    record = await app.state.ledger.get(response.headers["x-request-id"])
    assert record is not None and record.key_id == "env-0"
    assert KEY not in record.model_dump_json() and KEY not in caplog.text
    assert KEY not in str(await redis.keys("*"))


async def test_a_key_removed_from_the_file_is_revoked(redis: Redis, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# team keys\nalice {digest(KEY)}\nbob {digest('bob-key')}\nbroken line\n")
    app = light_app(redis, Settings(api_keys_file=keys))
    async with client_for(app, KEY) as client:
        assert (await ask(client)).status_code == 200
    keys.write_text(f"bob {digest('bob-key')}\n")
    os.utime(keys, (1, 1))  # a new mtime even within the file system's timestamp resolution
    async with client_for(app, KEY) as client:
        assert (await ask(client)).status_code == 401
    async with client_for(app, "bob-key") as client:
        assert (await ask(client)).status_code == 200


async def test_request_quota_gives_429_with_retry_after(redis: Redis) -> None:
    app = light_app(redis, Settings(api_keys=KEY, quota=QuotaSettings(requests_per_minute=2)))
    async with client_for(app, KEY) as client:
        statuses = [(await ask(client)).status_code for _ in range(3)]
        refused = await ask(client)
    assert statuses == [200, 200, 429]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and 1 <= int(refused.headers["retry-after"]) <= 61


async def test_token_quota_counts_what_requests_generated(redis: Redis) -> None:
    app = light_app(redis, Settings(api_keys=KEY, quota=QuotaSettings(tokens_per_minute=25)))
    async with client_for(app, KEY) as client:
        statuses = [(await ask(client)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # 10 tokens each: the window is spent after the third


async def test_metrics_and_dashboard_are_open_unless_asked_and_browsers_get_a_basic_challenge(redis: Redis) -> None:
    open_app = light_app(redis, Settings(api_keys=KEY))
    async with client_for(open_app) as client:
        assert (await client.get("/metrics")).status_code == 200 and (await client.get("/dashboard")).status_code == 200
    closed = light_app(redis, Settings(api_keys=KEY, auth_metrics=True, auth_dashboard=True))
    async with client_for(closed) as client:
        assert (await client.get("/metrics")).status_code == 401
        page = await client.get("/dashboard")
        assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic")
        basic = base64.b64encode(f"me:{KEY}".encode()).decode()
        assert (await client.get("/dashboard", headers={"Authorization": f"Basic {basic}"})).status_code == 200


async def test_a_dead_quota_store_lets_requests_through() -> None:
    dead = store.connect(f"redis://127.0.0.1:{free_port()}/0")
    app = light_app(dead, Settings(api_keys=KEY, quota=QuotaSettings(requests_per_minute=1)))
    async with client_for(app, KEY) as client:
        responses = await asyncio.gather(*(ask(client) for _ in range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200]
    await dead.aclose()


@given(st.binary(max_size=200))
def test_any_authorization_header_reads_as_a_key_or_none(value: bytes) -> None:
    key = presented_key({"headers": [(b"authorization", value)]})
    assert key is None or isinstance(key, str)
