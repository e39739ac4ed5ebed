"""Kinetics' cost model (Sadhukhan et al. 2025, arXiv 2506.05333): what a request costs in eFLOPs.

One unit for compute and memory traffic: eFLOPs = FLOPs + I * bytes, with I = peak FLOP/s / bandwidth of the
hardware, so eFLOPs / peak FLOP/s is the time of an additive (no-overlap) roofline. Symbols, per model and request:

    n_L layers, H query heads, H_kv KV heads, d_h head dim, P parameters
    D = 2 * H_kv * d_h * n_L          K+V elements cached per token (2 bytes each)
    r = H / H_kv                      query heads sharing a KV head
    N samples of L_out tokens each, all sharing one prompt of L_in tokens

Per (decode step, attended token) pair: 2*r*D FLOPs (q.k and p.v for every query head) and 2*D bytes (its K and V).

    dense   C = 2*N*P*L_out                                  linear layers
              + r*D*N*(2*L_in*L_out + L_out^2)               attention FLOPs: N*(L_in*L_out + L_out^2/2) pairs
              + I*D*(2*L_in*L_out + N*L_out^2)               KV reads: prompt once per step, own tokens per sample
    sparse  B_eff = min(B, L_in + L_out);  k = max(0, B_eff - L_in)
            S = N*(B_eff*L_out - k^2/2)                      ~ sum over steps of min(B, context): no prompt sharing
            C = 2*N*P*L_out + 2*r*D*S + I*2*D*S + search
    search  (block top-k, block size b: one summary key per block of the whole context, scored every step)
            FLOPs = N*H*d_h*n_L*(2*L_in + L_out)*L_out / b
            bytes = H_kv*d_h*n_L*(2*L_in + N*L_out)*L_out / b   (the prompt's summaries read once for all samples)
    Ponder's extra terms (Terms; the paper leaves both out):
            prefill = 2*P*L_in + r*D*L_in^2                   once per request: prefix caching shares the prompt
                                                             (over the computed tokens only, where it held a prefix)
            weights = I*2*P*L_out                            every decode step reads the weights once for the batch
    request = mean over samples of C(N, L_out = that sample's length)   (the code's `expected_cost`)

The closed form at fixed N for dense: C(L) = c0 + a*L + c*L^2 with c = N*D*(r + I), so
L_max = (-a + sqrt(a^2 + 4*c*(C - c0))) / (2*c); sparse is piecewise, so its L_max is found by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KV_BYTES = 2
WEIGHT_BYTES = 2
TERA = 1e12
SECONDS_PER_HOUR = 3600.0


def tera(eflops: float) -> float:
    """The paper's code and figures report Tera-eFLOPs; the fixtures are copied from there."""
    return eflops / TERA


@dataclass(frozen=True)
class ModelShape:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    params: float
    max_context: int

    @property
    def kv_elements_per_token(self) -> int:
        return 2 * self.kv_heads * self.head_dim * self.layers

    @property
    def group(self) -> float:
        return self.heads / self.kv_heads

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        heads = int(config["num_attention_heads"])
        return cls(
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=_head_dim(config),
            params=float(config_params(config)),
            max_context=int(config["max_position_embeddings"]),
        )


def _head_dim(config: Mapping[str, Any]) -> int:
    """Some configs (Qwen3, Gemma) set head_dim apart from hidden_size / heads; others leave it out or null."""
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def config_params(config: Mapping[str, Any]) -> int:
    """Parameters of a dense decoder-only transformer (Llama, Qwen, Mistral layouts) from its config.

    P enters every decode step, so it is counted as the paper's code counts it: all weights, embeddings included.
    An absent `tie_word_embeddings` means an untied head, as in LlamaConfig's default, which is the costlier side.
    Biases are counted only where the config says so (`attention_bias`, `mlp_bias`); MoE experts are not modelled.
    """
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = _head_dim(config)
    inner = int(config["intermediate_size"])
    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    attention = 2 * hidden * q_width + 2 * hidden * kv_width
    if config.get("attention_bias"):
        attention += q_width + 2 * kv_width + hidden
    mlp = 3 * hidden * inner + (2 * inner + hidden if config.get("mlp_bias") else 0)
    layer = attention + mlp + 2 * hidden
    embeddings = int(config["vocab_size"]) * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return embeddings + int(config["num_hidden_layers"]) * layer + hidden


