"""The strategies' one way to an engine. `generate` turns a strategy's "N samples of the task" into one metered
engine request: tokens granted against the request's budget (each rollout's `max_tokens` capped by what is left,
in-flight rollouts aborted when it is spent), the deadline honoured, the request id on every engine request, and a
progress event per finished rollout. Cancelling the strategy's task cancels the engine requests with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from service.budget import Budget
from service.cache import RequestCache
from service.engines.protocol import SamplingSpec
from service.generation import MeteredRun, Usage
from service.models import ServedModel
from strategies.base import Rollout, Task
from verifiers.answers import AnswerGrouper
from verifiers.code import Sandbox


@dataclass
class RequestContext:
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
    flush_interval_s: float = 0.0
    on_event: Callable[[dict[str, Any]], None] | None = None
    usage: Usage = field(default_factory=Usage)
    stages: dict[str, Usage] = field(default_factory=dict)
    engine_requests: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)
    """Every progress event with its time since the request started: the record of how the answer was reached."""
    started: float = field(default_factory=time.perf_counter)

    @property
    def model(self) -> str:
        return self.served.spec.name

    @property
    def vocab_size(self) -> int:
        return self.served.codec.vocab_size

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
    ) -> list[Rollout]:
        if self.budget.exhausted:
            return []
        prompt = self.prompt if messages is None else await asyncio.to_thread(self.served.codec.chat, messages)
        wanted = self.base_sampling.logprobs
        sampling = replace(
            self.base_sampling,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=min(max_tokens or self.base_sampling.max_tokens, self.base_sampling.max_tokens),
            logprobs=max(logprobs, wanted or 0) if logprobs is not None else wanted,
        )
        self.engine_requests += 1
        run = MeteredRun(
            self.served.pool,
            f"{self.request_id}-{stage}{self.engine_requests}",
            [prompt],
            sampling,
            self.budget,
            self.served.codec.decode,
            requested_max_tokens=sampling.max_tokens,
            flush_interval_s=self.flush_interval_s,
            stage=stage,
        )
        try:
            async for deltas in run.deltas():
                for d in deltas:
                    if d.finish_reason is not None:
                        done = run.completions[d.index]
                        self.emit({"type": "rollout", "stage": stage, "index": d.index, "tokens": len(done.token_ids), "finish_reason": d.finish_reason})
        finally:
            self._count(stage, run.usage)
        return [Rollout(c.index, c.text, list(c.token_ids), list(c.logprobs), c.finish_reason, len(prompt)) for c in run.completions]

    def emit(self, event: dict[str, Any]) -> None:
        self.trace.append({"t": round(time.perf_counter() - self.started, 4), **event})
        if self.on_event is not None:
            self.on_event(event)

    def _count(self, stage: str, usage: Usage) -> None:
        for total in (self.usage, self.stages.setdefault(stage, Usage())):
            total.prompt_tokens += usage.prompt_tokens
            total.cached_tokens += usage.cached_tokens
            total.completion_tokens += usage.completion_tokens

