"""Adaptive self-consistency: the Beta stopping rule (Hypothesis: it never decides on fewer than one batch and never
draws past max_n) and majority voting that stops drawing once the vote is confident; DeepConf's confidence measures
and its offline filtered, confidence-weighted vote; Dynasor's certainty probes (agreement, hedging, probes beside
streaming rollouts); composed rollouts and the compositions refused; with the real math-verify grouping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from compute.protocol import TokenLogprob
from strategies.atts import ATTSParams
from strategies.base import NO_ANSWER, Candidate, Rollout, StrategyResult, Task, VerifierSpec
from strategies.best_of_n import BestOfNParams, best_of_n
from strategies.majority import MajorityParams, majority
from strategies.registry import STRATEGY_PARAMS
from strategies.stopping import ANSWERED, PROBE, AdaptiveStop, DeepConfStop, ProbeStop, leader_probability, next_batch
from tests.unit.fakes import Call, FakeContext, Partial, encode
from verifiers.answers import AnswerGrouper
from verifiers.scores import group_confidences, token_confidences, trace_confidence

rules = st.builds(
    AdaptiveStop,
    confidence=st.floats(0.51, 0.999),
    batch=st.integers(1, 8),
    max_n=st.integers(8, 64),
)
votes = st.lists(st.one_of(st.none(), st.integers(0, 3)), max_size=80)


@settings(deadline=None)
@given(rule=rules, groups=votes)
def test_it_never_stops_before_a_batch_and_never_draws_past_max_n(rule: AdaptiveStop, groups: list[int | None]) -> None:
    k = next_batch(rule, groups)
    assert 0 <= k <= max(rule.max_n - len(groups), 0)
    if len(groups) < min(rule.batch, rule.max_n):
        assert k > 0


@settings(deadline=None)
@given(rule=rules, seed=st.lists(st.integers(0, 2), min_size=80, max_size=80))
def test_drawing_by_the_rule_ends_within_max_n(rule: AdaptiveStop, seed: list[int]) -> None:
    drawn: list[int | None] = []
    while (k := next_batch(rule, drawn)) > 0:
        drawn += seed[len(drawn) : len(drawn) + k]
    assert len(drawn) <= rule.max_n
    assert len(drawn) >= min(rule.batch, rule.max_n)


def test_the_leaders_posterior_grows_with_its_lead() -> None:
    assert leader_probability([]) == 0.0
    assert leader_probability([0, 0, 0, 0]) == pytest.approx(1 - 0.5**5)
    assert leader_probability([0, 1]) == pytest.approx(0.5)
    assert leader_probability([0] * 6 + [1] * 2) > leader_probability([0] * 4 + [1] * 4)
    assert leader_probability([0, 0, None, None]) == leader_probability([0, 0])
    with pytest.raises(ValidationError):
        AdaptiveStop(batch=8, max_n=4)


async def test_a_unanimous_vote_stops_after_the_first_batch(answers: AnswerGrouper) -> None:
    ctx = FakeContext(["The answer is 4."] * 32, answers=answers)
    result = await majority(ctx, MajorityParams(early_stop=AdaptiveStop(batch=4, max_n=32, confidence=0.9)))
    stop = result.selection["early_stop"]
    assert [c.n for c in ctx.calls] == [4] and stop["drawn"] == 4 and stop["stopped"] == "confident" and stop["saved_samples"] == 28
    assert [c.index for c in result.candidates] == [0, 1, 2, 3]


async def test_a_split_vote_draws_until_the_cap(answers: AnswerGrouper) -> None:
    ctx = FakeContext(["It is 4.", "It is 5."] * 16, answers=answers)
    result = await majority(ctx, MajorityParams(early_stop=AdaptiveStop(batch=4, max_n=12)))
    stop = result.selection["early_stop"]
    assert [c.n for c in ctx.calls] == [4, 4, 4] and stop["stopped"] == "max_n" and len(stop["steps"]) == 3
    assert sorted(c.index for c in result.candidates) == list(range(12))
    assert [e["drawn"] for e in ctx.events if e["type"] == "adaptive"] == [4, 8, 12]


def peaked(k: int = 8) -> list[TokenLogprob]:
    return [TokenLogprob("a", -0.01, (("a", -0.01), ("b", -9.0), ("c", -9.0)))] * k


def flat(k: int = 8) -> list[TokenLogprob]:
    return [TokenLogprob("a", -1.0, (("a", -1.0), ("b", -1.2), ("c", -1.3)))] * k


def test_deepconf_confidence_measures() -> None:
    assert token_confidences(peaked(1)) == [pytest.approx(6.003333, abs=1e-5)]
    assert token_confidences([TokenLogprob("a", -0.5)]) == []
    assert group_confidences([1.0, 2.0, 3.0, 4.0], window=2) == [1.5, 2.5, 3.5]
    assert group_confidences([1.0, 2.0], window=8) == [1.5]
    trace = flat(4) + peaked(12)
    assert trace_confidence(trace, window=4, measure="lowest_group") == pytest.approx(3.5 / 3)
    assert trace_confidence(trace, window=4, measure="tail") == pytest.approx(6.003333, abs=1e-5)
    assert trace_confidence(trace, window=4, measure="mean") > trace_confidence(trace, window=4, measure="bottom10")  # type: ignore[operator]
    assert trace_confidence([], window=4, measure="mean") is None


def traced(traces: list[tuple[str, list[TokenLogprob]]]) -> list[Rollout]:
    """Samples of these texts, a token per log-probability."""
    return [Rollout(0, text, [1] * len(logprobs), logprobs, "stop") for text, logprobs in traces]


async def test_deepconf_offline_lets_only_the_most_confident_traces_vote(answers: AnswerGrouper) -> None:
    traces = [("It is 4.", flat()), ("It is 4.", flat()), ("It is 4.", flat()), ("It is 5.", peaked()), ("It is 5.", peaked())]
    plain = await majority(FakeContext(traced(traces), answers=answers), MajorityParams(n=5))
    assert plain.chosen is not None and plain.chosen.answer == "4"
    ctx = FakeContext(traced(traces), answers=answers)
    result = await majority(ctx, MajorityParams(n=5, early_stop=DeepConfStop(keep_top=0.4, window=8)))
    assert [c.logprobs for c in ctx.calls] == [20]  # top-20 log-probabilities for the confidences
    assert result.chosen is not None and result.chosen.answer == "5"
    stop = result.selection["early_stop"]
    assert sorted(stop["voters"]) == [3, 4] and stop["filtered_out"] == 3 and result.selection["weight"] == "confidence"
    assert result.selection["tally"][0]["weight"] == pytest.approx(2 * 6.003333, abs=1e-4)


async def test_deepconf_online_aborts_traces_that_fall_below_the_warmup_threshold(answers: AnswerGrouper) -> None:
    sure, unsure = ("It is 5.", peaked(16)), ("It is 4.", flat(16))
    ctx = FakeContext(traced([sure, sure, unsure, unsure, unsure, sure, unsure, sure]), answers=answers)
    rule = DeepConfStop(mode="online", warmup=4, window=8, keep_top=0.5)
    result = await majority(ctx, MajorityParams(n=8, early_stop=rule))
    assert [(c.stage, c.n, c.watch is not None) for c in ctx.calls] == [("warmup", 4, False), ("sample", 4, True)]
    stop = result.selection["early_stop"]
    assert stop["threshold"] == pytest.approx((6.003333 + 3.5 / 3) / 2, abs=1e-4)
    assert stop["stopped"] == [{"index": 4, "tokens": 8}, {"index": 6, "tokens": 8}]
    assert stop["saved_tokens"] == 16  # each stopped trace 8 tokens short of the 16 the whole ones took
    assert sorted(stop["voters"]) == [0, 1, 5, 7] and result.chosen is not None and result.chosen.answer == "5"
    assert [c.rollout.finish_reason for c in result.candidates].count("early_stop") == 2
    assert [e["index"] for e in ctx.events if e["type"] == "early_stop"] == [4, 6]


PROMPT = [1, 2, 3]
SUFFIX = encode(PROBE)


def probed(lengths: list[int], texts: list[str], replies: dict[tuple[int, int], str], answers: AnswerGrouper) -> FakeContext:
    """Rollouts stream a token at a time, yielding to the loop between tokens as the engine's output does, so probes
    launched by the watch run beside them. Token ids say which rollout and position they are (1000·(i+1) + k), and a
    probe's reply is scripted by the rollout and the position it was asked at."""

    async def reply(call: Call) -> list[Rollout]:
        if call.stage == "probe":
            assert call.prompt is not None
            prefix = call.prompt[len(PROMPT) : -len(SUFFIX)]
            rollout, at = prefix[0] // 1000 - 1, len(prefix)
            return [Rollout(0, replies.get((rollout, at), "7}"), [5, 5], [], "stop")]
        watch = call.watch
        assert watch is not None and call.n == len(lengths)

        async def stream(i: int) -> Rollout:
            ids: list[int] = []
            for k in range(lengths[i]):
                await asyncio.sleep(0.005)
                ids.append(1000 * (i + 1) + k)
                if reason := watch(i, Partial(texts[i], ids, [])):
                    return Rollout(i, texts[i][:10], list(ids), [], reason)
            return Rollout(i, texts[i], ids, [], "stop")

        return list(await asyncio.gather(*(stream(i) for i in range(call.n))))

    task = Task(text="What is 2+2?", verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=64)
    return FakeContext(replies=reply, task=task, prompt=PROMPT, answers=answers)


