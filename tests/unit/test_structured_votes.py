"""Strategies voting on JSON and tool-call answers (strategies/ballots.py) against the fake context: canonical JSON
or a field named by a JSON pointer, tool calls by name then arguments (read by the gateway's own `ToolUse.calls`),
ties, samples that do not parse, and which strategies keep the request's format at all."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from compute.cost_model import HardwareProfile, ModelShape
from compute.protocol import TokenLogprob
from service.api.errors import APIError
from service.api.protocol import ChatCompletionRequest
from service.api.strategy_serving import answer_format, check_format
from strategies.ahead_by_k import AheadByKParams, ahead_by_k
from strategies.auto import AutoParams, auto
from strategies.base import AnswerFormat, Planning, Rollout, StrategyInputError, Task, VerifierSpec
from strategies.best_of_n import BestOfNParams, best_of_n
from strategies.kinetics import ComputeBudget
from strategies.majority import MajorityParams, check, majority
from strategies.registry import STRATEGY_PARAMS, keeps_format
from strategies.stopping import AdaptiveStop
from tests.unit.fakes import TASK, FakeContext
from tests.unit.test_tools import hermes, use

JSON = Task(text="q", verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=None, answer_format=AnswerFormat("json"))
ASK = {"model": "m", "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}


def tool_task(choice: str, named: str | None = None, parallel: bool = True) -> Task:
    """A task whose samples' calls are read as the gateway reads them: `ToolUse.calls` through `answer_format`."""
    body = ChatCompletionRequest.model_validate(ASK)
    fmt = answer_format(body, use(choice, parallel, named))
    return Task(text="q", verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=None, answer_format=fmt)


def required(*calls: tuple[str, dict[str, Any]]) -> str:
    """A sample under tool_choice required: the array of calls the engine's schema allows."""
    return json.dumps([{"name": name, "parameters": arguments} for name, arguments in calls])


def probable(texts: list[str], probs: list[float]) -> list[Rollout]:
    return [Rollout(0, t, [1, 2], [TokenLogprob("t", math.log(p), ())] * 2, "stop") for t, p in zip(texts, probs, strict=True)]


async def test_majority_votes_on_canonical_json() -> None:
    ctx = FakeContext(['{"answer": 4, "unit": "apples"}', '{"unit":"apples",\n "answer":4.0}', '{"answer": 5, "unit": "apples"}', "no JSON here"], task=JSON)
    result = await majority(ctx, MajorityParams(n=4))
    selection = result.selection
    assert selection["vote_on"] == {"format": "json", "pointer": ""}
    assert [(t["answer"], t["votes"]) for t in selection["tally"]] == [('{"answer":4,"unit":"apples"}', 2), ('{"answer":5,"unit":"apples"}', 1)]
    assert result.chosen is not None and result.chosen.index in (0, 1) and selection["winner"] == 0 and selection["tie_break"] is None
    unparsed = result.candidates[3]
    assert unparsed.answer is None and unparsed.group is None  # what does not parse votes for nothing
    assert ctx.events[-1] == {"type": "tally", **{k: selection[k] for k in ("tally", "winner", "tied", "tie_break", "vote_on")}}


async def test_vote_on_a_json_pointer_votes_that_field_alone() -> None:
    samples = ['{"answer": 4, "why": "two and two"}', '{"why": "a sum", "answer": 4.0}', '{"answer": 5, "why": "a guess"}', '{"why": "no answer"}']
    result = await majority(FakeContext(samples, task=JSON), MajorityParams(n=4, vote_on="/answer"))
    assert [(t["answer"], t["votes"]) for t in result.selection["tally"]] == [("4", 2), ("5", 1)]
    assert result.selection["vote_on"] == {"format": "json", "pointer": "/answer"}
    assert result.candidates[3].answer is None  # nothing at the pointer: no vote
    assert result.chosen is not None and result.chosen.rollout.text in samples[:2]


async def test_a_json_tie_goes_to_the_more_probable_answer() -> None:
    ctx = FakeContext(probable(['{"a": 1}', "{broken", '{ "a" : 2 }'], [0.4, 0.99, 0.8]), task=JSON)
    result = await majority(ctx, MajorityParams(n=3))
    assert result.selection["tied"] == [0, 1] and result.selection["tie_break"] == "logprob"
    assert result.chosen is not None and result.chosen.index == 2 and result.chosen.answer == '{"a":2}'


async def test_when_no_sample_parses_there_is_no_winner_and_the_first_is_returned() -> None:
    result = await majority(FakeContext(["{", "[1,", "nope"], task=JSON), MajorityParams(n=3))
    assert result.selection["tally"] == [] and result.selection["winner"] is None
    assert result.chosen is not None and result.chosen.index == 0


