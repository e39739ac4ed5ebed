"""Clients that vanish and engines that die: the engine is freed, nothing hangs, the server recovers."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
import ray

from tests.conftest import Server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write a very long story."}],
    "max_tokens": 3000,
    "ignore_eos": True,
}


def engine_rows(server: Server) -> list[dict]:
    return server.health().json()["models"][MODEL]


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def engine_idle(server: Server) -> bool:
    return all(row.get("unfinished") == 0 and row["inflight"] == 0 for row in engine_rows(server))


def test_stream_disconnect_frees_the_engine(server: Server) -> None:
    assert wait_until(lambda: engine_idle(server), 30)
    with httpx.stream("POST", f"{server.api}/chat/completions", json={**LONG, "stream": True}, timeout=60) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(12)]
        assert any(line.startswith("data: ") for line in received)
        busy = engine_rows(server)[0]
        assert busy["unfinished"] == 1 and busy["inflight"] == 1
    assert wait_until(lambda: engine_idle(server), 5), engine_rows(server)


def test_non_stream_disconnect_frees_the_engine(server: Server) -> None:
    assert wait_until(lambda: engine_idle(server), 30)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.api}/chat/completions", json=LONG, timeout=httpx.Timeout(30, read=2.0))
    assert wait_until(lambda: engine_idle(server), 5), engine_rows(server)


def kill_actor(server: Server, name: str) -> None:
    ray.init(address=server.ray_address, namespace="ponder", ignore_reinit_error=True)
    try:
        ray.kill(ray.get_actor(name))
    finally:
        ray.shutdown()


def test_engine_killed_mid_request_gives_a_clean_error_then_recovers(server: Server) -> None:
    """The stream had already sent tokens, so it cannot be replayed: it must end with an error event, not hang."""
    client = openai.OpenAI(base_url=server.api, api_key="none", max_retries=0, timeout=120)
    assert wait_until(lambda: engine_idle(server), 30)
    victim = original = engine_rows(server)[0]["name"]
    stream = client.chat.completions.create(model=MODEL, messages=LONG["messages"], max_tokens=3000, stream=True, extra_body={"ignore_eos": True})
    received = ""
    started = time.monotonic()
    with pytest.raises(openai.APIError) as failure:
        for chunk in stream:
            received += "".join(c.delta.content or "" for c in chunk.choices)
            if received and victim:
                kill_actor(server, victim)
                victim = ""
    assert received
    assert time.monotonic() - started < 60, "the stream hung after its engine was killed"
    assert "died" in str(failure.value.message)
    health = server.wait_healthy(300)
    row = health["models"][MODEL][0]
    assert row["name"] != original and row["restarts"] == 1
    after = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert after.choices[0].message.content


def test_request_arriving_while_the_engine_restarts_is_served(server: Server) -> None:
    """A non-streaming request whose replica dies before output is retried on the replacement replica."""
    client = openai.OpenAI(base_url=server.api, api_key="none", max_retries=0, timeout=300)
    server.wait_healthy(300)
    kill_actor(server, engine_rows(server)[0]["name"])
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert response.choices[0].message.content
    assert engine_rows(server)[0]["restarts"] == 2
