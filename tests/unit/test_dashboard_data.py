"""The dashboard's data endpoint over the real Redis server (its own database, emptied first) and a benchmark result
file in a temporary results directory: accuracy and its standard error, the Pareto fronts, latency percentiles,
volume buckets, filters, and the refusals (bad query values, an unreachable Redis)."""

from __future__ import annotations

import json
import math
import os
import string
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from service.api import ledger_routes
from service.api.errors import APIError, install_error_handlers
from service.dashboard import routes as dashboard
from service.dashboard.points import Point, pareto_front
from service.dashboard.routes import MAX_SINCE, MAX_WINDOW_S, bucket_size, parse_query, percentiles, volume
from service.planning.evidence import ReferenceRuns
from service.settings import LedgerSettings, Settings
from service.state import results, store
from service.state.ledger import RECORD, STREAM, Ledger, LedgerRecord

from ..conftest import database_url, empty_database, free_port

BENCH_RUN = "accuracy-tiny-20261123T000000Z"


def light_app(redis_url: str, results_dir: Path, *, shipped: bool = False) -> FastAPI:
    """The dashboard without engines: its router and the ledger's routes over a real Ledger and the benchmark runs
    (the results directory, Redis' imported runs, and with `shipped` the package's own), wired as `create_app` wires
    them (the end-to-end browser test serves this too)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = store.connect(redis_url)
        app.state.ledger = Ledger(app.state.redis, LedgerSettings())
        app.state.references = ReferenceRuns(app.state.redis, results_dir, shipped=shipped)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = FastAPI(lifespan=lifespan)
    app.state.settings = Settings(results_dir=results_dir)
    install_error_handlers(app)
    app.include_router(ledger_routes.router)
    app.include_router(dashboard.router)
    return app


def record(request_id: str, at: float, **fields: Any) -> LedgerRecord:
    defaults: dict[str, Any] = {"route": "/v1/chat/completions", "model": "m", "status": 200, "outcome": "served", "prompt_tokens": 30, "latency_s": 1.0}
    return LedgerRecord(id=request_id, time=at, **{**defaults, **fields})


def rid(i: int) -> str:
    return f"{i:032x}"


def majority_detail() -> dict[str, Any]:
    """What a majority request's report looks like: the detail view draws candidates, the tally and the trace."""
    return {
        "strategy": {"name": "majority", "n": 4},
        "candidates": [
            {
                "index": i,
                "text": f"The answer is {a}",
                "tokens": 10 + i,
                "finish_reason": "stop",
                "answer": a,
                "group": g,
                "scores": {"logprob": -0.1 * (i + 1)},
            }
            for i, (a, g) in enumerate([("42", 0), ("42", 0), ("41", 1), ("42", 0)])
        ],
        "chosen": 0,
        "selection": {
            "method": "majority",
            "weight": "none",
            "tally": [{"group": 0, "answer": "42", "votes": 3, "weight": 3.0}, {"group": 1, "answer": "41", "votes": 1, "weight": 1.0}],
            "winner": 0,
            "tied": [],
            "tie_break": None,
        },
        "trace": [{"t": 0.01 * i, "type": "rollout", "stage": "sample", "index": i, "tokens": 10 + i, "finish_reason": "stop"} for i in range(4)]
        + [{"t": 0.05, "type": "tally", "winner": 0}],
        "correct": True,
    }