class HardwareProfile(BaseModel):
    """What turns eFLOPs into seconds and dollars: eFLOPs / flops is compute time plus memory time."""

    model_config = ConfigDict(frozen=True)

    name: str
    flops: float = Field(gt=0, description="peak FLOP/s")
    bandwidth: float = Field(gt=0, description="memory bandwidth, bytes/s")
    price_per_hour: float | None = Field(default=None, gt=0, description="dollars per hour of this hardware")
    source: Literal["spec", "measured", "paper"]
    dtype: str | None = Field(default=None, description="the precision the peak FLOP/s is for")

    @property
    def intensity(self) -> float:
        return self.flops / self.bandwidth

    def seconds(self, eflops: float) -> float:
        return eflops / self.flops

    def eflops_in(self, seconds: float) -> float:
        return seconds * self.flops

    def dollars(self, eflops: float) -> float:
        return self.seconds(eflops) * self._price() / SECONDS_PER_HOUR

    def eflops_for(self, dollars: float) -> float:
        return self.eflops_in(dollars / self._price() * SECONDS_PER_HOUR)

    def _price(self) -> float:
        if self.price_per_hour is None:
            raise ValueError(f"hardware profile {self.name!r} has no price per hour")
        return self.price_per_hour


# The paper's machine: 4.5 PFLOP/s over 8 TB/s (B200 FP8-dense or BF16 2:4-sparse), so I = 562.5 exactly.
B200 = HardwareProfile(name="b200", flops=4.5e15, bandwidth=8e12, source="paper")
H100 = HardwareProfile(name="h100", flops=989e12, bandwidth=3.35e12, source="spec", dtype="bfloat16")
H200 = HardwareProfile(name="h200", flops=989e12, bandwidth=4.8e12, source="spec", dtype="bfloat16")
PROFILES = {p.name: p for p in (B200, H100, H200)}


@dataclass(frozen=True)
class Terms:
    """Costs the paper leaves out and Ponder counts, so a plan for a small model with short answers is not
    dominated by what the paper could ignore at 8B-32B and 4K-32K tokens of thinking.

    prefill: the prompt's forward pass, compute-bound, paid once per request because prefix caching shares it
    across the N samples (its traffic, one weight read and the prompt's KV written once, is left out).
    weights: 2 bytes per parameter read at every decode step; the paper drops it as amortised over a large
    batch, but a request's own N samples are often the whole batch here, and for a 135M model it dominates.
    """

    prefill: bool = True
    weights: bool = True


PAPER_TERMS = Terms(prefill=False, weights=False)
PONDER_TERMS = Terms()


@dataclass(frozen=True)
class Cost:
    """Compute and memory kept apart, as the paper's code returns them, both already in eFLOPs (memory = I*bytes)."""

    compute: float
    memory: float

    @property
    def total(self) -> float:
        return self.compute + self.memory

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.compute + other.compute, self.memory + other.memory)


def prefill_cost(shape: ModelShape, l_in: int, computed: int | None = None) -> Cost:
    """The prompt's forward pass over its last `computed` tokens (all of them unless the prefix cache held the
    rest): the linear layers for each, and each attending to everything before it. All of them: 2*P*L + r*D*L^2."""
    c = l_in if computed is None else min(computed, l_in)
    return Cost(2 * shape.params * c + 2 * shape.group * shape.kv_elements_per_token * (c * l_in - c * c / 2), 0.0)


def _common(shape: ModelShape, hardware: HardwareProfile, n: int, l_in: int, l_out: float, terms: Terms) -> Cost:
    """What dense and sparse decoding share: the linear layers of every token, and Ponder's extra terms."""
    cost = Cost(2 * n * shape.params * l_out, 0.0)
    if terms.prefill:
        cost += prefill_cost(shape, l_in)
    if terms.weights:
        cost += Cost(0.0, hardware.intensity * WEIGHT_BYTES * shape.params * l_out)
    return cost


def _attention(shape: ModelShape, hardware: HardwareProfile, computed: float, read: float) -> Cost:
    """Attention priced per (step, attended token) pair: QK^T and AV over every query head, K and V read once."""
    d = shape.kv_elements_per_token
    return Cost(2 * shape.group * d * computed, hardware.intensity * KV_BYTES * d * read)


