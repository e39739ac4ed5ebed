"""What each engine itself counted: read before and after a row, so a row's cost does not depend on what the
system in front of the engine chose to report.

vLLM's server exports Prometheus counters of its engine (tokens generated, prompt tokens, finished requests; a
request with n samples is n engine requests there, each counting the prompt) and of its HTTP routes. Ponder's
engine runs in its own Ray actor with no Prometheus of its own: `/health` carries the tokens each replica's engine
generated (vLLM's iteration stats, summed in the actor), and the gateway's `/metrics` counts the completions it
started (`ponder_rollout_latency_seconds`, one per finished completion) and the prompt tokens it sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

Counters = dict[str, float]
Reader = Callable[[httpx.AsyncClient, str], Awaitable[Counters]]

VLLM_SAMPLES = {
    "vllm:generation_tokens_total": "completion",
    "vllm:prompt_tokens_total": "prompt",
    "vllm:request_success_total": "requests",
}
PONDER_SAMPLES = {
    "ponder_prefix_cache_tokens_total": "prompt",
    "ponder_rollout_latency_seconds_count": "requests",
}


def _sum_samples(text: str, wanted: dict[str, str], labels: Callable[[dict[str, str]], bool] = lambda _: True) -> Counters:
    out = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and labels(sample.labels):
                out[wanted[sample.name]] += sample.value
    return out


async def vllm_counters(client: httpx.AsyncClient, base_url: str) -> Counters:
    text = (await client.get(f"{base_url}/metrics")).text
    counters = _sum_samples(text, VLLM_SAMPLES)
    http = _sum_samples(text, {"http_requests_total": "http_calls"}, lambda labels: labels.get("handler") == "/v1/chat/completions")
    return counters | http


async def ponder_counters(client: httpx.AsyncClient, base_url: str) -> Counters:
    counters = _sum_samples((await client.get(f"{base_url}/metrics")).text, PONDER_SAMPLES)
    health = (await client.get(f"{base_url}/health")).json()
    counters["completion"] = float(sum(replica.get("generated_tokens", 0) for replicas in health["models"].values() for replica in replicas))
    return counters


async def settled(read: Reader, client: httpx.AsyncClient, base_url: str, attempts: int = 10) -> Counters:
    """The counters once two reads a second apart agree: the engine publishes its last step's stats a little after
    the response that step finished has gone out."""
    last = await read(client, base_url)
    for _ in range(attempts):
        await asyncio.sleep(1.0)
        now = await read(client, base_url)
        if now == last:
            return now
        last = now
    return last


def delta(before: Counters, after: Counters) -> Counters:
    return {key: after[key] - before.get(key, 0.0) for key in after}
