"""Load: N concurrent clients against one `ponder serve` for a bounded time, with a mix of strategies, as a service
would see them. Per request type and overall: p50/p95/p99 latency, throughput (requests and generated tokens per
second), error rate; and the engine's queue depth (requests its scheduler is running and keeping waiting, sampled
from `GET /health` once a second).

Every client sends its next request as soon as its last one ended (closed loop), cycling through the mix from a
different starting point, so each type runs beside every other. Problems are the arithmetic suite's (distinct
prompts; a reference answer, so each response is graded). Every request carries a deadline, so none can outlive
the run by more than that. The server is Ponder as `ponder serve` runs by default (local Ray, in-process fakeredis,
the default engine settings).

    .venv/bin/python -m bench.load                          # 8 clients for 3 minutes: ~6 minutes with start-up
    .venv/bin/python -m bench.load --clients 2 --duration 30  # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.server import ponder_bench, save_result
from suites import arithmetic

log = logging.getLogger("bench.load")
MODEL = "smollm2-135m"


def mix(args: argparse.Namespace) -> dict[str, dict[str, Any] | None]:
    """The request types: a strategy field each (None: a plain call)."""
    return {
        "plain": None,
        f"majority n={args.n}": {"name": "majority", "n": args.n},
        f"best_of_n n={args.n}": {"name": "best_of_n", "n": args.n, "select": "logprob"},
        "majority adaptive": {"name": "majority", "early_stop": {"name": "adaptive", "batch": 2, "max_n": 2 * args.n}},
    }


@dataclass
class Result:
    kind: str
    started_s: float
    latency_s: float
    status: int | None
    completion_tokens: int = 0
    correct: bool | None = None
    error: str | None = None


async def one_request(
    client: httpx.AsyncClient, kind: str, strategy: dict[str, Any] | None, problem: arithmetic.Problem, args: argparse.Namespace, t0: float
) -> Result:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": problem.messages,
        "max_tokens": args.max_tokens,
        "temperature": 0.7,
        "budget": {"deadline_s": args.deadline},
        "verifier": {"reference": str(problem.answer)},
    }
    if strategy is not None:
        body["strategy"] = strategy
    started = time.perf_counter()
    try:
        response = await client.post("/v1/chat/completions", json=body, timeout=args.deadline + 60)
    except httpx.HTTPError as exc:
        return Result(kind, started - t0, time.perf_counter() - started, None, error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - started
    if response.status_code != 200:
        return Result(kind, started - t0, latency, response.status_code, error=response.text[:300])
    payload = response.json()
    return Result(kind, started - t0, latency, 200, payload["usage"]["completion_tokens"], payload["ponder"].get("correct"))


async def sample_queue(client: httpx.AsyncClient, stop: asyncio.Event, samples: list[dict[str, float]], t0: float) -> None:
    """The engine's scheduler as the gateway's health check reports it, summed over replicas."""
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            rows = (await client.get("/health", timeout=10)).json()["models"][MODEL]
            samples.append(
                {
                    "t_s": time.perf_counter() - t0,
                    "running": sum(r.get("running", 0) for r in rows),
                    "waiting": sum(r.get("waiting", 0) for r in rows),
                    "inflight": sum(r.get("inflight", 0) for r in rows),
                }
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def drive(base_url: str, args: argparse.Namespace) -> tuple[list[Result], list[dict[str, float]], float]:
    kinds = list(mix(args).items())
    problems = itertools.cycle(arithmetic.problems(2000, seed=arithmetic.SEED + 7))
    async with httpx.AsyncClient(base_url=base_url) as client:
        warm_t0 = time.perf_counter()
        await asyncio.gather(*(one_request(client, kind, strategy, next(problems), args, warm_t0) for kind, strategy in kinds))
        results: list[Result] = []
        samples: list[dict[str, float]] = []
        stop = asyncio.Event()
        t0 = time.perf_counter()
        end = t0 + args.duration

        async def one_client(index: int) -> None:
            for k in itertools.count():
                if time.perf_counter() >= end:
                    return
                kind, strategy = kinds[(index + k) % len(kinds)]
                results.append(await one_request(client, kind, strategy, next(problems), args, t0))

        sampler = asyncio.create_task(sample_queue(client, stop, samples, t0))
        await asyncio.gather(*(one_client(i) for i in range(args.clients)))
        wall = time.perf_counter() - t0
        stop.set()
        await sampler
    return results, samples, wall


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "p95_s": None, "p99_s": None}
    return {f"p{q}_s": float(np.percentile(values, q)) for q in (50, 95, 99)}


def summarize(results: list[Result], samples: list[dict[str, float]], wall_s: float) -> dict[str, Any]:
    def group(rows: list[Result]) -> dict[str, Any]:
        ok = [r for r in rows if r.status == 200]
        graded = [r.correct for r in ok if r.correct is not None]
        return {
            "requests": len(rows),
            "errors": len(rows) - len(ok),
            "error_rate": (len(rows) - len(ok)) / len(rows) if rows else 0.0,
            **percentiles([r.latency_s for r in ok]),
            "requests_per_s": len(ok) / wall_s,
            "completion_tokens_per_s": sum(r.completion_tokens for r in ok) / wall_s,
            "tokens_per_request": float(np.mean([r.completion_tokens for r in ok])) if ok else None,
            "accuracy": float(np.mean(graded)) if graded else None,
        }

    kinds = sorted({r.kind for r in results}, key=[r.kind for r in results].index)
    queue = (
        {
            name: {
                "mean": float(np.mean([s[name] for s in samples])),
                "p95": float(np.percentile([s[name] for s in samples], 95)),
                "max": max(s[name] for s in samples),
            }
            for name in ("running", "waiting", "inflight")
        }
        if samples
        else {}
    )
    return {"wall_s": wall_s, "kinds": {k: group([r for r in results if r.kind == k]) for k in kinds}, "all": group(results), "engine_queue": queue}


def table(summary: dict[str, Any], args: argparse.Namespace) -> str:
    def seconds(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = [("type", "requests", "errors", "p50 s", "p95 s", "p99 s", "req/s", "gen tok/s", "tok/req", "accuracy")]
    for name, g in [*summary["kinds"].items(), ("all", summary["all"])]:
        rows.append(
            (
                name,
                str(g["requests"]),
                f"{g['errors']} ({g['error_rate']:.1%})",
                seconds(g["p50_s"]),
                seconds(g["p95_s"]),
                seconds(g["p99_s"]),
                f"{g['requests_per_s']:.3f}",
                f"{g['completion_tokens_per_s']:.1f}",
                "-" if g["tokens_per_request"] is None else f"{g['tokens_per_request']:.0f}",
                "-" if g["accuracy"] is None else f"{g['accuracy']:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    q = summary["engine_queue"]
    queue = "; ".join(f"{name} mean {s['mean']:.1f}, p95 {s['p95']:.0f}, max {s['max']:.0f}" for name, s in q.items())
    header = f"{args.clients} clients, closed loop, {summary['wall_s']:.0f} s; latency of answered requests; tok/s counts every rollout's tokens"
    return "\n".join([header, *lines, f"engine queue (per 1 s sample): {queue}"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=180, help="seconds during which clients start requests")
    parser.add_argument("--n", type=int, default=4, help="samples of majority and best_of_n (adaptive: at most 2n)")
    parser.add_argument("--max-tokens", type=int, default=48, help="per completion")
    parser.add_argument("--deadline", type=float, default=120, help="every request's budget.deadline_s")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/load-<UTC time>.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with ponder_bench(MODEL, log) as bench:
        results, samples, wall = asyncio.run(drive(bench.base_url, args))
    summary = summarize(results, samples, wall)
    _, out = save_result(
        "load",
        bench.started,
        {"name": bench.spec.name, "path": str(bench.model_dir)},
        args,
        {"mix": mix(args), "engine_args": bench.side.engine_args, "engine_env": bench.side.engine_env},
        startup_s=bench.startup_s,
        log=str(bench.log_path),
        summary=summary,
        queue_samples=samples,
        requests=[asdict(r) for r in results],
    )
    print(f"{table(summary, args)}\n\nstartup to healthy: {bench.startup_s:.1f} s\nresult: {out}")


if __name__ == "__main__":
    main()
