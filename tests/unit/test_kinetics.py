"""The `kinetics` strategy against a scripted context: the plan fits the budget in every unit, the request is
narrowed to it, the inner strategy runs the planned samples, and what cannot be planned is the caller's error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from compute.accuracy import Observation
from compute.cost_model import H100, HardwareProfile, ModelShape, realised_cost, request_cost
from strategies.base import Candidate, Planning, Rollout, StrategyInputError, StrategyResult
from strategies.best_of_n import BestOfNParams
from strategies.kinetics import ComputeBudget, KineticsParams, kinetics
from strategies.majority import MajorityParams
from tests.unit.fakes import FakeContext

SMOL = ModelShape(layers=30, heads=9, kv_heads=3, head_dim=64, params=134_515_008, max_context=8192)
LOCAL = HardwareProfile(name="local", flops=2e11, bandwidth=2e10, source="measured")


def planned(
    length: int = 40, sparse: dict[int, str] | None = None, observations: list[Observation] | None = None, hardware: HardwareProfile = LOCAL
) -> FakeContext:
    """Plans from these facts, and runs the inner strategy as samples of `length` tokens each (within the plan)."""

    def run(params: Any) -> StrategyResult:
        assert ctx.restricted is not None
        tokens = min(length, ctx.restricted["max_tokens"])
        candidates = [Candidate(Rollout(i, "4", [1] * tokens, [], "stop"), answer="4") for i in range(params.n)]
        return StrategyResult(candidates, candidates[0], {"method": params.name})

    ctx = FakeContext(runs=run, planning=Planning(SMOL, hardware, 50, 4096, observations or [], [], sparse or {}, 32 if sparse else None))
    return ctx


@settings(max_examples=40, deadline=None)
@given(budget=st.floats(5e10, 5e13), length=st.integers(1, 4000))
async def test_the_plan_and_what_it_realises_stay_within_the_budget(budget: float, length: int) -> None:
    ctx = planned(length)
    result = await kinetics(ctx, KineticsParams(budget=ComputeBudget(eflops=budget)))
    plan = result.selection["plan"]
    assert plan["worst_eflops"] <= budget and result.selection["within_budget"]
    assert ctx.restricted == {"max_tokens": plan["max_tokens"], "total_tokens": plan["n"] * plan["max_tokens"], "model": None}
    assert ctx.ran == [MajorityParams(n=plan["n"])] and len(result.candidates) == plan["n"]
    lengths = [min(length, plan["max_tokens"])] * plan["n"]
    assert result.selection["realised_eflops"] == pytest.approx(realised_cost(SMOL, LOCAL, 50, lengths).total)
    assert plan["attention"] == "dense" and result.selection["considered"][0]["feasible"]


async def test_budgets_in_tokens_seconds_and_dollars_are_converted_through_the_profile() -> None:
    by_tokens = await kinetics(planned(), KineticsParams(budget=ComputeBudget(tokens=256)))
    assert by_tokens.selection["budget"] == {"tokens": 256, "eflops": request_cost(SMOL, LOCAL, 1, 50, 256).total}
    by_seconds = await kinetics(planned(), KineticsParams(budget=ComputeBudget(seconds=2.0)))
    assert by_seconds.selection["budget"]["eflops"] == pytest.approx(2.0 * LOCAL.flops)
    priced = H100.model_copy(update={"price_per_hour": 3.6})
    by_dollars = await kinetics(planned(hardware=priced), KineticsParams(budget=ComputeBudget(dollars=0.001)))
    assert by_dollars.selection["budget"]["eflops"] == pytest.approx(H100.flops)  # a thousandth of a dollar is one second
    with pytest.raises(StrategyInputError) as unpriced:
        await kinetics(planned(), KineticsParams(budget=ComputeBudget(dollars=1.0)))
    assert unpriced.value.param == "strategy.budget.dollars"


async def test_a_budget_that_buys_no_token_is_refused_and_nothing_runs() -> None:
    ctx = planned()
    with pytest.raises(StrategyInputError) as refused:
        await kinetics(ctx, KineticsParams(budget=ComputeBudget(eflops=1.0)))
    assert refused.value.param == "strategy.budget" and ctx.ran == [] and ctx.restricted is None


async def test_a_sparse_replica_can_be_planned_and_the_request_is_routed_to_it() -> None:
    """At this budget the prior's best affordable configuration needs a 2048-token cap, which only block top-k within
    256 tokens of KV pays for."""
    ctx = planned(length=2048, sparse={256: "smollm2-sparse256"})
    result = await kinetics(ctx, KineticsParams(budget=ComputeBudget(eflops=3.2e13)))
    plan = result.selection["plan"]
    assert plan["kv_budget"] == 256 and plan["attention"] == "block_topk" and plan["block_size"] == 32
    assert ctx.restricted is not None and ctx.restricted["model"] == "smollm2-sparse256" and result.selection["within_budget"]
    dense = await kinetics(planned(length=2048, sparse={256: "smollm2-sparse256"}), KineticsParams(budget=ComputeBudget(eflops=3.2e13), sparse=False))
    assert dense.selection["plan"]["kv_budget"] is None and dense.selection["plan"]["worst_eflops"] <= 3.2e13


async def test_best_of_n_runs_the_plan_with_its_selector() -> None:
    ctx = planned()
    await kinetics(ctx, KineticsParams(budget=ComputeBudget(eflops=1e12), inner="best_of_n", select="self_certainty"))
    assert isinstance(ctx.ran[0], BestOfNParams) and ctx.ran[0].select == "self_certainty"


def test_a_budget_names_exactly_one_unit() -> None:
    with pytest.raises(ValidationError):
        ComputeBudget()
    with pytest.raises(ValidationError):
        ComputeBudget(eflops=1e12, tokens=100)
