"""RTV, the parallel axis of Kim et al. 2026 ("Scaling Test-Time Compute for Agentic Coding"):

    R_1..R_N  <- N rollouts of the task                 (one engine request; plain answers or agent loops)
    S_i       <- LM[P_sum(R_i)]                          (strategies/summaries.py; cached)
    winner    <- recursive tournament over S_1..S_N in groups of G, V judge calls per group, plurality advances
                                                         (strategies/tournament.py)
    return R_winner

Defaults are the paper's: N=16, G=2, V=8, K=1. The judge is the served model itself; it sees the problem and the
summaries (or, with `judge_input="rollout"`, the raw attempts), never the caller's tests. Judge votes are cached per
(model, prompt version, problem, candidates as shown in order, sampling, vote count), so a pool that overlaps an
earlier one reuses its votes. Cost is reported as the papers' accounting asks: sequential (critical-path) tokens,
judge calls beside V·(N−K)/(G−1), summary calls; total tokens and cache savings are in the response's usage and
`ponder.cache`.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from strategies.base import Candidate, Context, StrategyResult, Task
from strategies.best_of_n import tests_for
from strategies.majority import DEFAULT_TEMPERATURE, SamplingKnobs
from strategies.rollouts import RolloutKnobs, Trajectory, run_rollouts
from strategies.summaries import Summary, summarize
from strategies.tournament import Grouping, Match, Position, TieRule, Tournament, Verdicts, expected_judge_calls

JUDGE_VERSION = "judge-v1"
JUDGE_PROMPT = """Problem:
{problem}

Here are {count} candidate solutions to this problem, each summarized:

{candidates}