def probe_prompts(ctx: FakeContext) -> list[list[int]]:
    return [c.prompt for c in ctx.calls if c.stage == "probe" and c.prompt is not None]


async def test_probes_stop_a_rollout_once_consecutive_answers_agree_and_none_hedges(answers: AnswerGrouper) -> None:
    replies = {
        (0, 4): "4}",
        (0, 8): "4}",
        (0, 12): "4}",
        (1, 4): "4}",
        (1, 8): "4, hmm wait}",
        (1, 12): "4}",
        (1, 16): "4}",
        (1, 20): "4}",
        (2, 4): "5}",
        (2, 8): "6}",
        (2, 12): "5}",
        (2, 16): "6}",
        (2, 20): "5}",
        (2, 24): "6}",
        (2, 28): "5",
    }
    ctx = probed([80, 80, 30], ["It is 4.", "It is 4.", "It is 5."], replies, answers)
    result = await majority(ctx, MajorityParams(n=3, early_stop=ProbeStop(every=4, agree=3)))
    by_index = {c.index: c for c in result.candidates}
    assert by_index[0].rollout.finish_reason == by_index[1].rollout.finish_reason == ANSWERED
    assert 12 <= len(by_index[0].rollout.token_ids) < 80 and 20 <= len(by_index[1].rollout.token_ids) < 80
    assert by_index[0].rollout.text.endswith(PROBE + "4}") and by_index[0].answer == "4"
    assert by_index[2].rollout.finish_reason == "stop" and len(by_index[2].rollout.token_ids) == 30
    stop = result.selection["early_stop"]
    assert [s["index"] for s in stop["stopped"]] == [0, 1] and all(s["answer"] == "4" for s in stop["stopped"])
    report = {r["index"]: r for r in stop["rollouts"]}
    assert [p["hedged"] for p in report[1]["probes"][:2]] == [False, True]
    assert report[2]["probes"][-1] == {"at": 28, "answer": None, "hedged": True}  # an unclosed box is no answer
    assert stop["saved_tokens"] == sum(30 - len(by_index[i].rollout.token_ids) for i in (0, 1) if len(by_index[i].rollout.token_ids) < 30)
    assert result.chosen is not None and result.chosen.answer == "4" and result.selection["tally"][0]["votes"] == 2
    assert all(p[: len(PROMPT)] == PROMPT and p[-len(SUFFIX) :] == SUFFIX for p in probe_prompts(ctx))
    assert {e["index"] for e in ctx.events if e["type"] == "early_stop"} == {0, 1}


