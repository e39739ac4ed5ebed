"""Compute-optimal strategy selection (Snell et al. 2024, arXiv 2408.03314 §3; docs/strategies/kinetics-auto.md):
how hard a prompt is for this model decides which strategy its budget should buy.

    probe      k samples of the prompt (the label-free difficulty estimate the paper suggests as cheap)
    a          <- share of the probes in the largest answer group      (agreement: high = easy for this model)
    bin        <- 1 (easy) .. 3 (hard) by cut points on a: tertiles of the agreements logged for this (model,
                  family) once there are enough, else 0.75 and 0.5
    choice     <- argmax over θ in {probe vote, majority, best-of-N} of the accuracy learnt for (bin, θ) from
                  graded `auto` requests (Beta posterior), the prior below where a cell has no evidence
    run θ within what the budget has left after the probe, planned by Kinetics (strategies/kinetics.py)

The paper's table is learnt offline over 2048 samples per question and 5 bins, and its estimate is not charged;
a service has neither the samples nor a free estimate, so: k probes (default 4), 3 bins, and the probe is paid
for out of the request's budget (its tokens are the `probe` stage). The prior is the paper's qualitative finding,
with what this project's benchmarks show of the packaged model: easy prompts gain nothing from more search (the
probes' vote is returned as it is), medium ones from more votes, hard ones from a verifier where there is one
(best-of-N by the visible tests on code), else from the most votes the budget buys.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from compute.cost_model import realised_cost
from strategies.ballots import Ballots
from strategies.base import Candidate, Context, StrategyInputError, StrategyResult, Task
from strategies.best_of_n import BestOfNParams, tests_for
from strategies.kinetics import ComputeBudget, plan_for, plan_report
from strategies.majority import DEFAULT_TEMPERATURE, MajorityParams
from strategies.voting import representative

Choice = Literal["probe_vote", "majority", "best_of_n"]
CHOICES: tuple[Choice, ...] = ("probe_vote", "majority", "best_of_n")
DEFAULT_CUTS = (0.75, 0.5)
LEARNT_CUTS_AFTER = 30  # logged agreements before the tertiles replace the default cut points
PRIOR_STRENGTH = 2.0


class AutoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["auto"] = "auto"
    budget: ComputeBudget
    probes: int = Field(4, ge=2, le=16, description="samples that estimate the prompt's difficulty (k)")
    probe_tokens: int | None = Field(None, ge=1, le=8192, description="tokens a probe may write (default: the request's max_tokens)")
    temperature: float | None = Field(None, gt=0.0, le=2.0)
    family: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="task family whose table decides")


def has_tests(task: Task) -> bool:
    try:
        tests_for(task)
    except StrategyInputError:
        return False
    return True


def difficulty_bin(agreement: float, cuts: tuple[float, float]) -> int:
    easy, medium = cuts
    return 1 if agreement >= easy else 2 if agreement >= medium else 3


def learnt_cuts(agreements: list[float]) -> tuple[tuple[float, float], str]:
    """Tertiles of the logged agreements (the paper's quantile bins, three of them), once there are enough."""
    if len(agreements) < LEARNT_CUTS_AFTER:
        return DEFAULT_CUTS, "default"
    low, high = statistics.quantiles(agreements, n=3)
    return (high, low), f"tertiles of {len(agreements)} logged agreements"


def prior(bin_: int, choice: Choice, tests: bool) -> float:
    """The paper's shape of the table as a score: the cheapest choice that its bin is expected to need."""
    best = {1: "probe_vote", 2: "majority", 3: "best_of_n" if tests else "majority"}[bin_]
    return 0.6 if choice == best else 0.4


def expected_accuracy(bin_: int, choice: Choice, tests: bool, outcomes: list[tuple[int, str, bool]]) -> tuple[float, int]:
    """Beta posterior mean of the graded `auto` requests of this bin that chose `choice`, centred on the prior."""
    seen = [right for b, c, right in outcomes if b == bin_ and c == choice]
    p = prior(bin_, choice, tests)
    return (sum(seen) + PRIOR_STRENGTH * p) / (len(seen) + PRIOR_STRENGTH), len(seen)


async def auto(ctx: Context, params: AutoParams) -> StrategyResult:
    planning = await ctx.planner.planning(params.family)
    budget = params.budget.in_eflops(planning)
    temperature = params.temperature or ctx.task.temperature or DEFAULT_TEMPERATURE
    cap = min(params.probe_tokens or planning.max_tokens, planning.max_tokens)
    probe_cost = realised_cost(planning.shape, planning.hardware, planning.prompt_tokens, [cap] * params.probes).total
    if probe_cost > budget:
        raise StrategyInputError(f"budget: {budget:.4g} eFLOPs does not pay for {params.probes} probes of {cap} tokens ({probe_cost:.4g})", "strategy.budget")
    probes = await ctx.generate(params.probes, temperature=temperature, max_tokens=cap, stage="probe")
    ballots = Ballots.of(ctx.task)
    voters = [Candidate(r, answer=ballots.answer(r.text)) for r in probes if not r.cut_short]
    tally, tally_report = await ballots.count(ctx, voters)
    counts = Counter(c.group for c in voters if c.group is not None)
    agreement = max(counts.values()) / len(probes) if counts else 0.0
    cuts, cuts_from = learnt_cuts(planning.agreements)
    bin_ = difficulty_bin(agreement, cuts)
    tests = has_tests(ctx.task)
    options = [c for c in CHOICES if c != "best_of_n" or tests]
    weighed = {c: expected_accuracy(bin_, c, tests, planning.choices) for c in options}
    choice = max(options, key=lambda c: (weighed[c][0], -CHOICES.index(c)))
    ctx.emit({"type": "difficulty", "agreement": round(agreement, 4), "bin": bin_, "choice": choice})

    spent = realised_cost(planning.shape, planning.hardware, planning.prompt_tokens, [len(r.token_ids) for r in probes]).total
    report: dict[str, Any] = {
        "method": "auto",
        "difficulty": {"agreement": round(agreement, 4), "bin": bin_, "cuts": list(cuts), "cuts_from": cuts_from, "probes": len(probes)},
        "choice": choice,
        "considered": [{"choice": c, "expected_accuracy": round(a, 4), "graded": n} for c, (a, n) in weighed.items()],
        "budget": {**params.budget.model_dump(exclude_none=True), "eflops": budget, "probe_eflops": spent},
    }
    if choice == "probe_vote" or budget - spent <= 0:
        chosen = representative(voters, tally.winner) or (voters[0] if voters else None)
        report["plan"] = {"n": len(probes), "max_tokens": cap, "kv_budget": None, "bin": bin_, "choice": "probe_vote", "agreement": agreement}
        return StrategyResult([Candidate(c.rollout, answer=c.answer, group=c.group) for c in voters], chosen, {**report, **tally_report})
    plan, _, _ = plan_for(planning, ComputeBudget(eflops=budget - spent))
    ctx.planner.restrict(max_tokens=plan.max_tokens, total_tokens=plan.n * plan.max_tokens)
    inner: BaseModel = (
        MajorityParams(n=plan.n, temperature=temperature) if choice == "majority" else BestOfNParams(n=plan.n, temperature=temperature, select="code_tests")
    )
    result = await ctx.run(inner)
    report["plan"] = {**plan_report(plan), "bin": bin_, "choice": choice, "agreement": agreement}
    report["inner"] = result.selection
    return StrategyResult(result.candidates, result.chosen, report)
