"""The ledger, feedback and Prometheus metrics through the real server: records written for served, failed and
cancelled requests, feedback by response id, and metric counts that move by exactly what the requests did."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server
from tests.e2e.test_resilience import wait_until

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
QUESTION = [{"role": "user", "content": "What is 12 + 30? Reply with just the number."}]


def record(server: Server, request_id: str) -> dict[str, Any]:
    """The ledger is written after the response; a record shows up within moments."""
    found: dict[str, Any] = {}

    def present() -> bool:
        response = httpx.get(f"{server.api}/requests/{request_id}", timeout=10)
        if response.status_code == 200:
            found.update(response.json())
        return bool(found)

    wait_until(present, timeout=10)
    return found


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_served_strategy_request_is_recorded_whole_and_takes_feedback(client: OpenAI, server: Server) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=12, extra_body={"strategy": {"name": "majority", "n": 4}, "verifier": {"reference": "42"}}
    )
    entry = record(server, response.id)
    assert entry["id"] == response.id.removeprefix("chatcmpl-")
    assert (entry["outcome"], entry["status"], entry["model"], entry["strategy"]) == ("served", 200, MODEL, "majority")
    assert entry["params"]["n"] == 4
    assert entry["completion_tokens"] == response.usage.completion_tokens
    assert entry["prompt_tokens"] == response.usage.prompt_tokens
    assert entry["stages"]["sample"]["completion_tokens"] == response.usage.completion_tokens
    assert entry["budget"]["used_tokens"] == response.usage.completion_tokens
    assert entry["correct"] == response.model_extra["ponder"]["correct"]  # graded against the reference
    detail = entry["detail"]
    assert len(detail["candidates"]) == 4 and detail["selection"]["tally"]
    assert [e["type"] for e in detail["trace"]].count("rollout") == 4

    marked = httpx.post(f"{server.api}/feedback", json={"request_id": response.id, "correct": True}, timeout=10)
    assert marked.status_code == 200 and marked.json()["correct"] is True
    assert record(server, response.id)["correct"] is True


def test_a_plain_stream_is_recorded_with_its_time_to_first_token(client: OpenAI, server: Server) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    entry = record(server, chunks[0].id)
    assert (entry["outcome"], entry["strategy"], entry["stream"]) == ("served", "none", True)
    assert entry["completion_tokens"] == chunks[-1].usage.completion_tokens
    assert 0 < entry["ttft_s"] <= entry["latency_s"]


def test_a_rejected_request_is_recorded_as_failed(server: Server) -> None:
    response = httpx.post(f"{server.api}/chat/completions", json={"model": MODEL, "messages": QUESTION, "temperature": 9}, timeout=10)
    assert response.status_code == 400
    entry = record(server, response.headers["x-request-id"])
    assert entry["outcome"] == "failed" and entry["error"]["code"] == response.json()["error"]["code"]
    assert entry["model"] == MODEL


def test_a_stream_the_client_leaves_is_recorded_as_cancelled(server: Server) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.api}/chat/completions", json=body, timeout=30) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break
    entry = record(server, request_id)
    assert entry["outcome"] == "cancelled"
    assert 0 < entry["completion_tokens"] < 2000


@pytest.mark.parametrize("body", [{"request_id": "f" * 32}, {"request_id": "nope", "correct": True}, {"request_id": "f" * 32, "correct": True, "x": 1}])
def test_bad_feedback_is_a_400(server: Server, body: dict) -> None:
    response = httpx.post(f"{server.api}/feedback", json=body, timeout=10)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_feedback_on_an_unknown_request_is_a_404(server: Server) -> None:
    for response in (
        httpx.post(f"{server.api}/feedback", json={"request_id": "0" * 32, "correct": True}, timeout=10),
        httpx.get(f"{server.api}/requests/{'0' * 32}", timeout=10),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "request_not_found"


def test_metrics_move_by_exactly_what_the_requests_did(client: OpenAI, server: Server) -> None:
    before = scrape(server)
    responses = [
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=10, extra_body={"strategy": {"name": "best_of_n", "n": 3}}) for _ in range(2)
    ]
    time.sleep(0.5)
    middle = scrape(server)
    spent = httpx.post(
        f"{server.api}/chat/completions",
        json={
            "model": MODEL,
            "messages": QUESTION,
            "max_tokens": 50,
            "ignore_eos": True,
            "budget": {"max_total_tokens": 5},
            "strategy": {"name": "majority", "n": 2},
        },
        timeout=60,
    )
    assert spent.status_code == 200
    time.sleep(0.5)
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("ponder_requests_total", model=MODEL, strategy="best_of_n", outcome="served", status="200") == 2
    completion = sum(r.usage.completion_tokens for r in responses)
    assert moved("ponder_tokens_total", model=MODEL, strategy="best_of_n", stage="sample", kind="completion") == completion
    assert moved("ponder_tokens_total", model=MODEL, strategy="best_of_n", stage="sample", kind="prompt") == sum(r.usage.prompt_tokens for r in responses)
    assert moved("ponder_request_latency_seconds_count", model=MODEL, strategy="best_of_n") == 2
    assert (
        value(middle, "ponder_rollout_latency_seconds_count", model=MODEL, stage="sample")
        - value(before, "ponder_rollout_latency_seconds_count", model=MODEL, stage="sample")
        == 3 * 2
    )
    assert moved("ponder_budget_exhausted_total", model=MODEL, strategy="majority", reason="budget") == 1
    hits = moved("ponder_prefix_cache_tokens_total", model=MODEL, result="hit")
    misses = moved("ponder_prefix_cache_tokens_total", model=MODEL, result="miss")
    assert hits + misses == sum(r.usage.prompt_tokens for r in responses) + spent.json()["usage"]["prompt_tokens"]
    assert value(after, "ponder_rollouts_in_flight", model=MODEL) == 0
    assert value(after, "ponder_ledger_write_failures_total") == 0
    assert ("ponder_engine_kv_cache_usage_ratio", (("model", MODEL), ("replica", "0"))) in after
    assert ("ponder_engine_requests_waiting", (("model", MODEL), ("replica", "0"))) in after
