"""The strategies' one way to an engine: the gateway's `Context` (strategies/base.py). `generate` turns a strategy's
"N samples of the task" into one metered engine request: tokens granted against the request's budget (each
rollout's `max_tokens` capped by what is left, in-flight rollouts aborted when it is spent), the deadline honoured,
the request id on every engine request, and a progress event per finished rollout. Cancelling the strategy's task
cancels the engine requests with it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from compute.cost_model import HardwareProfile
from compute.protocol import SamplingSpec
from service.budget import Budget, Usage
from service.execution.generation import MeteredRun
from service.execution.models import ServedModel
from service.execution.pricing import Priced
from service.planning.accuracy import AccuracyBook, Evidence
from service.state.cache import RequestCache
from strategies.base import CalibrationStore, Codec, Context, Planner, Planning, Rollout, Shared, StrategyResult, Task, UnknownModel, Watch
from strategies.registry import STRATEGIES
from verifiers.answers import AnswerGrouper
from verifiers.code import TestCase, TestReport, run_tests
from verifiers.sandbox import ExecutionResult, Sandbox


@dataclass(frozen=True)
class GatewayVerifiers:
    """The gateway's verifiers as a strategy calls them (`Verifiers`): the app's math-verify grouper and sandbox."""

    answers: AnswerGrouper
    sandbox: Sandbox

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        return await self.answers.group(answers)

    async def run_tests(self, program: str, tests: list[TestCase], entry_point: str | None = None, wall_s: float | None = None) -> TestReport:
        return await run_tests(self.sandbox, program, tests, entry_point, wall_s)

    async def run_program(self, program: str, wall_s: float | None = None) -> ExecutionResult:
        return await self.sandbox.run(program, wall_s=wall_s)

    @property
    def isolation(self) -> str:
        return self.sandbox.isolation


@dataclass
class RequestContext:
    """One request's `Context`. It also plays the roles that sit behind the context (`codec`, `planner`, `shared`)
    itself: a strategy reaches those methods only through the member that names the role."""

    served: ServedModel
    request_id: str
    prompt: list[int]
    task: Task
    budget: Budget
    answers: AnswerGrouper
    sandbox: Sandbox
    cache: RequestCache
    base_sampling: SamplingSpec
    """The request's own sampling (stop strings, seed, penalties, max_tokens, the client's logprobs)."""
    hardware: HardwareProfile
    """Prices compute for strategies that plan it (Kinetics)."""
    messages: list[dict[str, str]] | None = None
    """The chat request's messages (None for a completion): how the prompt is rendered for another served model."""
    calibration: CalibrationStore | None = None
    models: Mapping[str, ServedModel] = field(default_factory=dict)
    """Every model this gateway serves, for strategies that call more than one (ATTS's draft and target)."""
    accuracy: AccuracyBook | None = None
    flush_interval_s: float = 0.0
    on_event: Callable[[dict[str, Any]], None] | None = None
    usage: Usage = field(default_factory=Usage)
    stages: dict[str, Usage] = field(default_factory=dict)
    engine_requests: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)
    """Every progress event with its time since the request started: the record of how the answer was reached."""
    started: float = field(default_factory=time.perf_counter)
    calls: list[Priced] = field(default_factory=list)
    """Every engine call, for the request's compute cost."""
    _seeds: dict[tuple[str, str, tuple[int, ...]], int] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.served.spec.name

    @property
    def verifiers(self) -> GatewayVerifiers:
        return GatewayVerifiers(self.answers, self.sandbox)

    @property
    def codec(self) -> Codec:
        return self

    @property
    def planner(self) -> Planner:
        return self

    @property
    def shared(self) -> Shared:
        return self

    @property
    def vocab_size(self) -> int:
        return self.served.codec.vocab_size

    def _model(self, name: str | None) -> ServedModel:
        if name is None or name == self.served.spec.name:
            return self.served
        served = self.models.get(name)
        if served is None:
            raise UnknownModel(name)
        return served

    @property
    def exhausted(self) -> str | None:
        return self.budget.exhausted

    def context_limit(self, model: str | None = None) -> int:
        info = self._model(model).pool.info
        return info.max_model_len if info is not None else 0

    async def tokens(self, *, messages: list[dict[str, str]] | None = None, text: str | None = None, model: str | None = None) -> list[int]:
        served = self._model(model)
        if messages is not None:
            return await asyncio.to_thread(served.codec.chat, messages)
        if text is not None:
            return await asyncio.to_thread(served.codec.encode_piece, text)
        if served is self.served:
            return list(self.prompt)
        if self.messages is not None:
            return await asyncio.to_thread(served.codec.chat, self.messages)
        return await asyncio.to_thread(served.codec.encode, self.task.text)

    async def generate(
        self,
        n: int,
        *,
        temperature: float,
        top_p: float = 1.0,
        max_tokens: int | None = None,
        logprobs: int | None = None,
        stage: str = "sample",
        messages: list[dict[str, str]] | None = None,
        prompt: list[int] | None = None,
        model: str | None = None,
        watch: Watch | None = None,
    ) -> list[Rollout]:
        if self.budget.exhausted:
            return []
        of_task = prompt is None and messages is None
        if prompt is None:
            prompt = self.prompt if messages is None else await self.tokens(messages=messages, model=model)
        wanted = self.base_sampling.logprobs
        sampling = replace(
            self.base_sampling,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=(cap := min(max_tokens or self.base_sampling.max_tokens, self.base_sampling.max_tokens)),
            min_tokens=min(self.base_sampling.min_tokens, cap),
            logprobs=max(logprobs, wanted or 0) if logprobs is not None else wanted,
            # The request's response_format constrains samples of its own prompt, never a strategy's own prompts.
            structured=self.base_sampling.structured if of_task else None,
            thinking_budget=self.base_sampling.thinking_budget if of_task else None,
        )
        if watch is not None:  # each sample its own engine request (sharing the prompt through the prefix cache)
            run = self._run(self._model(model), [prompt] * n, replace(sampling, n=1), stage, samples=True)
        else:
            run = self._run(self._model(model), [prompt], sampling, stage)
        try:
            async for deltas in run.deltas():
                for d in deltas:
                    if watch is not None and d.finish_reason is None and (reason := watch(d.index, run.completions[d.index])):
                        run.stop(d.index, reason)
                        d.finish_reason = reason
                    if d.finish_reason is not None:
                        done = run.completions[d.index]
                        self.emit({"type": "rollout", "stage": stage, "index": d.index, "tokens": len(done.token_ids), "finish_reason": d.finish_reason})
        finally:
            self._count(stage, run.usage)
        return [Rollout(c.index, c.text, list(c.token_ids), list(c.logprobs), c.finish_reason, len(prompt)) for c in run.completions]

    async def score(self, prompt: list[int], start: int, *, model: str | None = None, stage: str = "score") -> list[float] | None:
        """Log-probabilities of `prompt[start:]` under `model`: one prefill with one generated token. The prompt
        tokens the engine computed (all but its prefix-cache hits) are granted against the budget like generated
        ones, since scoring is real work. None when the budget or deadline ran out first."""
        if self.budget.exhausted:
            return None
        sampling = replace(
            self.base_sampling,
            n=1,
            temperature=0.0,
            top_p=1.0,
            max_tokens=1,
            min_tokens=0,
            logprobs=None,
            stop=(),
            seed=None,
            structured=None,
            thinking_budget=None,
            prompt_logprobs_from=start,
        )
        run = self._run(self._model(model), [prompt], sampling, stage)
        try:
            await run.collect()
        finally:
            self.budget.grant(run.usage.prompt_tokens - run.usage.cached_tokens)
            self._count(stage, run.usage)
        return run.prompt_logprobs.get(0)

    async def run(self, params: Any) -> StrategyResult:
        ctx: Context = self  # what every strategy is handed: mypy holds this class to the protocol here
        return await STRATEGIES[params.name](ctx, params)

    async def planning(self, family: str) -> Planning:
        return await planning_for(self.served, self.models, self.hardware, self.accuracy, len(self.prompt), self.base_sampling.max_tokens, family)

    def restrict(self, *, max_tokens: int, total_tokens: int, model: str | None = None) -> None:
        self.base_sampling = replace(self.base_sampling, max_tokens=min(max_tokens, self.base_sampling.max_tokens))
        self.budget.max_total_tokens = min(self.budget.max_total_tokens, self.budget.used + total_tokens)
        if model is not None:
            self.served = self._model(model)

    def _run(self, served: ServedModel, prompts: list[list[int]], sampling: SamplingSpec, stage: str, samples: bool = False) -> MeteredRun:
        self.engine_requests += 1
        run = MeteredRun(
            served.pool,
            f"{self.request_id}-{stage}{self.engine_requests}",
            prompts,
            self._seeded(sampling, served.spec.name, stage, prompts[0]),
            self.budget,
            served.codec.decode,
            requested_max_tokens=sampling.max_tokens,
            flush_interval_s=self.flush_interval_s,
            stage=stage,
            samples=samples,
        )
        self.calls.append(Priced(served.spec.name, served.shape, served.attention, run))
        return run

    def _seeded(self, sampling: SamplingSpec, model: str, stage: str, prompt: list[int]) -> SamplingSpec:
        """A seeded request's engine calls each get a seed of their own, derived from the request's seed, the call's
        model, stage and prompt, and how many calls before it had the same: with the request's seed on every call,
        calls with the same prompt (adaptive batches, ATTS's samples at turn 0, composed runs) would all draw the same
        samples. The derivation depends on what is asked, not on timing, so each call draws the same random numbers on a
        replay; the tokens can still part where the engine's logits differ in their last bits (a prefix-cache hit, another
        batch) or where an early stop lands a token later."""
        if sampling.seed is None:
            return sampling
        same = self._seeds[(model, stage, tuple(prompt))] = self._seeds.get((model, stage, tuple(prompt)), -1) + 1
        digest = hashlib.sha256(f"{sampling.seed}|{model}|{stage}|{same}|{','.join(map(str, prompt))}".encode()).digest()
        return replace(sampling, seed=int.from_bytes(digest[:4], "big"))

    def emit(self, event: dict[str, Any]) -> None:
        self.trace.append({"t": round(time.perf_counter() - self.started, 4), **event})
        if self.on_event is not None:
            self.on_event(event)

    def _count(self, stage: str, usage: Usage) -> None:
        for total in (self.usage, self.stages.setdefault(stage, Usage())):
            total.prompt_tokens += usage.prompt_tokens
            total.cached_tokens += usage.cached_tokens
            total.completion_tokens += usage.completion_tokens