async def test_probes_that_never_agree_let_every_rollout_run_to_its_end(answers: AnswerGrouper) -> None:
    replies = {(i, at): f"{at}}}" for i in range(2) for at in range(4, 40, 4)}
    ctx = probed([40, 40], ["It is 4.", "It is 4."], replies, answers)
    result = await best_of_n(ctx, BestOfNParams(n=2, early_stop=ProbeStop(every=4, agree=2)))
    assert [c.rollout.finish_reason for c in result.candidates] == ["stop", "stop"]
    assert result.selection["early_stop"]["stopped"] == [] and result.selection["early_stop"]["saved_tokens"] == 0
    assert len(probe_prompts(ctx)) == 2 * 10


def composing(answers_by_run: list[str | None], answers: AnswerGrouper) -> FakeContext:
    """`run` answers each composed run with the next scripted answer, as a strategy's chosen candidate."""
    script = list(answers_by_run)

    def run(params: Any) -> StrategyResult:
        answer = script.pop(0)
        if answer is None:
            return StrategyResult([], None, {"method": params.name})
        inner = Candidate(Rollout(3, f"The answer is {answer}.", [1, 2], [], "stop"), answer=answer)
        return StrategyResult([inner], inner, {"method": params.name, "inner": True})

    return FakeContext(runs=run, answers=answers)


