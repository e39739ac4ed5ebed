"""Kinetics' allocator: never over budget, never worse with more budget, the prior without data, the data with it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.accuracy import AccuracyTable, Cell, Observation, Prior
from compute.allocator import (
    CPU_BLOCK_SIZE,
    BudgetTooSmall,
    allocate,
    candidates,
    expected_length,
    kv_options,
    token_caps,
)
from compute.cost_model import (
    B200,
    H100,
    PAPER_TERMS,
    ModelShape,
    max_length,
    request_cost,
)

SMOLLM2 = ModelShape(layers=30, heads=9, kv_heads=3, head_dim=64, params=134_515_008, max_context=8192)
QWEN3_8B = ModelShape(layers=36, heads=32, kv_heads=8, head_dim=128, params=8.19e9, max_context=40960)


def worst(shape: ModelShape, l_in: int, n: int, cap: int, kv_budget: int | None = None) -> float:
    return request_cost(shape, H100, n, l_in, cap, kv_budget, CPU_BLOCK_SIZE if kv_budget else None).total


def test_token_caps_start_short_and_stop_at_the_context() -> None:
    assert token_caps(92, 8192) == [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 6144, 8100]
    caps = token_caps(150, 40960)
    assert caps[7:9] == [2048, 4096] and caps[-2:] == [32768, 40810]
    assert token_caps(60, 64) == [4]
    assert token_caps(64, 64) == []


def test_kv_options_are_whole_blocks_and_only_with_sparse_decode() -> None:
    assert kv_options(False, (128, 256), 32) == [None]
    assert kv_options(True, (128, 256, 48, 16), 32) == [None, 128, 256]


def test_candidates_drop_kv_budgets_that_cover_the_whole_context() -> None:
    grid = candidates(SMOLLM2, H100, 50, sparse_available=True, caps=[64, 1024])
    cells = {(c.n, c.max_tokens, c.kv_budget) for c in grid}
    assert (1, 64, 128) not in cells and (1, 64, None) in cells
    assert (1, 1024, 128) in cells and (1, 1024, 1024) in cells and (1, 1024, 2048) not in cells
    assert all(c.block_size == (CPU_BLOCK_SIZE if c.kv_budget else None) for c in grid)


def test_expected_length_is_the_mean_of_the_truncated_profile() -> None:
    assert expected_length([100, 200, 900], 300) == pytest.approx(200)
    assert expected_length([], 300) == 300


def test_feasibility_is_judged_at_the_cap_not_at_the_expected_length() -> None:
    lengths = [20] * 10
    budget = (worst(SMOLLM2, 50, 4, 20) + worst(SMOLLM2, 50, 4, 512)) / 2
    plan, considered = allocate(budget, SMOLLM2, H100, 50, lengths=lengths, ns=[4], caps=[512])
    over = next(c for c in considered if (c.candidate.n, c.candidate.max_tokens) == (4, 512))
    assert over.candidate.predicted_eflops <= budget < over.candidate.worst_eflops
    assert not over.feasible
    assert plan.worst_eflops <= budget


def test_nothing_on_the_grid_fits_so_one_sample_at_the_longest_length() -> None:
    budget = (worst(SMOLLM2, 50, 1, 5) + worst(SMOLLM2, 50, 1, 6)) / 2
    plan, _ = allocate(budget, SMOLLM2, H100, 50)
    assert (plan.n, plan.max_tokens, plan.kv_budget) == (1, 5, None)
    assert "no configuration on the grid" in plan.reason


def test_budget_too_small_for_one_token() -> None:
    with pytest.raises(BudgetTooSmall, match="one token"):
        allocate(worst(SMOLLM2, 50, 1, 0), SMOLLM2, H100, 50, sparse_available=True)
    with pytest.raises(BudgetTooSmall, match="no room"):
        allocate(1e30, SMOLLM2, H100, 8192)


def test_empty_table_spends_on_length_up_to_the_natural_length_first() -> None:
    lengths = list(range(150, 250, 5))
    budget = worst(SMOLLM2, 50, 1, 256) * 1.01
    assert worst(SMOLLM2, 50, 4, 64) < budget
    plan, _ = allocate(budget, SMOLLM2, H100, 50, lengths=lengths, ns=[1, 2, 4], caps=[64, 128, 256])
    assert (plan.n, plan.max_tokens) == (1, 256)
    plan, _ = allocate(worst(SMOLLM2, 50, 4, 256) * 1.01, SMOLLM2, H100, 50, lengths=lengths, ns=[1, 2, 4], caps=[64, 128, 256, 512])
    assert (plan.n, plan.max_tokens) == (4, 256)
    assert "the prior" in plan.reason


def test_sparse_decode_buys_length_dense_cannot_afford() -> None:
    """In the paper's regime (weights amortised over a large batch); at batch 1 an 8B model is weight-bound."""
    lengths = [12_000] * 4
    budget = request_cost(QWEN3_8B, B200, 1, 150, 6_000, terms=PAPER_TERMS).total
    plan, _ = allocate(budget, QWEN3_8B, B200, 150, sparse_available=True, block_size=16, lengths=lengths, terms=PAPER_TERMS)
    assert plan.kv_budget is not None and plan.max_tokens >= 12_000
    dense, _ = allocate(budget, QWEN3_8B, B200, 150, lengths=lengths, terms=PAPER_TERMS)
    assert dense.kv_budget is None and dense.max_tokens < 12_000 and dense.predicted_accuracy == 0


