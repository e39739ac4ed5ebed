"""Majority voting (self-consistency; Wang et al. 2023, and the `majority` baseline of Snell et al. 2024).

    sample N solutions at temperature T            (one engine request: the N share the prompt's KV cache)
    a_i = final answer of solution i                (boxed, "the answer is", "Answer:", last number)
    group the a_i by mathematical equivalence       (math-verify, not string equality)
    return a solution of the group with the most votes (optionally each vote weighted by a score)

Answers are what the request asked for (strategies/ballots.py): free text as above, JSON held to `response_format`
(its canonical form, or the field `vote_on` names), or tool calls (the functions called vote first, then the calls
with their arguments).

With `early_stop` (strategies/stopping.py): `adaptive` draws the N samples in batches until the leading answer's
posterior passes a threshold (adaptive self-consistency); `deepconf` lets only the most confident traces vote,
weighted by their confidence, and online stops the others mid-trace (DeepConf); `probe` stops each rollout once its
certainty probes agree on an answer (Dynasor-CoT). With `rollout: {strategy}` each of the N samples is a whole run of
that strategy and its chosen answer votes (majority over ATTS samples).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from strategies.ballots import Ballots
from strategies.base import Candidate, Context, StrategyInputError, StrategyResult, Task, usable
from strategies.stopping import DeepConfStop, EarlyStop, ProbeStop, confident_voters, draw
from strategies.voting import TOP_LOGPROBS, Weight, representative, score_candidates
from verifiers.structured import pointer_tokens

if TYPE_CHECKING:
    from strategies.registry import StrategyParams  # resolved when the registry rebuilds these models

# search-and-learn's defaults (Snell et al.'s open reproduction): N = 4, temperature 0.8, top_p 1.0.
DEFAULT_N = 4
DEFAULT_TEMPERATURE = 0.8
MAX_SAMPLES = 64
PLANNERS = ("kinetics", "auto")


class SamplingKnobs(BaseModel):
    """The knobs every sampling strategy shares."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(DEFAULT_N, ge=1, le=MAX_SAMPLES, description="solutions sampled")
    temperature: float | None = Field(None, gt=0.0, le=2.0, description="default: the request's, else 0.8")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="default: the request's, else 1.0")


class VotingKnobs(SamplingKnobs):
    """The sampling strategies whose N samples may stop early, or be runs of another strategy (majority, best-of-N)."""

    rollout: StrategyParams | None = Field(
        None, description="each sample is a whole run of this strategy (majority over ATTS samples): its chosen answer is the sample"
    )

    early_stop: EarlyStop | None = Field(
        None,
        description="adaptive: draw in batches until the vote is confident (max_n caps, not n); deepconf: confidence-filtered, "
        "weighted vote, online also stopping low-confidence traces; probe: stop a rollout once its certainty probes agree",
    )

    @model_validator(mode="after")
    def _composable(self) -> VotingKnobs:
        if self.rollout is None:
            return self
        if self.rollout.name == "none":
            raise ValueError("rollout must be a strategy (leave it out for plain samples)")
        if self.rollout.name in PLANNERS:
            raise ValueError(f"{self.rollout.name} plans the whole request's budget, so it cannot be one of its rollouts")
        if isinstance(self.early_stop, DeepConfStop | ProbeStop):
            raise ValueError(
                f"early_stop {self.early_stop.name} watches one sampled trace's tokens, and a composed rollout is a whole strategy run: use adaptive or none"
            )
        return self


def sampling_of(ctx: Context, knobs: SamplingKnobs, logprobs: int) -> dict[str, Any]:
    return {
        "temperature": knobs.temperature or ctx.task.temperature or DEFAULT_TEMPERATURE,
        "top_p": knobs.top_p or ctx.task.top_p or 1.0,
        "logprobs": logprobs,
    }


class MajorityParams(VotingKnobs):
    name: Literal["majority"] = "majority"
    weight: Weight = Field("none", description="weight each vote by a score (weighted self-consistency)")
    vote_on: str | None = Field(
        None,
        max_length=512,
        description="with a JSON response_format: the JSON pointer (RFC 6901) of the value that votes, e.g. /answer "
        "(default: the whole document, in canonical form)",
    )

    @field_validator("vote_on")
    @classmethod
    def _a_json_pointer(cls, value: str | None) -> str | None:
        if value is not None:
            pointer_tokens(value)
        return value

    @model_validator(mode="after")
    def _weight_of_composed(self) -> MajorityParams:
        if self.rollout is not None and self.weight != "none":
            raise ValueError("weight scores one sampled trace; the answers of composed rollouts vote unweighted")
        return self


def check(task: Task, params: MajorityParams) -> None:
    if params.vote_on is not None and task.answer_format.kind != "json":
        raise StrategyInputError("vote_on names a field of a JSON answer: it needs response_format json_object or json_schema", "strategy.vote_on")


async def majority(ctx: Context, params: MajorityParams) -> StrategyResult:
    rule = params.early_stop
    deepconf = rule if isinstance(rule, DeepConfStop) else None
    ballots = Ballots.of(ctx.task, params.vote_on)
    sampling = sampling_of(ctx, params, TOP_LOGPROBS["confidence" if deepconf else params.weight])
    drawn = await draw(ctx, rule, params.n, sampling, params.rollout, ballots)
    candidates = [Candidate(r, answer=ballots.answer(r.text)) for r in drawn.rollouts]
    score_candidates(candidates, ctx.codec.vocab_size, *((deepconf.window, deepconf.measure) if deepconf else ()))
    voters, weight = usable(candidates), params.weight
    if deepconf:
        voters, weight = confident_voters(voters, deepconf, drawn.threshold), "confidence"
        drawn.report = {**(drawn.report or {}), "voters": [c.index for c in voters], "filtered_out": len(candidates) - len(voters)}
    tally, report = await ballots.count(ctx, voters, weight)
    ctx.emit({"type": "tally", **report})
    chosen = representative(voters, tally.winner) or (voters[0] if voters else None)
    selection = {"method": "majority", "weight": weight, **report}
    if drawn.report is not None:
        selection["early_stop"] = drawn.report
    if drawn.composed is not None:
        selection["composed"] = drawn.composed
    return StrategyResult(candidates, chosen, selection)
