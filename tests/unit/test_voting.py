"""Votes, weights and the deterministic tie-break."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from compute.protocol import TokenLogprob
from strategies.base import Candidate, Rollout, usable
from strategies.voting import best_by, representative, reward, score_candidates, vote


def candidate(index: int, group: int | None, logprob: float | None = None, sc: float | None = None, finish: str = "stop") -> Candidate:
    c = Candidate(Rollout(index, f"text {index}", [1, 2], [], finish), answer=None if group is None else str(group), group=group)
    if logprob is not None:
        c.scores["logprob"] = logprob
    if sc is not None:
        c.scores["self_certainty"] = sc
    return c


def test_plain_majority_wins() -> None:
    tally = vote([candidate(0, 0), candidate(1, 1), candidate(2, 1), candidate(3, None)])
    assert tally.winner == 1
    assert tally.counts == {0: 1, 1: 2}
    assert tally.tied == [] and tally.tie_break is None


def test_tie_goes_to_the_more_probable_group() -> None:
    tally = vote([candidate(0, 0, logprob=-2.0), candidate(1, 1, logprob=-0.5), candidate(2, 0, logprob=-3.0), candidate(3, 1, logprob=-4.0)])
    assert tally.winner == 1
    assert tally.tied == [0, 1]
    assert tally.tie_break == "logprob"


def test_tie_without_scores_goes_to_the_group_seen_first() -> None:
    tally = vote([candidate(0, 1), candidate(1, 0)])
    assert tally.winner == 1
    assert tally.tie_break == "first_seen"


def test_weighted_vote_can_overturn_the_count() -> None:
    cands = [candidate(0, 0, logprob=math.log(0.9)), candidate(1, 1, logprob=math.log(0.3)), candidate(2, 1, logprob=math.log(0.3))]
    assert vote(cands).winner == 1
    weighted = vote(cands, "logprob")
    assert weighted.winner == 0
    assert math.isclose(weighted.weights[1], 0.6)


def test_weighted_tie_goes_to_more_votes() -> None:
    cands = [candidate(0, 0, sc=1.0), candidate(1, 1, sc=0.5), candidate(2, 1, sc=0.5)]
    tally = vote(cands, "self_certainty")
    assert tally.winner == 1 and tally.tie_break == "votes"


def test_no_answers_no_winner() -> None:
    tally = vote([candidate(0, None), candidate(1, None)])
    assert tally.winner is None and tally.report([])["tally"] == []


def test_representative_is_the_most_probable_member() -> None:
    cands = [candidate(0, 0, logprob=-1.0), candidate(1, 0, logprob=-0.2), candidate(2, 1, logprob=0.0)]
    assert representative(cands, 0).index == 1  # type: ignore[union-attr]
    assert representative(cands, 5) is None


def test_best_by_breaks_ties_by_index_and_skips_unscored() -> None:
    cands = [candidate(0, None), candidate(1, None, logprob=-1.0), candidate(2, None, logprob=-1.0)]
    assert best_by(cands, "logprob").index == 1  # type: ignore[union-attr]
    assert best_by(cands, "self_certainty") is None


def test_cut_short_rollouts_vote_only_when_nothing_else_is_left() -> None:
    finished, cut = candidate(0, 0), candidate(1, 1, finish="budget")
    assert usable([finished, cut]) == [finished]
    assert usable([cut]) == [cut]


def test_scores_from_logprobs() -> None:
    tokens = [TokenLogprob("a", math.log(0.5), (("a", math.log(0.5)), ("b", math.log(0.5))))] * 3
    c = Candidate(Rollout(0, "aaa", [1, 1, 1], tokens, "stop"))
    score_candidates([c], vocab_size=2)
    assert math.isclose(c.scores["logprob"], math.log(0.5))
    assert abs(c.scores["self_certainty"]) < 1e-9  # uniform over the whole vocabulary: no certainty at all
    assert reward(c, "none") == 1.0 and math.isclose(reward(c, "logprob"), 0.5)


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(-20, 0)), min_size=1, max_size=20))
def test_vote_is_deterministic_and_picks_a_top_group(pairs: list[tuple[int, float]]) -> None:
    cands = [candidate(i, g, logprob=lp) for i, (g, lp) in enumerate(pairs)]
    first, again = vote(cands), vote(list(cands))
    assert first.winner == again.winner
    assert first.counts[first.winner] == max(first.counts.values())  # type: ignore[index]
    weighted = vote(cands, "logprob")
    assert math.isclose(weighted.weights[weighted.winner], max(weighted.weights.values()))  # type: ignore[index]
