"""Spending less for the same vote: the stopping rules a sampling strategy (majority, best_of_n) may take as its
`early_stop`. `draw` runs the rule over the N samples; each rule reads as its paper's loop.

Adaptive self-consistency (Aggarwal et al. 2023, "Let's Sample Step by Step"):

    repeat:
        draw `batch` more samples, add their answers to the vote
        v1, v2 <- votes of the leading answer and of the runner-up
        P(leader is the majority) ~= P(p1 > p2), (p1, p2) ~ Dirichlet posterior of the two, i.e. P(X > 1/2), X ~ Beta(v1 + 1, v2 + 1)
    until that probability >= `confidence`, or `max_n` samples are drawn

The paper's Beta stopping criterion, with its uniform prior; a first batch always runs whole, so no decision rests on
fewer than `batch` samples.

DeepConf (Fu et al. 2025, "Deep Think with Confidence"), offline: every trace gets a confidence from its top-k token
log-probabilities (verifiers/scores.py: mean, lowest sliding-window group, bottom 10% of groups, or tail), only the
`keep_top` most confident share of traces vote, each vote weighted by its confidence:

    C_t = measure(group confidences of trace t)          group = mean token confidence over `window` tokens
    keep the top keep_top x N traces by C_t             0.1: DeepConf-low; 0.9: DeepConf-high
    answer = argmax_a  sum over kept t with answer a of C_t

Online: `warmup` traces run whole and set a threshold s (the (1 - keep_top) quantile of their lowest group
confidences); every later trace is aborted in the engine once its latest window's confidence drops below s, and
the vote is over the traces whose lowest group confidence clears s (warm-up ones included), weighted as offline.

Dynasor-CoT certainty probes (Fu et al., Hao AI Lab, arXiv 2412.20993):

    for each rollout, as it streams:
        every `every` tokens t:  probe_t <- greedy continuation (<= probe_tokens) of prompt + rollout[:t] + PROBE
        if the last `agree` probes' answers are equivalent and none hedges: stop the rollout, its answer = theirs

PROBE is the released code's "... Oh, I suddenly got the answer to the whole problem, **Final Answer** \\[ \\boxed{"
and a probe's answer what it writes up to its first unpaired closing brace, as the code takes it. A probe hedges when
it leaves the box unclosed or its answer holds one of the code's uncertain words (wait, hold, but, okay, no, hmm):
the code looks for them as substrings of the whole probe reply ("no" in "know"), we as words of the answer, since
what a probe writes after closing its box is not its answer. Probes are greedy (the code samples them at the trace's
temperature): what is measured is an answer's stability across prefixes, not sampling noise. A probe runs beside its
rollout, never stalling it: the rollout is stopped at its next output after the deciding probe returns. Probes
extend the rollout's own prefix, so they read it from the prefix cache.

Saved tokens are estimated against the mean length of the rollouts that ran to the end (the request's cap when none
did).
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.stats import beta

from strategies.ballots import Ballots
from strategies.base import EARLY_STOP, NO_ANSWER, Candidate, Context, Rollout
from verifiers.scores import token_confidences, trace_confidence

PROBE = "... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\[ \\boxed{"
UNCERTAIN = re.compile(r"\b(wait|hold|but|okay|no|hmm)\b", re.IGNORECASE)
ANSWERED = "answered"
"""A rollout its probes stopped: its answer is theirs, so unlike a cut-short one it votes."""


class AdaptiveStop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["adaptive"] = "adaptive"
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="stop once P(leader is the majority) reaches this")
    batch: int = Field(4, ge=1, le=64, description="samples drawn per step (one engine request)")
    max_n: int = Field(32, ge=1, le=256, description="never draw more than this")

    @model_validator(mode="after")
    def _batch_within_cap(self) -> AdaptiveStop:
        if self.batch > self.max_n:
            raise ValueError("batch may not exceed max_n")
        return self


class DeepConfStop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["deepconf"] = "deepconf"
    mode: Literal["offline", "online"] = Field("offline", description="filter finished traces, or stop traces as they fall below a threshold")
    warmup: int = Field(16, ge=1, le=256, description="online: traces run whole to set the threshold (N_init)")
    window: int = Field(256, ge=8, le=8192, description="tokens per group confidence")
    keep_top: float = Field(0.1, gt=0.0, le=1.0, description="share of the most confident traces that vote (0.1: DeepConf-low, 0.9: -high)")
    measure: Literal["lowest_group", "bottom10", "tail", "mean"] = Field("lowest_group", description="offline: how a trace's confidence is summed up")


class ProbeStop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["probe"] = "probe"
    every: int = Field(64, ge=4, le=4096, description="tokens between probes (Dynasor's chunk size)")
    agree: int = Field(3, ge=2, le=16, description="consecutive equivalent, unhedged probe answers that stop a rollout")
    probe_tokens: int = Field(20, ge=1, le=256, description="tokens a probe may write to close its box")


EarlyStop = Annotated[AdaptiveStop | DeepConfStop | ProbeStop, Field(discriminator="name")]


@dataclass
class Drawn:
    rollouts: list[Rollout]
    report: dict[str, Any] | None = None
    threshold: float | None = None
    """DeepConf online's learned confidence threshold."""
    composed: list[dict[str, Any]] | None = None
    """Per sample, the run of the strategy that produced it (when the rollout is a strategy)."""


