"""Kinetics' cost model against worked numbers from the paper's formulas (Sadhukhan et al. 2025 §2; docs/strategies/kinetics-auto.md), and its invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compute.cost_model import (
    B200,
    H100,
    H200,
    KV_BYTES,
    PAPER_TERMS,
    PONDER_TERMS,
    PROFILES,
    HardwareProfile,
    ModelShape,
    Terms,
    attended_pairs,
    config_params,
    dense_cost,
    expected_cost,
    max_length,
    realised_cost,
    request_cost,
    search_cost,
    sparse_cost,
    tera,
)

# Qwen3-8B as the paper's code sees it: P from its table, the rest from the HF config.
QWEN3_8B = ModelShape(layers=36, heads=32, kv_heads=8, head_dim=128, params=8.19e9, max_context=40960)
L_IN = 150
K = 1024

SMOLLM2_135M = {
    "num_hidden_layers": 30,
    "hidden_size": 576,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
}
SMOLLM2 = ModelShape.from_config(SMOLLM2_135M)


def dense_tera(n: int, l_out: int) -> float:
    return tera(dense_cost(QWEN3_8B, B200, n, L_IN, l_out, PAPER_TERMS).total)


def block_tera(n: int, l_out: int, kv_budget: int, block_size: int) -> float:
    return tera(sparse_cost(QWEN3_8B, B200, n, L_IN, l_out, kv_budget, block_size, PAPER_TERMS).total)


@pytest.mark.parametrize(("l_out", "expected"), [(4 * K, 819), (16 * K, 11_690), (32 * K, 45_790)])
def test_dense_single_sample_matches_the_note(l_out: int, expected: float) -> None:
    assert dense_tera(1, l_out) == pytest.approx(expected, rel=1e-3)


def test_dense_eight_samples_share_the_prompt() -> None:
    assert dense_tera(8, 16 * K) == pytest.approx(92_060, rel=1e-3)


@pytest.mark.parametrize(("kv_budget", "block_size", "expected"), [(1024, 16, 15_910), (256, 64, 5_648)])
def test_block_top_k_matches_the_note(kv_budget: int, block_size: int, expected: float) -> None:
    assert block_tera(8, 16 * K, kv_budget, block_size) == pytest.approx(expected, rel=1e-3)


def test_kv_reads_are_97_percent_of_dense_cost_at_16k() -> None:
    cost = dense_cost(QWEN3_8B, B200, 1, L_IN, 16 * K, PAPER_TERMS)
    assert cost.memory / cost.total == pytest.approx(0.97, abs=0.005)


def test_the_fixtures_need_binary_k_and_two_bytes_per_kv_element() -> None:
    """The readings the fixtures rule out: 4K as 4000 tokens, and D taken as bytes per token (1 byte/element)."""
    assert dense_tera(1, 4000) == pytest.approx(784, rel=1e-3)
    cost = dense_cost(QWEN3_8B, B200, 1, L_IN, 4 * K, PAPER_TERMS)
    assert tera(cost.compute + cost.memory / KV_BYTES) == pytest.approx(446, rel=1e-2)


def test_dense_matches_the_blog_formula_term_by_term() -> None:
    p, d, r, i = QWEN3_8B.params, QWEN3_8B.kv_elements_per_token, QWEN3_8B.group, B200.intensity
    n, l_out = 4, 3000
    blog = 2 * n * p * l_out + 2 * r * n * L_IN * d * l_out + r * n * d * l_out**2 + 2 * i * L_IN * d * l_out
    blog += i * n * d * l_out**2
    assert dense_cost(QWEN3_8B, B200, n, L_IN, l_out, PAPER_TERMS).total == pytest.approx(blog, rel=1e-12)


def test_oracle_top_k_as_coded_keeps_the_plus_sign() -> None:
    """The code's `zero_overhead_sparse_cost`, transcribed: 4*S*H*(d_h*n_L) FLOPs and 4*S*H_kv*(d_h*n_L)*I."""
    n, l_out, budget = 8, 16 * K, 1024
    s = budget * l_out + 0.5 * max(0, budget - L_IN) ** 2
    hd = QWEN3_8B.head_dim * QWEN3_8B.layers
    code = (2 * QWEN3_8B.params * l_out + 4 * s * QWEN3_8B.heads * hd) * n + 4 * s * QWEN3_8B.kv_heads * hd * n * 562.5
    cost = sparse_cost(QWEN3_8B, B200, n, L_IN, l_out, budget, None, PAPER_TERMS, as_coded=True)
    assert cost.total == pytest.approx(code, rel=1e-12)
    faithful = sparse_cost(QWEN3_8B, B200, n, L_IN, l_out, budget, None, PAPER_TERMS)
    assert faithful.total < cost.total


