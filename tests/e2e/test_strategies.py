"""Majority voting and best-of-N through the real server with the official client: real engine, real verifiers."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from openai import OpenAI

from tests.conftest import Server
from tests.e2e.test_resilience import engine_idle, engine_rows, wait_until

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
ARITHMETIC = [{"role": "user", "content": "What is 12 + 30? Reply with just the number."}]
ADD_STUB = '''def add(a: int, b: int) -> int:
    """Return the sum of a and b.
    >>> add(2, 3)
    5
    >>> add(10, -4)
    6
    """
'''
CODE = [{"role": "user", "content": f"Complete this Python function. Reply with the full function in a python code block.\n```python\n{ADD_STUB}```"}]


def ponder_of(response) -> dict:
    return response.model_extra["ponder"]


def assert_accounting(response, ponder: dict, n: int) -> None:
    """usage counts every rollout's tokens, not only the chosen one's; one engine request shares the prompt."""
    candidates = ponder["candidates"]
    assert ponder["rollouts"] == n == len(candidates)
    assert response.usage.completion_tokens == sum(c["tokens"] for c in candidates)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert ponder["budget"]["used_tokens"] == response.usage.completion_tokens
    assert ponder["engine_requests"] == 1
    chosen = next(c for c in candidates if c["index"] == ponder["chosen"])
    assert response.choices[0].message.content == chosen["text"]


def test_majority_votes_over_equivalent_answers(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=16, extra_body={"strategy": {"name": "majority", "n": 6, "temperature": 0.6}, "verifier": {"reference": "42"}}
    )
    ponder = ponder_of(response)
    assert_accounting(response, ponder, 6)
    assert len(response.choices) == 1 and response.choices[0].finish_reason in ("stop", "length")
    assert ponder["strategy"] == {"name": "majority", "n": 6, "temperature": 0.6, "top_p": None, "weight": "none"}
    tally = ponder["selection"]["tally"]
    voters = [c for c in ponder["candidates"] if c["group"] is not None]
    assert sum(row["votes"] for row in tally) == len(voters)
    assert tally[0]["group"] == ponder["selection"]["winner"]
    chosen = next(c for c in ponder["candidates"] if c["index"] == ponder["chosen"])
    assert chosen["group"] == ponder["selection"]["winner"]
    assert all(isinstance(c["correct"], bool) for c in ponder["candidates"])
    assert ponder["correct"] == chosen["correct"]
    assert all("logprob" in c["scores"] for c in ponder["candidates"])


def test_strategy_from_the_model_name_takes_the_defaults(client: OpenAI) -> None:
    response = client.chat.completions.create(model=f"{MODEL}@majority", messages=ARITHMETIC, max_tokens=12)
    ponder = ponder_of(response)
    assert ponder["strategy"]["name"] == "majority" and ponder["rollouts"] == 4
    assert response.model == MODEL


def test_majority_streams_progress_then_the_answer(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=16, stream=True, stream_options={"include_usage": True},
        extra_body={"strategy": {"name": "majority", "n": 4}},
    )
    chunks = list(stream)
    events = [c.model_extra["ponder"]["event"] for c in chunks if "event" in (c.model_extra.get("ponder") or {})]
    assert [e["type"] for e in events].count("rollout") == 4
    assert events[-1]["type"] == "tally"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    final = chunks[-1]
    report = final.model_extra["ponder"]
    chosen = next(c for c in report["candidates"] if c["index"] == report["chosen"])
    assert content == chosen["text"]
    assert final.usage.completion_tokens == sum(c["tokens"] for c in report["candidates"])


@pytest.mark.parametrize("select", ["logprob", "self_certainty"])
def test_best_of_n_by_score(client: OpenAI, select: str) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ARITHMETIC, max_tokens=16, extra_body={"strategy": {"name": "best_of_n", "n": 4, "select": select}})
    ponder = ponder_of(response)
    assert_accounting(response, ponder, 4)
    scores = {c["index"]: c["scores"][select] for c in ponder["candidates"]}
    assert scores[ponder["chosen"]] == max(scores.values())
    assert ponder["selection"]["alternatives"][select] == ponder["chosen"]


def test_best_of_n_code_tests_from_the_prompts_examples(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=CODE, max_tokens=96, extra_body={"strategy": {"name": "best_of_n", "n": 4, "select": "code_tests"}})
    ponder = ponder_of(response)
    assert_accounting(response, ponder, 4)
    tested = [c["tests"] for c in ponder["candidates"]]
    assert all(t["total"] == 2 for t in tested)
    chosen = next(c for c in ponder["candidates"] if c["index"] == ponder["chosen"])
    assert chosen["tests"]["passed"] == max(t["passed"] for t in tested)


def test_best_of_n_code_tests_with_callers_tests_streaming(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, max_tokens=96, stream=True,
        messages=[{"role": "user", "content": "Write a Python function add(a, b) that returns a + b, in a python code block."}],
        extra_body={"strategy": {"name": "best_of_n", "n": 3, "select": "code_tests"}, "verifier": {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"], "entry_point": "add"}},
    )
    chunks = list(stream)
    events = [c.model_extra["ponder"]["event"] for c in chunks if "event" in (c.model_extra.get("ponder") or {})]
    assert [e["type"] for e in events].count("tested") == 3
    report = chunks[-1].model_extra["ponder"]
    assert all(c["tests"]["total"] == 3 for c in report["candidates"])


def test_completions_endpoint_runs_a_strategy(client: OpenAI) -> None:
    response = client.completions.create(model=MODEL, prompt="12 + 30 =", max_tokens=8, extra_body={"strategy": {"name": "majority", "n": 3}})
    ponder = response.model_extra["ponder"]
    assert ponder["rollouts"] == 3
    assert response.choices[0].text == next(c["text"] for c in ponder["candidates"] if c["index"] == ponder["chosen"])
    assert response.usage.completion_tokens == sum(c["tokens"] for c in ponder["candidates"])


def test_budget_runs_out_mid_strategy(client: OpenAI) -> None:
    cap = 50
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=64,
        extra_body={"strategy": {"name": "majority", "n": 8}, "budget": {"max_total_tokens": cap}, "ignore_eos": True},
    )
    ponder = ponder_of(response)
    assert response.usage.completion_tokens <= cap
    assert ponder["budget"]["used_tokens"] == response.usage.completion_tokens
    assert sum(c["tokens"] for c in ponder["candidates"]) == response.usage.completion_tokens
    assert response.choices[0].finish_reason == "budget" and ponder["finish"] == "budget"
    assert ponder["chosen"] is not None  # the best answer so far is still returned


def test_deadline_mid_strategy(client: OpenAI) -> None:
    started = time.monotonic()
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=4000,
        extra_body={"strategy": {"name": "best_of_n", "n": 8}, "budget": {"deadline_s": 2}, "ignore_eos": True},
    )
    elapsed = time.monotonic() - started
    ponder = ponder_of(response)
    assert 1.5 <= elapsed < 6
    assert response.choices[0].finish_reason == "deadline" and ponder["finish"] == "deadline"
    assert {c["finish_reason"] for c in ponder["candidates"]} == {"deadline"}
    assert response.usage.completion_tokens == sum(c["tokens"] for c in ponder["candidates"]) > 0


def test_disconnect_cancels_every_rollout(server: Server) -> None:
    assert wait_until(lambda: engine_idle(server), 30)
    body = {
        "model": MODEL, "messages": ARITHMETIC, "max_tokens": 3000, "ignore_eos": True, "stream": True,
        "strategy": {"name": "majority", "n": 6},
    }
    with httpx.stream("POST", f"{server.api}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
        assert wait_until(lambda: engine_rows(server)[0]["unfinished"] >= 1, 10)
    assert wait_until(lambda: engine_idle(server), 5), engine_rows(server)
