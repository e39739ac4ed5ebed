"""RTV and PDR through the real server and model with the official client: tournaments, refinement, agent rollouts
on visible tests, the shared cache across two gateways on the real Redis server, and Redis going away mid-request."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from openai import OpenAI

from tests.conftest import Server, running_server
from tests.e2e.test_strategies import CODE, ponder_of

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"


def question() -> list[dict[str, str]]:
    """A problem no earlier run has met: summaries and votes are cached in the real Redis across runs, and these
    tests need to see them computed (or reused) by this run alone."""
    return [{"role": "user", "content": f"What is 17 + 25? Reply with just the number. (Ticket {uuid.uuid4().hex[:8]}.)"}]


SMALL_RTV = {"name": "rtv", "n": 4, "votes": 2, "summary_tokens": 48, "judge_tokens": 8}


@pytest.fixture(scope="module")
def second_gateway(redis_url: str, server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Another gateway on the same Ray cluster and Redis, with engines of its own (its own Ray namespace)."""
    with running_server(redis_url, server.ray_address, tmp_path_factory.mktemp("gateway-b") / "ponder.log", PONDER_RAY_NAMESPACE="ponder-b") as second:
        yield second


def stage_tokens(ponder: dict) -> int:
    return sum(stage["completion_tokens"] for stage in ponder["tokens"].values())


def test_rtv_runs_a_tournament_on_summaries(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=question(), max_tokens=16, extra_body={"strategy": SMALL_RTV, "verifier": {"reference": "42"}}
    )
    ponder = ponder_of(response)
    selection = ponder["selection"]
    assert selection["method"] == "rtv" and len(ponder["candidates"]) == 4
    assert selection["judge_calls"] == selection["judge_calls_expected"] == 2 * 3
    assert len(selection["rounds"]) == 2 and len(selection["summaries"]) == 4
    assert set(ponder["tokens"]) >= {"sample", "judge"}
    assert response.usage.completion_tokens == stage_tokens(ponder) == ponder["budget"]["used_tokens"]
    chosen = next(c for c in ponder["candidates"] if c["index"] == ponder["chosen"])
    assert response.choices[0].message.content == chosen["text"] and chosen["index"] == selection["survivors"][0]
    assert selection["cost"]["sequential_tokens"] < response.usage.total_tokens


def test_rtv_streams_its_rounds(client: OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=question(), max_tokens=16, stream=True, extra_body={"strategy": SMALL_RTV})
    chunks = list(stream)
    events = [c.model_extra["ponder"]["event"] for c in chunks if c.model_extra.get("ponder", {}).get("event")]
    assert [e["round"] for e in events if e["type"] == "round"] == [1, 2]
    assert sum(1 for e in events if e["type"] == "rollout" and e["stage"] == "sample") == 4
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    report = chunks[-1].model_extra["ponder"]
    assert text == next(c["text"] for c in report["candidates"] if c["index"] == report["chosen"])


def test_pdr_refines_on_selected_summaries(client: OpenAI) -> None:
    strategy = {"name": "pdr", "n": 4, "k": 2, "votes": 1, "summary_tokens": 48, "judge_tokens": 8}
    response = client.chat.completions.create(model=MODEL, messages=question(), max_tokens=16, extra_body={"strategy": strategy})
    ponder = ponder_of(response)
    selection = ponder["selection"]
    assert [len(it["rollouts"]) for it in selection["iterations"]] == [4, 4]
    assert selection["iterations"][0]["select_k"]["judge_calls"] == 1 * (4 - 2)
    assert selection["final"]["judge_calls"] == 1 * (4 - 1)
    assert len(ponder["candidates"]) == 8 and ponder["chosen"] >= 4
    assert {"round0", "round1", "summary", "judge"} <= set(ponder["tokens"])
    assert response.usage.completion_tokens == stage_tokens(ponder)


def test_original_pdr_schedule_with_a_workspace(client: OpenAI) -> None:
    strategy = {"name": "pdr", "schedule": [3, 2, 1], "distill": "global_summary", "workspace_tokens": 48, "summary_tokens": 32}
    response = client.completions.create(
        model=MODEL, prompt=f"Q: What is 9 + 9? (Ticket {uuid.uuid4().hex[:8]}.)\nA:", max_tokens=12, extra_body={"strategy": strategy}
    )
    ponder = response.model_extra["ponder"]
    assert [len(it["rollouts"]) for it in ponder["selection"]["iterations"]] == [3, 2, 1]
    assert "distill" in ponder["tokens"] and ponder["tokens"]["distill"]["completion_tokens"] <= 2 * 48
    assert ponder["chosen"] == 5


def test_agent_rollouts_run_the_visible_tests(client: OpenAI) -> None:
    strategy = {"name": "rtv", "n": 2, "votes": 1, "rollout": "agent", "steps": 2, "judge_input": "rollout", "judge_tokens": 8}
    response = client.chat.completions.create(model=MODEL, messages=CODE, max_tokens=96, extra_body={"strategy": strategy})
    ponder = ponder_of(response)
    for c in ponder["candidates"]:
        assert c["tests"]["total"] == 2  # the two doctest examples; never anything hidden
        assert 1 <= c["scores"]["steps"] <= 2


def test_a_second_gateway_reuses_the_first_ones_summaries_and_votes(server: Server, second_gateway: Server) -> None:
    body = {"model": MODEL, "messages": question(), "max_tokens": 16, "seed": 1234, "strategy": {**SMALL_RTV, "seed": 5}}
    first = httpx.post(f"{server.api}/chat/completions", json=body, timeout=300).json()
    again = httpx.post(f"{second_gateway.api}/chat/completions", json=body, timeout=300).json()
    assert [c["text"] for c in again["ponder"]["candidates"]] == [c["text"] for c in first["ponder"]["candidates"]]  # seeded rollouts
    cache = again["ponder"]["cache"]
    assert cache["summary"]["hits"] == 4 and cache["summary"]["saved_tokens"] > 0
    assert cache["votes"]["hits"] >= 1
    assert again["usage"]["completion_tokens"] < first["usage"]["completion_tokens"]
    assert "summary" not in again["ponder"]["tokens"]
    # The same groups with the same verdicts make the same tournament. Votes are cached by what the judge was shown,
    # so two groups whose summaries read alike share a verdict, and a replay may hand each the other's.
    if played(again) == played(first):
        assert again["ponder"]["chosen"] == first["ponder"]["chosen"]


def played(body: dict) -> list[tuple[list[int], list[dict]]]:
    return [(m["members"], m["orders"]) for matches in body["ponder"]["selection"]["rounds"] for m in matches]


def test_redis_going_away_mid_request_costs_the_cache_not_the_answer(server: Server, redis_url: str) -> None:
    """CLIENT PAUSE makes the real server stop answering for a while, as a dead or partitioned Redis would."""
    admin = redis.Redis.from_url(redis_url)
    body = {"model": MODEL, "messages": question(), "max_tokens": 16, "stream": True, "strategy": {**SMALL_RTV, "seed": int(time.time())}}
    events: list[dict] = []
    paused = threading.Event()
    with httpx.stream("POST", f"{server.api}/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            events.append(chunk)
            event = chunk.get("ponder", {}).get("event")
            if event and event["type"] == "rollout" and not paused.is_set():
                admin.execute_command("CLIENT", "PAUSE", "4000", "ALL")
                paused.set()
    report = events[-1]["ponder"]
    assert paused.is_set() and report["chosen"] is not None
    assert sum(use["errors"] for use in report["cache"].values()) > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c.get("choices"))
    assert text == next(c["text"] for c in report["candidates"] if c["index"] == report["chosen"])
