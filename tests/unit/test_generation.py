"""The metering logic of MeteredRun against a scripted engine (the real engine is covered end to end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from compute.protocol import CompletionDelta, EngineChunk, SamplingSpec
from service.api.errors import UNAVAILABLE_RETRY_AFTER_S, APIError
from service.budget import Budget
from service.engines.pool import EngineUnavailable
from service.execution.generation import MeteredRun


class ScriptedPool:
    """Each engine step emits one token `w<k> ` per completion, `delay` seconds apart."""

    spec = SimpleNamespace(name="scripted")

    def __init__(self, steps: int, delay: float = 0.0, ready: bool = True) -> None:
        self.steps = steps
        self.delay = delay
        self.ready = ready
        self.closed: list[str] = []

    async def generate(self, request_id: str, prompt: list[int], sampling: SamplingSpec, flush_interval_s: float = 0.0) -> AsyncIterator[EngineChunk]:
        try:
            for k in range(min(self.steps, sampling.max_tokens)):
                await asyncio.sleep(self.delay)
                last = k == min(self.steps, sampling.max_tokens) - 1
                reason = ("length" if sampling.max_tokens <= self.steps else "stop") if last else None
                yield EngineChunk(
                    deltas=[CompletionDelta(index=i, text=f"w{k} ", token_ids=[k], finish_reason=reason) for i in range(sampling.n)],
                    finished=last,
                )
        finally:
            self.closed.append(request_id)


def decode(ids: list[int]) -> str:
    return "".join(f"w{i} " for i in ids)


def run(pool: ScriptedPool, n: int, max_tokens: int, cap: int, deadline: float = 30.0, prompts: int = 1) -> MeteredRun:
    return MeteredRun(pool, "r", [[1, 2, 3]] * prompts, SamplingSpec(n=n, max_tokens=max_tokens), Budget(cap, deadline), decode, max_tokens)  # type: ignore[arg-type]


async def test_completes_within_budget() -> None:
    metered = run(ScriptedPool(steps=5), n=2, max_tokens=10, cap=100)
    completions = await metered.collect()
    assert [c.text for c in completions] == ["w0 w1 w2 w3 w4 "] * 2
    assert [c.finish_reason for c in completions] == ["stop", "stop"]
    assert metered.usage.completion_tokens == 10
    assert metered.usage.prompt_tokens == 3
    assert metered.budget.exhausted is None


async def test_token_cap_truncates_exactly_and_says_budget() -> None:
    metered = run(ScriptedPool(steps=50), n=3, max_tokens=50, cap=7)
    completions = await metered.collect()
    assert metered.usage.completion_tokens == 7
    assert sum(len(c.token_ids) for c in completions) == 7
    assert all(c.text == decode(c.token_ids) for c in completions)
    assert {c.finish_reason for c in completions} == {"budget"}
    assert metered.pool.closed == ["r-0"]  # type: ignore[attr-defined]


async def test_cap_below_max_tokens_is_reported_as_budget() -> None:
    metered = run(ScriptedPool(steps=50), n=1, max_tokens=40, cap=5)
    assert metered.sampling.max_tokens == 5
    completions = await metered.collect()
    assert completions[0].finish_reason == "budget" and len(completions[0].token_ids) == 5


async def test_caller_max_tokens_is_length() -> None:
    completions = await run(ScriptedPool(steps=50), n=1, max_tokens=4, cap=100).collect()
    assert completions[0].finish_reason == "length"


async def test_deadline_stops_and_closes_the_stream() -> None:
    pool = ScriptedPool(steps=1000, delay=0.01)
    metered = run(pool, n=1, max_tokens=1000, cap=10_000, deadline=0.2)
    started = asyncio.get_running_loop().time()
    completions = await metered.collect()
    assert asyncio.get_running_loop().time() - started < 1.0
    assert completions[0].finish_reason == "deadline"
    assert 0 < len(completions[0].token_ids) < 1000
    assert pool.closed == ["r-0"]


async def test_a_deadline_passed_with_no_replica_ready_is_the_engine_unavailable() -> None:
    """Waiting for a replacement replica (or for a node to come back) until the deadline is the service's failure: a
    503 with a retry hint, not an empty answer that says the budget ran out."""
    with pytest.raises(EngineUnavailable, match="no replica of scripted"):
        await run(ScriptedPool(steps=5, delay=1.0, ready=False), n=1, max_tokens=5, cap=100, deadline=0.1).collect()


async def test_a_replica_ready_too_late_to_produce_anything_is_still_the_engine_unavailable() -> None:
    pool = ScriptedPool(steps=5, delay=1.0, ready=False)
    asyncio.get_running_loop().call_later(0.05, setattr, pool, "ready", True)
    with pytest.raises(EngineUnavailable):
        await run(pool, n=1, max_tokens=5, cap=100, deadline=0.1).collect()


async def test_a_deadline_passed_on_a_ready_but_busy_engine_is_the_deadline() -> None:
    completions = await run(ScriptedPool(steps=5, delay=1.0), n=1, max_tokens=5, cap=100, deadline=0.1).collect()
    assert completions[0].finish_reason == "deadline" and completions[0].token_ids == []


def test_every_503_says_when_to_retry() -> None:
    assert APIError(503, "The model is not ready yet", code="engine_unavailable").response().headers["retry-after"] == str(UNAVAILABLE_RETRY_AFTER_S)
    assert "retry-after" not in APIError(400, "bad").response().headers


async def test_batch_of_prompts_indexes_choices_by_prompt() -> None:
    completions = await run(ScriptedPool(steps=2), n=2, max_tokens=10, cap=100, prompts=3).collect()
    assert [c.index for c in completions] == list(range(6))
    assert all(c.text == "w0 w1 " for c in completions)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rollout_metrics_settle_whether_rollouts_finish_or_are_cut() -> None:
    before = sample("ponder_rollout_latency_seconds_count", model="scripted", stage="sample")
    await run(ScriptedPool(steps=3), n=4, max_tokens=10, cap=100).collect()
    assert sample("ponder_rollout_latency_seconds_count", model="scripted", stage="sample") == before + 4
    await run(ScriptedPool(steps=50), n=3, max_tokens=50, cap=5).collect()
    assert sample("ponder_rollouts_in_flight", model="scripted") == 0
