from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from service.budget import DEADLINE, TOKENS, Budget


@given(st.integers(min_value=1, max_value=1000), st.lists(st.integers(min_value=0, max_value=64), max_size=60))
def test_grants_never_exceed_the_cap(cap: int, asks: list[int]) -> None:
    async def run() -> None:
        budget = Budget(max_total_tokens=cap, deadline_s=10)
        granted = sum(budget.grant(a) for a in asks)
        assert granted == budget.used == min(cap, sum(asks))
        assert (budget.exhausted == TOKENS) == (sum(asks) > cap)

    asyncio.run(run())


async def test_deadline_is_absolute_and_first_reason_wins() -> None:
    budget = Budget(max_total_tokens=5, deadline_s=0.5)
    assert budget.deadline == budget.started + 0.5
    budget.expire()
    budget.grant(10)
    assert budget.exhausted == DEADLINE
    assert budget.report()["exhausted"] == DEADLINE
