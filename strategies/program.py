"""Program-aided answers: the model writes a short program and the machine computes (PAL, Gao et al. 2023; program of
thoughts, Chen et al. 2023), with the programs' results voted on as self-consistency (Wang et al. 2023), as PAL does
with more than one sample.

    ask for one Python expression (or a short program) that computes the answer      (a prompt of its own)
    sample N programs at temperature T                                               (one engine request)
    run each in the sandbox; what it printed is its answer       (a bare expression is printed, a solution() called)
    a program that fails, times out or prints nothing has no vote
    return the answer with the most votes (math-verify groups), with the program that printed it

The model's code is hostile input: it runs only in the sandbox, under its limits, and what it prints is read as
text, capped. As a rollout (`majority` or `best_of_n` with `rollout: {"name": "program"}`, and early stopping over
those), each run is one program and its result is the sample.
"""

from __future__ import annotations

import ast
import asyncio
from dataclasses import replace
from typing import Literal

from pydantic import Field

from strategies.ballots import Ballots
from strategies.base import NO_ANSWER, Candidate, Context, Rollout, StrategyResult, usable
from strategies.majority import SamplingKnobs
from strategies.voting import representative
from verifiers.answers import extract_code

# The hand trial on the packaged model: majority@8 at T 0.6 over executed expressions.
DEFAULT_TEMPERATURE = 0.6
PROMPT = "Write one Python expression that computes the answer to this question. Reply with just the expression.\n\nQuestion: {question}"
MAX_PROGRAM_CHARS = 4000
MAX_ANSWER_CHARS = 200
# A program's result as a sample's text: every vote and grade reads "the answer is" (verifiers/answers.py).
ANSWER_TEXT = "The answer is {answer}."


class ProgramParams(SamplingKnobs):
    name: Literal["program"] = "program"
    n: int = Field(1, ge=1, le=64, description="programs sampled; more than one vote on their results")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="default: the request's, else 0.6; 0 (greedy) only with n = 1")
    max_tokens: int = Field(128, ge=8, le=2048, description="per program")
    timeout_s: float | None = Field(None, gt=0.0, le=60.0, description="per program run (default: the verifier's timeout, else the sandbox's)")


def as_program(reply: str) -> str | None:
    """The program a reply holds (its fenced block, else the whole reply), with a last bare expression printed, as a
    REPL would; None for what is not Python (it is never run)."""
    code = (extract_code(reply) or reply).strip()
    if not code or len(code) > MAX_PROGRAM_CHARS:
        return None
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not tree.body:
        return None
    last = tree.body[-1]
    if isinstance(last, ast.Expr) and not _prints(last.value):
        lines = code.splitlines()
        head = "\n".join(lines[: last.lineno - 1] + [lines[last.lineno - 1][: last.col_offset]])
        return f"{head}print({ast.get_source_segment(code, last.value)})"
    if isinstance(last, ast.FunctionDef) and _takes_nothing(last.args):  # PAL's `def solution(): ...`, called as PAL does
        return f"{code}\nprint({last.name}())"
    return code


def _takes_nothing(args: ast.arguments) -> bool:
    required = len(args.posonlyargs) + len(args.args) - len(args.defaults)
    return required == 0 and all(default is not None for default in args.kw_defaults)


def _prints(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"


def printed(stdout: str) -> str | None:
    """A program's answer: the last line it printed, capped."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1][:MAX_ANSWER_CHARS] if lines else None


async def program(ctx: Context, params: ProgramParams) -> StrategyResult:
    messages = [{"role": "user", "content": PROMPT.format(question=ctx.task.text)}]
    temperature = next((t for t in (params.temperature, ctx.task.temperature) if t is not None), DEFAULT_TEMPERATURE)
    if params.n > 1 and temperature == 0:
        temperature = DEFAULT_TEMPERATURE  # n greedy programs would be one program n times
    top_p = params.top_p or ctx.task.top_p or 1.0
    drawn = await ctx.generate(params.n, messages=messages, temperature=temperature, top_p=top_p, max_tokens=params.max_tokens, stage="program")
    wall_s = params.timeout_s or ctx.task.verifier.timeout_s
    runs = await asyncio.gather(*(run(ctx, r, wall_s) for r in drawn))
    candidates = [c for c, _ in runs]
    traces = [t for _, t in runs]
    voters = [c for c in usable(candidates) if c.answer is not None]
    ballots = Ballots.of(ctx.task)
    tally, report = await ballots.count(ctx, voters)
    ctx.emit({"type": "tally", **report})
    chosen = representative(voters, tally.winner) if voters else None
    return StrategyResult(candidates, chosen, {"method": "program", "programs": traces, **report})


async def run(ctx: Context, rollout: Rollout, wall_s: float | None) -> tuple[Candidate, dict[str, object]]:
    """One sampled program, run: the candidate answers with what it printed (its text is that answer, so that a vote
    over program rollouts reads it), and the trace keeps the program and what became of it."""
    source = None if rollout.cut_short else as_program(rollout.text)
    trace: dict[str, object] = {"index": rollout.index, "reply": rollout.text, "program": source}
    answer = None
    if source is not None:
        result = await ctx.verifiers.run_program(source, wall_s=wall_s)
        answer = printed(result.stdout) if result.status == "ok" else None
        trace.update(status=result.status, output=result.stdout[-MAX_ANSWER_CHARS:], error=result.stderr[-MAX_ANSWER_CHARS:] or None)
        ctx.emit({"type": "program", "index": rollout.index, "status": result.status, "answer": answer})
    else:
        trace["status"] = "not_run"
    finish = rollout.finish_reason if rollout.cut_short or answer is not None else NO_ANSWER
    text = ANSWER_TEXT.format(answer=answer) if answer is not None else ""
    return Candidate(replace(rollout, text=text, finish_reason=finish), answer=answer), trace
