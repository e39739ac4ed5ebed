"""The request ledger: one record per generation request (served, failed or cancelled), kept in Redis.

Layout, chosen so that a dashboard can read a time window cheaply and a record can be looked up by id:
- `ponder:ledger`, a stream capped at `max_records` (approximately, as XADD MAXLEN ~ trims by whole nodes); its
  entry ids are the write times in milliseconds, so a time window is one XREVRANGE. Entries hold the record
  without its detail.
- `ponder:request:<id>`, the whole record (with the strategy's report: candidates, votes, trace), for `ttl_s`.
- `ponder:feedback:<id>`, whether the answer was correct, written by `POST /v1/feedback`, for `ttl_s`.

Writes happen after the response is sent, in a background task bounded by `write_timeout_s`: a slow or dead Redis
never slows or fails a request; the lost record is counted (`ponder_ledger_write_failures_total`) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from service import metrics
from service.budget import Budget, Usage
from service.settings import LedgerSettings

log = logging.getLogger(__name__)

STREAM = "ponder:ledger"
RECORD = "ponder:request:{}"
FEEDBACK = "ponder:feedback:{}"

Outcome = Literal["served", "failed", "cancelled"]
CLIENT_CLOSED = 499


class Feedback(BaseModel):
    correct: bool
    time: float
    source: str = "feedback"


class LedgerRecord(BaseModel):
    """What one request cost and how it ended. Benchmarks' results are read into the same shape (source
    "benchmark", with their run), so the dashboard puts served traffic and benchmark runs on one chart."""

    id: str
    time: float
    source: Literal["request", "benchmark"] = "request"
    key_id: str | None = None
    run: str | None = None
    route: str
    model: str | None = None
    strategy: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False
    status: int
    outcome: Outcome
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    stages: dict[str, dict[str, int]] = Field(default_factory=dict)
    latency_s: float
    ttft_s: float | None = None
    budget: dict[str, Any] | None = None
    correct: bool | None = None
    feedback: Feedback | None = None
    eflops: float | None = None
    """Its compute by the cost model (`ponder.cost`), when it produced a response."""
    detail: dict[str, Any] | None = None

    @property
    def setting(self) -> str:
        """The strategy and the parameters that change what it buys: one point on the cost-accuracy chart."""
        knobs = {k: v for k, v in sorted(self.params.items()) if k != "name" and v is not None}
        return self.strategy + ("(" + ", ".join(f"{k}={v}" for k, v in knobs.items()) + ")" if knobs else "")


@dataclass
class Entry:
    """A request's record while it is served: handlers fill in what they learn, the middleware closes it."""

    id: str
    route: str
    at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    model: str | None = None
    strategy: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    usage: Usage = field(default_factory=Usage)
    """The serving code's own Usage objects: what was spent up to the end, even on a request that was cut off."""
    stages: dict[str, Usage] = field(default_factory=dict)
    budget: Budget | None = None
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    correct: bool | None = None
    detail: dict[str, Any] | None = None
    first_token_at: float | None = None
    key_id: str | None = None
    completed: bool = False
    """True once the whole response was produced; a 200 that never completed was cut off by the client."""

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def fail(self, status: int, message: str, code: str | None) -> None:
        self.error = {"status": status, "code": code, "message": message}

    def done(self, finish_reason: str | None, detail: dict[str, Any], correct: bool | None = None) -> None:
        self.finish_reason, self.detail, self.correct, self.completed = finish_reason, detail, correct, True

    def close(self, status: int) -> LedgerRecord:
        if status == CLIENT_CLOSED and self.error is None:
            outcome: Outcome = "cancelled"
        elif status >= 400 or self.error is not None:
            outcome = "failed"
            if self.error is None:
                self.fail(status, "", None)
        else:
            outcome = "served" if self.completed else "cancelled"
        return LedgerRecord(
            id=self.id,
            time=self.at,
            key_id=self.key_id,
            route=self.route,
            model=self.model,
            strategy=self.strategy,
            params=self.params,
            stream=self.stream,
            status=status,
            outcome=outcome,
            finish_reason=self.finish_reason,
            error=self.error,
            prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens,
            cached_tokens=self.usage.cached_tokens,
            stages={stage: vars(u).copy() for stage, u in self.stages.items()},
            latency_s=round(time.perf_counter() - self.started, 4),
            ttft_s=round(self.first_token_at - self.started, 4) if self.first_token_at is not None else None,
            budget=self.budget.report() if self.budget else None,
            correct=self.correct,
            eflops=(self.detail or {}).get("cost", {}).get("eflops"),
            detail=self.detail,
        )


def observe(record: LedgerRecord) -> None:
    """The record's share of the Prometheus metrics: one place, so metrics and ledger always agree."""
    model, strategy = record.model or "unknown", record.strategy
    metrics.REQUESTS.labels(model, strategy, record.outcome, str(record.status)).inc()
    if record.error is not None:
        metrics.ERRORS.labels(model, strategy, str(record.error.get("code") or record.status)).inc()
    metrics.LATENCY.labels(model, strategy).observe(record.latency_s)
    if record.ttft_s is not None:
        metrics.TTFT.labels(model, strategy).observe(record.ttft_s)
    for stage, usage in record.stages.items():
        for kind, key in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("cached", "cached_tokens")):
            if usage.get(key):
                metrics.TOKENS.labels(model, strategy, stage, kind).inc(usage[key])
    if record.prompt_tokens:
        metrics.PREFIX_CACHE_TOKENS.labels(model, "hit").inc(record.cached_tokens)
        metrics.PREFIX_CACHE_TOKENS.labels(model, "miss").inc(record.prompt_tokens - record.cached_tokens)
    if record.eflops:
        metrics.COMPUTE.labels(model, strategy).inc(record.eflops)
    if record.budget and record.budget.get("exhausted"):
        metrics.BUDGET_EXHAUSTED.labels(model, strategy, record.budget["exhausted"]).inc()


