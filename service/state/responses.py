"""Stored responses (the Responses API's `store`), in Redis beside the ledger, so that any gateway can continue a
conversation from `previous_response_id`. A record is the response as returned plus the conversation that led to
it (chat messages, the response's own output included), and it belongs to the API key that made it: another key
reads it as missing."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

PREFIX = "ponder:response:"


class ResponseStore:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def put(self, response_id: str, owner: str | None, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        record = {"owner": owner, "response": response, "conversation": conversation}
        await self.redis.set(PREFIX + response_id, json.dumps(record, separators=(",", ":")), ex=self.ttl_s)

    async def get(self, response_id: str, owner: str | None) -> dict[str, Any] | None:
        """The record, or None when there is none or it belongs to another key."""
        raw = await self.redis.get(PREFIX + response_id)
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        return record if record.get("owner") == owner else None

    async def delete(self, response_id: str, owner: str | None) -> bool:
        if await self.get(response_id, owner) is None:
            return False
        return bool(await self.redis.delete(PREFIX + response_id))