def dense_cost(shape: ModelShape, hardware: HardwareProfile, n: int, l_in: int, l_out: float, terms: Terms = PONDER_TERMS) -> Cost:
    """Every sample attends to the whole prompt and its own tokens; the prompt's KV is read once per step for all
    N samples (a shared-prefix kernel), which is what makes sampling cheaper than the same tokens in one long chain."""
    computed = n * (l_in * l_out + l_out**2 / 2)
    read = l_in * l_out + n * l_out**2 / 2
    return _common(shape, hardware, n, l_in, l_out, terms) + _attention(shape, hardware, computed, read)


def attended_pairs(n: int, l_in: int, l_out: float, kv_budget: int, as_coded: bool = False) -> float:
    """Sum over decode steps of min(B, context), in the paper's continuous form.

    The budget is first clamped to the longest context the request reaches: the paper's expression assumes
    B <= L_in + L_out (true on its grid) and otherwise falls, even below zero, as B grows. `as_coded` instead
    reproduces the code's oracle top-k (`zero_overhead_sparse_cost`), which has + for the correction (a sign slip:
    the block variant and the sum itself have -) and no clamp; use it only to compare against the code's numbers.
    """
    if as_coded:
        return n * (kv_budget * l_out + max(0, kv_budget - l_in) ** 2 / 2)
    budget = min(kv_budget, l_in + l_out)
    dense_steps = max(0.0, budget - l_in)
    return n * (budget * l_out - dense_steps**2 / 2)


def search_cost(shape: ModelShape, hardware: HardwareProfile, n: int, l_in: int, l_out: float, block_size: int) -> Cost:
    """Block top-k scores one summary key per block of b tokens over the whole context at every step: a dot product
    per query head (r*D FLOPs) and one key per KV head read (D bytes: K only, 2 bytes per element). Summaries of
    the prompt's blocks are shared by the samples, like the dense prompt. True division here; the code floors
    (2*L_in + L_out) // b, a difference below 0.1% of this already small term."""
    blocks_scored = n * (l_in * l_out + l_out**2 / 2) / block_size
    blocks_read = (l_in * l_out + n * l_out**2 / 2) / block_size
    d = shape.kv_elements_per_token
    return Cost(shape.group * d * blocks_scored, hardware.intensity * d * blocks_read)


def sparse_cost(
    shape: ModelShape,
    hardware: HardwareProfile,
    n: int,
    l_in: int,
    l_out: float,
    kv_budget: int,
    block_size: int | None,
    terms: Terms = PONDER_TERMS,
    as_coded: bool = False,
) -> Cost:
    """Each sample attends to at most B tokens per step, which makes attention linear in L_out.

    Every sample's selection is its own, so the selected prompt KV is read per sample (the paper's code, which
    notes sharing is possible for long prompts but does not model it). block_size None is oracle top-k, costed
    with zero selection overhead; a block size adds block top-k's search. `as_coded`: see `attended_pairs`.
    """
    if as_coded and block_size is not None:
        raise ValueError("as_coded reproduces the code's oracle top-k, which has no block size")
    pairs = attended_pairs(n, l_in, l_out, kv_budget, as_coded)
    cost = _common(shape, hardware, n, l_in, l_out, terms) + _attention(shape, hardware, pairs, pairs)
    if block_size is not None:
        cost += search_cost(shape, hardware, n, l_in, l_out, block_size)
    return cost


def request_cost(
    shape: ModelShape,
    hardware: HardwareProfile,
    n: int,
    l_in: int,
    l_out: float,
    kv_budget: int | None = None,
    block_size: int | None = None,
    terms: Terms = PONDER_TERMS,
) -> Cost:
    """N samples of L_out tokens each; kv_budget None is dense attention."""
    if kv_budget is None:
        return dense_cost(shape, hardware, n, l_in, l_out, terms)
    return sparse_cost(shape, hardware, n, l_in, l_out, kv_budget, block_size, terms)


