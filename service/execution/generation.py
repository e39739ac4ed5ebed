"""One metered engine call for a batch of prompts (the `none` strategy, and later every strategy's rollouts).

Each prompt's engine stream runs in its own task feeding one queue; the consumer grants every token against the
budget and waits for the next output no later than the deadline. Running out of either ends the streams, which
aborts their engine requests, and leaves the unfinished completions with `finish_reason` saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from compute.protocol import CompletionDelta, EngineChunk, SamplingSpec, TokenLogprob
from service import metrics
from service.budget import DEADLINE, TOKENS, Budget, Usage
from service.engines.pool import EnginePool, EngineUnavailable

log = logging.getLogger(__name__)

Decode = Callable[[list[int]], str]


@dataclass
class Completion:
    """Everything a completion produced so far, as the client has been (or will be) sent it."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class _Stream:
    offset: int
    chunk: EngineChunk | None = None
    error: BaseException | None = None


class MeteredRun:
    """Runs `sampling` on each prompt; completion `offset + i` of prompt p gets choice index `p * n + i`."""

    def __init__(
        self,
        pool: EnginePool,
        request_id: str,
        prompts: list[list[int]],
        sampling: SamplingSpec,
        budget: Budget,
        decode: Decode,
        requested_max_tokens: int,
        flush_interval_s: float = 0.0,
        stage: str = "sample",
        samples: bool = False,
    ) -> None:
        self.pool = pool
        self.stage = stage
        self.samples = samples
        """The prompts are one prompt repeated, one engine request per sample: a seed is offset per sample, else
        every sample would be the same."""
        self.request_id = request_id
        self.prompts = prompts
        self.budget = budget
        self.decode = decode
        self.requested_max_tokens = requested_max_tokens
        self.flush_interval_s = flush_interval_s
        self.sampling = replace(sampling, max_tokens=min(sampling.max_tokens, max(budget.remaining, 1)))
        # Prompt tokens are counted once per prompt, not per completion, as OpenAI does for n > 1.
        self.usage = Usage(prompt_tokens=sum(len(p) for p in prompts))
        self.completions = [Completion(index=i) for i in range(len(prompts) * sampling.n)]
        self._cached: dict[int, int] = {}
        self.prompt_logprobs: dict[int, list[float]] = {}
        """Per prompt, when the sampling asked for them (`prompt_logprobs_from`)."""
        self._open: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0

    async def deltas(self) -> AsyncIterator[list[CompletionDelta]]:
        """Yields granted output as it arrives; returns when every completion has finished or the budget is spent."""
        queue: asyncio.Queue[_Stream | None] = asyncio.Queue()
        self._tasks = tasks = [asyncio.create_task(self._feed(queue, f"{self.request_id}-{p}", ids, p * self.sampling.n)) for p, ids in enumerate(self.prompts)]
        live = len(tasks)
        waited = not self.pool.ready
        self._open = {c.index for c in self.completions}
        self._started = time.perf_counter()
        in_flight = metrics.ROLLOUTS_IN_FLIGHT.labels(self.pool.spec.name)
        in_flight.inc(len(self._open))
        try:
            while live:
                try:
                    async with asyncio.timeout_at(self.budget.deadline):
                        item = await queue.get()
                except TimeoutError:
                    if (waited or not self.pool.ready) and not any(c.token_ids for c in self.completions):
                        # It had to wait for a replica (every one dead or starting, its node perhaps gone) and got
                        # nothing before the deadline, even if one came up at the last moment: the service failed, not
                        # the budget, so the client gets a 503 that says when to retry, not an empty answer.
                        raise EngineUnavailable(f"no replica of {self.pool.spec.name} was ready before the request's deadline") from None
                    self.budget.expire()
                    break
                if item is None:
                    live -= 1
                    continue
                if item.error is not None:
                    raise item.error
                assert item.chunk is not None
                granted = self._grant(item.offset, item.chunk)
                if granted:
                    yield granted
                if self.budget.exhausted:
                    break
        finally:
            # Before any await: a cancelled stream (anyio re-delivers cancellation at every await) may get no further.
            in_flight.dec(len(self._open))
            self._open.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.budget.exhausted:
            closing = self._close_unfinished(self.budget.exhausted)
            if closing:
                yield closing

    async def collect(self) -> list[Completion]:
        async for _ in self.deltas():
            pass
        return self.completions

    async def _feed(self, queue: asyncio.Queue[_Stream | None], engine_id: str, ids: list[int], offset: int) -> None:
        try:
            sampling = self.sampling
            if self.samples and sampling.seed is not None:
                sampling = replace(sampling, seed=sampling.seed + offset)
            async with contextlib.aclosing(self.pool.generate(engine_id, ids, sampling, self.flush_interval_s)) as chunks:
                async for chunk in chunks:
                    queue.put_nowait(_Stream(offset=offset, chunk=chunk))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(_Stream(offset=offset, error=exc))
        finally:
            queue.put_nowait(None)

    def _grant(self, offset: int, chunk: EngineChunk) -> list[CompletionDelta]:
        self._count_cached(offset, chunk)
        if chunk.prompt_logprobs is not None:
            self.prompt_logprobs[offset // self.sampling.n] = chunk.prompt_logprobs
        granted: list[CompletionDelta] = []
        for delta in chunk.deltas:
            completion = self.completions[offset + delta.index]
            if completion.finish_reason is not None:
                continue
            allowed = self.budget.grant(len(delta.token_ids))
            self.usage.completion_tokens += allowed
            if allowed < len(delta.token_ids):
                delta = self._truncate(completion, delta, allowed)
            out = CompletionDelta(
                index=completion.index,
                text=delta.text,
                token_ids=delta.token_ids,
                logprobs=delta.logprobs,
                finish_reason=self._finish_reason(delta.finish_reason, len(completion.token_ids) + len(delta.token_ids)),
            )
            completion.text += out.text
            completion.token_ids.extend(out.token_ids)
            completion.logprobs.extend(out.logprobs or ())
            completion.finish_reason = out.finish_reason
            if out.finish_reason is not None:
                self._finished(completion.index)
            if out.text or out.token_ids or out.finish_reason:
                granted.append(out)
        return granted

    def stop(self, index: int, reason: str) -> None:
        """Ends one completion now, aborting its engine request: a strategy's stopping rule. Only a completion that
        is its prompt's only one (n = 1) has a request of its own to abort."""
        if self.sampling.n != 1:
            raise ValueError("only completions with an engine request of their own (n = 1 per prompt) can be stopped alone")
        completion = self.completions[index]
        if completion.finish_reason is not None:
            return
        completion.finish_reason = reason
        self._finished(index)
        self._tasks[index].cancel()

    def _finished(self, index: int) -> None:
        self._open.discard(index)
        metrics.ROLLOUTS_IN_FLIGHT.labels(self.pool.spec.name).dec()
        metrics.ROLLOUT_LATENCY.labels(self.pool.spec.name, self.stage).observe(time.perf_counter() - self._started)

    def cached(self, prompt: int) -> int:
        """Prompt `prompt`'s tokens the engine found in its prefix cache."""
        return self._cached.get(prompt, 0)

    def _count_cached(self, offset: int, chunk: EngineChunk) -> None:
        prompt = offset // self.sampling.n
        self._cached[prompt] = max(self._cached.get(prompt, 0), chunk.cached_tokens)
        self.usage.cached_tokens = sum(self._cached.values())

    def _truncate(self, completion: Completion, delta: CompletionDelta, allowed: int) -> CompletionDelta:
        """The budget ends inside this delta: keep `allowed` tokens and re-derive their text from the ids."""
        ids = delta.token_ids[:allowed]
        text = self.decode(completion.token_ids + ids)[len(completion.text) :]
        logprobs = delta.logprobs[:allowed] if delta.logprobs is not None else None
        return CompletionDelta(index=delta.index, text=text, token_ids=ids, logprobs=logprobs, finish_reason=TOKENS)

    def _finish_reason(self, engine_reason: str | None, produced: int) -> str | None:
        """A `length` stop caused by the budget's cap (not the caller's `max_tokens`) is reported as the budget."""
        if engine_reason == "length" and produced < self.requested_max_tokens:
            self.budget.exhausted = self.budget.exhausted or TOKENS
            return TOKENS
        if engine_reason == "abort":
            return self.budget.exhausted or DEADLINE
        return engine_reason

    def _close_unfinished(self, reason: str) -> list[CompletionDelta]:
        closing = []
        for completion in self.completions:
            if completion.finish_reason is None:
                completion.finish_reason = reason
                closing.append(CompletionDelta(index=completion.index, finish_reason=reason))
        return closing
