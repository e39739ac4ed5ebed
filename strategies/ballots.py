"""What a sample votes for, whatever form the request asked its answer in (the task's `AnswerFormat`), and the tally.

    text        the final answer in the reply (boxed, "the answer is", "Answer:", the last number), answers grouped by
                mathematical equivalence (math-verify)
    json        the document's canonical JSON, or that of the value a JSON pointer names in it (majority's
                `vote_on`); equal canonical forms are one answer
    tool_calls  a vote in two rounds, as its_hub's hierarchical tool voting:
                  1. the functions called vote (the multiset of names, so parallel calls in any order are one vote)
                  2. among the samples of the winning functions, the calls with their canonical arguments vote
                under tool_choice `auto` a sample that called nothing votes "no call" in round 1 and its text's final
                answer (math-verify) in round 2; under a forced choice it has no vote

A sample whose answer has no canonical form (JSON that does not parse, a call whose arguments do not, nothing at the
pointer) has no vote. Both rounds weigh votes and break ties as any vote does (strategies/voting.py). Text answers go
exactly as they did before formats existed: the same extraction, grouping and report.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from strategies.base import AnswerFormat, Candidate, Context, Task
from strategies.voting import Tally, Weight, vote
from verifiers.answers import extract_answer
from verifiers.structured import canonical_calls, canonical_json, exact_groups, pointed_json

TOOL_ROUNDS = "names, then arguments"


@dataclass(frozen=True)
class Ballot:
    answer: str
    """What the tally shows: the final answer, the canonical JSON or the canonical calls."""
    exact: bool = False
    """A canonical form, equal to another only as a string; otherwise free text, grouped by math-verify."""
    names: tuple[str, ...] | None = None
    """tool_calls: the functions called, sorted; () for a sample that answered in text instead."""


@dataclass(frozen=True)
class Ballots:
    format: AnswerFormat = AnswerFormat()
    pointer: str | None = None
    """json: vote on the value at this JSON pointer (validated by the strategy's parameters) instead of the whole."""

    @classmethod
    def of(cls, task: Task, vote_on: str | None = None) -> Ballots:
        return cls(task.answer_format, vote_on)

    def cast(self, text: str) -> Ballot | None:
        """A sample's ballot, or None when it has no vote."""
        text = self.format.answer_part(text)
        kind = self.format.kind
        if kind == "json":
            canonical = canonical_json(text) if self.pointer is None else pointed_json(text, self.pointer)
            return Ballot(canonical, exact=True) if canonical is not None else None
        if kind == "tool_calls" and self.format.read_calls is not None:
            calls = self.format.read_calls(text)
            if calls:
                canonical_call = canonical_calls(calls)
                return Ballot(canonical_call.answer, exact=True, names=canonical_call.names) if canonical_call else None
            if self.format.must_call:
                return None
            answer = extract_answer(text)
            return Ballot(answer, names=()) if answer is not None else None
        answer = extract_answer(text)
        return Ballot(answer) if answer is not None else None

    def answer(self, text: str) -> str | None:
        ballot = self.cast(text)
        return ballot.answer if ballot else None

    async def group(self, ctx: Context, ballots: Sequence[Ballot | None]) -> list[int | None]:
        """Group ids (0, 1, 2… by first appearance; None: no vote). Canonical forms group by equality, free text by
        the context's verifiers."""
        if self.format.kind == "text":
            return await ctx.verifiers.group([b.answer if b else None for b in ballots])
        keys: list[Hashable | None] = [None if b is None else (b.names, b.answer) for b in ballots]
        free = [(i, b.answer) for i, b in enumerate(ballots) if b is not None and not b.exact]
        if free:
            for (i, _), g in zip(free, await ctx.verifiers.group([answer for _, answer in free]), strict=True):
                keys[i] = ((), g)  # no canonical form has names () and an int for its answer
        return exact_groups(keys)

    async def groups_of(self, ctx: Context, texts: Sequence[str | None]) -> list[int | None]:
        """Group ids of samples' texts (None: a sample that does not vote)."""
        return await self.group(ctx, [None if t is None else self.cast(t) for t in texts])

    async def count(self, ctx: Context, voters: Sequence[Candidate], weight: Weight = "none") -> tuple[Tally, dict[str, Any]]:
        """Groups the voters (each one's `group`) and tallies them: the deciding tally (its `winner` is the chosen
        group) and its report for the selection."""
        ballots = [self.cast(c.rollout.text) for c in voters]
        for c, group in zip(voters, await self.group(ctx, ballots), strict=True):
            c.group = group
        tally = vote(voters, weight)
        report = tally.report(voters)
        if (described := self.describe()) is None:
            return tally, report
        if self.format.kind == "tool_calls":
            tally, report = by_name_then_arguments(voters, ballots, weight, report)
        return tally, {**report, "vote_on": described}

    def describe(self) -> dict[str, Any] | None:
        """What the samples voted on, for a selection report (None for text, whose reports stay as they were)."""
        if self.format.kind == "json":
            return {"format": "json", "pointer": self.pointer or ""}
        if self.format.kind == "tool_calls":
            return {"format": "tool_calls", "rounds": TOOL_ROUNDS}
        return None


def by_name_then_arguments(
    voters: Sequence[Candidate], ballots: Sequence[Ballot | None], weight: Weight, report: dict[str, Any]
) -> tuple[Tally, dict[str, Any]]:
    """The two rounds of a tool-call vote. The report's `tally` lists every call voted for; `winner`, `tied` and
    `tie_break` are the second round's, and `by_name` is the first round."""
    names = [b.names if b else None for b in ballots]
    groups = exact_groups(names)
    name_group = {id(c): g for c, g in zip(voters, groups, strict=True)}
    label = {g: n for g, n in zip(groups, names, strict=True) if g is not None and n is not None}
    first = vote(voters, weight, key=lambda c: name_group[id(c)])
    finalists = [c for c in voters if first.winner is not None and name_group[id(c)] == first.winner]
    second = vote(finalists, weight)
    by_name = {
        "tally": [
            {"names": list(label[g]), "votes": first.counts[g], "weight": round(first.weights[g], 6)}
            for g in sorted(first.weights, key=lambda g: (-first.weights[g], g))
        ],
        "winner": list(label[first.winner]) if first.winner is not None else None,
        "tied": [list(label[g]) for g in first.tied],
        "tie_break": first.tie_break,
    }
    return second, {**report, "winner": second.winner, "tied": second.tied, "tie_break": second.tie_break, "by_name": by_name}
