"""The strategies' procedures against scripted rollouts (the real engine path is covered end to end), with the
real verifiers: math-verify grouping and the code sandbox."""

from __future__ import annotations

import math
from typing import get_args

import pytest

from compute.protocol import TokenLogprob
from strategies.base import Rollout, StrategyInputError, Task, VerifierSpec
from strategies.best_of_n import BestOfNParams, best_of_n, check
from strategies.majority import MajorityParams, majority
from strategies.names import STRATEGY_NAMES
from strategies.registry import STRATEGIES, StrategyParams, default_params
from tests.unit.fakes import FakeContext
from verifiers.answers import AnswerGrouper
from verifiers.sandbox import Sandbox, SandboxLimits


def tokens(p: float, k: int = 3) -> list[TokenLogprob]:
    return [TokenLogprob("t", math.log(p), (("t", math.log(p)),))] * k


def sampled(texts: list[str], probs: list[float] | None = None) -> list[Rollout]:
    """Samples of three tokens each, every token of probability `probs[i]`."""
    return [Rollout(0, t, [1, 2, 3], tokens(p), "stop") for t, p in zip(texts, probs or [0.5] * len(texts), strict=True)]


async def test_majority_groups_equivalent_answers(answers: AnswerGrouper) -> None:
    ctx = FakeContext(sampled(["The answer is 0.5", "so \\boxed{\\frac{1}{2}}", "Answer: 3", "It is 1/2."]), answers=answers)
    result = await majority(ctx, MajorityParams(n=4))
    assert ctx.calls[0].n == 4 and ctx.calls[0].temperature == 0.8 and ctx.calls[0].logprobs == 0
    assert result.chosen is not None and result.chosen.group == result.selection["winner"]
    assert result.selection["tally"][0]["votes"] == 3
    assert result.chosen.index in (0, 1, 3)
    assert ctx.events and ctx.events[-1]["type"] == "tally"


async def test_majority_uses_the_request_temperature_and_score_weights(answers: AnswerGrouper) -> None:
    task = Task(text="q", verifier=VerifierSpec(), temperature=0.4, top_p=0.9, max_tokens=None)
    ctx = FakeContext(sampled(["Answer: 7", "Answer: 8", "Answer: 8"], [0.95, 0.2, 0.2]), task=task, answers=answers)
    result = await majority(ctx, MajorityParams(n=3, weight="logprob"))
    assert ctx.calls[0].temperature == 0.4 and ctx.calls[0].top_p == 0.9
    assert result.chosen is not None and result.chosen.answer == "7"


async def test_best_of_n_by_logprob_reports_alternatives() -> None:
    ctx = FakeContext(sampled(["a", "b", "c"], [0.2, 0.9, 0.5]))
    result = await best_of_n(ctx, BestOfNParams(n=3, select="logprob"))
    assert result.chosen is not None and result.chosen.index == 1
    assert result.selection["alternatives"]["logprob"] == 1


async def test_best_of_n_weighted_majority(answers: AnswerGrouper) -> None:
    ctx = FakeContext(sampled(["Answer: 1", "Answer: 2", "Answer: 2"], [0.9, 0.3, 0.3]), answers=answers)
    result = await best_of_n(ctx, BestOfNParams(n=3, select="weighted_majority", score="logprob"))
    assert result.chosen is not None and result.chosen.answer == "1"
    assert result.selection["weight"] == "logprob"


STUB = '''def add(a, b):
    """Add two numbers.
    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    """
'''


async def test_best_of_n_code_tests_picks_the_passing_program() -> None:
    task = Task(text=f"Complete this function.\n```python\n{STUB}```", verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=None)
    replies = [
        "```python\ndef add(a, b):\n    return a - b\n```",
        "```python\ndef add(a, b):\n    return a + b\n```",
        "```python\nwhile True: pass\n```",
    ]
    ctx = FakeContext(sampled(replies, [0.99, 0.1, 0.5]), task=task, sandbox=Sandbox(SandboxLimits(wall_s=3, cpu_s=2)))
    result = await best_of_n(ctx, BestOfNParams(n=3, select="code_tests"))
    assert result.chosen is not None and result.chosen.index == 1
    reports = {c.index: c.tests for c in result.candidates}
    assert reports[1] is not None and reports[1].passed == reports[1].total == 2
    assert reports[0] is not None and reports[0].passed < 2
    assert reports[2] is not None and reports[2].passed == 0
    assert result.selection["alternatives"]["logprob"] == 0  # the scores alone would have picked the wrong one


WRONG = "```python\ndef add(a, b):\n    return a - b\n```"
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"


@pytest.mark.parametrize(
    ("replies", "drawn", "stopped"),
    [([WRONG, WRONG, RIGHT, WRONG, RIGHT, RIGHT], 4, "passed"), ([WRONG] * 6, 6, "n"), ([RIGHT] * 6, 2, "passed")],
)
async def test_best_of_n_stops_drawing_once_a_candidate_passes_every_test(replies: list[str], drawn: int, stopped: str) -> None:
    task = Task(text=f"Complete this function.\n```python\n{STUB}```", verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=None)
    ctx = FakeContext(sampled(replies), task=task, sandbox=Sandbox(SandboxLimits(wall_s=3, cpu_s=2)))
    result = await best_of_n(ctx, BestOfNParams(n=6, select="code_tests", batch=2))
    assert [call.n for call in ctx.calls] == [2] * (drawn // 2)
    report = result.selection["early_stop"]
    assert (report["drawn"], report["stopped"], report["saved_samples"]) == (drawn, stopped, 6 - drawn)
    assert report["saved_tokens"] == 3 * (6 - drawn)
    assert result.chosen is not None
    passing = result.chosen.tests is not None and result.chosen.tests.passed == result.chosen.tests.total
    assert passing == (stopped == "passed")


def test_batch_is_for_code_tests_alone() -> None:
    with pytest.raises(ValueError, match="select code_tests"):
        BestOfNParams(select="logprob", batch=2)


def test_code_tests_without_tests_is_refused_before_sampling() -> None:
    task = Task(text="Write a function that adds two numbers.", verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=None)
    with pytest.raises(StrategyInputError) as err:
        check(task, BestOfNParams(select="code_tests"))
    assert err.value.param == "verifier.tests"
    check(Task(text="x", verifier=VerifierSpec(tests=["assert f(1) == 1"]), temperature=None, top_p=None, max_tokens=None), BestOfNParams(select="code_tests"))


def test_defaults_are_the_papers() -> None:
    params = default_params("majority")
    assert isinstance(params, MajorityParams) and params.n == 4 and params.weight == "none"
    bon = default_params("best_of_n")
    assert isinstance(bon, BestOfNParams) and bon.select == "logprob"


def test_the_light_list_of_names_is_the_registrys() -> None:
    """`strategies.names` is read where loading every strategy would be waste (errors, model names)."""
    assert STRATEGY_NAMES == ("none", *STRATEGIES)
    members = get_args(get_args(StrategyParams)[0])
    assert [member.model_fields["name"].default for member in members] == list(STRATEGY_NAMES)