class Ledger:
    def __init__(self, redis: Redis, settings: LedgerSettings) -> None:
        self.redis = redis
        self.settings = settings
        self._pending: dict[str, asyncio.Task[None]] = {}

    def submit(self, record: LedgerRecord) -> None:
        """Writes in the background; the caller (the request) never waits for Redis."""
        task = asyncio.get_running_loop().create_task(self._write(record))
        self._pending[record.id] = task
        task.add_done_callback(lambda _: self._pending.pop(record.id, None))

    async def _write(self, record: LedgerRecord) -> None:
        summary = record.model_dump_json(exclude={"detail"})
        try:
            async with asyncio.timeout(self.settings.write_timeout_s):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(RECORD.format(record.id), record.model_dump_json(), ex=self.settings.ttl_s)
                    pipe.xadd(STREAM, {"record": summary}, maxlen=self.settings.max_records, approximate=True)
                    await pipe.execute()
        except Exception as exc:
            metrics.LEDGER_WRITE_FAILURES.inc()
            log.warning("ledger record %s not written: %s: %s", record.id, type(exc).__name__, exc)

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: the records of requests already answered still reach Redis if it answers in time."""
        if self._pending:
            await asyncio.wait(list(self._pending.values()), timeout=timeout_s)

    async def get(self, request_id: str) -> LedgerRecord | None:
        if (pending := self._pending.get(request_id)) is not None:
            await asyncio.wait({pending}, timeout=self.settings.write_timeout_s)
        raw, feedback = await self.redis.mget(RECORD.format(request_id), FEEDBACK.format(request_id))
        if raw is None:
            return None
        record = LedgerRecord.model_validate_json(raw)
        return _with_feedback(record, feedback)

    async def feedback(self, request_id: str, correct: bool) -> LedgerRecord | None:
        """Marks a request's answer right or wrong; None when no such request is in the ledger."""
        record = await self.get(request_id)
        if record is None:
            return None
        entry = Feedback(correct=correct, time=time.time())
        await self.redis.set(FEEDBACK.format(request_id), entry.model_dump_json(), ex=self.settings.ttl_s)
        metrics.FEEDBACK.labels(record.model or "unknown", record.strategy, str(correct).lower()).inc()
        return _with_feedback(record, entry.model_dump_json())

    async def recent(self, *, since: float | None = None, limit: int = 1000) -> list[LedgerRecord]:
        """The newest records first, at most `limit`, written at or after `since` (epoch seconds)."""
        low = f"{int(since * 1000)}-0" if since is not None else "-"
        # The stubs' Nones are for other replies sharing the types: an entry without fields is one XREADGROUP gives
        # for a message deleted while pending; XREVRANGE answers an empty range with an empty list.
        entries = await self.redis.xrevrange(STREAM, max="+", min=low, count=limit) or []
        records = [LedgerRecord.model_validate_json(fields["record"]) for _, fields in entries if fields is not None]
        if not records:
            return []
        feedback = await self.redis.mget([FEEDBACK.format(r.id) for r in records])
        return [_with_feedback(r, f) for r, f in zip(records, feedback, strict=True)]


def _with_feedback(record: LedgerRecord, raw: str | bytes | None) -> LedgerRecord:
    if raw is None:
        return record
    feedback = Feedback.model_validate_json(raw)
    return record.model_copy(update={"feedback": feedback, "correct": feedback.correct})


def bench_records(result: dict[str, Any], run: str) -> list[LedgerRecord]:
    """A benchmark result file (bench/results/accuracy-*.json) as ledger records: one per problem and row, with the
    row's strategy setting, the tokens the request cost and whether the row's answer was graded correct. The
    `oracle` row (any candidate correct) is an upper bound no request returns, so it is not a record; nor is a
    refused request (a budget too small to plan), which answered nothing."""
    model = result.get("model", {}).get("name")
    stamp = result.get("timestamp")
    when = datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else 0.0
    records = []
    for config in result.get("runs", []):
        strategy = config.get("strategy") or {"name": "none"}
        for row in config.get("rows", []):
            if row == "oracle":
                continue
            params = {**strategy, "temperature": config.get("temperature")}
            if row != "chosen":
                params["select"] = row
            name = params.pop("name")
            for i, outcome in enumerate(config.get("outcomes", [])):
                if outcome.get("refused"):
                    continue
                correct = outcome.get("correct", {}).get(row)
                records.append(
                    LedgerRecord(
                        id=f"{run}:{config.get('config')}:{row}:{i}",
                        time=when,
                        source="benchmark",
                        run=run,
                        route="/v1/chat/completions",
                        model=model,
                        strategy=name,
                        params=params,
                        status=200,
                        outcome="served",
                        prompt_tokens=outcome.get("prompt_tokens", 0),
                        completion_tokens=outcome.get("completion_tokens", 0),
                        cached_tokens=outcome.get("cached_tokens", 0),
                        latency_s=outcome.get("latency_s", 0.0),
                        correct=correct,
                    )
                )
    return records
