from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compute.protocol import TokenLogprob
from verifiers.scores import mean_logprob, self_certainty


def token(probs: list[float], sampled: int = 0) -> TokenLogprob:
    top = tuple((f"t{i}", math.log(p)) for i, p in enumerate(probs))
    return TokenLogprob(token=top[sampled][0], logprob=top[sampled][1], top=top)


def test_mean_logprob() -> None:
    assert mean_logprob([]) is None
    tokens = [TokenLogprob("a", -1.0), TokenLogprob("b", -2.0), TokenLogprob("c", 0.0)]
    assert mean_logprob(tokens) == pytest.approx(-1.0)


def test_peaked_distribution_is_more_certain_than_a_flat_one() -> None:
    peaked = self_certainty([token([0.97, 0.01, 0.01])] * 3, vocab_size=1000)
    flat = self_certainty([token([0.01, 0.01, 0.01])] * 3, vocab_size=1000)
    assert peaked is not None and flat is not None
    assert peaked > flat


def test_uniform_over_the_whole_vocabulary_scores_zero() -> None:
    assert self_certainty([token([0.25] * 4)], vocab_size=4) == pytest.approx(0.0, abs=1e-12)
    # A uniform top-k leaves a uniform remainder: still exactly uniform.
    assert self_certainty([token([0.001] * 20)], vocab_size=1000) == pytest.approx(0.0, abs=1e-9)


def test_hand_computed_example() -> None:
    # V = 4, top-2 = (1/2, 1/4); the remaining 1/4 is spread as 1/8 over the other two tokens:
    # KL(U || p) = (1/4) [log(1/4 / 1/2) + log(1/4 / 1/4) + 2 log(1/4 / 1/8)] = (1/4) log 2.
    assert self_certainty([token([0.5, 0.25])], vocab_size=4) == pytest.approx(math.log(2) / 4)


def test_sampled_token_outside_the_top_k_counts_as_known() -> None:
    # The same distribution as the hand-computed example, with 1/4 known only as the sampled token.
    outside = TokenLogprob(token="t1", logprob=math.log(0.25), top=(("t0", math.log(0.5)),))
    assert self_certainty([outside], vocab_size=4) == pytest.approx(math.log(2) / 4)


def test_tokens_without_alternatives_are_skipped() -> None:
    assert self_certainty([], vocab_size=10) is None
    assert self_certainty([TokenLogprob("a", -0.1)], vocab_size=10) is None
    assert self_certainty([TokenLogprob("a", -0.1), token([0.5, 0.25])], vocab_size=4) == pytest.approx(math.log(2) / 4)


def test_top_mass_at_or_over_one_stays_finite() -> None:
    assert math.isfinite(self_certainty([token([1.0])], vocab_size=50_000) or math.nan)
    over = TokenLogprob("a", 1e-7, (("a", 1e-7), ("b", -30.0), ("c", -math.inf)))
    assert math.isfinite(self_certainty([over], vocab_size=50_000) or math.nan)


LOGPROB = st.floats(max_value=0.0, allow_nan=False)
TOKEN = st.builds(
    lambda sampled, top: TokenLogprob(token="s", logprob=sampled, top=tuple((f"t{i}", lp) for i, lp in enumerate(top))),
    LOGPROB,
    st.lists(LOGPROB, max_size=20),
)


@given(st.lists(TOKEN, max_size=30), st.integers(min_value=1, max_value=300_000))
def test_scores_are_finite_or_none(tokens: list[TokenLogprob], vocab_size: int) -> None:
    certainty = self_certainty(tokens, vocab_size)
    assert (certainty is None) == all(not t.top for t in tokens)
    assert certainty is None or math.isfinite(certainty)
    mean = mean_logprob(tokens)
    assert (mean is None) == (not tokens)
