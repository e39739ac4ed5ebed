"""Recursive tournament voting (RTV; Kim et al. 2026, "Scaling Test-Time Compute for Agentic Coding"):

    survivors <- the N candidates
    while |survivors| > K:
        split the survivors into groups of G
        for each group, in parallel: V judge calls, each naming the group's best member
        the plurality winner of each group advances
    return the survivors (one, or the top K for select-K)

The paper leaves the mechanics below open; each choice is a parameter, with the default named first:
- groups: `shuffle` (seeded) or `in_order` of the candidates' indices.
- a round plays only as many groups as it takes to come down to K (so N=6, K=4 plays two pairs and gives two
  byes); a leftover of one is a bye, a leftover of two or more plays as a smaller group. With N − K divisible by
  G − 1 this is the paper's count: (N − K) / (G − 1) groups, V judge calls each.
- position: `rotate` (vote v shows the group rotated by v places, so each member sits in each position equally
  often and a judge's position bias cancels out of the plurality), `random` (a seeded shuffle per vote) or `fixed`.
- ties (e.g. 4-4 with V=8): `random` (seeded) or `first` (the member with the lowest candidate index). A judge
  answer naming no member is an abstention; a group where every vote abstains is decided by the tie rule.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Grouping = Literal["shuffle", "in_order"]
Position = Literal["rotate", "random", "fixed"]
TieRule = Literal["random", "first"]


@dataclass(frozen=True)
class Verdicts:
    """`votes` judge calls on a group shown in one order: the position each chose (0-based; None for an answer that
    names no member) and the tokens of the longest call (the critical path; 0 when reused from the cache)."""

    picks: list[int | None]
    path_tokens: int = 0


Judge = Callable[[list[int], int], Awaitable[Verdicts]]


@dataclass
class Match:
    round: int
    members: list[int]
    votes: dict[int, int] = field(default_factory=dict)
    abstained: int = 0
    winner: int = -1
    tie: list[int] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    path_tokens: int = 0

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": self.round,
            "members": self.members,
            "votes": {str(k): v for k, v in self.votes.items()},
            "winner": self.winner,
            "orders": self.orders,
        }
        if self.abstained:
            out["abstained"] = self.abstained
        if self.tie:
            out["tie"] = self.tie
        return out


@dataclass
class Tournament:
    group_size: int
    votes: int
    keep: int = 1
    grouping: Grouping = "shuffle"
    position: Position = "rotate"
    tie: TieRule = "random"
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    matches: list[Match] = field(default_factory=list)

    async def run(self, entrants: Sequence[int], judge: Judge, on_round: Callable[[int, list[Match], list[int]], None] | None = None) -> list[int]:
        """The survivors, in the order they finished (winners of the last round first, then byes)."""
        survivors = list(entrants)
        round_no = 0
        while len(survivors) > self.keep:
            round_no += 1
            pool = list(survivors)
            if self.grouping == "shuffle":
                self.rng.shuffle(pool)
            groups, start = [], 0
            for size in schedule(len(pool), self.group_size, self.keep):
                groups.append(pool[start : start + size])
                start += size
            byes = pool[start:]  # too few left to play: they advance unjudged
            matches = [Match(round_no, members) for members in groups]
            await asyncio.gather(*(self._play(m, judge) for m in matches))
            for m in matches:  # in match order, not finishing order: seeded tie breaks must not depend on timing
                self._decide(m)
            self.matches.extend(matches)
            survivors = [m.winner for m in matches] + byes
            if on_round is not None:
                on_round(round_no, matches, survivors)
        return survivors

    async def _play(self, match: Match, judge: Judge) -> None:
        orderings = self._orderings(match.members)
        counts = Counter(tuple(o) for o in orderings)
        results = await asyncio.gather(*(judge(list(order), count) for order, count in counts.items()))
        for (order, count), verdicts in zip(counts.items(), results, strict=True):
            match.orders.append({"order": list(order), "votes": count, "picks": verdicts.picks})
            match.path_tokens = max(match.path_tokens, verdicts.path_tokens)
            for pick in verdicts.picks:
                if pick is None or not 0 <= pick < len(order):
                    match.abstained += 1
                else:
                    match.votes[order[pick]] = match.votes.get(order[pick], 0) + 1

    def _decide(self, match: Match) -> None:
        best = max(match.votes.values(), default=0)
        leaders = sorted(m for m in match.members if match.votes.get(m, 0) == best)
        if len(leaders) > 1:
            match.tie = leaders
        match.winner = leaders[0] if self.tie == "first" or len(leaders) == 1 else self.rng.choice(leaders)

    def _orderings(self, members: list[int]) -> list[list[int]]:
        if self.position == "fixed":
            return [list(members)] * self.votes
        if self.position == "rotate":
            return [members[v % len(members) :] + members[: v % len(members)] for v in range(self.votes)]
        shuffled = []
        for _ in range(self.votes):
            order = list(members)
            self.rng.shuffle(order)
            shuffled.append(order)
        return shuffled

    @property
    def judge_calls(self) -> int:
        return sum(len(o["picks"]) for m in self.matches for o in m.orders)

    @property
    def path_tokens(self) -> int:
        """Rounds run one after another, the groups of a round side by side."""
        longest: dict[int, int] = {}
        for m in self.matches:
            longest[m.round] = max(longest.get(m.round, 0), m.path_tokens)
        return sum(longest.values())

    def rounds(self) -> list[list[dict[str, Any]]]:
        by_round: dict[int, list[dict[str, Any]]] = {}
        for m in self.matches:
            by_round.setdefault(m.round, []).append(m.report())
        return [by_round[r] for r in sorted(by_round)]


def schedule(alive: int, group_size: int, keep: int) -> list[int]:
    """The sizes of the groups one round plays: enough to come down to `keep`, never fewer than two members."""
    sizes, to_drop, left = [], alive - keep, alive
    while to_drop > 0 and left >= 2:
        size = min(group_size, left, to_drop + 1)
        sizes.append(size)
        to_drop -= size - 1
        left -= size
    return sizes


def expected_judge_calls(n: int, group_size: int, votes: int, keep: int) -> float:
    """The paper's count, V·(N − K)/(G − 1): exact when every group is full."""
    return votes * (n - keep) / (group_size - 1)
