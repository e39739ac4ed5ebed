"""The Ray actor that owns one vLLM `AsyncLLM`.

Outputs are requested as DELTA (with `n>1` the cumulative kind can lose completions in the last output) and
coalesced: a pump task moves engine outputs into a queue and the streaming method drains everything queued at
each yield, so a fast engine sends one Ray object per several steps instead of one per token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import ray

from compute.protocol import (
    CompletionDelta,
    EngineChunk,
    EngineDead,
    EngineInfo,
    EngineRequestError,
    EngineStats,
    SamplingSpec,
    TokenLogprob,
)

log = logging.getLogger(__name__)

_END = object()
WARMUP_PROMPT = [1, 2, 3, 4, 5, 6, 7, 8]


def _scheduler_stats_logger(sink: dict[str, Any]) -> Any:
    """A vLLM stat logger that keeps the latest scheduler stats for `stats()` (queue depth, KV cache use) and counts
    the tokens the engine generated: the engine's own count, which shows whether an aborted request really stopped."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class LatestSchedulerStats(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                sink["scheduler"] = scheduler_stats
            if iteration_stats is not None:
                sink["generated"] = sink.get("generated", 0) + iteration_stats.num_generation_tokens

        def log_engine_initialized(self) -> None:
            pass

    return LatestSchedulerStats


