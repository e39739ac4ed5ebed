"""The dashboard: `GET /dashboard`, a page that plots what each strategy setting buys, and `GET /dashboard/data`, the
JSON it is drawn from (tests and scripts call it too).

The data joins two sources that share the ledger's record shape: served traffic (the ledger in Redis, read for the
time window asked) and benchmark runs (those shipped with the package, those imported into Redis with
`ponder import-results`, and the files in `PONDER_RESULTS_DIR`: service/planning/evidence.py). The time window
bounds served traffic only: a benchmark run is a reference measured once, so its points stay on the chart whatever
the window; model and strategy filter both.

Accuracy is over the records whose correctness is known (graded against a reference, or marked through
`POST /v1/feedback`); tokens are over every served record of the setting. Points are grouped by task family, each
family with its own panel and Pareto front (most accurate for the fewest mean generated tokens), since accuracies
of different kinds of task are not on one scale (service/dashboard/points.py). The page is offline: plotly.js
comes from the installed `plotly` package, nothing from a CDN.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from service.api.errors import APIError
from service.api.protocol import StrictModel
from service.api.serving import parse, query_fields
from service.dashboard.points import Point, accuracy_points, families, fronts
from service.planning.evidence import ORIGINS, ReferenceRuns, Run
from service.state.ledger import Ledger, LedgerRecord, Outcome

log = logging.getLogger(__name__)

router = APIRouter()

STATIC = Path(__file__).resolve().parent / "static"
SCAN_LIMIT = 10_000
"""Served records read per refresh at most, newest first: bounds the page's cost on a busy gateway (`truncated`
says when the window held more)."""
RECENT_ROWS = 50
MAX_BUCKETS = 60
BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
MAX_SINCE = 1e10
"""Epoch seconds (year 2286): a larger `since` is a unit mistake (milliseconds), not a time."""
MAX_WINDOW_S = 366 * 86400.0
OUTCOMES: tuple[Outcome, ...] = ("served", "failed", "cancelled")


class DashboardQuery(StrictModel):
    """The page's filters. `since` (epoch seconds) and `window` (seconds back from now) are two ways to say where
    the time window starts, so at most one may be given; neither means all the ledger holds."""

    model: str | None = Field(None, max_length=256)
    strategy: str | None = Field(None, max_length=64)
    since: float | None = Field(None, ge=0, le=MAX_SINCE, allow_inf_nan=False)
    window: float | None = Field(None, gt=0, le=MAX_WINDOW_S, allow_inf_nan=False)


class Percentiles(BaseModel):
    requests: int
    p50: float
    p95: float
    p99: float


class Latency(BaseModel):
    strategy: str
    latency: Percentiles
    ttft: Percentiles | None


class Volume(BaseModel):
    bucket_s: int
    start: list[float] = Field(description="each bucket's start, epoch seconds")
    counts: dict[str, list[int]] = Field(description="requests per bucket by outcome")


class RecentRow(BaseModel):
    id: str
    time: float
    model: str | None
    strategy: str
    setting: str
    outcome: Outcome
    status: int
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    ttft_s: float | None
    correct: bool | None
    record: str = Field(description="where the full record is: candidates, votes, trace")


class Filters(BaseModel):
    models: list[str]
    strategies: list[str]


class DashboardData(BaseModel):
    generated_at: float
    since: float | None
    scanned: int = Field(description="served records read from the ledger for the window")
    truncated: bool = Field(description="the window held more than SCAN_LIMIT records; the oldest were not read")
    benchmark_runs: list[str]
    sources: dict[str, list[str]] = Field(description="the benchmark runs by where they came from: shipped, imported, results_dir")
    families: list[str] = Field(description="the task families of the points, in the order the page draws their panels")
    points: list[Point]
    pareto: dict[str, list[str]] = Field(description="per family, the ids of its front's points by mean generated tokens")
    latency: list[Latency]
    volume: Volume
    recent: list[RecentRow]
    filters: Filters


def parse_query(items: Iterable[tuple[str, str]]) -> DashboardQuery:
    query: DashboardQuery = parse(DashboardQuery, query_fields(items))
    if query.since is not None and query.window is not None:
        raise APIError(400, "Give `since` or `window`, not both", param="window", code="invalid_value")
    return query


def percentiles(values: Iterable[float]) -> Percentiles | None:
    """p50/p95/p99, linearly interpolated between the closest ranks (numpy's default)."""
    observed = list(values)
    if not observed:
        return None
    p50, p95, p99 = np.percentile(observed, [50, 95, 99])
    return Percentiles(requests=len(observed), p50=round(float(p50), 4), p95=round(float(p95), 4), p99=round(float(p99), 4))


def latency_by_strategy(records: Iterable[LedgerRecord]) -> list[Latency]:
    """Served requests only: a failure's latency is how fast it failed, which says nothing of the strategy."""
    by_strategy: dict[str, list[LedgerRecord]] = defaultdict(list)
    for r in records:
        if r.outcome == "served":
            by_strategy[r.strategy].append(r)
    rows = []
    for strategy, members in sorted(by_strategy.items()):
        latency = percentiles(r.latency_s for r in members)
        assert latency is not None
        rows.append(Latency(strategy=strategy, latency=latency, ttft=percentiles(r.ttft_s for r in members if r.ttft_s is not None)))
    return rows


def bucket_size(span_s: float) -> int:
    """The smallest round bucket that keeps the chart within MAX_BUCKETS bars."""
    return next((b for b in BUCKETS_S if span_s / b <= MAX_BUCKETS), math.ceil(span_s / MAX_BUCKETS))


def volume(records: Sequence[LedgerRecord], start: float | None, end: float) -> Volume:
    """Requests per time bucket and outcome, from `start` (or the oldest record) to `end`, empty buckets included."""
    if start is None:
        if not records:
            return Volume(bucket_s=BUCKETS_S[0], start=[], counts={o: [] for o in OUTCOMES})
        start = min(r.time for r in records)
    size = bucket_size(max(end - start, 1.0))
    first, last = math.floor(start / size), math.floor(end / size)
    counts = {o: [0] * (last - first + 1) for o in OUTCOMES}
    for r in records:
        counts[r.outcome][min(max(math.floor(r.time / size), first), last) - first] += 1
    return Volume(bucket_s=size, start=[float((first + i) * size) for i in range(last - first + 1)], counts=counts)


def recent_row(r: LedgerRecord) -> RecentRow:
    return RecentRow(
        id=r.id,
        time=r.time,
        model=r.model,
        strategy=r.strategy,
        setting=r.setting,
        outcome=r.outcome,
        status=r.status,
        finish_reason=r.finish_reason,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        latency_s=r.latency_s,
        ttft_s=r.ttft_s,
        correct=r.correct,
        record=f"/v1/requests/{r.id}",
    )


def summarize(served: Sequence[LedgerRecord], runs: Sequence[Run], query: DashboardQuery, since: float | None, now: float) -> DashboardData:
    """`served` is the ledger's window newest first, as read; `runs` every benchmark run known."""

    def wanted(r: LedgerRecord) -> bool:
        return (query.model is None or r.model == query.model) and (query.strategy is None or r.strategy == query.strategy)

    benchmarks = [r for run in runs for r in run.records]
    traffic = [r for r in served if wanted(r)]
    reference = [r for r in benchmarks if wanted(r)]
    points = accuracy_points([*traffic, *reference], {run.name: run.origin for run in runs})
    front = fronts(points)
    on_front = {i for ids in front.values() for i in ids}
    truncated = len(served) >= SCAN_LIMIT
    # The volume axis starts where the data read starts: the window's start, or the oldest record read when the
    # window is open-ended or held more than was read.
    start = min((r.time for r in served), default=None) if truncated or since is None else since
    everything = [*served, *benchmarks]
    return DashboardData(
        generated_at=now,
        since=since,
        scanned=len(served),
        truncated=truncated,
        benchmark_runs=[run.name for run in runs],
        sources={origin: [run.name for run in runs if run.origin == origin] for origin in ORIGINS},
        families=families(points),
        points=[p.model_copy(update={"pareto": p.id in on_front}) for p in points],
        pareto=front,
        latency=latency_by_strategy(traffic),
        volume=volume(traffic, start, now),
        recent=[recent_row(r) for r in traffic[:RECENT_ROWS]],
        filters=Filters(
            models=sorted({r.model for r in everything if r.model}),
            strategies=sorted({r.strategy for r in everything}),
        ),
    )


ASSETS = {
    "dashboard.js": STATIC / "dashboard.js",
    "dashboard.css": STATIC / "dashboard.css",
}


@cache
def plotly_js() -> Path:
    """plotly.js as the `plotly` wheel bundles it, found without importing plotly's Python side."""
    spec = importlib.util.find_spec("plotly")
    assert spec is not None and spec.origin is not None, "plotly is a dependency of Ponder"
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/dashboard/assets/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> FileResponse:
    """A fixed set of files, so no request path ever reaches the file system. plotly.js (4.8 MB) changes only with
    the installed package and is cached for a day; the page's own files are fetched fresh, so an upgrade shows."""
    if name == "plotly.min.js":
        return FileResponse(plotly_js(), headers={"cache-control": "public, max-age=86400"})
    if name not in ASSETS:
        raise APIError(404, f"No dashboard asset {name!r}", code="not_found")
    return FileResponse(ASSETS[name], headers={"cache-control": "no-cache"})


@router.get("/dashboard/data")
async def dashboard_data(request: Request) -> DashboardData:
    query = parse_query(request.query_params.multi_items())
    ledger: Ledger = request.app.state.ledger
    references: ReferenceRuns = request.app.state.references
    now = time.time()
    since = query.since if query.since is not None else (now - query.window if query.window is not None else None)
    try:
        served = await ledger.recent(since=since, limit=SCAN_LIMIT)
    except (RedisError, OSError, TimeoutError) as exc:
        raise APIError(503, f"The ledger could not be read from Redis: {type(exc).__name__}: {exc}", code="ledger_unavailable") from exc
    return summarize(served, await references.load(), query, since, now)