async def test_text_answers_report_as_they_always_did() -> None:
    result = await majority(FakeContext(["Answer: 4", "Answer: 4"]), MajorityParams(n=2))
    assert "vote_on" not in result.selection and result.selection["tally"][0]["answer"] == "4"


def test_vote_on_is_a_json_pointer_and_needs_a_json_answer() -> None:
    with pytest.raises(ValidationError, match="pointer"):
        MajorityParams(vote_on="answer")
    with pytest.raises(StrategyInputError) as caught:
        check(TASK, MajorityParams(vote_on="/answer"))
    assert caught.value.param == "strategy.vote_on"
    check(JSON, MajorityParams(vote_on="/answer"))


async def test_tool_calls_vote_by_name_then_by_arguments() -> None:
    """Flat, get_time(Paris) would win with two votes; by name, get_weather wins three to two, and among its calls
    (one vote each) the tie goes to the first seen."""
    samples = [
        required(("get_weather", {"city": "Paris"})),
        required(("get_weather", {"city": "Lyon"})),
        required(("get_time", {"city": "Paris"})),
        required(("get_weather", {"city": "Nice"})),
        required(("get_time", {"city": "Paris"})),
    ]
    result = await majority(FakeContext(samples, task=tool_task("required")), MajorityParams(n=5))
    selection = result.selection
    assert selection["by_name"]["tally"] == [{"names": ["get_weather"], "votes": 3, "weight": 3.0}, {"names": ["get_time"], "votes": 2, "weight": 2.0}]
    assert selection["by_name"]["winner"] == ["get_weather"] and selection["by_name"]["tie_break"] is None
    assert selection["tally"][0] == {"group": 2, "answer": 'get_time({"city":"Paris"})', "votes": 2, "weight": 2.0}
    assert selection["tied"] == [0, 1, 3] and selection["tie_break"] == "first_seen"
    assert result.chosen is not None and result.chosen.index == 0 and result.chosen.answer == 'get_weather({"city":"Paris"})'
    assert selection["vote_on"] == {"format": "tool_calls", "rounds": "names, then arguments"}


async def test_a_named_choice_votes_on_arguments_and_a_sample_that_made_no_call_has_no_vote() -> None:
    samples = ['{"city": "Paris"}', '{ "city" :"Paris" }', '{"city": "Lyon"}', "I cannot call that."]
    result = await majority(FakeContext(samples, task=tool_task("named", "get_weather")), MajorityParams(n=4))
    assert [(t["answer"], t["votes"]) for t in result.selection["tally"]] == [('get_weather({"city":"Paris"})', 2), ('get_weather({"city":"Lyon"})', 1)]
    assert result.candidates[3].answer is None and result.candidates[3].group is None
    assert result.chosen is not None and result.chosen.index in (0, 1)


async def test_parallel_calls_in_any_order_are_one_vote() -> None:
    both = [("get_time", {}), ("get_weather", {"city": "Oslo"})]
    samples = [required(*both), required(*reversed(both)), required(("get_weather", {"city": "Oslo"}))]
    result = await majority(FakeContext(samples, task=tool_task("required")), MajorityParams(n=3))
    assert result.selection["by_name"]["winner"] == ["get_time", "get_weather"]
    assert result.selection["tally"][0] == {"group": 0, "answer": 'get_time({}); get_weather({"city":"Oslo"})', "votes": 2, "weight": 2.0}


async def test_under_auto_answering_in_text_is_a_choice_that_can_win() -> None:
    """Three samples answer without a call and agree; two call get_weather: "no call" wins the first round."""
    samples = ["The answer is 4.", hermes("get_weather", {"city": "Paris"}), "Answer: 4", hermes("get_weather", {"city": "Paris"}), "It is 4"]
    result = await majority(FakeContext(samples, task=tool_task("auto")), MajorityParams(n=5))
    assert result.selection["by_name"]["tally"][0] == {"names": [], "votes": 3, "weight": 3.0}
    assert result.selection["by_name"]["winner"] == []
    assert result.chosen is not None and result.chosen.answer == "4" and result.chosen.index in (0, 2, 4)
    answers = {t["answer"]: t["votes"] for t in result.selection["tally"]}
    assert answers == {"4": 3, 'get_weather({"city":"Paris"})': 2}


