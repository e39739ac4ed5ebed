"""Parallel-distill-refine, in the two forms the papers give.

Agentic PDR (Kim et al. 2026; the default):

    iteration 0:  N rollouts of the task; summarize each
    for t in 1..rounds:
        C_i <- the context of new rollout i:  select_k        the top K by RTV (stop at K), the same for every i
                                              random_k        its own random K summaries
                                              global_summary  one distilled workspace of every summary (≤ κ tokens)
                                              none            no context (the ablation's baseline)
        iteration t:  N fresh rollouts, rollout i conditioned on (problem, C_i); summarize each
    return the RTV winner of the last iteration

Original PDR (Madaan et al. 2025), with `schedule` = (M_1, …, M_R), M_R = 1:

    C <- ∅
    for r in 1..R:  M_r drafts conditioned on (problem, C); if r < R: C <- D(problem, drafts), rebuilt, ≤ κ tokens
    return the single round-R draft

Where the papers are silent (docs/strategies/rtv-pdr.md lists each choice): a context lists summaries as the judge sees them; random-K
contexts are drawn with `seed`; with select_k every rollout of an iteration shares one prompt, so they go to the
engine as one request sharing its KV cache, while random-K rollouts each have their own prompt.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from strategies.base import Candidate, Context, StrategyResult
from strategies.majority import DEFAULT_TEMPERATURE, SamplingKnobs
from strategies.rollouts import Trajectory, run_rollouts
from strategies.rtv import JudgeKnobs, candidates_of, run_tournament, summarize_all, tournament_report
from strategies.summaries import Summary

Distill = Literal["select_k", "random_k", "global_summary", "none"]

REFINE_PROMPT = """{problem}

Earlier attempts at this problem, summarized:

{context}

Use what they learned and avoid their failure modes. Now solve the problem."""

DISTILL_PROMPT = """Problem:
{problem}

Summaries of several attempts at this problem:

{attempts}

