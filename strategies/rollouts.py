"""What one rollout is for the strategies built on summaries (RTV, PDR): a plain answer, or, for a code task, a short
agent loop (Kim et al.'s rollouts are agent trajectories; this is the loop a CPU can afford):

    attempt_1 <- LM(prompt)
    for step in 1..steps-1:
        report <- the attempt's code run on the visible tests, in the sandbox
        stop if every test passes
        attempt_{step+1} <- LM(prompt, attempt_step, report)

The loop sees only the caller's tests or the examples in the prompt, never hidden tests; the last attempt is
tested too, so every agent trajectory says whether it ends passing what it could see.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, Field

from strategies.base import Context, Rollout
from strategies.best_of_n import tests_for
from verifiers.code import TestCase, TestReport
from verifiers.programs import candidate_program

RolloutMode = Literal["answer", "agent"]

FEEDBACK = """Your code was run on the examples the problem shows. {passed} of {total} passed ({status}).{failures}
Fix the code and reply with the complete function in a python code block."""


class RolloutKnobs(BaseModel):
    rollout: RolloutMode = Field("answer", description="a plain answer, or (code tasks) an agent loop on the visible tests")
    steps: int = Field(3, ge=1, le=8, description="attempts an agent rollout may make")


@dataclass
class Trajectory:
    index: int
    attempts: list[Rollout]
    reports: list[TestReport] = field(default_factory=list)

    @property
    def final(self) -> Rollout:
        """The last attempt, under the trajectory's index: what a candidate answers with."""
        return replace(self.attempts[-1], index=self.index)

    @property
    def passes_visible(self) -> bool | None:
        last = self.reports[-1] if len(self.reports) == len(self.attempts) else None
        return None if last is None else last.total > 0 and last.passed == last.total

    @property
    def path_tokens(self) -> int:
        """Attempts follow one another: the trajectory's tokens are all on its critical path."""
        return sum(a.prompt_tokens + len(a.token_ids) for a in self.attempts)

    def transcript(self) -> str:
        """What a summary is written from: every attempt and what the tests said of it."""
        if len(self.attempts) == 1 and not self.reports:
            return self.attempts[0].text
        parts = []
        for step, attempt in enumerate(self.attempts):
            parts.append(f"Attempt {step + 1}:\n{attempt.text}")
            if step < len(self.reports):
                r = self.reports[step]
                parts.append(f"Visible tests: {r.passed}/{r.total} passed ({r.status})" + (f"; failing: {', '.join(r.failures)}" if r.failures else ""))
        return "\n\n".join(parts)


async def run_rollouts(
    ctx: Context,
    n: int,
    knobs: RolloutKnobs,
    *,
    temperature: float,
    top_p: float,
    messages: list[dict[str, str]] | None = None,
    first_index: int = 0,
    stage: str = "sample",
) -> list[Trajectory]:
    """N rollouts of one prompt (the task's own, or `messages`), sampled in one engine request."""
    first = await ctx.generate(n, temperature=temperature, top_p=top_p, messages=messages, stage=stage)
    trajectories = [Trajectory(first_index + r.index, [r]) for r in first]
    if knobs.rollout == "agent":
        tests, stub, entry = tests_for(ctx.task, "rollout=agent")
        conversation = messages or [{"role": "user", "content": ctx.task.text}]
        await asyncio.gather(*(agent_loop(ctx, t, knobs.steps, tests, stub, entry, conversation, temperature, top_p, stage) for t in trajectories))
    return trajectories


async def agent_loop(
    ctx: Context,
    trajectory: Trajectory,
    steps: int,
    tests: list[TestCase],
    stub: str,
    entry: str | None,
    conversation: list[dict[str, str]],
    temperature: float,
    top_p: float,
    stage: str,
) -> None:
    while True:
        attempt = trajectory.attempts[-1]
        report = await ctx.verifiers.run_tests(candidate_program(attempt.text, stub, entry), tests, entry, wall_s=ctx.task.verifier.timeout_s)
        trajectory.reports.append(report)
        ctx.emit({"type": "step", "stage": stage, "index": trajectory.index, "step": len(trajectory.attempts), "passed": report.passed, "total": report.total})
        if report.passed == report.total or len(trajectory.attempts) >= steps or attempt.cut_short:
            return
        failures = f" Failing: {'; '.join(report.failures)}." if report.failures else ""
        conversation = [
            *conversation,
            {"role": "assistant", "content": attempt.text},
            {"role": "user", "content": FEEDBACK.format(passed=report.passed, total=report.total, status=report.status, failures=failures)},
        ]
        revised = await ctx.generate(1, temperature=temperature, top_p=top_p, messages=conversation, stage=stage)
        if not revised:  # the budget is spent
            return
        trajectory.attempts.append(revised[0])