Sampler = Callable[[int], Awaitable[list[Rollout]]]


async def draw(ctx: Context, rule: EarlyStop | None, n: int, sampling: dict[str, Any], rollout: BaseModel | None = None, ballots: Ballots = Ballots()) -> Drawn:
    """The samples of a sampling strategy under its stopping rule (DeepConf offline changes only who votes): engine
    samples, or, when `rollout` is a strategy, that many runs of it, each contributing its chosen answer. `ballots`:
    what the samples vote for, where the rule reads the vote (adaptive)."""
    composed: list[dict[str, Any]] = []
    sample: Sampler = (lambda k: strategy_runs(ctx, rollout, k, composed)) if rollout is not None else (lambda k: ctx.generate(k, **sampling))
    if isinstance(rule, AdaptiveStop):
        drawn = await draw_until_confident(ctx, rule, sample, ballots)
    elif isinstance(rule, DeepConfStop) and rule.mode == "online":
        drawn = await think_online(ctx, rule, n, sampling)
    elif isinstance(rule, ProbeStop):
        drawn = await probe_rollouts(ctx, rule, n, sampling)
    else:
        drawn = Drawn(await sample(n), rule.model_dump() if rule else None)
    if rollout is not None:
        drawn.composed = [{**c, "index": i} for i, c in enumerate(composed)]
    return drawn


async def strategy_runs(ctx: Context, strategy: BaseModel, k: int, reports: list[dict[str, Any]]) -> list[Rollout]:
    """`k` concurrent runs of a strategy on the task, each one sample: its chosen candidate (an empty, cut-short one
    when the budget ended the run before it chose)."""
    results = await asyncio.gather(*(ctx.run(strategy) for _ in range(k)))
    out = []
    for i, result in enumerate(results):
        chosen = result.chosen.rollout if result.chosen else None
        out.append(replace(chosen, index=i) if chosen else Rollout(i, "", [], [], ctx.exhausted or NO_ANSWER))
        reports.append({"candidates": len(result.candidates), "chosen": result.chosen.index if result.chosen else None, "selection": result.selection})
    return out


def confident_voters(voters: list[Candidate], rule: DeepConfStop, threshold: float | None) -> list[Candidate]:
    """DeepConf's filter: online, the traces whose lowest group clears the threshold; offline, the top `keep_top`."""
    if threshold is None:
        return most_confident(voters, rule.keep_top)
    return [c for c in voters if (low := lowest_group(c.rollout.logprobs, rule.window)) is not None and low >= threshold] or voters


async def draw_until_confident(ctx: Context, rule: AdaptiveStop, sample: Sampler, ballots: Ballots) -> Drawn:
    """Adaptive self-consistency: a batch per engine request until the leader's posterior passes `confidence`."""
    rollouts: list[Rollout] = []
    groups: list[int | None] = []
    steps: list[dict[str, Any]] = []
    while (k := next_batch(rule, groups)) > 0:
        batch = await sample(k)
        if not batch:
            break
        rollouts += [replace(r, index=len(rollouts) + i) for i, r in enumerate(batch)]
        groups = await ballots.groups_of(ctx, [None if r.cut_short else r.text for r in rollouts])
        steps.append({"drawn": len(rollouts), "leader_probability": round(leader_probability(groups), 4)})
        ctx.emit({"type": "adaptive", **steps[-1]})
    confident = bool(steps) and steps[-1]["leader_probability"] >= rule.confidence
    stopped = "confident" if confident else ("max_n" if len(rollouts) >= rule.max_n else "budget")
    return Drawn(rollouts, {**rule.model_dump(), "drawn": len(rollouts), "steps": steps, "stopped": stopped, "saved_samples": rule.max_n - len(rollouts)})