Which candidate is most likely to be correct? Reply with the number of the best candidate in brackets, for example [1]."""

_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_NAMED = re.compile(r"(?i)(?:candidate|solution|answer|best)\D{0,12}(\d+)")


class JudgeKnobs(RolloutKnobs):
    """How rollouts are summarized and judged; shared by RTV and PDR (whose select-K and final pick are RTV)."""

    group_size: int = Field(2, ge=2, le=16, description="candidates per judged group (G)")
    votes: int = Field(8, ge=1, le=32, description="judge calls per group (V)")
    judge_input: Literal["summary", "rollout"] = Field("summary", description="what the judge compares")
    judge_temperature: float = Field(0.8, ge=0.0, le=2.0)
    judge_tokens: int = Field(32, ge=1, le=1024, description="cap on one judge answer")
    summary_temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 makes a rollout's summary reusable")
    summary_tokens: int = Field(160, ge=16, le=2048, description="cap on one summary")
    grouping: Grouping = "shuffle"
    position: Position = "rotate"
    tie: TieRule = "random"
    seed: int = Field(0, description="seeds grouping, random positions, tie breaks and random-K contexts")


class RTVParams(SamplingKnobs, JudgeKnobs):
    name: Literal["rtv"] = "rtv"
    n: int = Field(16, ge=1, le=64, description="rollouts (the paper's N)")
    keep: int = Field(1, ge=1, le=64, description="stop when this many remain (K; >1 gives the top K)")

    @model_validator(mode="after")
    def _keep_within_n(self) -> RTVParams:
        if self.keep > self.n:
            raise ValueError("keep may not exceed n")
        return self


def check(task: Task, params: BaseModel) -> None:
    if getattr(params, "rollout", "answer") == "agent":
        tests_for(task, "rollout=agent")


def parse_pick(text: str, count: int) -> int | None:
    """The 0-based position a judge named: its last bracketed number, else its last "candidate k"; None if neither
    names a member (an abstention, not a vote)."""
    for pattern in (_BRACKETED, _NAMED):
        picks = [int(m.group(1)) for m in pattern.finditer(text)]
        if picks:
            return picks[-1] - 1 if 1 <= picks[-1] <= count else None
    return None


class SummaryJudge:
    """The model judging a group: one engine request per ordering of the group, with n = the votes in that order."""

    def __init__(self, ctx: Context, knobs: JudgeKnobs, shown: dict[int, str]) -> None:
        self.ctx = ctx
        self.knobs = knobs
        self.shown = shown

    async def __call__(self, order: list[int], votes: int) -> Verdicts:
        k = self.knobs
        key = {
            "model": self.ctx.model,
            "version": JUDGE_VERSION,
            "problem": self.ctx.task.text,
            "shown": [self.shown[i] for i in order],
            "temperature": k.judge_temperature,
            "max_tokens": k.judge_tokens,
            "votes": votes,
        }
        cached = await self.ctx.shared.cache.get("votes", key)
        if cached is not None:
            return Verdicts(cached["picks"])
        listing = "\n\n".join(f"[{pos + 1}]\n{self.shown[i]}" for pos, i in enumerate(order))
        prompt = JUDGE_PROMPT.format(problem=self.ctx.task.text, count=len(order), candidates=listing)
        answers = await self.ctx.generate(
            votes, temperature=k.judge_temperature, max_tokens=k.judge_tokens, stage="judge", messages=[{"role": "user", "content": prompt}]
        )
        picks = [parse_pick(a.text, len(order)) for a in answers]
        spent = [a.prompt_tokens + len(a.token_ids) for a in answers]
        if len(answers) == votes and not any(a.cut_short for a in answers):
            await self.ctx.shared.cache.put("votes", key, {"picks": picks}, sum(spent))
        return Verdicts(picks, max(spent, default=0))


def candidates_of(trajectories: Sequence[Trajectory]) -> list[Candidate]:
    candidates = []
    for t in trajectories:
        c = Candidate(t.final, tests=t.reports[-1] if t.reports else None)
        if len(t.attempts) > 1 or t.reports:
            c.scores["steps"] = float(len(t.attempts))
        candidates.append(c)
    return candidates


async def summarize_all(ctx: Context, trajectories: Sequence[Trajectory], knobs: JudgeKnobs) -> dict[int, Summary]:
    done = await asyncio.gather(*(summarize(ctx, t, temperature=knobs.summary_temperature, max_tokens=knobs.summary_tokens) for t in trajectories))
    return {s.index: s for s in done}


async def run_tournament(
    ctx: Context, trajectories: Sequence[Trajectory], summaries: dict[int, Summary], knobs: JudgeKnobs, keep: int, rng: random.Random, label: str
) -> tuple[list[int], Tournament]:
    shown = {t.index: summaries[t.index].render() if knobs.judge_input == "summary" else t.transcript() for t in trajectories}
    tournament = Tournament(knobs.group_size, knobs.votes, min(keep, len(trajectories)), knobs.grouping, knobs.position, knobs.tie, rng)

    def on_round(round_no: int, matches: list[Match], survivors: list[int]) -> None:
        ctx.emit({"type": "round", "tournament": label, "round": round_no, "matches": [m.report() for m in matches], "survivors": survivors})

    survivors = await tournament.run([t.index for t in trajectories], SummaryJudge(ctx, knobs, shown), on_round)
    return survivors, tournament


def tournament_report(tournament: Tournament, survivors: list[int], n: int) -> dict[str, Any]:
    return {
        "survivors": survivors,
        "rounds": tournament.rounds(),
        "judge_calls": tournament.judge_calls,
        "judge_calls_expected": expected_judge_calls(n, tournament.group_size, tournament.votes, tournament.keep) if n > tournament.keep else 0,
        "ties": sum(1 for m in tournament.matches if m.tie),
        "abstentions": sum(m.abstained for m in tournament.matches),
    }


async def rtv(ctx: Context, params: RTVParams) -> StrategyResult:
    trajectories = await run_rollouts(
        ctx, params.n, params, temperature=params.temperature or ctx.task.temperature or DEFAULT_TEMPERATURE, top_p=params.top_p or ctx.task.top_p or 1.0
    )
    candidates = candidates_of(trajectories)
    if not candidates:
        return StrategyResult([], None, {"method": "rtv", "reason": "the budget was spent before any rollout"})
    summaries = await summarize_all(ctx, trajectories, params) if params.judge_input == "summary" else {}
    survivors, tournament = await run_tournament(ctx, trajectories, summaries, params, params.keep, random.Random(params.seed), "final")
    by_index = {c.index: c for c in candidates}
    sequential = max(t.path_tokens for t in trajectories) + max((s.tokens for s in summaries.values()), default=0) + tournament.path_tokens
    return StrategyResult(
        candidates,
        by_index[survivors[0]],
        {
            "method": "rtv",
            **tournament_report(tournament, survivors, len(candidates)),
            "summaries": [s.report() for s in summaries.values()],
            "cost": {"sequential_tokens": sequential, "summary_calls": sum(1 for s in summaries.values() if s.tokens)},
        },
    )
