"""Best-of-N (Snell et al. 2024 §5.1; search-and-learn `best_of_n`), with the verifiers a CPU service has instead
of a process reward model.

    sample N solutions at temperature T                      (one engine request, shared prompt KV cache)
    score each:  code_tests       tests passed (the caller's, or the examples visible in the prompt), in a sandbox
                 logprob          mean token log-probability
                 self_certainty   KL(uniform || p) averaged over tokens (Kang et al. 2025)
    select:      argmax score, or weighted_majority: W(a) = Σ_{i: ans(s_i) = a} r_i, return argmax_a W(a)

`early_stop` as on majority (strategies/stopping.py); with `deepconf` the selector sees only the confident traces.
With `select: code_tests` and a `batch`, the N are drawn that many at a time, each batch tested as it comes, and the
drawing stops at the first candidate that passes every test: on small code tasks one of the first samples usually
does, and the rest of N is never generated (the report says how many samples and tokens that saved).
The scores read no answer, so they select among JSON or tool-call samples as among text; weighted_majority's answers
are what majority's are (strategies/ballots.py: canonical JSON, tool calls by name then arguments).
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, model_validator

from strategies.ballots import Ballots
from strategies.base import Candidate, Context, StrategyInputError, StrategyResult, Task, usable
from strategies.majority import VotingKnobs, sampling_of
from strategies.stopping import DeepConfStop, confident_voters, draw, strategy_runs
from strategies.voting import TOP_LOGPROBS, Score, Weight, best_by, representative, score_candidates
from verifiers.code import TestCase, caller_tests, visible_tests
from verifiers.programs import candidate_program, entry_point_of, stub_of

Select = Literal["logprob", "self_certainty", "code_tests", "weighted_majority"]


class BestOfNParams(VotingKnobs):
    name: Literal["best_of_n"] = "best_of_n"
    select: Select = Field("logprob", description="the verifier or score that picks the answer")
    score: Score = Field("logprob", description="reward of weighted_majority; tie-break of code_tests")
    batch: int | None = Field(
        None, ge=1, le=64, description="with select code_tests: draw this many at a time, stopping at the first candidate that passes every test"
    )

    @model_validator(mode="after")
    def _select_of_composed(self) -> BestOfNParams:
        if self.rollout is not None and self.select != "code_tests":
            raise ValueError(f"select={self.select} scores one sampled trace; over composed rollouts select by code_tests")
        if self.batch is not None and (self.select != "code_tests" or self.early_stop is not None):
            raise ValueError("batch stops once the tests pass: it needs select code_tests, and no other early_stop")
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
    if params.batch is not None and tests is not None:
        return await until_tests_pass(ctx, params, params.batch, sampling_of(ctx, params, logprobs), tests)
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
    await _test(ctx, pool, tests, stub, entry)
    return _most_passed(pool, tie_break)


async def _test(ctx: Context, pool: list[Candidate], tests: list[TestCase], stub: str, entry: str | None) -> None:
    async def check(c: Candidate) -> None:
        program = candidate_program(c.rollout.text, stub, entry)
        c.tests = await ctx.verifiers.run_tests(program, tests, entry, wall_s=ctx.task.verifier.timeout_s)
        ctx.emit({"type": "tested", "index": c.index, "passed": c.tests.passed, "total": c.tests.total})

    await asyncio.gather(*(check(c) for c in pool))


def _most_passed(pool: list[Candidate], tie_break: str) -> Candidate | None:
    """Most tests passed wins; equal pass counts go to the higher score, then the earlier rollout."""
    if not pool:
        return None
    return max(pool, key=lambda c: (c.tests.passed if c.tests else -1, c.scores.get(tie_break, float("-inf")), -c.index))


async def until_tests_pass(
    ctx: Context, params: BestOfNParams, batch: int, sampling: dict[str, Any], tests: tuple[list[TestCase], str, str | None]
) -> StrategyResult:
    """Best-of-N by tests, drawn `batch` at a time: each batch is tested as it comes, and drawing stops at the first
    candidate that passes every test; the pick is then `_most_passed` among all drawn."""
    candidates: list[Candidate] = []
    composed: list[dict[str, Any]] = []
    stopped = "n"
    while len(candidates) < params.n:
        k = min(batch, params.n - len(candidates))
        rollouts = await (strategy_runs(ctx, params.rollout, k, composed) if params.rollout is not None else ctx.generate(k, **sampling))
        if not rollouts:
            stopped = "budget"
            break
        fresh = [Candidate(replace(r, index=len(candidates) + i)) for i, r in enumerate(rollouts)]
        candidates += fresh
        await _test(ctx, usable(fresh), *tests)
        if any(c.tests is not None and c.tests.total > 0 and c.tests.passed == c.tests.total for c in fresh):
            stopped = "passed"
            break
        ctx.emit({"type": "tests_pass", "drawn": len(candidates), "passed": False})
    score_candidates(candidates, ctx.codec.vocab_size)
    pool = usable(candidates)
    chosen = _most_passed(pool, params.score)
    rollouts = [c.rollout for c in candidates]
    report = {
        "name": "tests_pass",
        "batch": batch,
        "drawn": len(candidates),
        "stopped": stopped,
        "saved_samples": params.n - len(candidates),
        "saved_tokens": round((params.n - len(candidates)) * statistics.mean(len(r.token_ids) for r in rollouts)) if rollouts else 0,
    }
    selection: dict[str, Any] = {"method": "best_of_n", "select": "code_tests", "sandbox": ctx.verifiers.isolation, "early_stop": report}
    if params.rollout is not None:
        selection["composed"] = [{**c, "index": i} for i, c in enumerate(composed)]
    return StrategyResult(candidates, chosen, selection)
