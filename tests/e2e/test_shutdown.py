"""SIGTERM on a gateway under a request: readiness goes false first, the request in flight finishes whole, its
ledger record is written, and the process exits."""

from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest

from tests.conftest import Server, running_server
from tests.e2e.test_resilience import wait_until

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"


def test_sigterm_drains_requests_in_flight(redis_url: str, server: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    log = tmp_path_factory.mktemp("draining") / "ponder.log"
    env = {"PONDER_RAY_NAMESPACE": "ponder-drain", "PONDER_DRAIN__READINESS_DELAY_S": "3", "PONDER_DRAIN__TIMEOUT_S": "120"}
    with running_server(redis_url, server.ray_address, log, **env) as gateway:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to a thousand."}], "max_tokens": 300, "ignore_eos": True, "stream": True}
        lines: list[str] = []
        started = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", f"{gateway.api}/chat/completions", json=body, timeout=120) as response:
                lines.append(response.headers["x-request-id"])
                for line in response.iter_lines():
                    lines.append(line)
                    if '"content":"' in line and '"content":""' not in line:
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        gateway.process.send_signal(signal.SIGTERM)
        draining = httpx.get(f"{gateway.base_url}/health", timeout=5)
        assert draining.status_code == 503 and draining.json()["status"] == "draining"
        reader.join(120)
        events = [line for line in lines[1:] if line]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in events if line.startswith("data: {")]
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == ["length"]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text
        assert wait_until(lambda: gateway.process.poll() is not None, timeout=60)
        shutdown = log.read_text()
        assert "Application shutdown complete" in shutdown and "Traceback" not in shutdown
    record = httpx.get(f"{server.api}/requests/{lines[0]}", timeout=10)  # any gateway on the same Redis reads it
    assert record.status_code == 200 and record.json()["outcome"] == "served" and record.json()["completion_tokens"] == 300
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.base_url}/health", timeout=2)