async def seed(redis: Redis, now: float) -> dict[str, list[str]]:
    """Served traffic of known shape; returns the ids by kind. An old record is written first with an explicit
    stream id two hours back (the ledger's entry ids are write times), then the rest through `Ledger.submit`, one
    at a time so the stream's order is the order here."""
    old = record(rid(100), now - 7200, strategy="majority", params={"name": "majority", "n": 4}, completion_tokens=50, latency_s=5.0, correct=True)
    await redis.set(RECORD.format(old.id), old.model_dump_json())
    await redis.xadd(STREAM, {"record": old.model_dump_json(exclude={"detail"})}, id=f"{int(old.time * 1000)}-0")
    ledger = Ledger(redis, LedgerSettings())
    fresh = [
        *(
            record(
                rid(i),
                now - 50 + i,
                strategy="majority",
                params={"name": "majority", "n": 4},
                completion_tokens=40 + 20 * i,
                latency_s=1.0 + i,
                correct=c,
                stages={"sample": {"prompt_tokens": 30, "completion_tokens": 40 + 20 * i, "cached_tokens": 24}},
                detail=majority_detail(),
            )
            for i, c in enumerate([True, None, False, None])
        ),
        *(
            record(rid(10 + i), now - 40 + i, stream=True, completion_tokens=10, latency_s=0.5, ttft_s=0.1 * (i + 1), correct=c)
            for i, c in enumerate([True, False, None])
        ),
        *(
            record(
                rid(20 + i),
                now - 30 + i,
                model="other",
                strategy="best_of_n",
                params={"name": "best_of_n", "n": 2, "select": "logprob"},
                completion_tokens=20,
                latency_s=1.5,
            )
            for i in range(2)
        ),
        record(
            rid(30),
            now - 20,
            strategy="majority",
            params={"name": "majority", "n": 4},
            status=503,
            outcome="failed",
            prompt_tokens=0,
            error={"status": 503, "code": "engine_unavailable", "message": "engine died"},
        ),
        record(rid(31), now - 10, status=499, outcome="cancelled", completion_tokens=3),
    ]
    for r in fresh:
        ledger.submit(r)
        await ledger.drain(5.0)
    assert await ledger.feedback(rid(1), True) is not None  # feedback makes an unknown answer known
    return {"old": [old.id], "all": [r.id for r in reversed(fresh)] + [old.id]}


def write_bench(directory: Path) -> Path:
    """A tiny accuracy result: greedy (0.5 for 10 tokens), majority@4 (0.75 for 40), majority@8 (0.5 for 80, so
    dominated); the oracle row is an upper bound no request returns and must not become a point."""

    def outcomes(correct: list[bool], tokens: int) -> list[dict[str, Any]]:
        return [
            {
                "problem": f"p{i}",
                "latency_s": 0.2,
                "completion_tokens": tokens,
                "prompt_tokens": 20,
                "cached_tokens": 0,
                "correct": {"chosen": c, "oracle": True},
            }
            for i, c in enumerate(correct)
        ]

    result = {
        "benchmark": "accuracy-tiny",
        "timestamp": "2026-11-23T00:00:00+00:00",
        "model": {"name": "bench-model"},
        "runs": [
            {"config": "greedy", "strategy": None, "temperature": 0.0, "rows": ["chosen"], "outcomes": outcomes([True, True, False, False], 10)},
            {
                "config": "majority@4",
                "strategy": {"name": "majority", "n": 4},
                "temperature": 0.4,
                "rows": ["chosen", "oracle"],
                "outcomes": outcomes([True, True, True, False], 40),
            },
            {
                "config": "majority@8",
                "strategy": {"name": "majority", "n": 8},
                "temperature": 0.4,
                "rows": ["chosen", "oracle"],
                "outcomes": outcomes([True, True, False, False], 80),
            },
        ],
    }
    path = directory / f"{BENCH_RUN}.json"
    path.write_text(json.dumps(result))
    return path


@pytest.fixture
def db_url(redis_url: str) -> str:
    return database_url(redis_url, "dashboard_data")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with empty_database(redis_url, "dashboard_data") as client:
        yield client


@pytest.fixture
async def seeded(redis: Redis) -> dict[str, list[str]]:
    return await seed(redis, time.time())


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    write_bench(tmp_path)
    return tmp_path


