"""`GET /v1/cost-model`: the plan a budget buys for a served model, explained: the model's shape and the hardware
profile the cost model prices with, the budget in eFLOPs, every configuration weighed with its predicted cost and
accuracy, the choice, and why, with the evidence the accuracies came from (which benchmark runs, shipped, imported or
in the results directory, and how many ledger records). The same planning a `kinetics` request runs, without running
anything."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from service.api.errors import APIError
from service.api.protocol import StrictModel
from service.api.serving import parse, query_fields
from service.execution.context import planning_with
from service.execution.models import ServedModel
from service.execution.pricing import Pricing
from service.planning.accuracy import AccuracyBook, Evidence
from strategies.base import StrategyInputError
from strategies.kinetics import ComputeBudget, best_considered, considered_report, plan_for, plan_report

router = APIRouter()


class CostModelQuery(StrictModel):
    model: str = Field(max_length=256)
    budget: float = Field(gt=0, allow_inf_nan=False)
    unit: Literal["eflops", "tokens", "seconds", "dollars"] = "eflops"
    prompt_tokens: int = Field(64, ge=1, le=10_000_000, description="the prompt's length (L_in)")
    max_tokens: int | None = Field(None, ge=1, le=10_000_000, description="what a sample may generate at most")
    family: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sparse: bool = True


@router.get("/v1/cost-model")
async def cost_model(request: Request) -> dict[str, Any]:
    query: CostModelQuery = parse(CostModelQuery, query_fields(request.query_params.multi_items()))
    models: dict[str, ServedModel] = request.app.state.models
    served = models.get(query.model)
    if served is None:
        raise APIError(404, f"The model {query.model!r} is not served here; served models: {', '.join(models)}", param="model", code="model_not_found")
    room = served.shape.max_context - query.prompt_tokens
    if room < 1:
        raise APIError(
            400,
            f"A {query.prompt_tokens}-token prompt leaves no room in the {served.shape.max_context}-token context",
            param="prompt_tokens",
            code="context_length_exceeded",
        )
    pricing: Pricing = request.app.state.pricing
    accuracy: AccuracyBook | None = request.app.state.accuracy
    known = await accuracy.evidence(served.spec.name, query.family) if accuracy is not None else Evidence([], [])
    planning = planning_with(known, served, models, pricing.hardware, query.prompt_tokens, min(query.max_tokens or room, room))
    budget = parse(ComputeBudget, {query.unit: int(query.budget) if query.unit == "tokens" else query.budget})
    try:
        plan, considered, eflops = plan_for(planning, budget, query.sparse)
    except StrategyInputError as exc:
        raise APIError(400, str(exc), param="budget", code="budget_too_small") from exc
    return {
        "object": "ponder.cost_model",
        "model": served.spec.name,
        "shape": asdict(served.shape),
        "hardware": pricing.hardware.model_dump(),
        "terms": asdict(pricing.terms),
        "budget": {"unit": query.unit, "value": query.budget, "eflops": eflops, "seconds": pricing.hardware.seconds(eflops)},
        "prompt_tokens": query.prompt_tokens,
        "sparse_replicas": planning.sparse,
        "evidence": {"observations": len(planning.observations), "lengths": len(planning.lengths), "family": query.family, **known.sources()},
        "plan": plan_report(plan),
        "considered": [considered_report(c) for c in best_considered(considered, len(considered))],
    }
