"""Program-aided answers: what is run of a reply (a bare expression printed, anything that is not Python never run),
what a run answers (the last line printed), and the strategy on a fake context with the real sandbox: programs that
fail, time out, print nothing or are not Python have no vote, and the model's code runs only in the sandbox."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.program import ANSWER_TEXT, ProgramParams, as_program, printed, program
from strategies.registry import STRATEGY_PARAMS
from tests.unit.fakes import FakeContext
from verifiers.sandbox import Sandbox, SandboxLimits

LIMITS = SandboxLimits(wall_s=2.0, cpu_s=2, concurrency=2)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS)


def test_a_bare_expression_is_printed_and_a_program_kept() -> None:
    assert as_program("17 + 25") == "print(17 + 25)"
    assert as_program("x = 6\nx * 7") == "x = 6\nprint(x * 7)"
    assert as_program("```python\na = 2\nprint(a)\n```") == "a = 2\nprint(a)"
    assert as_program("if True: 3") == "if True: 3"
    assert as_program("def solution():\n    return 6 * 7") == "def solution():\n    return 6 * 7\nprint(solution())"
    assert as_program("def f(x):\n    return x") == "def f(x):\n    return x"
    assert as_program("The answer is forty-two") is None
    assert as_program("") is None


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_reply_is_read_without_raising(reply: str) -> None:
    source = as_program(reply)
    assert source is None or compile(source, "<reply>", "exec")


def test_a_run_answers_with_the_last_line_it_printed() -> None:
    assert printed("1\n\n42\n") == "42"
    assert printed("   \n") is None
    assert printed("9" * 1000) == "9" * 200


async def test_the_programs_that_ran_vote_and_the_rest_do_not(sandbox: Sandbox) -> None:
    replies = ["17 + 25", "```python\nprint(40 + 2)\n```", "1 / 0", "while True: pass", "The answer is forty-two", "6 * 7", "x = 1"]
    ctx = FakeContext(replies, sandbox=sandbox)
    result = await program(ctx, ProgramParams(n=len(replies), temperature=0.6))
    statuses = [trace["status"] for trace in result.selection["programs"]]
    assert statuses == ["ok", "ok", "error", "timeout", "not_run", "ok", "ok"]
    assert [c.answer for c in result.candidates] == ["42", "42", None, None, None, "42", None]
    assert result.chosen is not None and result.chosen.rollout.text == ANSWER_TEXT.format(answer="42")
    assert sum(row["votes"] for row in result.selection["tally"]) == 3
    assert ctx.calls[0].stage == "program" and "Python expression" in ctx.calls[0].messages[0]["content"]


async def test_the_models_code_stays_in_the_sandbox(sandbox: Sandbox, tmp_path) -> None:
    marker = tmp_path / "escaped"
    ctx = FakeContext([f"open({str(marker)!r}, 'w').write('x')"], sandbox=sandbox)
    result = await program(ctx, ProgramParams())
    assert not marker.exists()
    assert result.selection["programs"][0]["status"] == "error" and result.chosen is None


def test_program_is_a_strategy_and_a_rollout_of_the_voting_ones() -> None:
    params = STRATEGY_PARAMS.validate_python({"name": "majority", "n": 8, "rollout": {"name": "program"}})
    assert params.rollout.name == "program" and params.rollout.n == 1


async def test_one_greedy_program_is_greedy_and_several_are_sampled(sandbox: Sandbox) -> None:
    ctx = FakeContext(["6 * 7"] * 3, sandbox=sandbox)
    await program(ctx, ProgramParams(temperature=0.0))
    await program(ctx, ProgramParams(n=2, temperature=0.0))
    assert [call.temperature for call in ctx.calls] == [0.0, 0.6]