def lowest_group(tokens: Sequence[Any], window: int) -> float | None:
    return trace_confidence(tokens, window, "lowest_group")


async def think_online(ctx: Context, rule: DeepConfStop, n: int, sampling: dict[str, Any]) -> Drawn:
    """DeepConf online: `warmup` traces run whole; the threshold s is the (1 - keep_top) quantile of their lowest
    group confidences; the other n - warmup traces are each watched as they grow and aborted in the engine the
    moment their latest `window` tokens' confidence falls below s."""
    warm = await ctx.generate(rule.warmup, stage="warmup", **sampling)
    lowest = [c for r in warm if not r.cut_short and (c := lowest_group(r.logprobs, rule.window)) is not None]
    threshold = float(np.quantile(lowest, 1.0 - rule.keep_top)) if lowest else None
    report: dict[str, Any] = {**rule.model_dump(), "threshold": threshold, "warmup_traces": len(warm)}
    if threshold is None or n <= rule.warmup:
        return Drawn(warm, {**report, "stopped": [], "saved_tokens": 0}, threshold)

    def watch(index: int, trace: Any) -> str | None:
        if len(trace.logprobs) < rule.window:
            return None
        latest = token_confidences(trace.logprobs[-rule.window :])
        return EARLY_STOP if latest and math.fsum(latest) / len(latest) < threshold else None

    rest = await ctx.generate(n - rule.warmup, watch=watch, **sampling)
    traces = warm + [replace(r, index=len(warm) + i) for i, r in enumerate(rest)]
    stopped = [r for r in traces if r.finish_reason == EARLY_STOP]
    for r in stopped:
        ctx.emit({"type": "early_stop", "index": r.index, "tokens": len(r.token_ids), "reason": "confidence below threshold"})
    report.update(stopped=[{"index": r.index, "tokens": len(r.token_ids)} for r in stopped], saved_tokens=saved_tokens(traces, stopped, ctx.task.max_tokens))
    return Drawn(traces, report, threshold)


@dataclass
class Probe:
    at: int
    answer: str | None
    hedged: bool

    def report(self) -> dict[str, Any]:
        return {"at": self.at, "answer": self.answer, "hedged": self.hedged}


@dataclass
class Prober:
    """The probes of one request's rollouts: launched by the watch as each rollout passes a multiple of `every`
    tokens, decided as they return."""

    ctx: Context
    rule: ProbeStop
    prompt: list[int]
    suffix: list[int]
    probes: dict[int, dict[int, Probe]] = field(default_factory=dict)
    agreed: dict[int, Probe] = field(default_factory=dict)
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    _next: dict[int, int] = field(default_factory=dict)

    def watch(self, index: int, trace: Any) -> str | None:
        if index in self.agreed:
            return ANSWERED
        at = self._next.get(index, self.rule.every)
        while len(trace.token_ids) >= at:
            task = asyncio.create_task(self._probe(index, at, list(trace.token_ids[:at])))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            at += self.rule.every
        self._next[index] = at
        return None

    async def _probe(self, index: int, at: int, prefix: list[int]) -> None:
        out = await self.ctx.generate(1, temperature=0.0, max_tokens=self.rule.probe_tokens, prompt=self.prompt + prefix + self.suffix, stage="probe")
        if not out:
            return
        answer = probe_answer(out[0].text)
        probe = Probe(at, answer, answer is None or UNCERTAIN.search(answer) is not None)
        self.probes.setdefault(index, {})[at] = probe
        self.ctx.emit({"type": "probe", "index": index, **probe.report()})
        await self._decide(index, at)

    async def _decide(self, index: int, at: int) -> None:
        """Any run of `agree` consecutive probe points that includes the new one may decide."""
        mine = self.probes[index]
        span = (self.rule.agree - 1) * self.rule.every
        for start in range(max(at - span, self.rule.every), at + 1, self.rule.every):
            run = [mine.get(start + k * self.rule.every) for k in range(self.rule.agree)]
            if index in self.agreed or any(p is None or p.hedged for p in run):
                continue
            groups = await self.ctx.verifiers.group([p.answer for p in run if p is not None])
            if len(set(groups)) == 1 and groups[0] is not None:
                self.agreed[index] = max((p for p in run if p is not None), key=lambda p: p.at)
                return

    async def close(self) -> None:
        """Probes still running when their rollouts are done can no longer stop anything: abort them."""
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)