def test_as_coded_is_only_the_oracle_variant() -> None:
    with pytest.raises(ValueError):
        sparse_cost(QWEN3_8B, B200, 1, L_IN, 100, 256, 16, as_coded=True)


def test_smollm2_135m_shape_from_its_config() -> None:
    assert config_params(SMOLLM2_135M) == 134_515_008
    assert SMOLLM2 == ModelShape(layers=30, heads=9, kv_heads=3, head_dim=64, params=134_515_008, max_context=8192)
    assert SMOLLM2.kv_elements_per_token == 2 * 3 * 64 * 30
    assert SMOLLM2.group == 3


def test_untied_head_and_biases_are_counted() -> None:
    untied = dict(SMOLLM2_135M, tie_word_embeddings=False, attention_bias=True)
    per_layer_bias = 576 + 2 * 192 + 576
    assert config_params(untied) == 134_515_008 + 49152 * 576 + 30 * per_layer_bias


def test_config_defaults_kv_heads_and_head_dim() -> None:
    config = {k: v for k, v in SMOLLM2_135M.items() if k != "num_key_value_heads"}
    shape = ModelShape.from_config(dict(config, head_dim=None))
    assert shape.kv_heads == 9 and shape.head_dim == 64 and shape.group == 1


def test_qwen3_8b_config_gives_the_papers_parameter_count() -> None:
    config = {
        "num_hidden_layers": 36,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 12288,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
        "max_position_embeddings": 40960,
    }
    shape = ModelShape.from_config(config)
    assert shape.params == pytest.approx(8.19e9, rel=1e-3)
    assert shape.kv_elements_per_token == 73_728


def test_hardware_profiles() -> None:
    assert B200.intensity == 562.5
    assert H100.intensity == pytest.approx(295.2, rel=1e-3)
    assert H200.intensity == pytest.approx(206.0, rel=1e-3)
    assert PROFILES["b200"] is B200


def test_hardware_conversions() -> None:
    priced = HardwareProfile(name="x", flops=1e15, bandwidth=1e12, price_per_hour=3.6, source="spec")
    assert priced.seconds(2e15) == 2.0
    assert priced.eflops_in(2.0) == 2e15
    assert priced.dollars(1e18) == pytest.approx(1.0)
    assert priced.eflops_for(1.0) == pytest.approx(1e18)
    with pytest.raises(ValueError, match="no price"):
        B200.dollars(1.0)


def test_blog_rule_of_thumb_1e5_tera_eflops_is_22_b200_seconds() -> None:
    assert B200.seconds(1e5 * 1e12) == pytest.approx(22.2, rel=1e-2)


def test_ponder_terms_add_prefill_and_weight_reads() -> None:
    paper = dense_cost(SMOLLM2, H100, 4, 300, 200, PAPER_TERMS)
    ponder = dense_cost(SMOLLM2, H100, 4, 300, 200, PONDER_TERMS)
    p, d = SMOLLM2.params, SMOLLM2.kv_elements_per_token
    assert ponder.compute - paper.compute == pytest.approx(2 * p * 300 + 3 * d * 300**2)
    assert ponder.memory - paper.memory == pytest.approx(H100.intensity * 2 * p * 200)
    assert dense_cost(SMOLLM2, H100, 4, 300, 200, Terms(prefill=True, weights=False)).memory == paper.memory


