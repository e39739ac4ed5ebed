"""ATTS: the conformal test (exact and, on exchangeable scores, its finite-sample bounds), the calibration pools in
the real Redis server, and the strategy's loop against a scripted draft and target (rejections, takeovers, cold
pools, stragglers in async and sync mode, the budget)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from redis.asyncio import Redis

from service.state.calibration import PREFIX, RedisCalibration
from strategies.atts import ATTSParams, atts, pool_key
from strategies.base import Rollout
from strategies.conformal import alpha_for_takeovers, budget_accuracy, decide, p_value, perplexity, rank_fraction, rejection_interval
from tests.conftest import empty_database
from tests.unit.fakes import TASK, Call, DictCalibration, FakeContext, decode, encode

# --- the conformal test -------------------------------------------------------------------------------------------


def test_p_value_counts_pool_scores_at_least_as_bad_plus_one() -> None:
    pool = [1.0, 2.0, 3.0, 4.0]
    assert p_value(pool, 4.5) == 1 / 5
    assert p_value(pool, 3.0) == 3 / 5
    assert p_value(pool, 0.5) == 1.0
    assert p_value([], 9.0) == 1.0


def test_the_decision_rejects_when_p_is_at_most_alpha() -> None:
    pool = [float(i) for i in range(1, 10)]  # 9 scores: p takes the values k/10
    assert decide(pool, 9.5, alpha=0.1).reject
    assert not decide(pool, 8.5, alpha=0.1).reject
    assert decide(pool, 8.5, alpha=0.2).reject


def test_the_released_codes_percentile_rule_is_kept() -> None:
    pool = [float(i) for i in range(10)]
    assert rank_fraction(pool, 6.5) == 0.7
    assert decide(pool, 5.5, alpha=0.4, rule="percentile").reject  # rank fraction 0.6 >= 1 - alpha
    assert not decide(pool, 4.5, alpha=0.4, rule="percentile").reject
    assert decide(pool, 4.5, alpha=0.4, rule="percentile").p == pytest.approx(0.5)


def test_perplexity_of_nothing_is_the_worst_score() -> None:
    assert perplexity([]) == math.inf
    assert perplexity(None) == math.inf
    assert perplexity([math.log(0.5)] * 3) == pytest.approx(2.0)
    assert perplexity([-1e6]) < math.inf


@settings(max_examples=25, deadline=None)
@given(n=st.integers(5, 200), alpha=st.floats(0.05, 0.95), seed=st.integers(0, 2**31 - 1))
def test_on_exchangeable_scores_the_rejection_rate_keeps_its_finite_sample_bounds(n: int, alpha: float, seed: int) -> None:
    """P(reject) = floor(alpha (N+1)) / (N+1), which lies in [alpha - 1/(N+1), alpha]; 4000 draws land within four
    standard errors of it."""
    rng = np.random.default_rng(seed)
    trials = 4000
    rejected = 0
    for _ in range(trials):
        scores = rng.standard_normal(n + 1)
        rejected += decide(list(scores[:n]), float(scores[n]), alpha).reject
    exact = math.floor(alpha * (n + 1) + 1e-12) / (n + 1)
    assert alpha - 1 / (n + 1) - 1e-9 <= exact <= alpha + 1e-9
    slack = 4 * math.sqrt(max(exact * (1 - exact), 1 / trials) / trials)
    assert exact - slack <= rejected / trials <= exact + slack


def test_a_takeover_budget_becomes_a_rate_and_is_scored_as_the_code_does() -> None:
    assert alpha_for_takeovers(8, samples=16, chunks_per_sample=2.0) == 0.25
    assert alpha_for_takeovers(100, samples=4, chunks_per_sample=1.0) == 1.0
    assert budget_accuracy(8, 10) == pytest.approx(0.8)
    assert budget_accuracy(12, 10) == pytest.approx(0.8)
    lo, hi = rejection_interval(40, 100)  # type: ignore[misc]
    assert lo < 0.4 < hi and hi - lo < 0.25
    assert rejection_interval(0, 0) is None


# --- pools in the real Redis server -------------------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with empty_database(redis_url, "atts") as client:
        yield client


async def test_a_pool_keeps_the_newest_window_and_per_question_pools_expire(redis: Redis) -> None:
    store = RedisCalibration(redis, window=5, ttl_s=60)
    await store.add("m|m|arith", [float(i) for i in range(8)])
    assert await store.scores("m|m|arith") == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert await redis.ttl(PREFIX + "m|m|arith") == -1
    key = pool_key("m", "m", "arith", "What is 2+2?")
    assert key.startswith("m|m|arith|q:") and key != pool_key("m", "m", "arith", "What is 3+3?")
    await store.add(key, [1.5], expires=True)
    assert 0 < await redis.ttl(PREFIX + key) <= 60
    await store.count("m|m|arith", samples=4, chunks=10)
    await store.count("m|m|arith", samples=4, chunks=6)
    assert await store.stats("m|m|arith") == {"samples": 8.0, "chunks": 16.0}


async def test_an_unreachable_store_reads_as_no_pool_and_drops_writes() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = RedisCalibration(dead, window=5, ttl_s=60)
    assert await store.scores("x") is None
    await store.add("x", [1.0])
    assert await store.stats("x") == {}
    assert store.errors == 3
    await dead.aclose()


# --- the strategy against a scripted draft and target -------------------------------------------------------------


class Script:
    """Text is characters, one token each (the fake's tokenizer). The draft writes `drafts[sample][turn]` (a chunk
    containing "?" is one the target dislikes: log-probability -3 per token, else -0.1); the target writes "T." and
    ends the turn. A sample's draft sleeps `delays[sample]` seconds on its first chunk. Each sample's prompt carries
    its index, so the script knows whose turn it is."""

    def __init__(self, drafts: dict[int, list[str]], delays: dict[int, float] | None = None) -> None:
        self.drafts = drafts
        self.delays = delays or {}
        self.turn: dict[int, int] = {}
        self.started = 0

    def context(self, store: DictCalibration, budget: int | None = None) -> FakeContext:
        return FakeContext(replies=self.reply, scores=self.score, model="m", prompt=[0], calibration=store, budget=budget)

    async def reply(self, call: Call) -> list[Rollout]:
        sample = self._sample_of(call.prompt)
        if sample < 0:  # a sample's first call: samples start in index order
            sample, self.started = self.started, self.started + 1
        if call.stage == "draft":
            turn = self.turn.get(sample, 0)
            self.turn[sample] = turn + 1
            if turn == 0 and self.delays.get(sample):
                await asyncio.sleep(self.delays[sample])
            script = self.drafts[sample]
            text = script[turn] if turn < len(script) else ""
            finish = "stop" if text.endswith(".") else "length"
        else:
            text, finish = "T.", "stop"
        return [Rollout(0, text, encode(text), [], finish)]

    def score(self, prompt: list[int], start: int) -> list[float]:
        chunk = decode(prompt[start:])
        return [-3.0 if "?" in chunk else -0.1] * len(chunk)

    def _sample_of(self, prompt: list[int] | None) -> int:
        found = re.match(r"<(\d+)>", decode((prompt or [])[1:]))
        return int(found.group(1)) if found else -1


def drafts_with_ids(script: dict[int, list[str]]) -> dict[int, list[str]]:
    """Prefixes each sample's first chunk with its index, so later calls (whose prompt holds it) can be told apart."""
    return {i: [f"<{i}>" + chunks[0], *chunks[1:]] for i, chunks in script.items()}