Write a short workspace for the next attempt: where the attempts agree, where they contradict each other, facts they
established, what is still unresolved, and what to try next. Be brief."""


class PDRParams(SamplingKnobs, JudgeKnobs):
    name: Literal["pdr"] = "pdr"
    n: int = Field(16, ge=1, le=64, description="rollouts per iteration (agentic PDR's N)")
    k: int = Field(4, ge=1, le=64, description="summaries in each refinement context (K)")
    rounds: int = Field(1, ge=1, le=4, description="refinement iterations after iteration 0")
    distill: Distill = "select_k"
    schedule: list[int] | None = Field(None, min_length=2, max_length=6, description="original PDR: drafts per round, ending at 1, e.g. [8, 4, 1]")
    workspace_tokens: int = Field(512, ge=32, le=4096, description="κ: the bound on a distilled workspace")

    @model_validator(mode="after")
    def _shape(self) -> PDRParams:
        if self.schedule is not None:
            if self.schedule[-1] != 1 or any(not 1 <= m <= 64 for m in self.schedule):
                raise ValueError("schedule must list 1 to 64 drafts per round and end at 1")
        elif self.k > self.n:
            raise ValueError("k may not exceed n")
        return self

    @property
    def sizes(self) -> list[int]:
        return list(self.schedule) if self.schedule is not None else [self.n] * (self.rounds + 1)


def render(summaries: Sequence[Summary]) -> str:
    return "\n\n".join(f"[{i + 1}]\n{s.render()}" for i, s in enumerate(summaries))


async def pdr(ctx: Context, params: PDRParams) -> StrategyResult:
    rng = random.Random(params.seed)
    temperature = params.temperature or ctx.task.temperature or DEFAULT_TEMPERATURE
    top_p = params.top_p or ctx.task.top_p or 1.0
    sizes = params.sizes
    contexts: list[str | None] = [None] * sizes[0]
    iterations: list[dict[str, Any]] = []
    everything: list[Candidate] = []
    sequential = summary_calls = 0
    trajectories: list[Trajectory] = []
    summaries: dict[int, Summary] = {}
    for t, size in enumerate(sizes):
        produced = await conditioned_rollouts(ctx, params, contexts, len(everything), temperature, top_p, stage=f"round{t}")
        if not produced:  # the budget or deadline ran out: the final pick is among the last iteration that ran
            break
        trajectories = produced
        everything.extend(candidates_of(trajectories))
        last = t + 1 == len(sizes)
        # Contexts are built from summaries; the last iteration needs them only for a summary-judged final pick.
        summarized = not last or (len(trajectories) > 1 and params.judge_input == "summary")
        summaries = await summarize_all(ctx, trajectories, params) if summarized else {}
        summary_calls += sum(1 for s in summaries.values() if s.tokens)
        sequential += max(tr.path_tokens for tr in trajectories) + max((s.tokens for s in summaries.values()), default=0)
        record: dict[str, Any] = {"iteration": t, "rollouts": [tr.index for tr in trajectories], "passes_visible": [tr.passes_visible for tr in trajectories]}
        iterations.append(record)
        ctx.emit({"type": "iteration", **record})
        if not last:
            contexts, cost = await distill(ctx, params, trajectories, summaries, sizes[t + 1], rng, record)
            sequential += cost
    if not everything:
        return StrategyResult([], None, {"method": "pdr", "reason": "the budget was spent before any rollout"})
    by_index = {c.index: c for c in everything}
    selection: dict[str, Any] = {"method": "pdr", "distill": params.distill, "sizes": sizes, "iterations": iterations}
    if len(trajectories) > 1:
        survivors, tournament = await run_tournament(ctx, trajectories, summaries, params, 1, rng, "final")
        selection["final"] = tournament_report(tournament, survivors, len(trajectories))
        sequential += tournament.path_tokens
        chosen = by_index[survivors[0]]
    else:
        chosen = by_index[trajectories[-1].index]
    selection["cost"] = {"sequential_tokens": sequential, "summary_calls": summary_calls}
    return StrategyResult(everything, chosen, selection)


async def conditioned_rollouts(
    ctx: Context, params: PDRParams, contexts: list[str | None], first_index: int, temperature: float, top_p: float, stage: str
) -> list[Trajectory]:
    """Rollouts sharing a context go to the engine as one request; distinct contexts as parallel ones."""
    groups: dict[str | None, int] = {}
    for c in contexts:
        groups[c] = groups.get(c, 0) + 1
    batches, start = [], first_index
    for context, count in groups.items():
        messages = None if context is None else [{"role": "user", "content": REFINE_PROMPT.format(problem=ctx.task.text, context=context)}]
        batches.append(run_rollouts(ctx, count, params, temperature=temperature, top_p=top_p, messages=messages, first_index=start, stage=stage))
        start += count
    return [t for batch in await asyncio.gather(*batches) for t in batch]


async def distill(
    ctx: Context, params: PDRParams, trajectories: list[Trajectory], summaries: dict[int, Summary], next_size: int, rng: random.Random, record: dict[str, Any]
) -> tuple[list[str | None], int]:
    """The next iteration's contexts, one per rollout, and the critical-path tokens it took to build them."""
    pool = [summaries[t.index] for t in trajectories]
    k = min(params.k, len(pool))
    if params.distill == "none":
        return [None] * next_size, 0
    if params.distill == "random_k":
        picks = [rng.sample(pool, k) for _ in range(next_size)]
        record["contexts"] = [[s.index for s in p] for p in picks]
        return [render(p) for p in picks], 0
    if params.distill == "select_k":
        survivors, tournament = await run_tournament(ctx, trajectories, summaries, params, k, rng, f"select{record['iteration']}")
        record["select_k"] = tournament_report(tournament, survivors, len(trajectories))
        chosen = [summaries[i] for i in survivors]
        return [render(chosen)] * next_size, tournament.path_tokens
    prompt = DISTILL_PROMPT.format(problem=ctx.task.text, attempts=render(pool))
    written = await ctx.generate(
        1, temperature=params.summary_temperature, max_tokens=params.workspace_tokens, stage="distill", messages=[{"role": "user", "content": prompt}]
    )
    if not written:
        return [None] * next_size, 0
    record["workspace"] = written[0].text
    return [written[0].text] * next_size, written[0].prompt_tokens + len(written[0].token_ids)