@pytest.fixture
async def http(db_url: str, results_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = light_app(db_url, results_dir)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard") as client:
        yield client


async def data(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/dashboard/data", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def by_setting(body: dict[str, Any], population: str) -> dict[str, dict[str, Any]]:
    return {p["setting"]: p for p in body["points"] if p["population"] == population}


async def test_accuracy_counts_known_answers_and_tokens_count_every_served_request(http: httpx.AsyncClient, seeded: dict[str, list[str]]) -> None:
    served = by_setting(await data(http), "request")
    majority = served["majority(n=4)"]
    # five served (the failed one is not), four known: True, True (from feedback), False, True (the old one)
    assert (majority["requests"], majority["known"], majority["correct"]) == (5, 4, 3)
    assert majority["accuracy"] == 0.75 and majority["stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4), abs=1e-6)
    assert majority["mean_completion_tokens"] == (40 + 60 + 80 + 100 + 50) / 5 and majority["mean_total_tokens"] == 66 + 30
    plain = served["none"]
    assert (plain["requests"], plain["known"], plain["accuracy"], plain["mean_completion_tokens"]) == (3, 2, 0.5, 10)
    unrated = served["best_of_n(n=2, select=logprob)"]
    assert unrated["accuracy"] is None and unrated["stderr"] is None and unrated["model"] == "other" and unrated["requests"] == 2


async def test_benchmark_runs_are_points_of_their_family_and_each_family_has_its_own_front(http: httpx.AsyncClient, seeded: dict[str, list[str]]) -> None:
    body = await data(http)
    population = f"benchmark:{BENCH_RUN}"
    bench = by_setting(body, population)
    assert set(bench) == {"none(temperature=0.0)", "majority(n=4, temperature=0.4)", "majority(n=8, temperature=0.4)"}
    assert all(p["source"] == "benchmark" and p["run"] == BENCH_RUN and p["requests"] == 4 for p in bench.values())
    assert all(p["family"] == "tiny" and p["origin"] == "results_dir" for p in bench.values())
    assert {p["label"] for p in bench.values()} == {"plain T=0", "majority n=4 T=0.4", "majority n=8 T=0.4"}
    assert bench["majority(n=4, temperature=0.4)"]["accuracy"] == 0.75  # the oracle row's all-correct is not counted
    assert body["benchmark_runs"] == [BENCH_RUN] and body["sources"] == {"shipped": [], "imported": [], "results_dir": [BENCH_RUN]}
    assert body["families"] == ["tiny", "default"]
    ids = {setting: p["id"] for setting, p in bench.items()}
    assert body["pareto"]["tiny"] == [ids["none(temperature=0.0)"], ids["majority(n=4, temperature=0.4)"]]
    assert not bench["majority(n=8, temperature=0.4)"]["pareto"] and bench["majority(n=4, temperature=0.4)"]["pareto"]
    served = by_setting(body, "request")
    assert all(p["family"] == "default" and p["origin"] == "ledger" for p in served.values())
    assert body["pareto"]["default"] == [served["none"]["id"], served["majority(n=4)"]["id"]]
    assert body["filters"] == {"models": ["bench-model", "m", "other"], "strategies": ["best_of_n", "majority", "none"]}


async def test_the_window_bounds_served_traffic_only(http: httpx.AsyncClient, seeded: dict[str, list[str]]) -> None:
    body = await data(http, window=3600)
    majority = by_setting(body, "request")["majority(n=4)"]
    assert (majority["requests"], majority["known"], majority["accuracy"], majority["mean_completion_tokens"]) == (4, 3, round(2 / 3, 6), 70)
    assert seeded["old"][0] not in {r["id"] for r in body["recent"]} and body["scanned"] == 11
    assert by_setting(body, f"benchmark:{BENCH_RUN}")  # a benchmark run is a reference, whatever the window
    since = body["since"]
    assert since == pytest.approx(time.time() - 3600, abs=5)
    again = await data(http, since=since)
    assert {r["id"] for r in again["recent"]} == {r["id"] for r in body["recent"]}


async def test_latency_percentiles_per_strategy_over_served_requests(http: httpx.AsyncClient, seeded: dict[str, list[str]]) -> None:
    latency = {row["strategy"]: row for row in (await data(http))["latency"]}
    assert latency["majority"]["latency"] == {"requests": 5, "p50": 3.0, "p95": 4.8, "p99": 4.96}
    assert latency["majority"]["ttft"] is None
    assert latency["none"]["latency"]["requests"] == 3  # the cancelled one is not timed
    assert latency["none"]["ttft"] == {"requests": 3, "p50": 0.2, "p95": 0.29, "p99": 0.298}
    assert latency["best_of_n"]["latency"]["p99"] == 1.5


async def test_volume_counts_every_outcome_in_round_buckets(http: httpx.AsyncClient, seeded: dict[str, list[str]]) -> None:
    hour = (await data(http, window=3600))["volume"]
    assert hour["bucket_s"] == 60 and 60 <= len(hour["start"]) <= 61
    assert all(b - a == 60 for a, b in zip(hour["start"], hour["start"][1:], strict=False)) and hour["start"][0] % 60 == 0
    assert {o: sum(c) for o, c in hour["counts"].items()} == {"served": 9, "failed": 1, "cancelled": 1}
    everything = (await data(http))["volume"]
    assert everything["bucket_s"] == 300  # two hours back to the old record: 24 five-minute buckets
    assert {o: sum(c) for o, c in everything["counts"].items()} == {"served": 10, "failed": 1, "cancelled": 1}
    assert everything["counts"]["served"][0] == 1  # the old record opens the axis


async def test_recent_is_newest_first_and_links_to_the_full_record(http: httpx.AsyncClient, seeded: dict[str, list[str]]) -> None:
    recent = (await data(http))["recent"]
    assert [r["id"] for r in recent] == seeded["all"]
    first = next(r for r in recent if r["id"] == rid(1))
    assert first["correct"] is True and first["setting"] == "majority(n=4)" and first["outcome"] == "served"
    whole = await http.get(first["record"])
    assert whole.status_code == 200 and whole.json()["detail"]["selection"]["winner"] == 0 and whole.json()["correct"] is True


async def test_filters_narrow_points_rows_and_latency_but_not_the_choices(http: httpx.AsyncClient, seeded: dict[str, list[str]]) -> None:
    other = await data(http, model="other")
    assert {(p["population"], p["setting"]) for p in other["points"]} == {("request", "best_of_n(n=2, select=logprob)")}
    assert {r["id"] for r in other["recent"]} == {rid(20), rid(21)}
    assert [row["strategy"] for row in other["latency"]] == ["best_of_n"]
    assert other["filters"]["models"] == ["bench-model", "m", "other"]
    plain = await data(http, strategy="none")
    assert {(p["population"], p["setting"]) for p in plain["points"]} == {("request", "none"), (f"benchmark:{BENCH_RUN}", "none(temperature=0.0)")}
    assert {o: sum(c) for o, c in plain["volume"]["counts"].items()} == {"served": 3, "failed": 0, "cancelled": 1}
    nothing = await data(http, model="m", strategy="best_of_n", window=60)
    assert nothing["points"] == [] and nothing["recent"] == [] and nothing["pareto"] == {}


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("since=-1", "since"),
        ("since=yesterday", "since"),
        ("since=1e300", "since"),
        ("window=0", "window"),
        ("window=nan", "window"),
        ("since=1&window=60", "window"),
        ("model=a&model=b", "model"),
        ("colour=red", "colour"),
    ],
)
async def test_bad_queries_are_400_naming_the_parameter(http: httpx.AsyncClient, query: str, param: str) -> None:
    response = await http.get(f"/dashboard/data?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


async def test_an_unreachable_redis_is_a_503_not_a_500(results_dir: Path) -> None:
    app = light_app(f"redis://127.0.0.1:{free_port()}/0", results_dir)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard") as client:
        response = await client.get("/dashboard/data")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable_error" and response.json()["error"]["code"] == "ledger_unavailable"


async def test_the_page_and_its_assets_are_served(http: httpx.AsyncClient) -> None:
    page = await http.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for src in ("/dashboard/assets/plotly.min.js", "/dashboard/assets/dashboard.js", "/dashboard/assets/dashboard.css"):
        assert src in page.text
        asset = await http.get(src)
        assert asset.status_code == 200 and len(asset.content) > 1000
    assert (await http.get("/dashboard/assets/..%2Fdashboard.py")).status_code == 404
    assert (await http.get("/dashboard/assets/index.html")).status_code == 404


def test_result_files_are_reread_when_they_change_and_bad_ones_are_skipped(tmp_path: Path) -> None:
    files = results.BenchmarkResults()
    path = write_bench(tmp_path)
    (tmp_path / "accuracy-broken-20261123T000000Z.json").write_text("{not json")
    (tmp_path / "overhead-20261123T000000Z.json").write_text("{}")  # not an accuracy result: not read
    (tmp_path / "accuracy-nameless.json").write_text(path.read_text())  # no family in the name: not read
    first = files.load(tmp_path)
    assert list(first) == [BENCH_RUN] and len(first[BENCH_RUN]) == 12 and {r.run for r in first[BENCH_RUN]} == {BENCH_RUN}
    assert files.load(tmp_path)[BENCH_RUN] is first[BENCH_RUN]  # unchanged: not parsed again
    result = json.loads(path.read_text())
    result["runs"] = result["runs"][:1]
    path.write_text(json.dumps(result))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert len(files.load(tmp_path)[BENCH_RUN]) == 4
    path.unlink()
    assert files.load(tmp_path) == {} and files.load(None) == {} and files.load(tmp_path / "missing") == {}


def point(name: str, accuracy: float | None, tokens: float) -> Point:
    return Point(
        id=name,
        population="p",
        source="request",
        run=None,
        origin="ledger",
        family="f",
        model="m",
        strategy="s",
        setting=name,
        label=name,
        requests=1,
        known=1,
        correct=1,
        accuracy=accuracy,
        stderr=0.0,
        mean_completion_tokens=tokens,
        mean_total_tokens=tokens,
    )


def test_pareto_front_keeps_only_undominated_points_in_token_order() -> None:
    points = [
        point("cheap", 0.2, 10),
        point("dominated", 0.2, 20),  # as accurate as "cheap", for more tokens
        point("better", 0.5, 40),
        point("twin", 0.5, 40),  # equal points do not dominate each other
        point("worse-and-dearer", 0.4, 80),
        point("best", 0.9, 300),
        point("unrated", None, 1),
    ]
    assert pareto_front(points) == ["cheap", "better", "twin", "best"]
    assert pareto_front([]) == [] and pareto_front([point("unrated", None, 1)]) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(1, 1e4)), min_size=1, max_size=12))