async def test_a_rejected_chunk_is_continued_by_the_target_and_an_accepted_one_is_not() -> None:
    warm = DictCalibration({"m|m|default": [1.2] * 15 + [1.3] * 15})
    model = Script(drafts_with_ids({0: ["x = 1", "so 4."], 1: ["odd?", "so 5."]})).context(warm)
    result = await atts(model, ATTSParams(samples=2, turns=4, alpha=0.2))
    report = result.selection
    first = report["samples"][0]["turns"]
    assert [t["decision"] for t in first] == ["accept", "accept"]
    second = report["samples"][1]["turns"]
    assert second[0]["decision"] == "reject" and second[0]["target_tokens"] == 2
    assert second[0]["p"] <= 1 / 31  # 30 stored scores, and maybe sample 0's first, all better
    assert report["samples"][1]["finish_reason"] == "stop"
    assert result.candidates[1].rollout.text == "<1>odd?T."  # the rejected chunk stays; the target ended the turn
    assert report["calibration"]["bootstrapped"] is False and report["calibration"]["pool_size"] == 30
    assert report["rejection"]["decided"] == 3 and report["rejection"]["rejected"] == 1
    assert report["rejection"]["turn0"]["decided"] == 2
    assert report["takeovers"] == 1
    assert len(warm.pools["m|m|default"]) == 32  # both first-turn scores joined the pool
    assert [e["sample"] for e in model.events if e["type"] == "chunk"].count(0) == 2


