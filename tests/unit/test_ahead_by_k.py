"""First-to-ahead-by-k voting against the fake context: it stops as soon as an answer leads by k, drawing each time
only the samples that could end the vote (Hypothesis: exactly where the paper's one-at-a-time loop stops), and
red-flagged samples do not vote; with the real math-verify grouping."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from strategies.ahead_by_k import AheadByKParams, ahead_by_k
from strategies.base import Rollout
from strategies.registry import default_params
from tests.unit.fakes import FakeContext, encode
from verifiers.answers import AnswerGrouper


def cut(text: str) -> Rollout:
    """A sample that hit its token cap: red-flagged, whatever it says."""
    return Rollout(0, text, encode(text), [], "length")


async def test_a_unanimous_first_batch_is_k_ahead_and_ends_the_vote(answers: AnswerGrouper) -> None:
    ctx = FakeContext(["The answer is 4."] * 16, answers=answers)
    result = await ahead_by_k(ctx, AheadByKParams(k=3))
    assert [c.n for c in ctx.calls] == [3] and ctx.calls[0].temperature == 0.8
    assert result.selection["stopped"] == "ahead" and result.selection["lead"] == 3 and result.selection["drawn"] == 3
    assert result.chosen is not None and result.chosen.answer == "4"


async def test_each_batch_is_what_could_still_end_the_vote(answers: AnswerGrouper) -> None:
    ctx = FakeContext(["It is 4.", "It is 5.", "It is 4.0", "\\boxed{4}", "It is 4."], answers=answers)
    result = await ahead_by_k(ctx, AheadByKParams(k=3))
    assert [c.n for c in ctx.calls] == [3, 2]  # 4, 5, 4 leads by one: two more could end it, and do
    assert [e["lead"] for e in ctx.events if e["type"] == "votes"] == [1, 3]
    assert result.selection["tally"][0]["votes"] == 4 and result.chosen is not None and result.chosen.group == result.selection["winner"]
    assert [c.index for c in result.candidates] == [0, 1, 2, 3, 4]


async def test_red_flagged_samples_do_not_vote(answers: AnswerGrouper) -> None:
    ctx = FakeContext([cut("The answer is 5"), "The answer is 4.", "The answer is 4.", "The answer is 4."], answers=answers)
    result = await ahead_by_k(ctx, AheadByKParams(k=3))
    assert result.selection["red_flagged"] == [0] and result.candidates[0].group is None
    assert [c.n for c in ctx.calls] == [3, 1] and result.selection["stopped"] == "ahead"
    assert result.chosen is not None and result.chosen.index in (1, 2, 3)


async def test_a_vote_that_never_parts_stops_at_max_n_and_the_leader_wins(answers: AnswerGrouper) -> None:
    ctx = FakeContext(["It is 4.", "It is 5."] * 8 + ["It is 4."], answers=answers)
    result = await ahead_by_k(ctx, AheadByKParams(k=2, max_n=7))
    assert result.selection["stopped"] == "max_n" and result.selection["drawn"] == 7 and sum(c.n for c in ctx.calls) == 7
    assert result.chosen is not None and result.chosen.answer == "4"


async def test_the_budget_ends_the_vote_with_what_was_drawn() -> None:
    ctx = FakeContext(["It is 4.", "It is 5."] * 8, budget=30)
    result = await ahead_by_k(ctx, AheadByKParams(k=3))
    assert result.selection["stopped"] == "budget" and 0 < result.selection["drawn"] < 16
    assert ctx.exhausted == "budget" and result.chosen is not None


def one_at_a_time(votes: list[int | None], k: int, max_n: int) -> int:
    """The paper's loop: one sample at a time until an answer leads by k; how many it draws."""
    counts: Counter[int] = Counter()
    for drawn, v in enumerate(votes[:max_n], 1):
        if v is not None:
            counts[v] += 1
        top = [c for _, c in counts.most_common(2)] + [0, 0]
        if top[0] - top[1] >= k:
            return drawn
    return min(len(votes), max_n)


@settings(max_examples=60, deadline=None)
@given(votes=st.lists(st.one_of(st.none(), st.integers(0, 2)), min_size=1, max_size=40), k=st.integers(1, 5), max_n=st.integers(5, 40))
async def test_batches_stop_exactly_where_one_at_a_time_does(votes: list[int | None], k: int, max_n: int) -> None:
    samples = [cut("The answer is 9") if v is None else f"The answer is {v}." for v in votes]
    ctx = FakeContext(samples)  # answers grouped as exact strings: no math-verify needed for 0, 1, 2
    result = await ahead_by_k(ctx, AheadByKParams(k=k, max_n=max_n))
    assert result.selection["drawn"] == one_at_a_time(votes, k, max_n) <= max_n


def test_parameters() -> None:
    params = default_params("ahead_by_k")
    assert isinstance(params, AheadByKParams) and params.k == 3 and params.max_n == 16
    with pytest.raises(ValidationError):
        AheadByKParams(k=5, max_n=4)