async def test_a_composed_majority_votes_over_whole_runs_of_the_inner_strategy(answers: AnswerGrouper) -> None:
    inner = ATTSParams(samples=2, turns=2)
    ctx = composing(["4", "5", "4.0", None, "4"], answers)
    result = await majority(ctx, MajorityParams(n=5, rollout=inner))
    assert ctx.ran == [inner] * 5
    assert result.chosen is not None and result.chosen.answer in ("4", "4.0") and result.selection["tally"][0]["votes"] == 3
    assert [c.index for c in result.candidates] == [0, 1, 2, 3, 4]
    # a run that chose nothing, with budget left, has nothing to vote for; it was not cut short
    assert result.candidates[3].rollout.finish_reason == NO_ANSWER and result.candidates[3].answer is None
    composed = result.selection["composed"]
    assert [c["index"] for c in composed] == [0, 1, 2, 3, 4] and composed[0]["selection"] == {"method": "atts", "inner": True}
    assert composed[3]["chosen"] is None


async def test_adaptive_stopping_composes_with_strategy_rollouts(answers: AnswerGrouper) -> None:
    ctx = composing(["4"] * 12, answers)
    rule = AdaptiveStop(batch=2, max_n=12, confidence=0.8)
    result = await majority(ctx, MajorityParams(rollout=MajorityParams(n=2), early_stop=rule))
    assert len(ctx.ran) == 2 and result.selection["early_stop"]["stopped"] == "confident"


@pytest.mark.parametrize(
    "params",
    [
        {"name": "majority", "rollout": {"name": "none"}},
        {"name": "majority", "rollout": {"name": "atts"}, "early_stop": {"name": "deepconf"}},
        {"name": "majority", "rollout": {"name": "atts"}, "early_stop": {"name": "probe"}},
        {"name": "majority", "rollout": {"name": "atts"}, "weight": "logprob"},
        {"name": "best_of_n", "rollout": {"name": "majority"}, "select": "logprob"},
        {"name": "majority", "rollout": {"name": "majority", "rollout": {"name": "none"}}},
    ],
)
def test_compositions_that_make_no_sense_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        STRATEGY_PARAMS.validate_python(params)