async def probe_rollouts(ctx: Context, rule: ProbeStop, n: int, sampling: dict[str, Any]) -> Drawn:
    """Dynasor-CoT: each rollout is probed as it grows and stopped once `agree` consecutive probes agree; a stopped
    rollout's text ends with the probe's closed box, so that it votes with the answer its probes agreed on."""
    prober = Prober(ctx, rule, await ctx.codec.tokens(), await ctx.codec.tokens(text=PROBE))
    try:
        rollouts = await ctx.generate(n, watch=prober.watch, **sampling)
    finally:
        await prober.close()
    answered = [r for r in rollouts if r.finish_reason == ANSWERED]
    rollouts = [replace(r, text=f"{r.text}{PROBE}{prober.agreed[r.index].answer}}}") if r.finish_reason == ANSWERED else r for r in rollouts]
    for r in answered:
        ctx.emit({"type": "early_stop", "index": r.index, "tokens": len(r.token_ids), "reason": f"{rule.agree} probes agreed"})
    return Drawn(
        rollouts,
        {
            **rule.model_dump(),
            "rollouts": [
                {
                    "index": r.index,
                    "tokens": len(r.token_ids),
                    "stopped": r.finish_reason == ANSWERED,
                    "probes": [p.report() for _, p in sorted(prober.probes.get(r.index, {}).items())],
                }
                for r in rollouts
            ],
            "stopped": [{"index": r.index, "tokens": len(r.token_ids), "answer": prober.agreed[r.index].answer} for r in answered],
            "saved_tokens": saved_tokens(rollouts, answered, ctx.task.max_tokens),
        },
    )


def probe_answer(reply: str) -> str | None:
    """What the probe wrote inside the box it was handed: up to its first unpaired closing brace (None if it never
    closed it, or left it empty)."""
    depth = 0
    for i, c in enumerate(reply):
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return reply[:i].strip() or None
            depth -= 1
    return None


def saved_tokens(rollouts: Sequence[Rollout], stopped: Sequence[Rollout], cap: int | None) -> int:
    """Tokens the stopped rollouts did not write, against the mean length of those that ran to the end (or the cap,
    when none did)."""
    gone = {r.index for r in stopped}
    ran = [len(r.token_ids) for r in rollouts if r.index not in gone and not r.cut_short]
    typical = statistics.mean(ran) if ran else float(cap or 0)
    return round(sum(max(typical - len(r.token_ids), 0.0) for r in stopped))


def most_confident(candidates: Sequence[Candidate], keep_top: float) -> list[Candidate]:
    """The top `keep_top` share by confidence (at least one); traces without a confidence only when none has one."""
    scored = sorted((c for c in candidates if "confidence" in c.scores), key=lambda c: (-c.scores["confidence"], c.index))
    if not scored:
        return list(candidates)
    return scored[: max(1, math.ceil(keep_top * len(scored)))]


def leader_probability(groups: Sequence[int | None]) -> float:
    """P(the leading answer group is the majority) from the votes so far; unanswered samples do not vote."""
    counts = Counter(g for g in groups if g is not None).most_common(2)
    if not counts:
        return 0.0
    v1 = counts[0][1]
    v2 = counts[1][1] if len(counts) > 1 else 0
    return float(beta.sf(0.5, v1 + 1, v2 + 1))


def next_batch(rule: AdaptiveStop, groups: Sequence[int | None]) -> int:
    """How many samples to draw next: 0 once the vote is confident enough or the cap is reached."""
    drawn = len(groups)
    if drawn >= rule.max_n:
        return 0
    if drawn >= rule.batch and leader_probability(groups) >= rule.confidence:
        return 0
    return min(rule.batch, rule.max_n - drawn)
