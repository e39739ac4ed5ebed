"""RTV and PDR against a scripted model: rollouts, agent loops (real sandbox), summaries, the judge's prompts,
refinement contexts and the shared cache."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from strategies.base import Rollout, StrategyInputError, Task, VerifierSpec
from strategies.pdr import PDRParams, pdr
from strategies.registry import check_input
from strategies.rtv import RTVParams, rtv
from strategies.summaries import SECTIONS, parse_sections
from tests.unit.fakes import TASK, Call, DictCache, FakeContext, Replies
from verifiers.sandbox import Sandbox, SandboxLimits


def judging(answers: list[str]) -> Replies:
    """Rollouts answer `answers[i]`; summaries restate the attempt; the judge picks the shown candidate whose final
    answer is 4 (a perfect judge), else abstains."""

    async def reply(call: Call) -> list[Rollout]:
        n, messages = call.n, call.messages
        if messages is None:
            texts = [f"The answer is {a}." for a in answers[:n]]
        elif call.stage == "summary":
            texts = ["Hypotheses: add the numbers\nProgress: done\nFinal state: answered"] * n
        else:
            shown = re.findall(r"^\[(\d+)\]\n(?:.*\n)*?Final answer: (.*)$", messages[0]["content"], re.MULTILINE)
            best = next((k for k, answer in shown if answer.strip() == "4"), None)
            texts = [f"[{best}]" if best else "I cannot tell."] * n
        return [Rollout(i, t, [1] * 5, [], "stop", 20) for i, t in enumerate(texts)]

    return reply


def scripted(answers: list[str], cache: DictCache | None = None) -> FakeContext:
    return FakeContext(replies=judging(answers), model="scripted", cache=cache)


def stages(ctx: FakeContext) -> list[str]:
    return [c.stage for c in ctx.calls]


async def test_a_perfect_judge_finds_the_one_right_rollout() -> None:
    model = scripted(["5", "3", "4", "7", "6", "1", "2", "8"])
    result = await rtv(model, RTVParams(n=8, votes=3))
    assert result.chosen is not None and result.chosen.index == 2
    selection = result.selection
    assert selection["judge_calls"] == selection["judge_calls_expected"] == 3 * 7
    assert selection["cost"]["summary_calls"] == 8 and len(selection["rounds"]) == 3
    assert [e["round"] for e in model.events if e["type"] == "round"] == [1, 2, 3]
    # rollout (20 + 5) + summary (20 + 5) + three rounds of one judge call (20 + 5)
    assert selection["cost"]["sequential_tokens"] == 25 * 5
    assert stages(model).count("summary") == 8


async def test_a_second_request_reuses_summaries_and_votes() -> None:
    cache = DictCache()
    first = scripted(["5", "4", "3", "9"], cache)
    await rtv(first, RTVParams(n=4, votes=2, seed=1))
    second = scripted(["5", "4", "3", "9"], cache)
    result = await rtv(second, RTVParams(n=4, votes=2, seed=1))
    assert result.chosen is not None and result.chosen.index == 1
    assert stages(second) == ["sample"]  # nothing but the rollouts was computed again
    assert cache.use["summary"].hits == 4 and cache.use["votes"].hits == 3 * 2  # 3 matches, each shown in 2 orders
    assert cache.use["summary"].saved_tokens == 4 * 25 and cache.use["votes"].saved_tokens == 3 * 2 * 25
    assert result.selection["cost"]["summary_calls"] == 0


async def test_keep_returns_the_top_k_and_raw_rollouts_can_be_judged() -> None:
    model = scripted(["1", "2", "3", "4", "5", "6", "7", "8"])
    result = await rtv(model, RTVParams(n=8, votes=1, keep=4, judge_input="rollout"))
    assert len(result.selection["survivors"]) == 4
    assert "summary" not in stages(model)


def test_parameters_are_validated() -> None:
    assert RTVParams().model_dump()["n"] == 16 and RTVParams().group_size == 2 and RTVParams().votes == 8
    with pytest.raises(ValidationError):
        RTVParams(n=4, keep=5)
    with pytest.raises(ValidationError):
        RTVParams(group_size=1)


@given(st.text(max_size=500))
def test_any_model_output_parses_into_the_sections(text: str) -> None:
    sections = parse_sections(text)
    assert set(sections) == set(SECTIONS) and all(len(v) <= 400 for v in sections.values())


def test_sections_are_parsed_leniently() -> None:
    text = "**Hypotheses:** try adding\nmore on that\n- Progress - got 4\nFailure modes: none\nrandom trailing"
    sections = parse_sections(text)
    assert sections["hypotheses"] == "try adding more on that"
    assert sections["progress"] == "got 4"
    assert sections["failure_modes"] == "none random trailing"
    assert sections["open_issues"] == ""


def refining(n: int, right: int | None) -> Replies:
    """Iteration 0 answers wrongly but for rollout `right`; a rollout whose context shows a summary ending in 4
    answers 4; a distill call writes a workspace that says so."""
    judge = judging([("4" if i == right else str(10 + i)) for i in range(n)])

    async def reply(call: Call) -> list[Rollout]:
        if call.messages is not None and call.stage.startswith("round"):
            knows = "Final answer: 4" in call.messages[0]["content"] or "workspace: 4" in call.messages[0]["content"]
            return [Rollout(i, f"The answer is {4 if knows else 99}.", [1] * 5, [], "stop", 40) for i in range(call.n)]
        if call.stage == "distill":
            found = "Final answer: 4" in call.messages[0]["content"] if call.messages else False
            return [Rollout(0, "workspace: 4" if found else "workspace: unsure", [1] * 7, [], "stop", 60)]
        return await judge(call)

    return reply


async def test_select_k_carries_the_right_summary_into_the_next_iteration() -> None:
    model = FakeContext(replies=refining(8, right=5))
    result = await pdr(model, PDRParams(n=8, k=2, votes=3))
    assert result.chosen is not None and result.chosen.index >= 8  # an iteration-1 rollout
    assert result.chosen.rollout.text == "The answer is 4."
    refine = [c for c in model.calls if c.stage == "round1"]
    assert len(refine) == 1 and refine[0].n == 8  # one shared context: one engine request
    selection = result.selection
    assert selection["iterations"][0]["select_k"]["judge_calls"] == 3 * (8 - 2)
    assert selection["final"]["judge_calls"] == 3 * (8 - 1)
    assert len(result.candidates) == 16


async def test_random_k_draws_a_seeded_context_per_rollout() -> None:
    runs = []
    for _ in range(2):
        model = FakeContext(replies=refining(6, right=0))
        result = await pdr(model, PDRParams(n=6, k=2, votes=1, distill="random_k", seed=7))
        runs.append(result.selection["iterations"][0]["contexts"])
        assert all(len(c) == 2 for c in runs[-1])
        assert sum(c.n for c in model.calls if c.stage == "round1") == 6
    assert runs[0] == runs[1]


async def test_original_pdr_distills_a_bounded_workspace_and_ends_on_one_draft() -> None:
    model = FakeContext(replies=refining(4, right=2))
    result = await pdr(model, PDRParams(schedule=[4, 2, 1], distill="global_summary", workspace_tokens=64, votes=1))
    assert [it["rollouts"] for it in result.selection["iterations"]] == [[0, 1, 2, 3], [4, 5], [6]]
    distills = [c for c in model.calls if c.stage == "distill"]
    assert len(distills) == 2 and all(c.max_tokens == 64 for c in distills)
    assert "final" not in result.selection  # the last round has a single draft: nothing to judge
    assert result.chosen is not None and result.chosen.index == 6 and result.chosen.rollout.text == "The answer is 4."
    summarized = [c for c in model.calls if c.stage == "summary"]
    # round 1's two drafts repeat round 0's right one word for word: their summaries come from the cache
    assert len(summarized) == 4 and model.cache.use["summary"].hits == 2  # and the single last draft is not summarized


def test_pdr_parameters() -> None:
    assert PDRParams().n == 16 and PDRParams().k == 4 and PDRParams().distill == "select_k" and PDRParams().sizes == [16, 16]
    for bad in ({"schedule": [4, 2]}, {"schedule": [4, 0, 1]}, {"n": 2, "k": 3}):
        with pytest.raises(ValidationError):
            PDRParams(**bad)


STUB = '''def add(a: int, b: int) -> int:
    """Return the sum of a and b.
    >>> add(2, 3)
    5
    """
'''


async def agent(call: Call) -> list[Rollout]:
    """Writes a wrong function first and fixes it once the tests' feedback is in its conversation."""
    if call.stage == "sample":
        fixed = call.messages is not None and "passed" in call.messages[-1]["content"]
        body = "a + b" if fixed else "a - b"
        return [Rollout(i, f"```python\ndef add(a, b):\n    return {body}\n```", [1] * 9, [], "stop", 30) for i in range(call.n)]
    return await judging([])(call)


