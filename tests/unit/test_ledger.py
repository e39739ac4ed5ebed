"""The ledger against the real Redis server (its own database, emptied first), and an unreachable one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from service.budget import Budget, Usage
from service.settings import LedgerSettings
from service.state import store
from service.state.ledger import Entry, Ledger, LedgerRecord, bench_records, observe

from ..conftest import empty_database, free_port

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with empty_database(redis_url, "ledger") as client:
        yield client


def served(request_id: str, **overrides: object) -> LedgerRecord:
    entry = Entry(id=request_id, route="/v1/chat/completions", model="m", strategy="majority", params={"n": 4})
    entry.usage = Usage(prompt_tokens=30, completion_tokens=40, cached_tokens=20)
    entry.stages = {"sample": entry.usage}
    entry.done("stop", {"candidates": [{"index": 0, "answer": "7"}]}, correct=None)
    return entry.close(200).model_copy(update=overrides)


async def settle(ledger: Ledger) -> None:
    await ledger.drain(5.0)


async def test_a_record_is_listed_without_detail_and_found_whole(redis: Redis) -> None:
    ledger = Ledger(redis, LedgerSettings())
    ledger.submit(served("a" * 32))
    await settle(ledger)
    [listed] = await ledger.recent()
    assert listed.id == "a" * 32 and listed.detail is None and listed.completion_tokens == 40
    whole = await ledger.get("a" * 32)
    assert whole is not None and whole.detail == {"candidates": [{"index": 0, "answer": "7"}]}
    assert 0 < await redis.ttl("ponder:request:" + "a" * 32) <= LedgerSettings().ttl_s


async def test_recent_reads_a_time_window_newest_first(redis: Redis) -> None:
    ledger = Ledger(redis, LedgerSettings())
    for i in range(3):
        ledger.submit(served(f"{i:032x}"))
        await settle(ledger)
        await asyncio.sleep(0.01)
    cut = time.time()
    await asyncio.sleep(0.01)
    ledger.submit(served("f" * 32))
    await settle(ledger)
    assert [r.id for r in await ledger.recent()] == ["f" * 32, f"{2:032x}", f"{1:032x}", f"{0:032x}"]
    assert [r.id for r in await ledger.recent(since=cut)] == ["f" * 32]
    assert len(await ledger.recent(limit=2)) == 2


async def test_feedback_marks_the_answer_and_unknown_ids_are_none(redis: Redis) -> None:
    ledger = Ledger(redis, LedgerSettings())
    ledger.submit(served("b" * 32))  # feedback right after the response must find the record still being written
    assert await ledger.feedback("c" * 32, True) is None
    marked = await ledger.feedback("b" * 32, False)
    assert marked is not None and marked.correct is False and marked.feedback is not None
    [listed] = await ledger.recent()
    assert listed.correct is False
    again = await ledger.get("b" * 32)
    assert again is not None and again.correct is False


async def test_the_stream_is_capped(redis: Redis) -> None:
    ledger = Ledger(redis, LedgerSettings(max_records=10))
    for i in range(400):
        ledger.submit(served(f"{i:032x}"))
    await settle(ledger)
    assert await redis.xlen("ponder:ledger") < 400


async def test_a_dead_redis_costs_a_counted_record_not_the_request() -> None:
    dead = store.connect(f"redis://127.0.0.1:{free_port()}/0")
    ledger = Ledger(dead, LedgerSettings(write_timeout_s=1.0))
    before = REGISTRY.get_sample_value("ponder_ledger_write_failures_total") or 0.0
    started = time.perf_counter()
    ledger.submit(served("d" * 32))
    assert time.perf_counter() - started < 0.05  # submitting never waits for Redis
    await settle(ledger)
    assert REGISTRY.get_sample_value("ponder_ledger_write_failures_total") == before + 1
    await dead.aclose()


async def test_outcomes() -> None:
    def entry() -> Entry:
        return Entry(id="e" * 32, route="/v1/completions")

    done = entry()
    done.done("stop", {})
    assert done.close(200).outcome == "served"
    assert entry().close(200).outcome == "cancelled"  # a stream the client left before its end
    assert entry().close(499).outcome == "cancelled"
    failed = entry()
    failed.fail(503, "engine died", "engine_unavailable")
    record = failed.close(200)  # an error event inside a stream that had started
    assert record.outcome == "failed" and record.error == {"status": 503, "code": "engine_unavailable", "message": "engine died"}
    rejected = entry().close(400)
    assert rejected.outcome == "failed" and rejected.error is not None and rejected.error["status"] == 400


async def test_budget_and_tokens_reach_the_metrics() -> None:
    entry = Entry(id="9" * 32, route="/v1/chat/completions", model="metrics-model", strategy="best_of_n")
    entry.budget = Budget(max_total_tokens=10, deadline_s=60)
    entry.budget.grant(12)
    entry.usage = Usage(prompt_tokens=50, completion_tokens=10, cached_tokens=40)
    entry.stages = {"sample": entry.usage}
    entry.done("budget", {})
    observe(entry.close(200))

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    assert value("ponder_budget_exhausted_total", model="metrics-model", strategy="best_of_n", reason="budget") == 1
    assert value("ponder_tokens_total", model="metrics-model", strategy="best_of_n", stage="sample", kind="completion") == 10
    assert value("ponder_prefix_cache_tokens_total", model="metrics-model", result="hit") == 40
    assert value("ponder_prefix_cache_tokens_total", model="metrics-model", result="miss") == 10
    assert value("ponder_requests_total", model="metrics-model", strategy="best_of_n", outcome="served", status="200") == 1


def test_benchmark_results_read_as_records_agree_with_their_rows() -> None:
    path = RESULTS / "accuracy-arithmetic-20261123T132821Z.json"
    result = json.loads(path.read_text())
    records = bench_records(result, path.stem)
    assert {r.source for r in records} == {"benchmark"}
    accuracy = {row["row"]: row["accuracy"] for row in result["rows"]}
    for config in result["runs"]:
        for selector in config["rows"]:
            mine = [r for r in records if r.id.startswith(f"{path.stem}:{config['config']}:{selector}:")]
            name = config["config"] if selector == "chosen" else f"{config['config']} {selector}"
            assert len(mine) == len(config["outcomes"])
            assert sum(bool(r.correct) for r in mine) / len(mine) == pytest.approx(accuracy[name])