def test_weight_reads_dominate_a_small_model_on_short_answers() -> None:
    paper = dense_cost(SMOLLM2, H100, 1, 50, 100, PAPER_TERMS).total
    assert dense_cost(SMOLLM2, H100, 1, 50, 100).total > 10 * paper


def test_realised_cost_averages_samples_like_the_code() -> None:
    lengths = [100, 300, 200]
    realised = realised_cost(QWEN3_8B, B200, L_IN, lengths)
    each = [dense_cost(QWEN3_8B, B200, 3, L_IN, length).total for length in lengths]
    assert realised.total == pytest.approx(sum(each) / 3)
    assert realised.total < dense_cost(QWEN3_8B, B200, 3, L_IN, 300).total
    assert expected_cost(QWEN3_8B, B200, 3, L_IN, lengths) == realised
    with pytest.raises(ValueError):
        realised_cost(QWEN3_8B, B200, L_IN, [])


def test_realised_cost_is_exact_for_terms_each_sample_carries() -> None:
    """Without the per-step shared terms (prompt reads, weights) the average is the exact sum over samples."""
    no_prompt = ModelShape(layers=2, heads=4, kv_heads=2, head_dim=8, params=1e6, max_context=4096)
    lengths = [10, 40, 70, 5]
    realised = realised_cost(no_prompt, B200, 0, lengths, terms=PAPER_TERMS)
    exact = sum(dense_cost(no_prompt, B200, 1, 0, length, PAPER_TERMS).total for length in lengths)
    assert realised.total == pytest.approx(exact)


def test_max_length_matches_the_closed_form_of_the_note() -> None:
    budget = 11_690e12
    assert max_length(QWEN3_8B, B200, budget, 1, L_IN, terms=PAPER_TERMS) == pytest.approx(16 * K, abs=8)


def test_max_length_is_zero_when_the_prefill_alone_does_not_fit() -> None:
    prefill = dense_cost(SMOLLM2, H100, 1, 1000, 0).total
    assert max_length(SMOLLM2, H100, prefill * 0.9, 1, 1000) == 0
    assert max_length(SMOLLM2, H100, prefill * 0.9, 1, 1000, 256, 32) == 0


def test_max_length_stops_at_the_context() -> None:
    assert max_length(SMOLLM2, H100, 1e30, 8, 192) == 8000


def test_a_budget_at_the_end_of_the_float_range_buys_the_context() -> None:
    """Found by schemathesis: the closed form's discriminant overflowed to infinity and took the request down."""
    assert max_length(SMOLLM2, H100, 1.7e308, 1, 64) == max_length(SMOLLM2, H100, math.inf, 1, 64) == SMOLLM2.max_context - 64
    assert max_length(SMOLLM2, H100, 1e30, 8, 192, 128, 32) == 8000
    assert max_length(SMOLLM2, H100, 1e30, 8, 9000) == 0


shapes = st.builds(
    ModelShape,
    layers=st.integers(1, 64),
    heads=st.sampled_from([4, 8, 16, 32]),
    kv_heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([32, 64, 128]),
    params=st.floats(1e7, 7e10),
    max_context=st.integers(256, 65536),
)
hardware = st.sampled_from([B200, H100, H200])
terms = st.sampled_from([PAPER_TERMS, PONDER_TERMS])
kv_budgets = st.one_of(st.none(), st.sampled_from([128, 256, 512, 1024, 2048]))
block_sizes = st.one_of(st.none(), st.sampled_from([16, 32, 64]))


@given(shapes, hardware, terms, st.integers(1, 31), st.integers(0, 4000), st.integers(0, 20000), kv_budgets, block_sizes)
def test_cost_is_monotone_in_samples(shape, hw, t, n, l_in, l_out, kv_budget, block_size) -> None:
    low = request_cost(shape, hw, n, l_in, l_out, kv_budget, block_size, t).total
    assert request_cost(shape, hw, n + 1, l_in, l_out, kv_budget, block_size, t).total >= low


