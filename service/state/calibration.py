"""ATTS's calibration pools in Redis, shared by every gateway and kept across restarts.

A pool is a Redis list of scores, newest last, trimmed to a window in the same transaction as the push, so it never
outgrows the window however many gateways write at once. Beside each pool a hash counts what the pool has seen
(samples and decided chunks), from which a takeover budget is turned into a rejection rate. Like the strategies'
cache, the store only ever helps: Redis slow or down reads as "no pool" within a second and a write is dropped,
and the strategy calibrates on the request's own first-turn chunks instead (and says so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

log = logging.getLogger(__name__)

TIMEOUT_S = 1.0
PREFIX = "ponder:atts:pool:"


@dataclass
class RedisCalibration:
    redis: Redis
    window: int
    ttl_s: int
    errors: int = 0

    async def scores(self, key: str) -> list[float] | None:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                raw = await self.redis.lrange(PREFIX + key, 0, -1)
        except Exception as exc:
            self._failed("read", key, exc)
            return None
        return [float(v) for v in raw]

    async def add(self, key: str, scores: Sequence[float], expires: bool = False) -> None:
        if not scores:
            return
        try:
            async with asyncio.timeout(TIMEOUT_S):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.rpush(PREFIX + key, *[repr(float(s)) for s in scores])
                    pipe.ltrim(PREFIX + key, -self.window, -1)
                    if expires:
                        pipe.expire(PREFIX + key, self.ttl_s)
                    await pipe.execute()
        except Exception as exc:
            self._failed("write", key, exc)

    async def stats(self, key: str) -> dict[str, float]:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                raw = await self.redis.hgetall(PREFIX + key + ":stats")
        except Exception as exc:
            self._failed("read", key, exc)
            return {}
        return {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in raw.items()}

    async def count(self, key: str, **increments: int) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                async with self.redis.pipeline(transaction=True) as pipe:
                    for name, by in increments.items():
                        pipe.hincrby(PREFIX + key + ":stats", name, by)
                    await pipe.execute()
        except Exception as exc:
            self._failed("write", key, exc)

    def _failed(self, action: str, key: str, exc: Exception) -> None:
        self.errors += 1
        log.warning("calibration %s of pool %s failed (going on without it): %s: %s", action, key, type(exc).__name__, exc)
