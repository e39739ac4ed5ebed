"""The tournament's mechanics against scripted judges: grouping, byes, the judge-call count, positions, ties."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies.rtv import parse_pick
from strategies.tournament import Tournament, Verdicts, expected_judge_calls, schedule


def by_strength(strength: dict[int, float]):
    """A judge that always picks the strongest member of the group as shown."""

    async def judge(order: list[int], votes: int) -> Verdicts:
        return Verdicts([max(range(len(order)), key=lambda k: strength[order[k]])] * votes, path_tokens=10)

    return judge


def first_position(order: list[int], votes: int):
    async def judge(order: list[int], votes: int) -> Verdicts:
        return Verdicts([0] * votes)

    return judge


@pytest.mark.parametrize(("n", "g", "keep"), [(16, 2, 1), (16, 2, 4), (16, 4, 1), (8, 2, 1), (9, 3, 1)])
async def test_full_groups_match_the_papers_judge_call_count(n: int, g: int, keep: int) -> None:
    t = Tournament(group_size=g, votes=8, keep=keep)
    survivors = await t.run(range(n), by_strength({i: i for i in range(n)}))
    assert len(survivors) == keep
    assert t.judge_calls == expected_judge_calls(n, g, 8, keep)
    assert len(t.matches) == (n - keep) // (g - 1)


async def test_the_strongest_always_wins_and_rounds_are_log_g() -> None:
    t = Tournament(group_size=2, votes=3)
    assert await t.run(range(16), by_strength({i: -abs(i - 11) for i in range(16)})) == [11]
    assert len(t.rounds()) == 4
    assert t.path_tokens == 4 * 10  # one judge call per round on the critical path


@pytest.mark.parametrize("n", [3, 5, 6, 7, 11])
async def test_odd_pools_give_byes_and_still_end_at_keep(n: int) -> None:
    for keep in (1, 2, 4):
        if keep >= n:
            continue
        t = Tournament(group_size=2, votes=1, keep=keep)
        survivors = await t.run(range(n), by_strength({i: i for i in range(n)}))
        assert len(survivors) == keep
        assert n - 1 in survivors  # the strongest is never knocked out


@given(alive=st.integers(1, 64), group=st.integers(2, 16), keep=st.integers(1, 64))
def test_schedule_comes_down_exactly_to_keep(alive: int, group: int, keep: int) -> None:
    left = alive
    while sizes := schedule(left, group, keep):
        assert all(2 <= s <= group for s in sizes) and sum(sizes) <= left
        left -= sum(s - 1 for s in sizes)
        assert left >= keep  # a round never knocks out more than it must
    assert left == (keep if alive >= keep else alive)


async def test_rotation_cancels_a_judge_that_always_picks_the_first_shown() -> None:
    t = Tournament(group_size=2, votes=8, grouping="in_order", position="rotate", tie="first")
    await t.run([0, 1], first_position([0, 1], 8))
    [match] = t.matches
    assert match.votes == {0: 4, 1: 4} and match.tie == [0, 1] and match.winner == 0


async def test_fixed_positions_let_position_bias_decide() -> None:
    t = Tournament(group_size=2, votes=8, grouping="in_order", position="fixed")
    assert await t.run([5, 9], first_position([5, 9], 8)) == [5]
    assert t.matches[0].votes == {5: 8}


async def test_random_ties_are_seeded_and_reported() -> None:
    async def abstain(order: list[int], votes: int) -> Verdicts:
        return Verdicts([None] * votes)

    winners = set()
    for seed in range(20):
        t = Tournament(group_size=2, votes=4, grouping="in_order", rng=random.Random(seed))
        winners.add((await t.run([0, 1], abstain))[0])
        assert t.matches[0].abstained == 4 and t.matches[0].tie == [0, 1]
    assert winners == {0, 1}
    again = [await Tournament(group_size=2, votes=4, rng=random.Random(3)).run([0, 1], abstain) for _ in range(3)]
    assert again[0] == again[1] == again[2]


@pytest.mark.parametrize(
    ("text", "count", "pick"),
    [("[2]", 2, 1), ("The best is [1].", 2, 0), ("Candidate 2 is better", 2, 1), ("[3]", 2, None), ("no idea", 2, None), ("[1] vs [2]: I pick [2]", 2, 1)],
)
def test_parse_pick(text: str, count: int, pick: int | None) -> None:
    assert parse_pick(text, count) == pick


@given(st.text(max_size=300), st.integers(1, 16))
def test_parse_pick_never_names_a_non_member(text: str, count: int) -> None:
    pick = parse_pick(text, count)
    assert pick is None or 0 <= pick < count


async def test_seeded_ties_do_not_depend_on_which_group_finishes_first() -> None:
    """Judges answer in a different order each run (as cached and fresh votes do); the same seed must still give the
    same tournament."""

    def abstaining_after(delays: dict[int, float]):
        async def judge(order: list[int], votes: int) -> Verdicts:
            await asyncio.sleep(delays[min(order)])
            return Verdicts([None] * votes)

        return judge

    runs = []
    for delays in ({i: 0.001 * i for i in range(8)}, {i: 0.001 * (8 - i) for i in range(8)}):
        t = Tournament(group_size=2, votes=2, grouping="in_order", rng=random.Random(9))
        runs.append((await t.run(range(8), abstaining_after(delays)), [m.winner for m in t.matches]))
    assert runs[0] == runs[1]
