"""First-to-ahead-by-k voting (Meyerson et al. 2025, "Solving a Million-Step LLM Task with Zero Errors", arXiv
2511.09030: the voting of MAKER): keep sampling until one answer leads every other by k votes.

    lead <- 0
    repeat:
        draw min(k - lead, max_n - drawn) more samples      one engine request: the fewest that could end the vote
        a sample votes unless it is red-flagged              cut short, or no final answer in it
        group the votes' answers by equivalence              math-verify
        lead <- votes(leader) - votes(runner-up)
    until lead >= k, max_n samples are drawn, or the budget is spent
    return a sample of the leading group

A sample moves the lead by at most one, so a batch of k - lead can end the vote only on its last sample: drawing the
batch at once (sharing the prompt's prefill) never draws a sample that the paper's one-at-a-time loop would not.
Deviations: the paper red-flags responses that are too long or badly formatted; here a sample that did not end on
its own (its token cap, the budget) or has no extractable final answer does not vote. The paper derives k from the
per-step error rate and the number of steps; a single question has neither, so k is a knob.

A JSON or tool-call answer (strategies/ballots.py) votes in its canonical form: the whole document, or every call
with its arguments. The lead is counted on those whole answers, in one round, so the race and its winner agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from strategies.ballots import Ballots
from strategies.base import Candidate, Context, Rollout, StrategyResult, usable
from strategies.majority import DEFAULT_TEMPERATURE
from strategies.voting import representative, vote


class AheadByKParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["ahead_by_k"] = "ahead_by_k"
    k: int = Field(3, ge=1, le=16, description="votes by which the winning answer must lead every other")
    max_n: int = Field(16, ge=1, le=64, description="never draw more samples than this")
    temperature: float | None = Field(None, gt=0.0, le=2.0, description="default: the request's, else 0.8")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="default: the request's, else 1.0")

    @model_validator(mode="after")
    def _reachable(self) -> AheadByKParams:
        if self.k > self.max_n:
            raise ValueError("k may not exceed max_n: no answer could lead by k")
        return self


def answer_of(ballots: Ballots, rollout: Rollout) -> str | None:
    """A sample's vote: its answer, or None when it is red-flagged."""
    return ballots.answer(rollout.text) if rollout.finish_reason == "stop" else None


def lead(candidates: list[Candidate]) -> int:
    top = [votes for _, votes in Counter(c.group for c in candidates if c.group is not None).most_common(2)]
    return (top[0] - (top[1] if len(top) > 1 else 0)) if top else 0


async def ahead_by_k(ctx: Context, params: AheadByKParams) -> StrategyResult:
    temperature = params.temperature or ctx.task.temperature or DEFAULT_TEMPERATURE
    top_p = params.top_p or ctx.task.top_p or 1.0
    ballots = Ballots.of(ctx.task)
    candidates: list[Candidate] = []
    while (more := min(params.k - lead(candidates), params.max_n - len(candidates))) > 0:
        batch = await ctx.generate(more, temperature=temperature, top_p=top_p)
        if not batch:  # the budget or the deadline is spent
            break
        candidates += [Candidate(replace(r, index=len(candidates) + i), answer=answer_of(ballots, r)) for i, r in enumerate(batch)]
        voting = [c.rollout.text if c.answer is not None else None for c in candidates]
        for c, group in zip(candidates, await ballots.groups_of(ctx, voting), strict=True):
            c.group = group
        ctx.emit({"type": "votes", "drawn": len(candidates), "lead": lead(candidates)})
    tally = vote(candidates)
    ahead = lead(candidates)
    stopped = "ahead" if ahead >= params.k else "max_n" if len(candidates) >= params.max_n else "budget"
    selection: dict[str, Any] = {
        "method": "ahead_by_k",
        "k": params.k,
        "drawn": len(candidates),
        "lead": ahead,
        "stopped": stopped,
        "red_flagged": [c.index for c in candidates if c.answer is None],
        **tally.report(candidates),
    }
    if (described := ballots.describe()) is not None:
        selection["vote_on"] = described
    chosen = representative(candidates, tally.winner) if tally.winner is not None else next(iter(usable(candidates)), None)
    return StrategyResult(candidates, chosen, selection)
