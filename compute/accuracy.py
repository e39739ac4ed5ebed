"""What a Kinetics configuration (n samples, a token cap, a KV budget) is predicted to score, for the allocator
(compute/allocator.py): the paper's rules of thumb as a prior, moved by a table of observed answers.

Prior, the paper's rules of thumb as a score (no observations):
    complete(cap) = P(natural length <= cap)      the profile's CDF; log-uniform over [1, limit] without one
    kept(B)       = min(1, B / (L_in + mean natural length)) ** 0.05               1 for dense
    one           = 0.5 * complete(cap) * kept(B)                the chance one sample is right
    prior         = 1 - (1 - one) ** sqrt(n)                     samples of one question are correlated

Table (observations of n, cap, B and whether the answer was right):
    g(c)        = sigmoid(logit(prior(c)) + shift)   shift moves the prior to the table's pooled accuracy
    post(c)     = (right_c + 2*g(c)) / (tries_c + 2)   Beta posterior mean of an observed cell
    accuracy(q) = clip(g(q), max post(c) over observed c <= q, min post*(c) over observed c >= q)
    c <= q: no more samples, no longer cap, no larger KV budget (dense is the largest);
    post*(c) = max post over observed cells <= c, so the estimate is monotone in all three.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

ONE_SAMPLE_RIGHT = 0.5
KV_EXPONENT = 0.05
SAMPLE_EXPONENT = 0.5
PRIOR_STRENGTH = 2.0
EPSILON = 1e-6


@dataclass(frozen=True)
class Cell:
    n: int
    max_tokens: int
    kv_budget: int | None

    def within(self, other: Cell) -> bool:
        """A configuration inside another (fewer samples, shorter cap, less KV) is never expected to do better."""
        return self.n <= other.n and self.max_tokens <= other.max_tokens and kv_rank(self.kv_budget) <= kv_rank(other.kv_budget)


def kv_rank(kv_budget: int | None) -> float:
    return math.inf if kv_budget is None else kv_budget


@dataclass(frozen=True)
class Observation:
    """One answer judged at a configuration: a benchmark result row, or a ledger entry with feedback."""

    n: int
    max_tokens: int
    kv_budget: int | None
    correct: bool


@dataclass(frozen=True)
class Prior:
    """The paper's rules of thumb as an accuracy score, for cells no observation speaks for.

    Length first: a sample cut off before its natural length is wrong, so N only multiplies the chance of samples
    that complete; past the natural length only N helps. sqrt(n) effective tries, because samples of one question
    share its difficulty, and gains from N saturate. Tokens over KV: the sparse Best-of-N frontier grows the KV
    budget ~C^0.24 while tokens grow ~C^0.8, so a log-unit of B is worth 0.24/0.8 = 0.3 log-units of tokens; a
    log-unit of cap raises log-uniform completion by 1/ln(cap) ~ 0.15 of itself, hence 0.3 * 0.15 ~ 0.05 as the
    exponent on the kept fraction of the context (mild, as the paper finds block top-k at B = 1024 close to dense).
    Never sliding-window-only: no such candidate exists.
    """

    l_in: int
    limit: int
    lengths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", tuple(sorted(self.lengths)))

    def __call__(self, cell: Cell) -> float:
        one = ONE_SAMPLE_RIGHT * self.complete(cell.max_tokens) * self.kept(cell.kv_budget)
        return float(1 - (1 - one) ** (cell.n**SAMPLE_EXPONENT))

    def complete(self, cap: int) -> float:
        if self.lengths:
            return float(bisect_right(self.lengths, cap) / len(self.lengths))
        if self.limit <= 1:
            return 1.0
        return min(1.0, math.log(max(cap, 1)) / math.log(self.limit))

    def kept(self, kv_budget: int | None) -> float:
        if kv_budget is None:
            return 1.0
        return float(min(1.0, kv_budget / (self.l_in + self.natural_length())) ** KV_EXPONENT)

    def natural_length(self) -> float:
        if self.lengths:
            return sum(self.lengths) / len(self.lengths)
        if self.limit <= 1:
            return float(self.limit)
        return (self.limit - 1) / math.log(self.limit)


class AccuracyModel(Protocol):
    def predictor(self, prior: Prior) -> Callable[[Cell], float]: ...


class AccuracyTable:
    """Accuracy of (n, max_tokens, kv_budget) for one model and task family, from benchmark rows and feedback.

    The prior is per request (it knows the prompt length), the observations are not, so the table turns a prior
    into a predictor. Observed cells get a Beta posterior centred on the calibrated prior; empty cells take the
    calibrated prior, kept between what the cells inside and around them showed, which also makes the estimate
    monotone in N, cap and KV budget: a larger configuration measured worse than a smaller one ties with it, and
    the allocator's cost tie-break then picks the smaller.
    """

    def __init__(self, observations: Iterable[Observation] = (), strength: float = PRIOR_STRENGTH) -> None:
        tallies: dict[Cell, tuple[int, int]] = {}
        for o in observations:
            cell = Cell(o.n, o.max_tokens, o.kv_budget)
            right, tries = tallies.get(cell, (0, 0))
            tallies[cell] = (right + int(o.correct), tries + 1)
        self.tallies = tallies
        self.strength = strength

    def __len__(self) -> int:
        return sum(tries for _, tries in self.tallies.values())

    def predictor(self, prior: Prior) -> Callable[[Cell], float]:
        if not self.tallies:
            return prior
        shift = self._shift(prior)

        def calibrated(cell: Cell) -> float:
            return _sigmoid(_logit(prior(cell)) + shift)

        posterior = {cell: (right + self.strength * calibrated(cell)) / (tries + self.strength) for cell, (right, tries) in self.tallies.items()}
        monotone = {cell: max(p for c, p in posterior.items() if c.within(cell)) for cell in posterior}

        def predict(cell: Cell) -> float:
            low = max((p for c, p in posterior.items() if c.within(cell)), default=0.0)
            high = min((p for c, p in monotone.items() if cell.within(c)), default=1.0)
            return min(max(calibrated(cell), low), high)

        return predict

    def _shift(self, prior: Prior) -> float:
        """One logit shift, so cells beyond the data start from the level the data shows, not the prior's guess."""
        right = sum(r for r, _ in self.tallies.values())
        tries = len(self)
        expected = sum(t * prior(cell) for cell, (_, t) in self.tallies.items()) / tries
        return _logit((right + 0.5) / (tries + 1)) - _logit(expected)


def _logit(p: float) -> float:
    p = min(max(p, EPSILON), 1 - EPSILON)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))
