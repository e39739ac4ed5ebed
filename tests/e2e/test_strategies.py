"""Majority voting and best-of-N through the real server with the official client: real engine, real verifiers."""

from __future__ import annotations

import json
import time

import httpx
import openai
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
        model=MODEL,
        messages=ARITHMETIC,
        max_tokens=16,
        extra_body={"strategy": {"name": "majority", "n": 6, "temperature": 0.6}, "verifier": {"reference": "42"}},
    )
    ponder = ponder_of(response)
    assert_accounting(response, ponder, 6)
    assert len(response.choices) == 1 and response.choices[0].finish_reason in ("stop", "length")
    assert ponder["strategy"] == {
        "name": "majority",
        "n": 6,
        "temperature": 0.6,
        "top_p": None,
        "weight": "none",
        "rollout": None,
        "early_stop": None,
        "vote_on": None,
    }
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
        model=MODEL,
        messages=ARITHMETIC,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
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
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=16, extra_body={"strategy": {"name": "best_of_n", "n": 4, "select": select}}
    )
    ponder = ponder_of(response)
    assert_accounting(response, ponder, 4)
    scores = {c["index"]: c["scores"][select] for c in ponder["candidates"]}
    assert scores[ponder["chosen"]] == max(scores.values())
    assert ponder["selection"]["alternatives"][select] == ponder["chosen"]


def test_best_of_n_code_tests_from_the_prompts_examples(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=CODE, max_tokens=96, extra_body={"strategy": {"name": "best_of_n", "n": 4, "select": "code_tests"}}
    )
    ponder = ponder_of(response)
    assert_accounting(response, ponder, 4)
    tested = [c["tests"] for c in ponder["candidates"]]
    assert all(t["total"] == 2 for t in tested)
    chosen = next(c for c in ponder["candidates"] if c["index"] == ponder["chosen"])
    assert chosen["tests"]["passed"] == max(t["passed"] for t in tested)


def test_best_of_n_code_tests_with_callers_tests_streaming(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        max_tokens=96,
        stream=True,
        messages=[{"role": "user", "content": "Write a Python function add(a, b) that returns a + b, in a python code block."}],
        extra_body={
            "strategy": {"name": "best_of_n", "n": 3, "select": "code_tests"},
            "verifier": {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"], "entry_point": "add"},
        },
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
        model=MODEL,
        messages=ARITHMETIC,
        max_tokens=64,
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
        model=MODEL,
        messages=ARITHMETIC,
        max_tokens=4000,
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
        "model": MODEL,
        "messages": ARITHMETIC,
        "max_tokens": 3000,
        "ignore_eos": True,
        "stream": True,
        "strategy": {"name": "majority", "n": 6},
    }
    with httpx.stream("POST", f"{server.api}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
        assert wait_until(lambda: engine_rows(server)[0]["unfinished"] >= 1, 10)
    assert wait_until(lambda: engine_idle(server), 5), engine_rows(server)


def test_a_preset_from_the_settings_file_is_listed_and_chosen_by_model_name(server: Server, client: OpenAI) -> None:
    listed = httpx.get(f"{server.api}/presets", timeout=10).json()["data"]
    assert [p["id"] for p in listed] == ["quick-vote"] and listed[0]["strategy"]["n"] == 3
    response = client.chat.completions.create(model=f"{MODEL}@quick-vote", messages=ARITHMETIC, max_tokens=16)
    ponder = ponder_of(response)
    assert ponder["strategy"]["name"] == "majority" and ponder["rollouts"] == 3
    assert ponder["budget"]["max_total_tokens"] == 200 and response.model == MODEL


def test_an_unknown_preset_or_a_preset_with_a_strategy_field_is_refused(server: Server) -> None:
    unknown = httpx.post(f"{server.api}/chat/completions", json={"model": f"{MODEL}@no-such", "messages": ARITHMETIC}, timeout=30)
    assert unknown.status_code == 400 and "quick-vote" in unknown.json()["error"]["message"]
    both = httpx.post(
        f"{server.api}/chat/completions", json={"model": f"{MODEL}@quick-vote", "messages": ARITHMETIC, "strategy": {"name": "majority"}}, timeout=30
    )
    assert both.status_code == 400 and both.json()["error"]["param"] == "strategy"


def test_adaptive_majority_draws_in_batches_until_the_vote_is_confident(client: OpenAI) -> None:
    rule = {"name": "adaptive", "confidence": 0.9, "batch": 4, "max_n": 12}
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=16, temperature=0.3, extra_body={"strategy": {"name": "majority", "early_stop": rule}}
    )
    ponder = ponder_of(response)
    stop = ponder["selection"]["early_stop"]
    assert stop["drawn"] == len(ponder["candidates"]) == ponder["rollouts"] <= 12
    assert ponder["engine_requests"] == len(stop["steps"]) and [s["drawn"] for s in stop["steps"]] == list(range(4, stop["drawn"] + 1, 4))
    assert (stop["stopped"] == "confident") == (stop["steps"][-1]["leader_probability"] >= 0.9)
    assert response.usage.completion_tokens == sum(c["tokens"] for c in ponder["candidates"])


STORY = [{"role": "user", "content": "Write a short story about a robot who learns to paint. Then say how many legs a cat has."}]


def test_deepconf_offline_votes_with_the_most_confident_traces(client: OpenAI) -> None:
    rule = {"name": "deepconf", "mode": "offline", "window": 8, "keep_top": 0.5}
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=24, extra_body={"strategy": {"name": "majority", "n": 6, "early_stop": rule}}
    )
    ponder = ponder_of(response)
    stop = ponder["selection"]["early_stop"]
    confident = sorted(ponder["candidates"], key=lambda c: (-c["scores"]["confidence"], c["index"]))
    assert sorted(stop["voters"]) == sorted(c["index"] for c in confident[:3]) and stop["filtered_out"] == 3
    assert ponder["selection"]["weight"] == "confidence"