async def test_a_cold_pool_is_bootstrapped_from_the_requests_own_first_chunks() -> None:
    store = DictCalibration()
    script = {i: ["fine", " so 4."] for i in range(5)}
    script[4] = ["hmm?", " so 4."]
    model = Script(drafts_with_ids(script)).context(store)
    result = await atts(model, ATTSParams(samples=5, turns=3, alpha=0.2, min_calibration=16))
    calibration = result.selection["calibration"]
    assert calibration["bootstrapped"] is True and calibration["pool_size"] == 0 and calibration["added"] == 5
    turns0 = [s["turns"][0] for s in result.selection["samples"]]
    assert [t["decision"] for t in turns0] == ["accept"] * 4 + ["reject"]
    assert turns0[4]["p"] == pytest.approx(1 / 5)  # against the other four, all better
    assert len(store.pools["m|m|default"]) == 5
    assert result.chosen is not None and result.chosen.answer == "4"


async def test_per_question_pools_are_kept_apart_from_the_marginal_one() -> None:
    store = DictCalibration({"m|m|default": [1.0] * 20})
    model = Script(drafts_with_ids({0: ["4."], 1: ["4."]})).context(store)
    result = await atts(model, ATTSParams(samples=2, turns=1, calibration="per_question", min_calibration=4))
    key = pool_key("m", "m", "default", TASK.text)
    assert result.selection["calibration"]["pool"] == key and result.selection["calibration"]["bootstrapped"] is True
    assert store.pools[key] and store.pools["m|m|default"] == [1.0] * 20
    assert store.counts["m|m|default"] == {"samples": 2.0, "chunks": 2.0}


async def test_async_samples_do_not_wait_for_a_straggler_and_sync_ones_do() -> None:
    script = {i: ["step", " then 4."] for i in range(4)}
    warm = {"m|m|default": [1.2] * 40}
    fast = await atts(Script(drafts_with_ids(script), delays={3: 0.6}).context(DictCalibration(warm)), ATTSParams(samples=4, turns=3, alpha=0.1))
    walls = {s["index"]: s["wall_s"] for s in fast.selection["samples"]}
    assert walls[3] >= 0.6 and max(walls[i] for i in range(3)) < 0.3
    slow = await atts(Script(drafts_with_ids(script), delays={3: 0.6}).context(DictCalibration(warm)), ATTSParams(samples=4, turns=3, alpha=0.1, mode="sync"))
    assert min(s["wall_s"] for s in slow.selection["samples"]) >= 0.6


async def test_sync_mode_hands_the_worst_scored_round_alpha_share_to_the_target() -> None:
    script = {0: ["a?", "4."], 1: ["b??", "4."], 2: ["c", "4."], 3: ["d", "4."]}
    model = Script(drafts_with_ids(script)).context(DictCalibration({"m|m|default": [1.0] * 40}))
    result = await atts(model, ATTSParams(samples=4, turns=2, alpha=0.5, mode="sync"))
    turn0 = {s["index"]: s["turns"][0]["decision"] for s in result.selection["samples"]}
    assert sorted(i for i, d in turn0.items() if d == "reject") == [0, 1]


async def test_a_takeover_budget_sets_alpha_from_what_the_pool_has_seen() -> None:
    store = DictCalibration({"m|m|default": [1.0] * 40})
    store.counts["m|m|default"] = {"samples": 10.0, "chunks": 20.0}
    model = Script(drafts_with_ids({i: ["4."] for i in range(4)})).context(store)
    result = await atts(model, ATTSParams(samples=4, turns=1, takeovers=2))
    assert result.selection["alpha"] == 0.25 and result.selection["alpha_source"] == "takeovers"
    assert result.selection["takeover_budget"] == 2 and "budget_accuracy" in result.selection
    with pytest.raises(ValidationError):
        ATTSParams(alpha=0.2, takeovers=3)


async def test_the_budget_ends_every_sample_and_says_so() -> None:
    script = {i: ["abcdefghij", "klmnopqrst", "4."] for i in range(3)}
    model = Script(drafts_with_ids(script)).context(DictCalibration({"m|m|default": [2.0] * 40}), budget=20)
    result = await atts(model, ATTSParams(samples=3, turns=3, alpha=0.1))
    assert {s["finish_reason"] for s in result.selection["samples"]} == {"budget"}
    assert model.used <= 20 + 13  # the call in flight when the budget ran out may finish its chunk
