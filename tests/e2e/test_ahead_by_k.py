"""First-to-ahead-by-k voting through the real server with the official client: real engine, real math-verify."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.e2e.test_strategies import ARITHMETIC, MODEL, ponder_of

pytestmark = pytest.mark.slow


def test_ahead_by_k_samples_until_one_answer_leads(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=ARITHMETIC,
        max_tokens=16,
        extra_body={"strategy": {"name": "ahead_by_k", "k": 2, "max_n": 8, "temperature": 0.6}, "verifier": {"reference": "42"}},
    )
    ponder = ponder_of(response)
    selection, candidates = ponder["selection"], ponder["candidates"]
    assert ponder["strategy"] == {"name": "ahead_by_k", "k": 2, "max_n": 8, "temperature": 0.6, "top_p": None}
    assert selection["method"] == "ahead_by_k" and 2 <= selection["drawn"] == ponder["rollouts"] == len(candidates) <= 8
    assert selection["stopped"] in ("ahead", "max_n") and (selection["lead"] >= 2) == (selection["stopped"] == "ahead")
    assert 1 <= ponder["engine_requests"] <= selection["drawn"] - 1  # each batch one engine request; the first is k samples
    assert response.usage.completion_tokens == sum(c["tokens"] for c in candidates) == ponder["budget"]["used_tokens"]
    assert selection["red_flagged"] == [c["index"] for c in candidates if c["answer"] is None]
    voters = [c for c in candidates if c["group"] is not None]
    assert sum(row["votes"] for row in selection["tally"]) == len(voters)
    chosen = next(c for c in candidates if c["index"] == ponder["chosen"])
    assert response.choices[0].message.content == chosen["text"] and ponder["correct"] == chosen["correct"]
    if selection["winner"] is not None:
        assert chosen["group"] == selection["winner"]


def test_ahead_by_k_streams_the_lead_after_each_batch(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ARITHMETIC,
        max_tokens=16,
        stream=True,
        extra_body={"strategy": {"name": "ahead_by_k", "k": 2, "max_n": 6}},
    )
    chunks = list(stream)
    events = [c.model_extra["ponder"]["event"] for c in chunks if "event" in (c.model_extra.get("ponder") or {})]
    votes = [e for e in events if e["type"] == "votes"]
    report = chunks[-1].model_extra["ponder"]
    assert votes and votes[-1]["drawn"] == report["selection"]["drawn"] and votes[-1]["lead"] == report["selection"]["lead"]
    assert [e["type"] for e in events].count("rollout") == report["rollouts"]