def expected_cost(
    shape: ModelShape,
    hardware: HardwareProfile,
    n: int,
    l_in: int,
    lengths: Sequence[float],
    kv_budget: int | None = None,
    block_size: int | None = None,
    terms: Terms = PONDER_TERMS,
) -> Cost:
    """The paper's `expected_cost`: the cost of N samples at each observed length, averaged over the lengths.

    Terms carried by every sample (linear layers, own tokens, sparse reads) come out as their exact sum; terms paid
    once per step for the whole batch (the shared prompt's reads, weights) are counted over the mean length rather
    than the longest sample's, the code's convention.
    """
    if not lengths:
        raise ValueError("expected_cost needs at least one length")
    costs = [request_cost(shape, hardware, n, l_in, length, kv_budget, block_size, terms) for length in lengths]
    return Cost(math.fsum(c.compute for c in costs) / len(costs), math.fsum(c.memory for c in costs) / len(costs))


def realised_cost(
    shape: ModelShape,
    hardware: HardwareProfile,
    l_in: int,
    lengths: Sequence[int],
    kv_budget: int | None = None,
    block_size: int | None = None,
    terms: Terms = PONDER_TERMS,
    prefilled: int | None = None,
) -> Cost:
    """A finished request, one generated length per sample, priced as the paper prices its traces, so a response's
    reported eFLOPs and the plan's prediction are in the same currency. Each length is at most the cap, so this
    never exceeds the cost the plan was checked against. `prefilled`: the prompt tokens the engine computed, when
    its prefix cache held the others (a probe or a scoring pass extending an earlier prompt)."""
    cost = expected_cost(shape, hardware, len(lengths), l_in, lengths, kv_budget, block_size, terms)
    if terms.prefill and prefilled is not None:
        full, done = prefill_cost(shape, l_in), prefill_cost(shape, l_in, prefilled)
        cost = Cost(cost.compute - full.compute + done.compute, cost.memory)
    return cost


def max_length(
    shape: ModelShape,
    hardware: HardwareProfile,
    budget_eflops: float,
    n: int,
    l_in: int,
    kv_budget: int | None = None,
    block_size: int | None = None,
    terms: Terms = PONDER_TERMS,
) -> int:
    """The longest L_out (at most the context left after the prompt) whose cost fits the budget; 0 if none does."""
    limit = max(0, shape.max_context - l_in)

    def cost(length: int) -> float:
        return request_cost(shape, hardware, n, l_in, length, kv_budget, block_size, terms).total

    if kv_budget is None:
        guess = _dense_root(shape, hardware, budget_eflops, n, l_in, terms)
        return _settle(cost, budget_eflops, min(limit, guess), limit)
    return _bisect(cost, budget_eflops, limit)


def _dense_root(shape: ModelShape, hardware: HardwareProfile, budget_eflops: float, n: int, l_in: int, terms: Terms) -> int:
    """The dense cost is c0 + a*L + c*L^2 with every term on, so the note's closed form still holds."""
    d, r, i = shape.kv_elements_per_token, shape.group, hardware.intensity
    c0 = 2 * shape.params * l_in + r * d * l_in**2 if terms.prefill else 0.0
    a = n * 2 * shape.params + n * r * d * 2 * l_in + i * d * 2 * l_in
    if terms.weights:
        a += i * WEIGHT_BYTES * shape.params
    c = n * d * (r + i)
    room = budget_eflops - c0
    if room < 0:
        return 0
    root = (-a + math.sqrt(a * a + 4 * c * room)) / (2 * c)
    # A budget near the float range overflows the discriminant; it buys the whole context, which the caller caps to.
    return math.floor(root) if math.isfinite(root) else shape.max_context


def _settle(cost: Callable[[int], float], budget: float, guess: int, limit: int) -> int:
    """Floating-point error can put the closed form one token off; step to the exact integer answer."""
    length = max(0, guess)
    while length > 0 and cost(length) > budget:
        length -= 1
    while length < limit and cost(length + 1) <= budget:
        length += 1
    return length


def _bisect(cost: Callable[[int], float], budget: float, limit: int) -> int:
    """Largest L in [0, limit] with cost(L) <= budget, for any cost non-decreasing in L."""
    if cost(limit) <= budget:
        return limit
    low, high = 0, limit
    while high - low > 1:
        middle = (low + high) // 2
        if cost(middle) <= budget:
            low = middle
        else:
            high = middle
    return low