async def planning_for(
    served: ServedModel,
    models: Mapping[str, ServedModel],
    hardware: HardwareProfile,
    accuracy: AccuracyBook | None,
    prompt_tokens: int,
    max_tokens: int,
    family: str,
) -> Planning:
    """What Kinetics plans with, for a request."""
    known = await accuracy.evidence(served.spec.name, family) if accuracy is not None else Evidence([], [])
    return planning_with(known, served, models, hardware, prompt_tokens, max_tokens)


def planning_with(
    known: Evidence, served: ServedModel, models: Mapping[str, ServedModel], hardware: HardwareProfile, prompt_tokens: int, max_tokens: int
) -> Planning:
    """The plan's inputs from evidence already in hand (`GET /v1/cost-model` reports that evidence's sources too):
    the sparse replicas are the served models with the same weights and a KV budget."""
    replicas = [m for m in models.values() if m.spec.source == served.spec.source and m.attention.kv_budget is not None]
    return Planning(
        shape=served.shape,
        hardware=hardware,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        observations=known.observations,
        lengths=known.lengths,
        sparse={m.attention.kv_budget: m.spec.name for m in replicas if m.attention.kv_budget is not None},
        block_size=next((m.attention.block_size for m in replicas), None),
        agreements=known.agreements,
        choices=known.choices,
    )