def test_every_point_off_the_front_is_dominated_by_one_on_it(pairs: list[tuple[float, float]]) -> None:
    points = [point(str(i), a, t) for i, (a, t) in enumerate(pairs)]
    front = set(pareto_front(points))
    assert front
    best = max(points, key=lambda p: (p.accuracy, -p.mean_completion_tokens))
    assert best.id in front
    for p in points:
        if p.id not in front:
            assert any(q.accuracy >= p.accuracy and q.mean_completion_tokens <= p.mean_completion_tokens for q in points if q.id in front)  # type: ignore[operator]


def test_percentiles_interpolate_between_ranks() -> None:
    p = percentiles([4.0, 1.0, 3.0, 2.0])
    assert p is not None and p.requests == 4 and p.p50 == 2.5 and p.p95 == pytest.approx(3.85)
    one = percentiles([7.0])
    assert one is not None and one.p50 == one.p99 == 7.0
    assert percentiles([]) is None


@given(st.floats(1, 10 * 365 * 86400))
def test_bucket_sizes_keep_the_chart_within_its_bar_count(span: float) -> None:
    size = bucket_size(span)
    assert span / size <= dashboard.MAX_BUCKETS
    assert size in dashboard.BUCKETS_S or span / dashboard.BUCKETS_S[-1] > dashboard.MAX_BUCKETS


