"""Best-of-N (Snell et al. 2024 §5.1; search-and-learn `best_of_n`), with the verifiers a CPU service has instead
of a process reward model.

    sample N solutions at temperature T                      (one engine request, shared prompt KV cache)
    score each:  code_tests       tests passed (the caller's, or the examples visible in the prompt), in a sandbox
                 logprob          mean token log-probability
                 self_certainty   KL(uniform || p) averaged over tokens (Kang et al. 2025)
    select:      argmax score, or weighted_majority: W(a) = Σ_{i: ans(s_i) = a} r_i, return argmax_a W(a)

`early_stop` as on majority (strategies/stopping.py); with `deepconf` the selector sees only the confident traces.
The scores read no answer, so they select among JSON or tool-call samples as among text; weighted_majority's answers
are what majority's are (strategies/ballots.py: canonical JSON, tool calls by name then arguments).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field, model_validator

from strategies.ballots import Ballots
from strategies.base import Candidate, Context, StrategyInputError, StrategyResult, Task, usable
from strategies.majority import VotingKnobs, sampling_of
from strategies.stopping import DeepConfStop, confident_voters, draw
from strategies.voting import TOP_LOGPROBS, Score, Weight, best_by, representative, score_candidates
from verifiers.code import TestCase, caller_tests, visible_tests
from verifiers.programs import candidate_program, entry_point_of, stub_of

Select = Literal["logprob", "self_certainty", "code_tests", "weighted_majority"]


class BestOfNParams(VotingKnobs):
    name: Literal["best_of_n"] = "best_of_n"
    select: Select = Field("logprob", description="the verifier or score that picks the answer")
    score: Score = Field("logprob", description="reward of weighted_majority; tie-break of code_tests")

    @model_validator(mode="after")
    def _select_of_composed(self) -> BestOfNParams:
        if self.rollout is not None and self.select != "code_tests":
            raise ValueError(f"select={self.select} scores one sampled trace; over composed rollouts select by code_tests")
        return self


def tests_for(task: Task, needed_by: str = "select=code_tests") -> tuple[list[TestCase], str, str | None]:
    """The tests a strategy may run: the caller's, else the examples visible in the prompt (never hidden ones)."""
    stub = stub_of(task.text)
    entry = task.verifier.entry_point or entry_point_of(stub)
    tests = caller_tests(task.verifier.tests) if task.verifier.tests else visible_tests(task.text, entry)
    if not tests:
        raise StrategyInputError(f"{needed_by} needs tests: pass verifier.tests, or show examples (doctests) in the prompt", "verifier.tests")
    return tests, stub, entry


def check(task: Task, params: BestOfNParams) -> None:
    if params.select == "code_tests":
        tests_for(task)


async def best_of_n(ctx: Context, params: BestOfNParams) -> StrategyResult:
    tests = tests_for(ctx.task) if params.select == "code_tests" else None
    rule = params.early_stop
    deepconf = rule if isinstance(rule, DeepConfStop) else None
    logprobs = max(logprobs_needed(params.select, params.score), TOP_LOGPROBS["confidence"] if deepconf else 0)
    drawn = await draw(ctx, rule, params.n, sampling_of(ctx, params, logprobs), params.rollout, Ballots.of(ctx.task))
    candidates = [Candidate(r) for r in drawn.rollouts]
    pool = candidates
    if deepconf:
        score_candidates(candidates, ctx.codec.vocab_size, deepconf.window, deepconf.measure)
        pool = confident_voters(usable(candidates), deepconf, drawn.threshold)
        drawn.report = {**(drawn.report or {}), "voters": [c.index for c in pool], "filtered_out": len(candidates) - len(pool)}
    chosen, selection = await select_among(ctx, pool, params.select, params.score, tests)
    if drawn.report is not None:
        selection["early_stop"] = drawn.report
    if drawn.composed is not None:
        selection["composed"] = drawn.composed
    return StrategyResult(candidates, chosen, {"method": "best_of_n", **selection})


def logprobs_needed(select: str, score: Score) -> int:
    return max(TOP_LOGPROBS[s] for s in {score} | ({select} if select in TOP_LOGPROBS else set()))


async def select_among(
    ctx: Context, candidates: list[Candidate], select: Select | Literal["majority"], score: Score, tests: tuple[list[TestCase], str, str | None] | None
) -> tuple[Candidate | None, dict[str, Any]]:
    """Any rollouts' pick by a best-of-N selector (also ATTS's final choice across its samples); `majority` is the
    unweighted vote."""
    score_candidates(candidates, ctx.codec.vocab_size)
    pool = usable(candidates)
    selection: dict[str, Any] = {"select": select}
    if select == "code_tests":
        assert tests is not None
        chosen = await _by_tests(ctx, pool, *tests, tie_break=score)
        selection["sandbox"] = ctx.verifiers.isolation
    elif select in ("weighted_majority", "majority"):
        weight: Weight = score if select == "weighted_majority" else "none"
        ballots = Ballots.of(ctx.task)
        for c in candidates:
            c.answer = ballots.answer(c.rollout.text)
        tally, report = await ballots.count(ctx, pool, weight)
        ctx.emit({"type": "tally", **report})
        selection.update(weight=weight, **report)
        chosen = representative(pool, tally.winner)
    else:
        chosen = best_by(pool, select)
    selection["alternatives"] = {key: pick.index for key in ("logprob", "self_certainty") if (pick := best_by(pool, key))}
    return chosen or (pool[0] if pool else None), selection


async def _by_tests(ctx: Context, pool: list[Candidate], tests: list[TestCase], stub: str, entry: str | None, tie_break: str) -> Candidate | None:
    """Most tests passed wins; equal pass counts go to the higher score, then the earlier rollout."""

    async def check(c: Candidate) -> None:
        program = candidate_program(c.rollout.text, stub, entry)
        c.tests = await ctx.verifiers.run_tests(program, tests, entry, wall_s=ctx.task.verifier.timeout_s)
        ctx.emit({"type": "tested", "index": c.index, "passed": c.tests.passed, "total": c.tests.total})

    await asyncio.gather(*(check(c) for c in pool))
    if not pool:
        return None
    return max(pool, key=lambda c: (c.tests.passed if c.tests else -1, c.scores.get(tie_break, float("-inf")), -c.index))
