"""Faults under load, through `ponder serve` with a real engine: Redis killed (SIGKILL) and restarted while
requests that use its cache and ledger keep coming, and a gateway sent SIGTERM with requests of every shape in
flight."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    database_url,
    eager_models,
    emptied_database,
    free_port,
    redis_answers,
    running_server,
)
from tests.e2e.loadgen import Load, Outcome
from tests.e2e.test_ledger import scrape, value
from tests.e2e.test_resilience import wait_until

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
DEADLINE_S = 120.0
STREAM_TOKENS = 300


@dataclass
class RedisServer:
    """A redis-server of this test's own (the suite's shared one must stay up), killable and restartable on its port.
    Its append-only file is synced on every write, so what it acknowledged before a SIGKILL is there after it."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        assert wait_until(lambda: redis_answers(self.url), timeout=10), "redis-server did not start"

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.kill()


def chat(content: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "budget": {"deadline_s": DEADLINE_S}, **extra}


def question() -> str:
    """New on every run, so the summaries and votes are computed (and cached) by this run, not found from an earlier one."""
    return f"What is 17 + 25? Reply with just the number. (Ticket {uuid.uuid4().hex[:8]}.)"


def rtv_request() -> dict[str, Any]:
    return chat(question(), 12, strategy={"name": "rtv", "n": 2, "votes": 1, "summary_tokens": 24, "judge_tokens": 6})


def answered(outcome: Outcome) -> bool:
    if outcome.status != 200:
        return False
    return bool(outcome.body["choices"][0]["message"]["content"]) and outcome.body["choices"][0]["finish_reason"] in ("stop", "length")


def test_redis_killed_and_restarted_mid_load(own_redis: RedisServer, ray_address: str, tmp_path: Path) -> None:
    """Every request is served through the outage (the cache reads as misses, the ledger's writes are dropped and
    counted); the records lost are exactly the ones the metric counted, those of the requests answered while Redis
    was down; the ones before (on disk) and after (reconnected) are there."""
    env = {"PONDER_RAY_NAMESPACE": "ponder-faults-redis", "PONDER_MODELS": eager_models(), "PONDER_LEDGER__WRITE_TIMEOUT_S": "1"}
    with running_server(own_redis.url, ray_address, tmp_path / "ponder.log", **env) as gateway:
        requests = [("rtv", rtv_request()), ("plain", chat("Name a colour.", 16)), ("majority", chat(question(), 12, strategy={"name": "majority", "n": 3}))]
        load = Load([gateway.base_url], requests, clients=3, max_requests=60)
        load.start()
        load.wait_for(3, "before", timeout=120)
        baseline = scrape(gateway)
        load.phase = "outage"
        killed = time.monotonic()
        own_redis.kill()
        assert gateway.health().json()["redis"] is False
        load.wait_for(4, "outage", timeout=120, where=lambda o: o.kind != "rtv" or o.started > killed + 1)
        load.wait_for(1, "outage", timeout=120, where=lambda o: o.kind == "rtv" and o.started > killed)
        outage = scrape(gateway)
        load.phase = "after"
        own_redis.start()
        restarted = time.monotonic()
        assert wait_until(lambda: gateway.health().json()["redis"] is True, timeout=30)
        load.wait_for(3, "after", timeout=120, where=lambda o: o.started > restarted + 1)
        load.stop(timeout=DEADLINE_S + 60)
        after = scrape(gateway)

        outcomes = load.done()
        assert [o for o in outcomes if not answered(o)] == []
        # rtv requests run wholly inside the outage (one that outlived it may have found Redis back for its lookups)
        rtv_in_outage = [o.body["ponder"]["cache"] for o in load.done("outage", lambda o: o.kind == "rtv" and killed < o.started and o.ended < restarted)]
        assert rtv_in_outage and all(c["summary"]["errors"] >= 1 for c in rtv_in_outage), rtv_in_outage
        lost = value(after, "ponder_ledger_write_failures_total") - value(baseline, "ponder_ledger_write_failures_total")
        assert lost >= 4 and value(outage, "ponder_ledger_write_failures_total") > value(baseline, "ponder_ledger_write_failures_total")
        assert value(outage, "ponder_cache_lookups_total", cache="summary", result="error") > value(
            baseline, "ponder_cache_lookups_total", cache="summary", result="error"
        )

        def recorded(o: Outcome) -> bool:
            return httpx.get(f"{gateway.api}/requests/{o.request_id}", timeout=10).status_code == 200

        missing = [o for o in outcomes if not recorded(o)]
        assert len(missing) == lost
        assert all(killed - 1 < o.ended < restarted + 2 for o in missing)  # the ledger's write follows the response
        assert all(o in missing for o in outcomes if killed + 0.5 < o.ended < restarted)
        assert len(outcomes) - len(missing) >= 6  # before the kill (from the append-only file) and after the restart


