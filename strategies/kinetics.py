"""Kinetics budgeting (Sadhukhan et al. 2025, arXiv 2506.05333; cost model and allocation in
docs/strategies/kinetics-auto.md): a compute budget buys the samples, the length and the KV budget that the cost model
says it pays for and that are expected to answer best.

    C     <- the budget in eFLOPs                       (tokens, seconds or dollars converted below)
    plan  <- argmax_{(N, cap, B) on the paper's grids, cost(N, every sample at cap, B) <= C} predicted accuracy
             predicted accuracy: the (model, family) table learnt from benchmarks and feedback, else the paper's
             rules of thumb                                                  (compute/allocator.py)
    run the inner strategy with N samples of at most `cap` tokens, on a replica decoding within KV budget B
    report the plan, the configurations weighed, and the eFLOPs predicted, worst-case and realised

Conversions: `tokens` T buys what T tokens of one plain sample cost (the allocator may spend them as N shorter
samples sharing the prompt); `seconds` and `dollars` go through the gateway's hardware profile (this host as
`ponder profile-hardware` measured it, or a named one). The plan is enforced, not hoped for: the request's
context is narrowed to `cap` tokens a sample and N x cap in all, and cost grows with every length, so the realised
cost never passes the worst case the plan was checked against. A KV budget is planned only where a served
replica of the model runs the sparse decode plugin with it; otherwise the plan is dense and says so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compute.accuracy import AccuracyTable
from compute.allocator import CPU_BLOCK_SIZE, BudgetTooSmall, Considered, Plan, allocate
from compute.cost_model import realised_cost, request_cost
from strategies.base import Context, Planning, StrategyInputError, StrategyResult, Task
from strategies.best_of_n import BestOfNParams, Select
from strategies.best_of_n import check as check_best_of_n
from strategies.majority import MajorityParams

SHOWN = 12  # configurations listed in the report beside the plan (the cost-model endpoint lists them all)


class ComputeBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eflops: float | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0, le=10_000_000)
    seconds: float | None = Field(None, gt=0)
    dollars: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> ComputeBudget:
        given = [k for k, v in self.model_dump().items() if v is not None]
        if len(given) != 1:
            raise ValueError("give the budget in exactly one unit: eflops, tokens, seconds or dollars")
        return self

    def in_eflops(self, planning: Planning) -> float:
        if self.eflops is not None:
            return self.eflops
        if self.tokens is not None:
            return request_cost(planning.shape, planning.hardware, 1, planning.prompt_tokens, self.tokens).total
        if self.seconds is not None:
            return planning.hardware.eflops_in(self.seconds)
        assert self.dollars is not None
        if planning.hardware.price_per_hour is None:
            raise StrategyInputError(
                f"a budget in dollars needs the price of the {planning.hardware.name} profile: set PONDER_HARDWARE_PRICE_PER_HOUR", "strategy.budget.dollars"
            )
        return planning.hardware.eflops_for(self.dollars)


class KineticsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["kinetics"] = "kinetics"
    budget: ComputeBudget
    inner: Literal["majority", "best_of_n"] = Field("majority", description="what runs the planned samples")
    select: Select = Field("logprob", description="best_of_n's selector")
    temperature: float | None = Field(None, gt=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    family: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="task family whose accuracy table plans it")
    sparse: bool = Field(True, description="may plan a KV budget where a sparse replica serves the model")


def check(task: Task, params: KineticsParams) -> None:
    if params.inner == "best_of_n":
        check_best_of_n(task, BestOfNParams(select=params.select))


def plan_for(planning: Planning, budget: ComputeBudget, sparse: bool = True) -> tuple[Plan, list[Considered], float]:
    """The plan a budget buys, every configuration weighed, and the budget in eFLOPs (also `GET /v1/cost-model`)."""
    eflops = budget.in_eflops(planning)
    replicas = planning.sparse if sparse else {}
    try:
        plan, considered = allocate(
            eflops,
            planning.shape,
            planning.hardware,
            planning.prompt_tokens,
            AccuracyTable(planning.observations),
            bool(replicas),
            block_size=planning.block_size or CPU_BLOCK_SIZE,
            lengths=planning.lengths,
            kv_budgets=sorted(replicas),
            max_tokens=planning.max_tokens,
        )
    except BudgetTooSmall as exc:
        raise StrategyInputError(f"budget: {exc}", "strategy.budget") from exc
    return plan, considered, eflops


async def kinetics(ctx: Context, params: KineticsParams) -> StrategyResult:
    planning = await ctx.planner.planning(params.family)
    plan, considered, budget = plan_for(planning, params.budget, params.sparse)
    sparse = planning.sparse if params.sparse else {}
    ctx.planner.restrict(max_tokens=plan.max_tokens, total_tokens=plan.n * plan.max_tokens, model=sparse.get(plan.kv_budget) if plan.kv_budget else None)
    ctx.emit({"type": "plan", "n": plan.n, "max_tokens": plan.max_tokens, "kv_budget": plan.kv_budget, "predicted_eflops": plan.predicted_eflops})
    knobs: dict[str, Any] = {"n": plan.n, "temperature": params.temperature, "top_p": params.top_p}
    inner = MajorityParams(**knobs) if params.inner == "majority" else BestOfNParams(**knobs, select=params.select)
    result = await ctx.run(inner)
    lengths = [len(c.rollout.token_ids) for c in result.candidates] or [0]
    realised = realised_cost(planning.shape, planning.hardware, planning.prompt_tokens, lengths, plan.kv_budget, plan.block_size)
    selection = {
        "method": "kinetics",
        "budget": {**params.budget.model_dump(exclude_none=True), "eflops": budget},
        "plan": plan_report(plan),
        "realised_eflops": realised.total,
        "within_budget": realised.total <= budget,
        "evidence": {"observations": len(planning.observations), "lengths": len(planning.lengths), "family": params.family},
        "considered": [considered_report(c) for c in best_considered(considered)],
        "inner": {"name": params.inner, **result.selection},
    }
    return StrategyResult(result.candidates, result.chosen, selection)


def best_considered(considered: list[Considered], shown: int = SHOWN) -> list[Considered]:
    """The most accurate affordable configurations first, then the nearest unaffordable ones."""
    return sorted(considered, key=lambda c: (not c.feasible, -c.accuracy, c.candidate.worst_eflops))[:shown]


def considered_report(c: Considered) -> dict[str, Any]:
    k = c.candidate
    return {
        "n": k.n,
        "max_tokens": k.max_tokens,
        "kv_budget": k.kv_budget,
        "predicted_accuracy": round(c.accuracy, 4),
        "predicted_eflops": k.predicted_eflops,
        "worst_eflops": k.worst_eflops,
        "feasible": c.feasible,
    }


def plan_report(plan: Plan) -> dict[str, Any]:
    return {
        "n": plan.n,
        "max_tokens": plan.max_tokens,
        "kv_budget": plan.kv_budget,
        "block_size": plan.block_size,
        "attention": "dense" if plan.kv_budget is None else "block_topk",
        "predicted_accuracy": round(plan.predicted_accuracy, 4),
        "predicted_eflops": plan.predicted_eflops,
        "worst_eflops": plan.worst_eflops,
        "reason": plan.reason,
    }
