"""The strategies' shared cache in Redis (summaries, judge votes): one request's view of it, which counts what was
reused and what that saved, for the response's report and the metrics.

A key is the SHA-256 of everything the value depends on (the strategy passes model, prompt version, content and
sampling parameters), so two gateways, or two requests with overlapping candidates, find each other's work. Redis
slow or down reads as a miss: a strategy runs the same without the cache, only at full cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from service import metrics

log = logging.getLogger(__name__)

TIMEOUT_S = 1.0


@dataclass
class CacheUse:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    saved_tokens: int = 0


@dataclass
class RequestCache:
    redis: Redis
    ttl_s: int
    use: dict[str, CacheUse] = field(default_factory=dict)

    @staticmethod
    def key(kind: str, key: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return f"ponder:cache:{kind}:{digest}"

    async def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
        use = self.use.setdefault(kind, CacheUse())
        try:
            async with asyncio.timeout(TIMEOUT_S):
                raw = await self.redis.get(self.key(kind, key))
        except Exception as exc:
            self._failed(kind, "read", exc)
            return None
        if raw is None:
            use.misses += 1
            metrics.CACHE_LOOKUPS.labels(kind, "miss").inc()
            return None
        stored = json.loads(raw)
        use.hits += 1
        use.saved_tokens += stored["tokens"]
        metrics.CACHE_LOOKUPS.labels(kind, "hit").inc()
        metrics.CACHE_SAVED_TOKENS.labels(kind).inc(stored["tokens"])
        value: dict[str, Any] = stored["value"]
        return value

    async def put(self, kind: str, key: dict[str, Any], value: dict[str, Any], tokens: int) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await self.redis.set(self.key(kind, key), json.dumps({"value": value, "tokens": tokens}), ex=self.ttl_s)
        except Exception as exc:
            self._failed(kind, "write", exc)

    def _failed(self, kind: str, action: str, exc: Exception) -> None:
        self.use.setdefault(kind, CacheUse()).errors += 1
        metrics.CACHE_LOOKUPS.labels(kind, "error").inc()
        log.warning("cache %s of %s failed (going on without it): %s: %s", action, kind, type(exc).__name__, exc)

    def report(self) -> dict[str, dict[str, int]]:
        return {kind: asdict(use) for kind, use in self.use.items()}
