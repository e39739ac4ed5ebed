"""Majority voting (self-consistency; Wang et al. 2023, and the `majority` baseline of Snell et al. 2024).

    sample N solutions at temperature T            (one engine request: the N share the prompt's KV cache)
    a_i = final answer of solution i                (boxed, "the answer is", "Answer:", last number)
    group the a_i by mathematical equivalence       (math-verify, not string equality)
    return a solution of the group with the most votes (optionally each vote weighted by a score)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from strategies.base import Candidate, Context, StrategyResult, usable
from strategies.voting import TOP_LOGPROBS, Weight, representative, score_candidates, vote
from verifiers.answers import extract_answer

# search-and-learn's defaults (Snell et al.'s open reproduction): N = 4, temperature 0.8, top_p 1.0.
DEFAULT_N = 4
DEFAULT_TEMPERATURE = 0.8
MAX_SAMPLES = 64


class SamplingKnobs(BaseModel):
    """The knobs every sampling strategy shares."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(DEFAULT_N, ge=1, le=MAX_SAMPLES, description="solutions sampled")
    temperature: float | None = Field(None, gt=0.0, le=2.0, description="default: the request's, else 0.8")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="default: the request's, else 1.0")


class MajorityParams(SamplingKnobs):
    name: Literal["majority"] = "majority"
    weight: Weight = Field("none", description="weight each vote by a score (weighted self-consistency)")


async def majority(ctx: Context, params: MajorityParams) -> StrategyResult:
    rollouts = await ctx.generate(
        params.n,
        temperature=params.temperature or ctx.task.temperature or DEFAULT_TEMPERATURE,
        top_p=params.top_p or ctx.task.top_p or 1.0,
        logprobs=TOP_LOGPROBS[params.weight],
    )
    candidates = [Candidate(r, answer=extract_answer(r.text)) for r in rollouts]
    score_candidates(candidates, ctx.vocab_size)
    voters = usable(candidates)
    for c, group in zip(voters, await ctx.answers.group([c.answer for c in voters]), strict=True):
        c.group = group
    tally = vote(voters, params.weight)
    ctx.emit({"type": "tally", **tally.report(voters)})
    chosen = representative(voters, tally.winner) or (voters[0] if voters else None)
    return StrategyResult(candidates, chosen, {"method": "majority", "weight": params.weight, **tally.report(voters)})
