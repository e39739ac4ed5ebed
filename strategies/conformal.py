"""ATTS's accept/reject test (Xiong et al., arXiv 2509.15148): a chunk's score is ranked against a calibration pool
of first-turn scores, and the rank alone decides, so no sample needs to see another's score.

    s  = PPL_target(chunk | question, history)         higher: the target finds the chunk less likely
    p  = (#{c in Cal : c >= s} + 1) / (|Cal| + 1)       the conformal p-value, with the finite-sample +1
    reject  iff  p <= alpha                              then the target takes over

If s is exchangeable with the pool, P(reject) <= alpha, and >= alpha - 1/(|Cal| + 1) for continuous scores. The
released code instead rejects when #{c < s}/|Cal| >= 1 - alpha (no +1, strict rank); `rule="percentile"` keeps it.
Only ranks matter, so perplexity, log-perplexity and mean negative log-likelihood decide alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy.stats import binomtest

Rule = Literal["conformal", "percentile"]


def perplexity(logprobs: Sequence[float] | None) -> float:
    """No log-probabilities (an empty chunk, a failed call) score as the worst possible chunk, as the paper's
    calibration script does: such a chunk is never trusted."""
    if not logprobs:
        return math.inf
    mean_nll = -sum(logprobs) / len(logprobs)
    return math.exp(min(mean_nll, 700.0))


def p_value(pool: Sequence[float], score: float) -> float:
    return (sum(1 for c in pool if c >= score) + 1) / (len(pool) + 1)


def rank_fraction(pool: Sequence[float], score: float) -> float:
    return sum(1 for c in pool if c < score) / len(pool) if pool else 0.0


@dataclass(frozen=True)
class Decision:
    score: float
    p: float
    """The conformal p-value; under `percentile`, 1 - the rank fraction (so that small still means reject)."""
    reject: bool


def decide(pool: Sequence[float], score: float, alpha: float, rule: Rule = "conformal") -> Decision:
    if rule == "percentile":
        u = rank_fraction(pool, score)
        return Decision(score, 1.0 - u, bool(pool) and u >= 1.0 - alpha)
    p = p_value(pool, score)
    return Decision(score, p, p <= alpha)


def alpha_for_takeovers(takeovers: int, samples: int, chunks_per_sample: float) -> float:
    """A takeover budget B per request as a rejection rate: each decided chunk is rejected with probability alpha,
    so alpha = B / (expected decided chunks) = B / (samples x mean chunks per sample, as observed on this pool)."""
    return min(1.0, takeovers / max(samples * max(chunks_per_sample, 1.0), 1.0))


def budget_accuracy(takeovers: int, budget: int) -> float:
    """The released code's metric: 1 - |takeovers - B| / B."""
    return 1.0 - abs(takeovers - budget) / budget


def rejection_interval(rejected: int, decided: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Clopper-Pearson interval of the observed rejection rate (None before anything was decided)."""
    if decided == 0:
        return None
    ci = binomtest(rejected, decided).proportion_ci(confidence_level=confidence, method="exact")
    return (round(float(ci.low), 4), round(float(ci.high), 4))