@ray.remote(max_restarts=0)
class EngineActor:
    def __init__(self, model: str, served_name: str, engine_args: dict[str, Any]) -> None:
        from vllm import AsyncEngineArgs
        from vllm.reasoning import ReasoningParserManager
        from vllm.v1.engine.async_llm import AsyncLLM

        if plugin := engine_args.get("reasoning_parser_plugin"):  # as `vllm serve` does: the config names its parser
            ReasoningParserManager.import_reasoning_parser(plugin)
        self._latest: dict[str, Any] = {}
        self._warm = False
        args = AsyncEngineArgs(model=model, served_model_name=served_name, **engine_args)
        self.engine = AsyncLLM.from_engine_args(args, stat_loggers=[_scheduler_stats_logger(self._latest)])
        config = self.engine.model_config
        self.info = EngineInfo(model=served_name, max_model_len=config.max_model_len, dtype=str(config.dtype))

    async def ready(self) -> EngineInfo:
        """Also runs one tiny generation: the first one pays seconds of kernel warm-up that no client should see."""
        await self.engine.check_health()
        if not self._warm:
            async for _ in self.generate("ponder-warmup", WARMUP_PROMPT, SamplingSpec(max_tokens=4)):
                pass
            self._warm = True
        return self.info

    async def generate(self, request_id: str, prompt_token_ids: list[int], sampling: SamplingSpec, flush_interval_s: float = 0.0) -> AsyncIterator[EngineChunk]:
        """`flush_interval_s` > 0 holds output back for up to that long (never past the end of the request): a caller
        that does not stream to a client needs far fewer Ray objects, and every one costs CPU the engine shares."""
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt

        try:
            params = _sampling_params(sampling)
        except (ValueError, VLLMClientError) as exc:  # the request's fault: vLLM's own validation says why
            raise EngineRequestError(str(exc)) from None
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for output in self._outputs(TokensPrompt(prompt_token_ids=prompt_token_ids), params, request_id, sampling.prompt_logprobs_from):
                    queue.put_nowait(_chunk(output, sampling.logprobs or 0, sampling.prompt_logprobs_from))
            except BaseException as exc:  # handed to the consumer, which re-raises it as an engine error
                queue.put_nowait(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            queue.put_nowait(_END)

        task = asyncio.create_task(pump())
        finished = False
        try:
            while not finished:
                items = await _gather_until(queue, flush_interval_s)
                chunks = [i for i in items if isinstance(i, EngineChunk)]
                failure = next((i for i in items if isinstance(i, BaseException)), None)
                finished = failure is not None or any(i is _END for i in items)
                if chunks:
                    yield _merge(chunks)
                if failure is not None:
                    raise self._translate(failure)
        finally:
            if not task.done():
                task.cancel()
                await self.engine.abort(request_id)

    async def _outputs(self, prompt: Any, params: Any, request_id: str, score_from: int | None) -> AsyncIterator[Any]:
        """A scoring request first reads the prefix cache (only the new tokens are computed); vLLM returns prompt
        log-probabilities only for computed tokens, so if the cache reached into the scored tokens (the same engine
        wrote them, or scored them before) it is run again without reading the cache."""
        if score_from is None:
            async for output in self.engine.generate(prompt, params, request_id):
                yield output
            return
        last = None
        async for output in self.engine.generate(prompt, params, request_id):
            last = output
        if last is not None and (last.num_cached_tokens or 0) >= score_from:
            params.skip_reading_prefix_cache = True
            async for output in self.engine.generate(prompt, params, request_id):
                yield output
        elif last is not None:
            yield last

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    async def health(self) -> EngineStats:
        if self.engine.errored:
            raise EngineDead(str(self.engine.dead_error))
        await self.engine.check_health()
        return self.stats()

    def stats(self) -> EngineStats:
        scheduler = self._latest.get("scheduler")
        return EngineStats(
            running=getattr(scheduler, "num_running_reqs", 0),
            waiting=getattr(scheduler, "num_waiting_reqs", 0),
            unfinished=self.engine.get_num_unfinished_requests(),
            kv_cache_usage=float(getattr(scheduler, "kv_cache_usage", 0.0)),
            generated_tokens=self._latest.get("generated", 0),
        )

    def _translate(self, exc: BaseException) -> BaseException:
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(exc, EngineDeadError) or self.engine.errored:
            return EngineDead(str(exc))
        if isinstance(exc, (ValueError, TypeError, VLLMClientError)):
            return EngineRequestError(str(exc))
        return exc


def _ends(items: list[Any]) -> bool:
    return any(i is _END or isinstance(i, BaseException) for i in items)


async def _gather_until(queue: asyncio.Queue[Any], interval_s: float) -> list[Any]:
    """Waits for one item, then takes whatever else arrives within `interval_s`, stopping early at the end."""
    items = [await queue.get()]
    loop = asyncio.get_running_loop()
    until = loop.time() + interval_s
    while not _ends(items):
        while not queue.empty():
            items.append(queue.get_nowait())
        left = until - loop.time()
        if left <= 0 or _ends(items):
            break
        try:
            async with asyncio.timeout(left):
                items.append(await queue.get())
        except TimeoutError:
            break
    return items


def _sampling_params(spec: SamplingSpec) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    if spec.structured is not None:
        structured = StructuredOutputsParams(json=spec.structured.json_schema) if spec.structured.json_schema else StructuredOutputsParams(json_object=True)
    return SamplingParams(
        n=spec.n,
        temperature=spec.temperature,
        top_p=spec.top_p,
        top_k=spec.top_k,
        min_p=spec.min_p,
        repetition_penalty=spec.repetition_penalty,
        max_tokens=spec.max_tokens,
        min_tokens=spec.min_tokens,
        logit_bias=dict(spec.logit_bias) or None,
        structured_outputs=structured,
        thinking_token_budget=spec.thinking_budget,
        stop=list(spec.stop) or None,
        logprobs=spec.logprobs,
        seed=spec.seed,
        presence_penalty=spec.presence_penalty,
        frequency_penalty=spec.frequency_penalty,
        ignore_eos=spec.ignore_eos,
        prompt_logprobs=None if spec.prompt_logprobs_from is None else 0,
        # Read the prefix cache when scoring, and do not detokenize: vLLM 0.32 leaves the cached positions' prompt
        # log-probabilities uninitialized, and detokenizing those garbage ids kills the engine.
        skip_reading_prefix_cache=None if spec.prompt_logprobs_from is None else False,
        detokenize=spec.prompt_logprobs_from is None,
        output_kind=RequestOutputKind.DELTA,
    )


def _chunk(output: Any, top_k: int, prompt_from: int | None) -> EngineChunk:
    return EngineChunk(
        deltas=[_delta(c, top_k) for c in output.outputs],
        cached_tokens=output.num_cached_tokens or 0,
        finished=output.finished,
        prompt_logprobs=_prompt_logprobs(output, prompt_from),
    )


def _prompt_logprobs(output: Any, start: int | None) -> list[float] | None:
    """The prompt tokens' own log-probabilities from `start` on. vLLM lists them for the computed tokens only (a
    None first, then one per computed position), so they are matched to the prompt from its end."""
    if start is None or not output.prompt_logprobs:
        return None
    ids = output.prompt_token_ids
    wanted = len(ids) - max(start, 1)
    listed = list(output.prompt_logprobs)[1:]
    if len(listed) < wanted:
        return None
    positions = listed[len(listed) - wanted :]
    if any(p is None or ids[i] not in p for i, p in zip(range(len(ids) - wanted, len(ids)), positions, strict=True)):
        return None
    return [float(p[ids[i]].logprob) for i, p in zip(range(len(ids) - wanted, len(ids)), positions, strict=True)]


def _delta(completion: Any, top_k: int) -> CompletionDelta:
    logprobs = None
    if completion.logprobs is not None:
        logprobs = [_token_logprob(token_id, position, top_k) for token_id, position in zip(completion.token_ids, completion.logprobs, strict=False)]
    return CompletionDelta(
        index=completion.index,
        text=completion.text,
        token_ids=list(completion.token_ids),
        logprobs=logprobs,
        finish_reason=completion.finish_reason,
    )


def _token_logprob(token_id: int, position: dict[int, Any], top_k: int) -> TokenLogprob:
    """vLLM returns the top k plus the sampled token when it ranks below them; OpenAI's top list is the k only."""
    chosen = position[token_id]
    ranked = sorted((lp for lp in position.values() if lp.rank is not None and lp.rank <= top_k), key=lambda lp: lp.rank)
    top = tuple((lp.decoded_token or "", float(lp.logprob)) for lp in ranked)
    return TokenLogprob(token=chosen.decoded_token or "", logprob=float(chosen.logprob), top=top)


def _merge(chunks: list[EngineChunk]) -> EngineChunk:
    merged: dict[int, CompletionDelta] = {}
    for chunk in chunks:
        for delta in chunk.deltas:
            if delta.index in merged:
                merged[delta.index].extend(delta)
            else:
                merged[delta.index] = delta
    last = chunks[-1]
    return EngineChunk(
        deltas=[merged[i] for i in sorted(merged)],
        cached_tokens=max(c.cached_tokens for c in chunks),
        finished=last.finished,
        prompt_logprobs=next((c.prompt_logprobs for c in chunks if c.prompt_logprobs is not None), None),
    )
