"""Scores of one completion from its token log-probabilities, for best-of-N and weighted voting without a reward
model: the mean log-probability of the sampled tokens, and self-certainty (Kang et al. 2025)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from compute.protocol import TokenLogprob

_MIN_REMAINING_MASS = 1e-12
"""The engine's float32 log-softmax cannot resolve a smaller tail: top-k masses summing to 1 or a hair over it
mean "almost nothing left", not "nothing left", which would put log(0) into the divergence."""
_MIN_LOGPROB = -1e4
"""A masked token's -inf would make the divergence infinite; this keeps it finite and still overwhelming."""


def mean_logprob(tokens: Sequence[TokenLogprob]) -> float | None:
    """The length-normalised likelihood: a sum would favour short completions. None without tokens."""
    if not tokens:
        return None
    return sum(t.logprob for t in tokens) / len(tokens)


def self_certainty(tokens: Sequence[TokenLogprob], vocab_size: int) -> float | None:
    """Self-certainty (Kang et al. 2025, "Scalable Best-of-N Selection for Large Language Models via
    Self-Certainty"): the mean over tokens of KL(U || p) = -(1/V) Σ_j log(V · p_j), how far each next-token
    distribution is from uniform. Higher is more certain; a uniform distribution scores 0.

    The engine returns only the top-k of p (plus the sampled token, used when it is not among them). The rest of
    the vocabulary is estimated by spreading the remaining mass 1 - Σ_known p_j evenly over the other V - k
    tokens, the remaining mass floored at a tiny positive value. Tokens without top-k alternatives say nothing
    about their distribution and are skipped; None when no token has them. A `vocab_size` below k is taken as k.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    divergences = []
    for t in tokens:
        if not t.top:
            continue
        logprobs = [lp for _, lp in t.top]
        if t.token not in {tok for tok, _ in t.top}:
            logprobs.append(t.logprob)
        logprobs = [max(lp, _MIN_LOGPROB) for lp in logprobs]
        known = len(logprobs)
        vocab = max(vocab_size, known)
        log_vocab = math.log(vocab)
        total = math.fsum(log_vocab + lp for lp in logprobs)
        if unknown := vocab - known:
            remaining = max(1.0 - math.fsum(math.exp(lp) for lp in logprobs), _MIN_REMAINING_MASS)
            total += unknown * math.log(vocab * remaining / unknown)
        divergences.append(-total / vocab)
    if not divergences:
        return None
    return math.fsum(divergences) / len(divergences)


def token_confidences(tokens: Sequence[TokenLogprob]) -> list[float]:
    """DeepConf's token confidence (Fu et al. 2025, "Deep Think with Confidence"): C_i = -(1/k) Σ_j log P_i(j) over
    the top-k candidates the engine returned at position i. A peaked distribution puts little mass on the other k-1,
    so their log-probabilities are very negative and C_i is high. Positions without top-k alternatives are skipped."""
    return [-math.fsum(max(lp, _MIN_LOGPROB) for _, lp in t.top) / len(t.top) for t in tokens if t.top]


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """Mean token confidence over every window of `window` consecutive tokens (one group when the trace is shorter)."""
    if not confidences:
        return []
    if len(confidences) <= window:
        return [math.fsum(confidences) / len(confidences)]
    sums = [0.0]
    for c in confidences:
        sums.append(sums[-1] + c)
    return [(sums[i + window] - sums[i]) / window for i in range(len(confidences) - window + 1)]


def trace_confidence(tokens: Sequence[TokenLogprob], window: int, measure: str) -> float | None:
    """One number per trace, by the paper's measures: `mean` (average trace confidence), `lowest_group` (its least
    confident window, what online stopping watches), `bottom10` (mean of its lowest 10% of windows), `tail` (mean
    over its last `window` tokens, where the answer is written). None without top-k log-probabilities."""
    confidences = token_confidences(tokens)
    if not confidences:
        return None
    if measure == "mean":
        return math.fsum(confidences) / len(confidences)
    if measure == "tail":
        tail = confidences[-window:]
        return math.fsum(tail) / len(tail)
    groups = group_confidences(confidences, window)
    if measure == "lowest_group":
        return min(groups)
    if measure == "bottom10":
        lowest = sorted(groups)[: max(1, math.ceil(len(groups) / 10))]
        return math.fsum(lowest) / len(lowest)
    raise ValueError(f"unknown confidence measure {measure!r}")