def test_deepconf_online_aborts_low_confidence_traces_in_the_engine(server: Server, client: OpenAI) -> None:
    rule = {"name": "deepconf", "mode": "online", "warmup": 4, "window": 8, "keep_top": 0.1}
    # With six traces past the warmup, one CI run saw none fall below the threshold; with twelve, probes stopped 6 to 10.
    response = client.chat.completions.create(
        model=MODEL, messages=STORY, max_tokens=96, temperature=1.0, seed=0, extra_body={"strategy": {"name": "majority", "n": 16, "early_stop": rule}}
    )
    ponder = ponder_of(response)
    stop = ponder["selection"]["early_stop"]
    assert set(ponder["tokens"]) == {"warmup", "sample"} and ponder["engine_requests"] == 2
    stopped = {s["index"]: s["tokens"] for s in stop["stopped"]}
    assert stopped, "with the 90th percentile of four warmup traces as threshold, some of twelve 96-token traces fall below it"
    for c in ponder["candidates"]:
        if c["index"] in stopped:
            assert c["finish_reason"] == "early_stop" and 8 <= c["tokens"] == stopped[c["index"]] < 96
    assert response.usage.completion_tokens == sum(c["tokens"] for c in ponder["candidates"])
    assert stop["saved_tokens"] > 0 and not set(stop["voters"]) & set(stopped)
    assert wait_until(lambda: engine_idle(server), 30)


CONTEXT = (
    "Ada keeps a ledger of the apples in her shop. On Monday she buys crates from two farms: the first farm sends "
    "seventeen apples and the second sends twenty-five. She writes every delivery on its own line, adds the lines at "
    "the end of the day, and checks the sum twice before she closes the shop. Her assistant, who is new, copies the "
    "numbers into a second book so that the two books can be compared on Friday, when the accountant visits."
)
LONG_QUESTION = [{"role": "user", "content": CONTEXT + " How many apples did Ada receive on Monday? Think it through, then give the number."}]


def generated(server: Server) -> int:
    return sum(row["generated_tokens"] for row in engine_rows(server))


