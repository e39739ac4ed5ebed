"""Program-aided answers through the real server, engine and sandbox: the packaged model writes Python, the sandbox
runs it, and what it printed is the answer. Asserted is what holds for any sampled program: each one's trace says
how its run ended, only programs that printed something vote, the answer is the tally's winner, and `usage` counts
every program's tokens. Composed, each of majority's samples is one program run, and adaptive stopping reads their
results."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import OpenAI

from strategies.program import ANSWER_TEXT
from tests.e2e.payloads import MODEL

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Compute 17 * 6. Reply with just the number."}]


def ask(client: OpenAI, strategy: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=48, extra_body={"strategy": strategy})
    return response, response.model_extra["ponder"]


def test_programs_run_in_the_sandbox_and_their_results_vote(client: OpenAI) -> None:
    response, ponder = ask(client, {"name": "program", "n": 4})
    programs = ponder["selection"]["programs"]
    assert len(programs) == 4 and {p["status"] for p in programs} <= {"ok", "error", "timeout", "killed", "not_run"}
    voters = [c for c in ponder["candidates"] if c["answer"] is not None]
    assert all(programs[c["index"]]["status"] == "ok" for c in voters)
    assert sum(row["votes"] for row in ponder["selection"]["tally"]) == len(voters)
    assert response.usage.completion_tokens == sum(c["tokens"] for c in ponder["candidates"])
    if voters:
        winner = ponder["selection"]["winner"]
        assert response.choices[0].message.content == ANSWER_TEXT.format(answer=next(c["answer"] for c in voters if c["group"] == winner))


def test_majority_over_program_rollouts_stops_adaptively(client: OpenAI) -> None:
    strategy = {"name": "majority", "rollout": {"name": "program"}, "early_stop": {"name": "adaptive", "max_n": 8, "confidence": 0.9}}
    _, ponder = ask(client, strategy)
    composed = ponder["selection"]["composed"]
    assert len(composed) == ponder["selection"]["early_stop"]["drawn"] <= 8
    assert all(run["selection"]["method"] == "program" and len(run["selection"]["programs"]) == 1 for run in composed)


def test_a_program_answer_is_text_only(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=16, response_format={"type": "json_object"}, extra_body={"strategy": {"name": "program"}}
        )
    assert caught.value.body["param"] == "response_format"


ADD = [{"role": "user", "content": "Write a Python function add(a, b) that returns the sum of a and b."}]


def test_best_of_n_stops_drawing_once_the_tests_pass(client: OpenAI) -> None:
    """Whatever was sampled: drawing stopped at the first batch holding a passing candidate, or went on to n."""
    response = client.chat.completions.create(
        model=MODEL,
        messages=ADD,
        max_tokens=64,
        extra_body={
            "strategy": {"name": "best_of_n", "n": 6, "batch": 2, "select": "code_tests", "temperature": 0.8},
            "verifier": {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "entry_point": "add"},
        },
    )
    ponder = response.model_extra["ponder"]
    report, candidates = ponder["selection"]["early_stop"], ponder["candidates"]
    assert report["drawn"] == len(candidates) and report["saved_samples"] == 6 - len(candidates)
    passing = [c["index"] for c in candidates if c.get("tests") and c["tests"]["passed"] == c["tests"]["total"] > 0]
    if report["stopped"] == "passed":
        assert passing and min(passing) >= len(candidates) - 2 and ponder["chosen"] in passing
    else:
        assert report["stopped"] == "n" and not passing and len(candidates) == 6
    assert response.usage.completion_tokens == sum(c["tokens"] for c in candidates)