def sse(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_sigterm_under_load_finishes_every_request_in_flight(redis_url: str, ray_address: str, tmp_path: Path) -> None:
    """Streams and non-streams, plain and a strategy, in flight at SIGTERM: each is finished whole; one arriving
    during the readiness delay is still served; after that, new connections are refused (a clean error at once,
    never a hang); every request has its ledger record, and the gateway exits cleanly."""
    url = database_url(redis_url, "faults")
    log = tmp_path / "ponder.log"
    env = {
        "PONDER_REDIS_URL": url,
        "PONDER_RAY_NAMESPACE": "ponder-faults-drain",
        "PONDER_MODELS": eager_models(),
        "PONDER_DRAIN__READINESS_DELAY_S": "4",
        "PONDER_DRAIN__TIMEOUT_S": "150",
    }
    streams: dict[int, list[str]] = {}
    results: dict[int, httpx.Response] = {}
    first_text = [threading.Event(), threading.Event()]
    with emptied_database(redis_url, "faults") as store:
        with running_server(url, ray_address, log, **env) as gateway:

            def stream(index: int) -> None:
                body = {**chat("Count to a thousand.", STREAM_TOKENS, ignore_eos=True), "stream": True}
                with httpx.stream("POST", f"{gateway.api}/chat/completions", json=body, timeout=300) as response:
                    streams[index] = [response.headers["x-request-id"]]
                    for line in response.iter_lines():
                        streams[index].append(line)
                        if '"content":"' in line and '"content":""' not in line:
                            first_text[index].set()

            def post(index: int, body: dict[str, Any]) -> None:
                results[index] = httpx.post(f"{gateway.api}/chat/completions", json=body, timeout=300)

            workers = [
                threading.Thread(target=stream, args=(0,)),
                threading.Thread(target=stream, args=(1,)),
                threading.Thread(target=post, args=(2, chat("Write a poem about rain.", 120, ignore_eos=True))),
                threading.Thread(target=post, args=(3, chat(question(), 48, ignore_eos=True, strategy={"name": "majority", "n": 3}))),
            ]
            for worker in workers:
                worker.start()
            assert all(event.wait(120) for event in first_text)
            assert wait_until(lambda: gateway.health().json()["models"][MODEL][0]["inflight"] >= 4, timeout=30)
            gateway.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            draining = gateway.health()
            assert draining.status_code == 503 and draining.json()["status"] == "draining"
            late = httpx.post(f"{gateway.api}/chat/completions", json=chat("Say hi.", 8), timeout=120)  # within the delay
            assert late.status_code == 200 and late.json()["choices"][0]["message"]["content"]
            time.sleep(max(0.0, signalled + 5 - time.monotonic()))
            assert gateway.process.poll() is None and any(w.is_alive() for w in workers), "nothing was left in flight to drain"
            refused_at = time.monotonic()
            with pytest.raises(httpx.ConnectError):  # past the delay: no longer accepting, and saying so at once
                httpx.post(f"{gateway.api}/chat/completions", json=chat("Say hi.", 8), timeout=30)
            assert time.monotonic() - refused_at < 5
            for worker in workers:
                worker.join(200)
            assert not any(w.is_alive() for w in workers)
            assert wait_until(lambda: gateway.process.poll() is not None, timeout=60)
            assert gateway.process.returncode == -signal.SIGTERM  # uvicorn re-raises the signal once it has shut down
            shutdown = log.read_text()
            assert "Application shutdown complete" in shutdown and "Traceback" not in shutdown

        for index, lines in streams.items():
            events = [line for line in lines[1:] if line]
            assert events[-1] == "data: [DONE]", events[-3:]
            chunks = sse(events)
            assert not [c for c in chunks if "error" in c]
            assert [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"]] == ["length"], index
        assert results[2].status_code == 200 and results[2].json()["usage"]["completion_tokens"] == 120
        assert results[3].status_code == 200 and results[3].json()["usage"]["completion_tokens"] == 3 * 48
        ids = [lines[0] for lines in streams.values()] + [r.headers["x-request-id"] for r in (*results.values(), late)]
        records = [json.loads(store.get(f"ponder:request:{i}") or "null") for i in ids]
        assert [(r or {}).get("outcome") for r in records] == ["served"] * 5
        assert [r["completion_tokens"] for r in records[:2]] == [STREAM_TOKENS, STREAM_TOKENS]