def test_probes_stop_rollouts_in_the_engine_and_read_its_prefix_cache(server: Server, client: OpenAI) -> None:
    assert wait_until(lambda: engine_idle(server), 30)
    before = generated(server)
    rule = {"name": "probe", "every": 16, "agree": 2, "probe_tokens": 12}
    response = client.chat.completions.create(
        model=MODEL, messages=LONG_QUESTION, max_tokens=160, temperature=0.3, seed=0, extra_body={"strategy": {"name": "majority", "n": 3, "early_stop": rule}}
    )
    ponder = ponder_of(response)
    stop = ponder["selection"]["early_stop"]
    probe = ponder["tokens"]["probe"]
    assert probe["completion_tokens"] > 0 and probe["prompt_tokens_details"]["cached_tokens"] >= 128  # the prompt's first block at least
    for rollout in stop["rollouts"]:
        assert [p["at"] for p in rollout["probes"]] == list(range(16, 16 * len(rollout["probes"]) + 1, 16))
    stopped = {s["index"] for s in stop["stopped"]}
    assert stopped, f"no rollout's probes agreed twice: {stop['rollouts']}"
    for c in ponder["candidates"]:
        if c["index"] in stopped:
            assert c["finish_reason"] == "answered" and c["tokens"] < 160 and c["answer"] is not None
    assert wait_until(lambda: engine_idle(server), 30)
    spent = generated(server) - before
    time.sleep(1.5)
    assert generated(server) - before == spent  # the engine's own counter has stopped
    # What the engine generated is what was granted (rollouts and probes), plus at most a few tokens per stopped
    # rollout decoded between the stop and the abort reaching the engine; the rollouts stayed below three whole traces.
    assert response.usage.completion_tokens <= spent <= response.usage.completion_tokens + 24 * len(stopped)
    assert sum(c["tokens"] for c in ponder["candidates"]) < 3 * 160


def test_a_majority_over_atts_samples_composes_two_strategies(client: OpenAI) -> None:
    atts = {"name": "atts", "samples": 2, "turns": 2, "draft_tokens": 10, "target_tokens": 10, "alpha": 0.5, "family": "compose-test"}
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=32, extra_body={"strategy": {"name": "majority", "n": 3, "rollout": atts}}
    )
    ponder = ponder_of(response)
    composed = ponder["selection"]["composed"]
    assert len(composed) == 3 == len(ponder["candidates"]) and all(c["selection"]["method"] == "atts" for c in composed)
    assert {"draft", "score"} <= set(ponder["tokens"]) and ponder["engine_requests"] >= 3 * 2 * 2
    assert response.usage.completion_tokens == sum(u["completion_tokens"] for u in ponder["tokens"].values())
    chosen = next(c for c in ponder["candidates"] if c["index"] == ponder["chosen"])
    assert response.choices[0].message.content == chosen["text"]


def test_a_composition_that_makes_no_sense_is_a_clear_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=ARITHMETIC,
            max_tokens=8,
            extra_body={"strategy": {"name": "majority", "rollout": {"name": "atts"}, "early_stop": {"name": "probe"}}},
        )
    assert caught.value.body["param"] == "strategy" and "probe" in caught.value.body["message"]


def test_early_stopping_streams_its_probes_and_stops_as_events(client: OpenAI) -> None:
    rule = {"name": "probe", "every": 16, "agree": 2, "probe_tokens": 12}
    stream = client.chat.completions.create(
        model=MODEL,
        messages=LONG_QUESTION,
        max_tokens=128,
        temperature=0.3,
        stream=True,
        extra_body={"strategy": {"name": "majority", "n": 2, "early_stop": rule}},
    )
    chunks = list(stream)
    events = [c.model_extra["ponder"]["event"] for c in chunks if c.model_extra.get("ponder", {}).get("event")]
    final = next(c.model_extra["ponder"] for c in chunks if "selection" in c.model_extra.get("ponder", {}))
    probes = [e for e in events if e["type"] == "probe"]
    assert probes and {p["at"] % 16 for p in probes} == {0}
    assert [e["index"] for e in events if e["type"] == "early_stop"] == [s["index"] for s in final["selection"]["early_stop"]["stopped"]]
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert answer == next(c["text"] for c in final["candidates"] if c["index"] == final["chosen"])
