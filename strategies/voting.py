"""Scores and votes shared by the sampling strategies: each candidate's token-probability scores, the tally of
equivalent answers (optionally weighted by a score, as in weighted best-of-N), and a deterministic tie-break."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from strategies.base import Candidate
from verifiers.scores import mean_logprob, self_certainty, trace_confidence

Score = Literal["logprob", "self_certainty"]
Weight = Literal["none", "logprob", "self_certainty", "confidence"]

# Top log-probabilities per token each score needs from the engine: self-certainty estimates the whole
# distribution from its top-k (vLLM's default cap is 20), the mean log-probability only needs the sampled token.
TOP_LOGPROBS: dict[str, int] = {"none": 0, "logprob": 0, "self_certainty": 20, "confidence": 20}


def score_candidates(candidates: Sequence[Candidate], vocab_size: int, window: int = 256, measure: str = "lowest_group") -> None:
    """Every score the candidates' log-probabilities allow; `confidence` is DeepConf's trace confidence."""
    for c in candidates:
        tokens = c.rollout.logprobs
        if (value := mean_logprob(tokens)) is not None:
            c.scores["logprob"] = value
        if (value := self_certainty(tokens, vocab_size)) is not None:
            c.scores["self_certainty"] = value
        if (value := trace_confidence(tokens, window, measure)) is not None:
            c.scores["confidence"] = value


def reward(candidate: Candidate, weight: Weight) -> float:
    """A vote's weight. The mean log-probability becomes the geometric-mean token probability, in (0, 1] like a
    reward model's score; self-certainty (a KL divergence) and DeepConf's confidence are already non-negative."""
    if weight == "none":
        return 1.0
    value = candidate.scores.get(weight)
    if value is None:
        return 0.0
    return math.exp(value) if weight == "logprob" else max(value, 0.0)


def best_by(candidates: Sequence[Candidate], key: str) -> Candidate | None:
    """The highest-scoring candidate; equal scores go to the earlier rollout, so the choice is reproducible."""
    scored = [c for c in candidates if key in c.scores]
    if not scored:
        return None
    return max(scored, key=lambda c: (c.scores[key], -c.index))


@dataclass
class Tally:
    weights: dict[int, float]
    counts: dict[int, int]
    winner: int | None
    tied: list[int]
    tie_break: str | None

    def report(self, candidates: Sequence[Candidate]) -> dict[str, Any]:
        answer = {c.group: c.answer for c in reversed(candidates) if c.group is not None}
        return {
            "tally": [
                {"group": g, "answer": answer[g], "votes": self.counts[g], "weight": round(self.weights[g], 6)}
                for g in sorted(self.weights, key=lambda g: (-self.weights[g], g))
            ],
            "winner": self.winner,
            "tied": self.tied,
            "tie_break": self.tie_break,
        }


def vote(candidates: Sequence[Candidate], weight: Weight = "none", key: Callable[[Candidate], int | None] | None = None) -> Tally:
    """Sums each answer group's votes (`key` gives a candidate's group, by default its `group`). Ties go to more votes
    (when weighted), then the group's most probable member (mean log-probability), then the group seen first; the
    rule that decided is reported."""
    group_of: Callable[[Candidate], int | None] = key or (lambda c: c.group)
    weights: dict[int, float] = {}
    counts: dict[int, int] = {}
    for c in candidates:
        if (g := group_of(c)) is None:
            continue
        weights[g] = weights.get(g, 0.0) + reward(c, weight)
        counts[g] = counts.get(g, 0) + 1
    if not weights:
        return Tally(weights, counts, None, [], None)
    top = max(weights.values())
    tied = sorted(g for g, w in weights.items() if math.isclose(w, top, rel_tol=1e-9, abs_tol=1e-12))
    if len(tied) == 1:
        return Tally(weights, counts, tied[0], [], None)
    rules: list[tuple[str, Callable[[int], float]]] = [
        ("votes", lambda g: counts[g]),
        ("logprob", lambda g: max((c.scores.get("logprob", -math.inf) for c in candidates if group_of(c) == g))),
        ("first_seen", lambda g: -min(c.index for c in candidates if group_of(c) == g)),
    ]
    remaining = tied
    for name, rule in rules:
        best = max(rule(g) for g in remaining)
        remaining = [g for g in remaining if rule(g) == best]
        if len(remaining) == 1:
            return Tally(weights, counts, remaining[0], tied, name)
    return Tally(weights, counts, remaining[0], tied, "first_seen")


def representative(candidates: Sequence[Candidate], group: int | None) -> Candidate | None:
    """The answer returned for a winning group: its most probable member, else its first."""
    members = [c for c in candidates if c.group == group]
    if not members:
        return None
    return max(members, key=lambda c: (c.scores.get("logprob", -math.inf), -c.index))
