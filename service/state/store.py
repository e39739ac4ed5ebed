"""Redis, the gateway's only shared state. Unset `PONDER_REDIS_URL` gives an in-process fakeredis behind the same
redis-py asyncio API, so the embedded default needs no server and there is one code path."""

from __future__ import annotations

from redis.asyncio import Redis


def connect(url: str | None) -> Redis:
    if url:
        # Bounded waits: a Redis that stops answering must cost a ledger write or a cache lookup, not a request.
        return Redis.from_url(url, decode_responses=True, socket_connect_timeout=1.0, socket_timeout=2.0)
    from fakeredis import FakeAsyncRedis

    return FakeAsyncRedis(decode_responses=True)


async def healthy(redis: Redis) -> bool:
    try:
        return bool(await redis.ping())
    except Exception:
        return False