async def test_agent_rollouts_revise_on_the_visible_tests() -> None:
    task = Task(text=f"Complete this function.\n```python\n{STUB}```", verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=None)
    model = FakeContext(replies=agent, task=task, sandbox=Sandbox(SandboxLimits(wall_s=3, cpu_s=2)))
    result = await rtv(model, RTVParams(n=2, votes=1, rollout="agent", steps=3, judge_input="rollout"))
    assert result.chosen is not None and "a + b" in result.chosen.rollout.text
    for c in result.candidates:
        assert c.tests is not None and c.tests.passed == c.tests.total == 1
        assert c.scores["steps"] == 2
    steps = [e for e in model.events if e["type"] == "step"]
    assert [(e["step"], e["passed"]) for e in steps if e["index"] == 0] == [(1, 0), (2, 1)]


def test_agent_rollouts_need_tests() -> None:
    with pytest.raises(StrategyInputError):
        check_input(TASK, RTVParams(rollout="agent"))


async def test_a_refinement_cut_by_the_budget_falls_back_to_the_last_iteration_that_ran() -> None:
    """Iteration 1's rollouts came back empty (the deadline passed): the pick is among iteration 0's, not a crash."""

    def spent_after_round0() -> Replies:
        refine = refining(4, right=1)

        async def reply(call: Call) -> list[Rollout]:
            return [] if call.stage == "round1" else await refine(call)

        return reply

    for distill in ("none", "random_k", "select_k"):
        result = await pdr(FakeContext(replies=spent_after_round0()), PDRParams(n=4, k=2, votes=1, distill=distill))
        assert result.chosen is not None and result.chosen.index < 4
        assert len(result.candidates) == 4 and len(result.selection["iterations"]) == 1
