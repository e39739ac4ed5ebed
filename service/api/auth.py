"""API keys and per-key quotas.

Keys come from `PONDER_API_KEYS` (the keys themselves) and/or `PONDER_API_KEYS_FILE` (one `<key id> <sha256 hex of
the key>` per line, so the file holds no secret; it is re-read when it changes, which is how a key is revoked).
Only hashes are kept in memory; a presented key is hashed and compared with every stored hash in constant time.
A key's id (never the key) names it in quotas, the ledger and the logs.

Quotas are fixed one-minute windows in Redis shared by every gateway: requests are counted as they arrive,
generated tokens as requests finish, and a key over either limit gets a 429 with `Retry-After` (the seconds to the
next window). Redis down: requests are let through and the failure is logged — an outage of the quota store is not
an outage of the service.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request

from service import metrics
from service.api.errors import APIError, failed
from service.settings import QuotaSettings

log = logging.getLogger(__name__)

WINDOW_S = 60
REDIS_TIMEOUT_S = 0.5


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeyRing:
    """Key id -> sha256 of the key, from the settings' keys and the keys file (re-read when its mtime changes)."""

    keys: list[str]
    path: Path | None
    hashes: dict[str, str] = field(default_factory=dict)
    _file_mtime: float | None = None

    def __post_init__(self) -> None:
        self._load()

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.path is not None

    def identify(self, presented: str) -> str | None:
        """The id of the key presented, or None. Every stored hash is compared, so timing says nothing."""
        self._reload_if_changed()
        wanted = digest(presented)
        found = None
        for key_id, stored in self.hashes.items():
            if hmac.compare_digest(stored, wanted):
                found = key_id
        return found

    def _reload_if_changed(self) -> None:
        if self.path is not None and _mtime(self.path) != self._file_mtime:
            self._load()

    def _load(self) -> None:
        hashes = {f"env-{i}": digest(k) for i, k in enumerate(self.keys)}
        path = self.path
        if path is not None:
            self._file_mtime = _mtime(path)
            for number, line in enumerate(_read(path).splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split()
                if len(parts) != 2 or len(parts[1]) != 64 or any(c not in "0123456789abcdef" for c in parts[1].lower()):
                    log.error("api keys file %s line %d is not '<key id> <sha256 hex>'; ignored", path, number)
                    continue
                hashes[parts[0]] = parts[1].lower()
        self.hashes = hashes


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        log.error("api keys file %s unreadable (%s): no key from it is accepted", path, exc)
        return ""


@dataclass
class Quotas:
    redis: Redis
    settings: QuotaSettings

    async def admit(self, key_id: str) -> None:
        """Counts the request against its key's window; raises a 429 when a limit is already reached."""
        window = int(time.time() // WINDOW_S)
        requests, tokens = f"ponder:quota:{key_id}:{window}:requests", f"ponder:quota:{key_id}:{window}:tokens"
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.incr(requests)
                    pipe.expire(requests, WINDOW_S * 2)
                    pipe.get(tokens)
                    count, _, spent = await pipe.execute()
        except Exception as exc:
            log.warning("quota store unavailable, request let through: %s: %s", type(exc).__name__, exc)
            return
        retry_after = str(int(WINDOW_S - time.time() % WINDOW_S) + 1)
        limit = self.settings.requests_per_minute
        if limit is not None and int(count) > limit:
            metrics.QUOTA_REFUSALS.labels("requests").inc()
            raise APIError(
                429, f"Rate limit reached: {limit} requests per minute for this key", code="rate_limit_exceeded", headers={"Retry-After": retry_after}
            )
        limit = self.settings.tokens_per_minute
        if limit is not None and int(spent or 0) >= limit:
            metrics.QUOTA_REFUSALS.labels("tokens").inc()
            raise APIError(
                429, f"Token quota reached: {limit} generated tokens per minute for this key", code="rate_limit_exceeded", headers={"Retry-After": retry_after}
            )

    async def spend(self, key_id: str, tokens: int) -> None:
        if not tokens or self.settings.tokens_per_minute is None:
            return
        key = f"ponder:quota:{key_id}:{int(time.time() // WINDOW_S)}:tokens"
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.incrby(key, tokens)
                    pipe.expire(key, WINDOW_S * 2)
                    await pipe.execute()
        except Exception as exc:
            log.warning("quota store unavailable, %d tokens not counted: %s: %s", tokens, type(exc).__name__, exc)


class AuthMiddleware:
    """Checks the key of every protected request before the app sees it. Pure ASGI, like RequestIdMiddleware (which
    runs outside it, so refusals carry a request id and are logged and ledgered like any response)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state = scope["app"].state
        keys: KeyRing = state.keys
        if scope["type"] != "http" or not keys.enabled or not protected(scope["path"], state.settings):
            await self.app(scope, receive, send)
            return
        browser = scope["path"].startswith("/dashboard")
        presented = presented_key(scope)
        key_id = keys.identify(presented) if presented else None
        if key_id is None:
            metrics.AUTH_FAILURES.labels("missing" if not presented else "unknown").inc()
            # A browser asks its user for the key on a Basic challenge, and resends it with every fetch of the page.
            challenge = {"WWW-Authenticate": 'Basic realm="ponder"' if browser else "Bearer"}
            error = APIError(401, "Missing or invalid API key: send it as 'Authorization: Bearer <key>'", code="invalid_api_key", headers=challenge)
            await respond(scope, receive, send, error)
            return
        quotas: Quotas = state.quotas
        try:
            await quotas.admit(key_id)
        except APIError as error:
            await respond(scope, receive, send, error)
            return
        scope["state"]["key_id"] = key_id
        entry = scope["state"].get("entry")
        if entry is not None:
            entry.key_id = key_id
        try:
            await self.app(scope, receive, send)
        finally:
            if entry is not None:
                await quotas.spend(key_id, entry.usage.completion_tokens)


def protected(path: str, settings: Any) -> bool:
    return path.startswith("/v1/") or (path == "/metrics" and settings.auth_metrics) or (path.startswith("/dashboard") and settings.auth_dashboard)


def presented_key(scope: dict[str, Any]) -> str | None:
    """`Authorization: Bearer <key>`, or Basic with the key as the password (what a browser sends)."""
    header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return None


async def respond(scope: dict[str, Any], receive: Any, send: Any, error: APIError) -> None:
    await failed(Request(scope), error).response()(scope, receive, send)