async def test_weighted_majority_groups_canonical_json_before_weighing() -> None:
    ctx = FakeContext(probable(['{"a": 1}', '{"a":1.0}', '{"a": 2}'], [0.3, 0.3, 0.9]), task=JSON)
    result = await best_of_n(ctx, BestOfNParams(n=3, select="weighted_majority", score="logprob"))
    assert [(t["answer"], t["votes"], t["weight"]) for t in result.selection["tally"]] == [('{"a":2}', 1, 0.9), ('{"a":1}', 2, 0.6)]
    assert result.chosen is not None and result.chosen.index == 2


async def test_adaptive_stopping_reads_canonical_answers() -> None:
    """Two spellings of one document agree: Beta(3, 1) puts the leader past 0.85 after the first batch."""
    ctx = FakeContext(['{"a": 1}', '{ "a" : 1e0 }', '{"a": 2}', '{"a": 3}'], task=JSON)
    result = await majority(ctx, MajorityParams(n=4, early_stop=AdaptiveStop(batch=2, max_n=4, confidence=0.85)))
    assert result.selection["early_stop"]["stopped"] == "confident" and len(result.candidates) == 2


async def test_ahead_by_k_races_on_canonical_answers() -> None:
    ctx = FakeContext(['{"a": 1}', '{"a": 1.0}', '{"a": 2}'], task=JSON)
    result = await ahead_by_k(ctx, AheadByKParams(k=2, max_n=4))
    assert result.selection["stopped"] == "ahead" and result.selection["drawn"] == 2
    assert result.selection["vote_on"] == {"format": "json", "pointer": ""} and result.selection["tally"][0]["answer"] == '{"a":1}'


async def test_auto_probes_agree_on_canonical_json() -> None:
    shape = ModelShape(layers=30, heads=9, kv_heads=3, head_dim=64, params=134_515_008, max_context=8192)
    planning = Planning(shape, HardwareProfile(name="local", flops=2e11, bandwidth=2e10, source="measured"), 40, 64, [], [], {}, None, [], [])
    probes = [Rollout(0, t, [1] * 10, [], "stop") for t in ['{"a": 1}', '{"a":1.0}', '{ "a": 1 }', '{"a": 1e0}']]
    result = await auto(FakeContext(probes, task=JSON, planning=planning), AutoParams(budget=ComputeBudget(eflops=5e12)))
    assert result.selection["difficulty"]["agreement"] == 1.0 and result.selection["choice"] == "probe_vote"
    assert result.chosen is not None and result.chosen.answer == '{"a":1}'


@pytest.mark.parametrize(
    ("params", "keeps"),
    [
        ({"name": "majority"}, True),
        ({"name": "majority", "early_stop": {"name": "adaptive"}}, True),
        ({"name": "majority", "early_stop": {"name": "deepconf"}}, True),
        ({"name": "majority", "early_stop": {"name": "probe"}}, False),  # a stopped rollout ends in the probe's box
        ({"name": "majority", "rollout": {"name": "best_of_n", "select": "code_tests"}}, True),
        ({"name": "majority", "rollout": {"name": "rtv"}}, False),
        ({"name": "best_of_n", "select": "weighted_majority"}, True),
        ({"name": "best_of_n", "rollout": {"name": "atts"}, "select": "code_tests"}, False),
        ({"name": "ahead_by_k"}, True),
        ({"name": "kinetics", "budget": {"tokens": 100}}, True),
        ({"name": "auto", "budget": {"tokens": 100}}, True),
        ({"name": "rtv"}, False),
        ({"name": "pdr"}, False),
        ({"name": "atts"}, False),
    ],
)
def test_which_strategies_keep_the_requests_format(params: dict[str, Any], keeps: bool) -> None:
    strategy = STRATEGY_PARAMS.validate_python(params)
    assert keeps_format(strategy) is keeps
    if keeps:
        check_format(strategy, "tools")
    else:
        with pytest.raises(APIError) as caught:
            check_format(strategy, "tools")
        assert caught.value.status == 400 and caught.value.param == "tools"


def test_the_gateway_reads_the_answer_format_from_the_request() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    assert answer_format(ChatCompletionRequest.model_validate(ASK), None) == AnswerFormat()
    assert answer_format(ChatCompletionRequest.model_validate({**ASK, "response_format": schema}), None).kind == "json"
    assert answer_format(ChatCompletionRequest.model_validate({**ASK, "response_format": {"type": "text"}}), None).kind == "text"
    named, auto_ = tool_task("named", "get_weather").answer_format, tool_task("auto").answer_format
    assert named.kind == auto_.kind == "tool_calls" and named.must_call and not auto_.must_call
    assert named.read_calls is not None and named.read_calls('{"city": "Paris"}') == [("get_weather", '{"city": "Paris"}')]
    assert auto_.read_calls is not None and auto_.read_calls("just text") == []