def test_volume_without_records_or_window_is_empty() -> None:
    empty = volume([], None, time.time())
    assert empty.start == [] and empty.counts == {"served": [], "failed": [], "cancelled": []}


@given(st.floats(0, MAX_SINCE))
def test_any_time_since_the_epoch_is_a_valid_since(since: float) -> None:
    assert parse_query([("since", repr(since))]).since == since


@given(st.floats().filter(lambda x: not 0 <= x <= MAX_SINCE))
def test_negative_infinite_nan_or_millisecond_since_is_refused(since: float) -> None:
    with pytest.raises(APIError) as refused:
        parse_query([("since", repr(since))])
    assert refused.value.status == 400 and refused.value.param == "since"


@given(st.floats(0, MAX_WINDOW_S, exclude_min=True))
def test_any_positive_window_up_to_a_year_is_valid(window: float) -> None:
    assert parse_query([("window", repr(window))]).window == window


@given(st.text(alphabet=string.ascii_letters, min_size=1).filter(lambda s: s.lower() not in {"nan", "inf", "infinity"}))
def test_words_are_not_numbers(word: str) -> None:
    for key in ("since", "window"):
        with pytest.raises(APIError) as refused:
            parse_query([(key, word)])
        assert refused.value.status == 400 and refused.value.param == key


@given(st.text(max_size=64), st.text(max_size=64))
def test_any_model_and_strategy_name_is_a_filter_and_empty_means_all(model: str, strategy: str) -> None:
    query = parse_query([("model", model), ("strategy", strategy)])
    assert query.model == (model or None) and query.strategy == (strategy or None)