@given(shapes, hardware, terms, st.integers(1, 32), st.integers(0, 4000), st.integers(0, 20000), st.integers(1, 3000), kv_budgets, block_sizes)
def test_cost_is_monotone_in_length(shape, hw, t, n, l_in, l_out, more, kv_budget, block_size) -> None:
    low = request_cost(shape, hw, n, l_in, l_out, kv_budget, block_size, t).total
    assert request_cost(shape, hw, n, l_in, l_out + more, kv_budget, block_size, t).total >= low


@given(shapes, hardware, terms, st.integers(1, 32), st.integers(0, 4000), st.integers(0, 20000), st.integers(1, 8192), st.integers(1, 8192), block_sizes)
def test_cost_is_monotone_in_kv_budget(shape, hw, t, n, l_in, l_out, budget, more, block_size) -> None:
    low = sparse_cost(shape, hw, n, l_in, l_out, budget, block_size, t).total
    assert sparse_cost(shape, hw, n, l_in, l_out, budget + more, block_size, t).total >= low


@given(shapes, hardware, terms, st.integers(1, 32), st.integers(0, 4000), st.integers(0, 20000), st.integers(0, 5000), st.sampled_from([16, 32, 64]))
def test_sparse_covering_the_context_is_dense_up_to_search(shape, hw, t, n, l_in, l_out, extra, block_size) -> None:
    """What is left is the prompt read per sample instead of once: the paper's sparse model never shares it."""
    sparse = sparse_cost(shape, hw, n, l_in, l_out, l_in + l_out + extra, block_size, t)
    search = search_cost(shape, hw, n, l_in, l_out, block_size)
    dense = dense_cost(shape, hw, n, l_in, l_out, t)
    unshared_prompt = hw.intensity * KV_BYTES * shape.kv_elements_per_token * (n - 1) * l_in * l_out
    assert sparse.compute - search.compute == pytest.approx(dense.compute, rel=1e-9)
    assert sparse.memory - search.memory == pytest.approx(dense.memory + unshared_prompt, rel=1e-9)


@given(st.integers(1, 32), st.integers(0, 4000), st.integers(0, 20000), st.integers(1, 8192))
def test_attended_pairs_never_exceed_the_context(n, l_in, l_out, kv_budget) -> None:
    pairs = attended_pairs(n, l_in, l_out, kv_budget)
    assert 0 <= pairs <= n * (l_in * l_out + l_out**2 / 2) + 1e-6
    assert pairs <= n * kv_budget * l_out + 1e-6


@given(shapes, hardware, terms, st.integers(1, 32), st.integers(0, 2000), st.floats(1e9, 1e20), kv_budgets, block_sizes)
def test_max_length_is_the_largest_length_that_fits(shape, hw, t, n, l_in, budget, kv_budget, block_size) -> None:
    length = max_length(shape, hw, budget, n, l_in, kv_budget, block_size, t)
    limit = max(0, shape.max_context - l_in)
    assert 0 <= length <= limit

    def cost(x: int) -> float:
        return request_cost(shape, hw, n, l_in, x, kv_budget, block_size, t).total

    if length > 0:
        assert cost(length) <= budget
    assert length == limit or cost(length + 1) > budget


def test_sparse_grows_linearly_where_dense_grows_quadratically() -> None:
    """Only block top-k's search stays quadratic, and it is small."""
    assert dense_tera(8, 32 * K) / dense_tera(8, 16 * K) > 3.5
    assert attended_pairs(8, L_IN, 32 * K, 1024) / attended_pairs(8, L_IN, 16 * K, 1024) == pytest.approx(2, rel=0.02)
    assert block_tera(8, 32 * K, 1024, 16) / block_tera(8, 16 * K, 1024, 16) < 2.5
