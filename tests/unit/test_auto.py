"""`auto` against a scripted context: the probes' agreement sets the difficulty bin, the bin (and what graded
`auto` requests taught) picks the strategy, and the budget left after the probes is planned by Kinetics."""

from __future__ import annotations

from typing import Any

import pytest

from compute.cost_model import HardwareProfile, ModelShape
from strategies.auto import AutoParams, auto, difficulty_bin, learnt_cuts
from strategies.base import Candidate, Planning, Rollout, StrategyInputError, StrategyResult, Task, VerifierSpec
from strategies.best_of_n import BestOfNParams
from strategies.kinetics import ComputeBudget
from strategies.majority import MajorityParams
from tests.unit.fakes import FakeContext
from verifiers.answers import AnswerGrouper

SMOL = ModelShape(layers=30, heads=9, kv_heads=3, head_dim=64, params=134_515_008, max_context=8192)
LOCAL = HardwareProfile(name="local", flops=2e11, bandwidth=2e10, source="measured")
CODE = 'def add(a, b):\n    """Sum.\n    >>> add(2, 3)\n    5\n    """\n'


def probed(
    answers: AnswerGrouper,
    probes: list[str],
    text: str = "What is 2+2?",
    choices: list[tuple[int, str, bool]] | None = None,
    agreements: list[float] | None = None,
) -> FakeContext:
    """Probes of ten tokens each; what `auto` runs next answers 4."""

    def run(params: Any) -> StrategyResult:
        c = Candidate(Rollout(0, "4", [1], [], "stop"), answer="4")
        return StrategyResult([c], c, {"method": params.name})

    return FakeContext(
        [Rollout(0, t, [1] * 10, [], "stop") for t in probes],
        runs=run,
        task=Task(text=text, verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=64),
        answers=answers,
        planning=Planning(SMOL, LOCAL, 40, 64, [], [], {}, None, agreements or [], choices or []),
    )


def generated(ctx: FakeContext) -> list[tuple[int, str]]:
    return [(c.n, c.stage) for c in ctx.calls]


BUDGET = ComputeBudget(eflops=5e12)


async def test_probes_that_agree_make_an_easy_prompt_answered_by_their_vote(answers: AnswerGrouper) -> None:
    ctx = probed(answers, ["It is 4."] * 4)
    result = await auto(ctx, AutoParams(budget=BUDGET))
    assert generated(ctx) == [(4, "probe")] and ctx.ran == [] and ctx.restricted is None
    assert result.selection["difficulty"]["bin"] == 1 and result.selection["choice"] == "probe_vote"
    assert result.chosen is not None and result.chosen.answer == "4" and result.selection["plan"]["agreement"] == 1.0


async def test_a_split_vote_buys_more_votes_within_what_the_probes_left(answers: AnswerGrouper) -> None:
    ctx = probed(answers, ["It is 4.", "It is 4.", "It is 5.", "It is 6."])
    result = await auto(ctx, AutoParams(budget=BUDGET))
    assert result.selection["difficulty"] == {"agreement": 0.5, "bin": 2, "cuts": [0.75, 0.5], "cuts_from": "default", "probes": 4}
    assert result.selection["choice"] == "majority" and isinstance(ctx.ran[0], MajorityParams)
    plan = result.selection["plan"]
    assert ctx.ran[0].n == plan["n"] and ctx.restricted == {"max_tokens": plan["max_tokens"], "total_tokens": plan["n"] * plan["max_tokens"], "model": None}
    assert plan["worst_eflops"] <= 5e12 - result.selection["budget"]["probe_eflops"]


async def test_a_hard_code_prompt_is_given_its_visible_tests_as_verifier(answers: AnswerGrouper) -> None:
    ctx = probed(answers, ["1", "2", "3", "4"], text=CODE)
    result = await auto(ctx, AutoParams(budget=BUDGET))
    assert result.selection["difficulty"]["bin"] == 3 and result.selection["choice"] == "best_of_n"
    assert isinstance(ctx.ran[0], BestOfNParams) and ctx.ran[0].select == "code_tests"
    assert {c["choice"] for c in result.selection["considered"]} == {"probe_vote", "majority", "best_of_n"}


async def test_graded_requests_overrule_the_prior(answers: AnswerGrouper) -> None:
    taught = [(1, "probe_vote", False)] * 10 + [(1, "majority", True)] * 10
    ctx = probed(answers, ["It is 4."] * 4, choices=taught)
    result = await auto(ctx, AutoParams(budget=BUDGET))
    assert result.selection["choice"] == "majority"
    assert next(c for c in result.selection["considered"] if c["choice"] == "majority")["graded"] == 10


def test_cut_points_are_learnt_once_enough_agreements_are_logged() -> None:
    assert learnt_cuts([0.5] * 5) == ((0.75, 0.5), "default")
    (easy, medium), source = learnt_cuts([i / 40 for i in range(40)])
    assert medium < easy and "40" in source
    assert difficulty_bin(0.9, (0.75, 0.5)) == 1 and difficulty_bin(0.5, (0.75, 0.5)) == 2 and difficulty_bin(0.25, (0.75, 0.5)) == 3


async def test_a_budget_that_does_not_pay_for_the_probes_is_refused(answers: AnswerGrouper) -> None:
    ctx = probed(answers, ["4"] * 4)
    with pytest.raises(StrategyInputError):
        await auto(ctx, AutoParams(budget=ComputeBudget(eflops=1e9)))
    assert generated(ctx) == []
