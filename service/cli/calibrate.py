"""`ponder calibrate`: seeds ATTS's calibration pools from a benchmark suite through a running gateway.

The paper calibrates on first-turn draft chunks sampled before inference. Here the same first-turn path the
service runs for every ATTS request does it: each problem is sent as an ATTS request with one turn and alpha 0 (no
takeover), so its m first-turn chunks are drafted, scored by the target and pushed into the pool of
(draft, target, family), or into the problem's own pool with `--coverage per_question`. Nothing here computes a
score itself, so a seeded pool is exactly what serving would have built.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from openai import AsyncOpenAI

log = logging.getLogger("ponder.calibrate")

SUITES = ("arithmetic", "humaneval")


def suite_messages(suite: str, problems: int) -> list[list[dict[str, str]]]:
    if suite == "arithmetic":
        from suites import arithmetic

        return [p.messages for p in arithmetic.problems(problems)]
    from suites import humaneval

    return [p.messages for p in humaneval.problems(problems)]


def calibration_request(model: str, messages: list[dict[str, str]], strategy: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "extra_body": {"strategy": {**strategy, "name": "atts", "turns": 1, "alpha": 0.0, "rule": "conformal"}},
    }


async def calibrate(
    base_url: str, api_key: str, model: str, suite: str, problems: int, strategy: dict[str, Any], max_tokens: int, concurrency: int
) -> dict[str, Any]:
    """Returns how many first-turn scores went into the pool(s)."""
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    added = 0

    async def one(messages: list[dict[str, str]]) -> None:
        nonlocal added
        async with gate:
            response = await client.chat.completions.create(**calibration_request(model, messages, strategy, max_tokens))
        calibration = response.model_extra["ponder"]["selection"]["calibration"]
        added += calibration["added"]
        log.info("calibrated on a problem: %d scores added to %s", calibration["added"], calibration["pool"])

    try:
        await asyncio.gather(*(one(m) for m in suite_messages(suite, problems)))
    finally:
        await client.close()
    return {"suite": suite, "problems": problems, "added": added}
