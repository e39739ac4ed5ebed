"""ATTS through the real server and model with the official client: the draft/score/takeover loop on real engines,
calibration pools in the real Redis server shared by two gateways, a draft and a target on separate engine actors,
streaming, the budget, and bad strategies refused."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
import redis
from openai import OpenAI

from service.state.calibration import PREFIX
from tests.conftest import Server, running_server, state_dir
from tests.e2e.test_resilience import engine_idle, engine_rows, wait_until
from tests.e2e.test_strategies import ponder_of

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
TARGET = "smollm2-target"
QUESTION = [{"role": "user", "content": "What is 17 + 25? Think step by step, then give the number."}]
SMALL = {"name": "atts", "samples": 4, "turns": 3, "draft_tokens": 12, "target_tokens": 12}


@pytest.fixture(scope="module")
def family() -> str:
    """A task family no earlier run has filled: pools live on in the real Redis across runs."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def second_gateway(redis_url: str, server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Another gateway on the same Ray cluster and Redis that serves the packaged model twice, as a draft and as a
    target, each on an engine actor of its own."""
    models = [{"name": MODEL}, {"name": TARGET, "source": str(state_dir() / "models" / MODEL)}]
    with running_server(
        redis_url,
        server.ray_address,
        tmp_path_factory.mktemp("gateway-atts") / "ponder.log",
        PONDER_RAY_NAMESPACE="ponder-atts",
        PONDER_MODELS=json.dumps(models),
    ) as second:
        yield second


def pool(redis_url: str, family: str) -> list[float]:
    with redis.Redis.from_url(redis_url) as r:
        return [float(v) for v in r.lrange(f"{PREFIX}{MODEL}|{MODEL}|{family}", 0, -1)]


def test_atts_drafts_scores_and_hands_rejected_chunks_to_the_target(client: OpenAI, redis_url: str, family: str) -> None:
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=64, extra_body={"strategy": {**SMALL, "family": family, "alpha": 0.5}})
    ponder = ponder_of(response)
    selection = ponder["selection"]
    assert selection["method"] == "atts" and selection["draft"] == selection["target"] == MODEL
    assert selection["calibration"] == {
        "coverage": "marginal",
        "rule": "conformal",
        "pool": f"{MODEL}|{MODEL}|{family}",
        "pool_size": 0,
        "bootstrapped": True,
        "store": "ok",
        "added": 4,
    }
    turns = [t for s in selection["samples"] for t in s["turns"]]
    assert selection["rejection"]["decided"] == len(turns) >= 4
    assert selection["rejection"]["turn0"]["decided"] == 4
    rejected = [t for t in turns if t["decision"] == "reject"]
    assert selection["takeovers"] == len(rejected) == selection["rejection"]["rejected"]
    assert all(0 < t["p"] <= 1 and (t["score"] is None or t["score"] >= 1) for t in turns)
    assert all(t["p"] <= 0.5 for t in rejected) and all(t["p"] > 0.5 for t in turns if t["decision"] == "accept")
    stages = ponder["tokens"]
    assert stages["draft"]["completion_tokens"] == selection["tokens_by_model"]["draft"] == sum(t["draft_tokens"] for t in turns)
    assert stages["score"]["completion_tokens"] == len(turns)  # one generated token per scoring pass
    assert stages.get("target", {}).get("completion_tokens", 0) == sum(t["target_tokens"] for t in turns)
    computed = stages["score"]["prompt_tokens"] - stages["score"]["prompt_tokens_details"]["cached_tokens"]
    assert ponder["budget"]["used_tokens"] == response.usage.completion_tokens + computed
    stored = pool(redis_url, family)
    assert len(stored) == 4 and sorted(stored) == pytest.approx(sorted(t["score"] for s in selection["samples"] for t in s["turns"][:1]), abs=1e-4)
    chosen = next(c for c in ponder["candidates"] if c["index"] == ponder["chosen"])
    assert response.choices[0].message.content == chosen["text"]


def test_a_warm_pool_is_used_and_grows_online(client: OpenAI, redis_url: str, family: str) -> None:
    before = len(pool(redis_url, family))
    assert before >= 4
    response = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=64, extra_body={"strategy": {**SMALL, "family": family, "min_calibration": 4}}
    )
    calibration = ponder_of(response)["selection"]["calibration"]
    assert calibration["bootstrapped"] is False and calibration["pool_size"] == before
    assert len(pool(redis_url, family)) == before + 4


def test_a_second_gateway_reuses_the_pool_and_serves_draft_and_target_on_separate_engines(second_gateway: Server, redis_url: str, family: str) -> None:
    other = OpenAI(base_url=second_gateway.api, api_key="none", max_retries=0, timeout=300)
    before = len(pool(redis_url, family))
    response = other.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=64, extra_body={"strategy": {**SMALL, "family": family, "min_calibration": 4}}
    )
    calibration = ponder_of(response)["selection"]["calibration"]
    assert calibration["bootstrapped"] is False and calibration["pool_size"] == before

    pair = {**SMALL, "family": family, "target": TARGET, "alpha": 0.6}
    response = other.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=64, extra_body={"strategy": pair})
    selection = ponder_of(response)["selection"]
    assert selection["draft"] == MODEL and selection["target"] == TARGET
    assert selection["calibration"]["pool"] == f"{MODEL}|{TARGET}|{family}" and selection["calibration"]["bootstrapped"] is True
    assert selection["rejection"]["decided"] >= 4
    engines = second_gateway.health().json()["models"]
    assert set(engines) == {MODEL, TARGET} and all(r["state"] == "ready" for rows in engines.values() for r in rows)


def test_ponder_calibrate_seeds_a_pool_through_the_running_gateway(server: Server, redis_url: str) -> None:
    seeded = f"calibrate-{uuid.uuid4().hex[:10]}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "calibrate",
            "--suite",
            "arithmetic",
            "--problems",
            "3",
            "--samples",
            "2",
            "--draft-tokens",
            "8",
            "--family",
            seeded,
            "--base-url",
            server.api,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"suite": "arithmetic", "problems": 3, "added": 6}
    assert len(pool(redis_url, seeded)) == 6


def test_atts_streams_a_progress_event_per_decided_chunk(client: OpenAI, family: str) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=64, stream=True, extra_body={"strategy": {**SMALL, "family": family, "mode": "sync", "alpha": 0.5}}
    )
    chunks = list(stream)
    events = [c.model_extra["ponder"]["event"] for c in chunks if c.model_extra.get("ponder", {}).get("event")]
    decided = [e for e in events if e["type"] == "chunk"]
    final = next(c.model_extra["ponder"] for c in chunks if "selection" in c.model_extra.get("ponder", {}))
    assert final["selection"]["mode"] == "sync" and len(decided) == final["selection"]["rejection"]["decided"] >= 4
    assert {e["sample"] for e in decided} == {0, 1, 2, 3}
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert answer == next(c["text"] for c in final["candidates"] if c["index"] == final["chosen"])


def test_the_budget_binds_every_draft_score_and_takeover(client: OpenAI, family: str) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=64, extra_body={"strategy": {**SMALL, "family": family, "turns": 8}, "budget": {"max_total_tokens": 120}}
    )
    ponder = ponder_of(response)
    assert response.choices[0].finish_reason == "budget" and ponder["finish"] == "budget"
    assert ponder["budget"]["used_tokens"] <= 120


@pytest.mark.parametrize(
    ("strategy", "param"),
    [
        ({"name": "atts", "draft": "no-such-model"}, "strategy.draft"),
        ({"name": "atts", "target": "no-such-model"}, "strategy.target"),
        ({"name": "atts", "alpha": 0.3, "takeovers": 4}, "strategy"),
        ({"name": "atts", "alpha": 1.5}, "strategy.alpha"),
        ({"name": "atts", "family": "bad family!"}, "strategy.family"),
    ],
)
def test_bad_atts_requests_get_a_clear_400(client: OpenAI, strategy: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, extra_body={"strategy": strategy})
    error = caught.value.body
    assert error["param"].startswith(param) and error["message"]


def test_a_client_that_leaves_cancels_every_sample(server: Server, family: str) -> None:
    assert wait_until(lambda: engine_idle(server), 30)
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": 600,
        "stream": True,
        "strategy": {**SMALL, "family": family, "samples": 4, "turns": 8, "draft_tokens": 300, "target_tokens": 300, "alpha": 0.5},
    }
    with httpx.stream("POST", f"{server.api}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        assert wait_until(lambda: engine_rows(server)[0]["unfinished"] >= 1, 20)
    assert wait_until(lambda: engine_idle(server), 10), engine_rows(server)