def rows(n: int, cap: int, right: int, tries: int, kv_budget: int | None = None) -> list[Observation]:
    return [Observation(n, cap, kv_budget, i < right) for i in range(tries)]


EIGHT_IS_BEST = AccuracyTable(
    rows(1, 256, 30, 100) + rows(2, 256, 45, 100) + rows(4, 256, 60, 100) + rows(8, 256, 85, 100) + rows(16, 256, 70, 100) + rows(32, 256, 65, 100)
)


def test_table_that_says_eight_samples_is_best_gets_eight_when_affordable() -> None:
    lengths = [200] * 10
    plan, _ = allocate(worst(SMOLLM2, 50, 32, 256) * 2, SMOLLM2, H100, 50, EIGHT_IS_BEST, lengths=lengths, caps=[256])
    assert (plan.n, plan.max_tokens) == (8, 256)
    assert plan.predicted_accuracy == pytest.approx(0.85, abs=0.01)
    assert "a table of 600 observations" in plan.reason
    small, _ = allocate(worst(SMOLLM2, 50, 4, 256) * 1.01, SMOLLM2, H100, 50, EIGHT_IS_BEST, lengths=lengths, caps=[256])
    assert small.n == 4


def test_observed_cells_are_their_posterior_and_empty_cells_are_bounded_by_them() -> None:
    prior = Prior(l_in=50, limit=8142, lengths=(200,) * 10)
    predict = EIGHT_IS_BEST.predictor(prior)
    assert 0.84 < predict(Cell(8, 256, None)) < 0.86
    assert predict(Cell(16, 256, None)) == predict(Cell(8, 256, None))
    assert predict(Cell(16, 512, None)) >= predict(Cell(8, 256, None))
    assert predict(Cell(3, 256, None)) <= predict(Cell(4, 256, None))
    assert predict(Cell(8, 256, 512)) <= predict(Cell(8, 256, None))


def test_empty_table_is_the_prior() -> None:
    prior = Prior(l_in=50, limit=8142)
    assert AccuracyTable().predictor(prior) is prior
    assert prior(Cell(1, 8142, None)) == pytest.approx(0.5)
    assert prior(Cell(1, 1, None)) == 0


observations = st.lists(
    st.builds(
        Observation,
        n=st.sampled_from([1, 2, 4, 8, 16, 32]),
        max_tokens=st.sampled_from([16, 64, 256, 1024, 4096]),
        kv_budget=st.sampled_from([None, 128, 512]),
        correct=st.booleans(),
    ),
    max_size=60,
)
cells = st.builds(Cell, n=st.integers(1, 40), max_tokens=st.integers(1, 8000), kv_budget=st.sampled_from([None, 128, 256, 512, 2048]))


@given(observations, cells, cells)
def test_table_estimates_are_monotone_in_samples_cap_and_kv(obs, a, b) -> None:
    predict = AccuracyTable(obs).predictor(Prior(l_in=100, limit=8000, lengths=(50, 300, 900)))
    low, high = Cell(min(a.n, b.n), min(a.max_tokens, b.max_tokens), a.kv_budget), Cell(max(a.n, b.n), max(a.max_tokens, b.max_tokens), None)
    assert 0 <= predict(low) <= predict(high) <= 1


shapes = st.sampled_from([SMOLLM2, QWEN3_8B])
profiles = st.lists(st.integers(1, 20_000), max_size=12)
budgets = st.floats(1e9, 1e19)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 3000), budgets, st.booleans(), profiles, observations, st.sampled_from([16, 32, 64]))
def test_plan_never_exceeds_the_budget_with_every_sample_at_the_cap(shape, l_in, budget, sparse, lengths, obs, block):
    try:
        plan, considered = allocate(budget, shape, H100, l_in, AccuracyTable(obs), sparse, block_size=block, lengths=lengths)
    except BudgetTooSmall:
        assert max_length(shape, H100, budget, 1, l_in) == 0
        return
    cost = request_cost(shape, H100, plan.n, l_in, plan.max_tokens, plan.kv_budget, plan.block_size).total
    assert cost == pytest.approx(plan.worst_eflops) and cost <= budget
    assert plan.max_tokens <= shape.max_context - l_in
    assert plan.predicted_accuracy == max(c.accuracy for c in considered if c.feasible)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 3000), budgets, st.floats(1.0, 100.0), st.booleans(), profiles, observations)
def test_more_budget_never_lowers_the_predicted_accuracy(shape, l_in, budget, more, sparse, lengths, obs) -> None:
    table = AccuracyTable(obs)
    try:
        low, _ = allocate(budget, shape, H100, l_in, table, sparse, lengths=lengths)
    except BudgetTooSmall:
        return
    high, _ = allocate(budget * more, shape, H100, l_in, table, sparse, lengths=lengths)
    assert high.predicted_accuracy >= low.predicted_accuracy


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(1, 2000), budgets, profiles)
def test_empty_table_plan_is_the_priors_best_affordable(shape, l_in, budget, lengths) -> None:
    try:
        plan, considered = allocate(budget, shape, H100, l_in, None, True, lengths=lengths, terms=PAPER_TERMS)
    except BudgetTooSmall:
        return
    prior = Prior(l_in, shape.max_context - l_in, tuple(lengths))
    best = max(prior(c.candidate.cell) for c in considered if c.feasible)
    assert plan.predicted_accuracy == best == prior(Cell(plan.n, plan.max_tokens, plan.kv_budget))
