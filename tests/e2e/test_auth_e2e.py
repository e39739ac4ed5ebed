"""API keys and quotas through `ponder serve` itself (the middlewares' unit tests are tests/unit/test_auth.py): keys
from PONDER_API_KEYS and from a hashed keys file, missing, wrong and revoked keys, both per-minute quotas shared
through the real Redis, and no key in the gateway's log or anywhere in its Redis database."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis

from service.api.auth import digest
from tests.conftest import Server, database_url, eager_models, emptied_database, running_server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
ENV_KEY = "sk-ponder-env-5c1f0e9a77"
KEYS = {"alice": "sk-ponder-alice-3b8d21", "bob": "sk-ponder-bob-a0c4e7", "carol": "sk-ponder-carol-9f62d1"}
WRONG = "sk-ponder-wrong-e41b09"
REQUESTS_PER_MINUTE = 6
TOKENS_PER_MINUTE = 40
HI = [{"role": "user", "content": "Say hi."}]


def keys_file(path: Path, names: list[str]) -> None:
    path.write_text("".join(f"{name} {digest(KEYS[name])}\n" for name in names))
    os.utime(path, (time.time() + 1, time.time() + 1))  # a new mtime even within the file system's resolution


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth-e2e")


@pytest.fixture(scope="module")
def gateway(redis_url: str, ray_address: str, home: Path) -> Iterator[Server]:
    keys_file(home / "keys", list(KEYS))
    env = {
        "PONDER_REDIS_URL": database_url(redis_url, "auth_e2e"),
        "PONDER_RAY_NAMESPACE": "ponder-auth-e2e",
        "PONDER_MODELS": eager_models(),
        "PONDER_API_KEYS": ENV_KEY,
        "PONDER_API_KEYS_FILE": str(home / "keys"),
        "PONDER_QUOTA__REQUESTS_PER_MINUTE": str(REQUESTS_PER_MINUTE),
        "PONDER_QUOTA__TOKENS_PER_MINUTE": str(TOKENS_PER_MINUTE),
        "PONDER_LOG_LEVEL": "DEBUG",
    }
    with emptied_database(redis_url, "auth_e2e"), running_server(redis_url, ray_address, home / "ponder.log", **env) as server:
        yield server


def chat(server: Server, key: str | None, max_tokens: int = 8, **extra: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": MODEL, "messages": HI, "max_tokens": max_tokens, **extra}
    return httpx.post(f"{server.api}/chat/completions", json=body, headers=headers, timeout=120)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code and error["message"]
    assert response.headers["x-request-id"]


def fresh_quota_window() -> None:
    """Quotas are fixed one-minute windows: a test that spends one must not straddle two."""
    into = time.time() % 60
    if into > 35:
        time.sleep(60 - into + 0.5)


def test_missing_and_wrong_keys_get_401_and_open_routes_stay_open(gateway: Server) -> None:
    missing = chat(gateway, None)
    assert_openai_error(missing, 401, "invalid_api_key")
    assert missing.json()["error"]["type"] == "authentication_error" and missing.headers["www-authenticate"] == "Bearer"
    assert_openai_error(chat(gateway, WRONG), 401, "invalid_api_key")
    assert_openai_error(httpx.get(f"{gateway.api}/models", timeout=10), 401, "invalid_api_key")
    client = openai.OpenAI(base_url=gateway.api, api_key=WRONG, max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=HI, max_tokens=4)  # type: ignore[arg-type]
    assert gateway.health().status_code == 200
    assert httpx.get(f"{gateway.base_url}/metrics", timeout=10).status_code == 200


def test_keys_from_the_environment_and_the_file_are_served_and_ledgered_by_id(gateway: Server) -> None:
    client = openai.OpenAI(base_url=gateway.api, api_key=ENV_KEY, max_retries=0, timeout=120)
    response = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=8)  # type: ignore[arg-type]
    assert response.choices[0].message.content
    record = httpx.get(f"{gateway.api}/requests/{response.id}", headers={"Authorization": f"Bearer {ENV_KEY}"}, timeout=10)
    assert record.status_code == 200 and record.json()["key_id"] == "env-0" and record.json()["outcome"] == "served"


def test_a_stored_response_belongs_to_the_key_that_made_it(gateway: Server) -> None:
    """Another key reads it as missing: a 404, whether fetched or continued from."""
    fresh_quota_window()
    alice, other = ({"Authorization": f"Bearer {key}"} for key in (KEYS["alice"], ENV_KEY))
    created = httpx.post(f"{gateway.api}/responses", json={"model": MODEL, "input": "Say hi.", "max_output_tokens": 4}, headers=alice, timeout=120)
    assert created.status_code == 200, created.text
    response_id = created.json()["id"]
    assert_openai_error(httpx.get(f"{gateway.api}/responses/{response_id}", headers=other, timeout=10), 404, "response_not_found")
    continued = httpx.post(
        f"{gateway.api}/responses",
        json={"model": MODEL, "input": "Again.", "previous_response_id": response_id, "max_output_tokens": 4},
        headers=other,
        timeout=120,
    )
    assert_openai_error(continued, 404, "response_not_found")
    assert continued.json()["error"]["param"] == "previous_response_id"
    own = httpx.get(f"{gateway.api}/responses/{response_id}", headers=alice, timeout=10)
    assert own.status_code == 200 and own.json()["id"] == response_id


def test_a_key_removed_from_the_file_is_refused_at_once(gateway: Server, home: Path) -> None:
    assert chat(gateway, KEYS["alice"]).status_code == 200
    keys_file(home / "keys", ["bob", "carol"])
    assert_openai_error(chat(gateway, KEYS["alice"]), 401, "invalid_api_key")
    assert chat(gateway, ENV_KEY).status_code == 200  # the environment's keys are not in the file


def test_request_quota_gives_429_with_retry_after(gateway: Server) -> None:
    fresh_quota_window()
    headers = {"Authorization": f"Bearer {KEYS['bob']}"}
    statuses = [httpx.get(f"{gateway.api}/models", headers=headers, timeout=10).status_code for _ in range(REQUESTS_PER_MINUTE)]
    refused = httpx.get(f"{gateway.api}/models", headers=headers, timeout=10)
    assert statuses == [200] * REQUESTS_PER_MINUTE
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert refused.json()["error"]["type"] == "rate_limit_error" and 1 <= int(refused.headers["retry-after"]) <= 61
    assert chat(gateway, ENV_KEY).status_code == 200  # a quota is per key


def test_token_quota_counts_what_the_engine_generated(gateway: Server) -> None:
    """16 tokens a request against 40 a minute: the third request is still admitted (32 spent), the fourth is not."""
    fresh_quota_window()
    headers = {"Authorization": f"Bearer {KEYS['carol']}"}
    spent = 0
    for _ in range(3):
        response = httpx.post(
            f"{gateway.api}/chat/completions",
            headers=headers,
            timeout=120,
            json={"model": MODEL, "messages": HI, "max_tokens": 16, "ignore_eos": True},
        )
        assert response.status_code == 200, response.text
        spent += response.json()["usage"]["completion_tokens"]
    assert spent == 48
    refused = chat(gateway, KEYS["carol"])
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert "Token quota" in refused.json()["error"]["message"]


def test_no_key_reaches_the_log_or_redis(gateway: Server, redis_url: str, home: Path) -> None:
    """Runs last: every key above was presented, accepted or refused, by then."""
    assert chat(gateway, WRONG).status_code == 401
    secrets = [ENV_KEY, WRONG, *KEYS.values()]
    log = (home / "ponder.log").read_text()
    assert "POST /v1/chat/completions 401" in log and "POST /v1/chat/completions 429" in log
    assert not [s for s in secrets if s in log]
    store = redis.Redis.from_url(database_url(redis_url, "auth_e2e"), decode_responses=True)
    try:
        dump = []
        for key in store.scan_iter():
            dump.append(key)
            kind = store.type(key)
            if kind == "string":
                dump.append(store.get(key) or "")
            elif kind == "stream":
                dump.extend(str(fields) for _, fields in store.xrange(key))
        text = "\n".join(dump)
    finally:
        store.close()
    assert '"key_id":"env-0"' in text and '"key_id":"alice"' in text and '"key_id":"carol"' in text
    assert not [s for s in secrets if s in text]
