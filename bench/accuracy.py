"""Accuracy against cost: plain calls and the sampling strategies on two suites nobody here wrote, through the
real server (Ponder as `ponder serve` runs it) with the official client, every row in one run on one engine.

    .venv/bin/python -m bench.accuracy arithmetic   # 200 problems: greedy, samples, majority@1,4,8,16 at T 0.4 and 0.8
    .venv/bin/python -m bench.accuracy humaneval    # 164 problems: greedy, a sample, best_of_n@4,8,16 (three selectors)
    .venv/bin/python -m bench.accuracy arithmetic --program   # program-aided: greedy, a greedy program, and
                                                               # majority@N against program@N (PAL voting) at T 0.6

A row runs every problem (a few at a time, as a service sees them) before the next row starts. Its wall time per
problem is the row's wall time over its problems; the ratio is that over the plain greedy row's. Best-of-N draws
its N candidates once per N and reports what each selector picks among them (`ponder.selection.alternatives`), so
the code_tests, logprob and self_certainty rows at one N share candidates and wall time, as in search-and-learn's
scoring; `oracle` is whether any of the N candidates passes (what a perfect selector would reach).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from bench import replies
from bench.report import aligned
from bench.server import ponder_bench, save_result
from suites import arithmetic, humaneval
from verifiers.answers import AnswerGrouper, extract_answer
from verifiers.sandbox import Sandbox, SandboxLimits

log = logging.getLogger("bench.accuracy")
MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Config:
    """One request per problem; `rows` names what it is read as (several selectors may share one request)."""

    name: str
    temperature: float
    strategy: dict[str, Any] | None = None
    rows: tuple[str, ...] = ("chosen",)


@dataclass
class Outcome:
    problem: str
    tier: str
    latency_s: float
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int
    correct: dict[str, bool] = field(default_factory=dict)


def arithmetic_configs(ns: list[int], temperatures: list[float], program: bool = False) -> list[Config]:
    if program:  # each program row beside the plain vote over as many samples at the same temperature
        configs = [Config("greedy", 0.0), Config("program greedy", 0.0, {"name": "program", "n": 1, "temperature": 0.0})]
        for t in temperatures:
            for n in ns:
                configs += [
                    Config(f"majority@{n} T={t}", t, {"name": "majority", "n": n, "temperature": t}),
                    Config(f"program@{n} T={t}", t, {"name": "program", "n": n, "temperature": t}),
                ]
        return configs
    configs = [Config("greedy", 0.0)] + [Config(f"sample T={t}", t) for t in temperatures]
    for t in temperatures:
        configs += [Config(f"majority@{n} T={t}", t, {"name": "majority", "n": n, "temperature": t}) for n in ns]
    return configs


def humaneval_configs(ns: list[int], temperature: float) -> list[Config]:
    configs = [Config("greedy", 0.0), Config(f"sample T={temperature}", temperature)]
    selectors = ("code_tests", "logprob", "self_certainty", "oracle")
    for n in ns:
        strategy = {"name": "best_of_n", "n": n, "temperature": temperature, "select": "code_tests", "score": "self_certainty"}
        configs.append(Config(f"best_of_n@{n}", temperature, strategy, rows=selectors))
    return configs


async def ask(client: AsyncOpenAI, messages: list[dict[str, str]], config: Config, max_tokens: int) -> tuple[Any, float]:
    extra = {"strategy": config.strategy} if config.strategy else None
    started = time.monotonic()
    response = await client.chat.completions.create(
        model=MODEL, messages=replies.chat_messages(messages), max_tokens=max_tokens, temperature=config.temperature, extra_body=extra
    )
    return response, time.monotonic() - started


def outcome(problem: str, tier: str, response: Any, latency: float) -> Outcome:
    usage = response.usage
    cached = (usage.prompt_tokens_details.cached_tokens or 0) if usage.prompt_tokens_details else 0
    return Outcome(problem, tier, latency, usage.completion_tokens, usage.prompt_tokens, cached)


async def run_rows(configs: list[Config], problems: list[Any], solve: Callable[[Config, Any], Awaitable[Outcome]], concurrency: int) -> list[dict[str, Any]]:
    # Untimed: the engine compiles kernels for each new batch shape it meets, so the smallest and the largest
    # request shapes run once at full concurrency before any row is timed.
    for config in (configs[0], configs[-1]):
        await asyncio.gather(*(solve(config, p) for p in problems[:concurrency]))
    results = []
    for config in configs:
        gate = asyncio.Semaphore(concurrency)

        async def one(problem: Any, config: Config = config, gate: asyncio.Semaphore = gate) -> Outcome:
            async with gate:
                return await solve(config, problem)

        started = time.monotonic()
        outcomes = await asyncio.gather(*(one(p) for p in problems))
        wall = time.monotonic() - started
        log.info("%s: %d problems in %.1f s", config.name, len(problems), wall)
        results.append(
            {
                "config": config.name,
                "strategy": config.strategy,
                "temperature": config.temperature,
                "rows": config.rows,
                "wall_s": wall,
                "outcomes": [o.__dict__ for o in outcomes],
            }
        )
    return results


async def arithmetic_run(base_url: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=600)
    grader = AnswerGrouper(timeout_s=10)
    items = arithmetic.problems(args.problems)

    async def solve(config: Config, p: arithmetic.Problem) -> Outcome:
        response, latency = await ask(client, p.messages, config, args.max_tokens)
        out = outcome(p.id, p.tier, response, latency)
        out.correct["chosen"] = await grader.equivalent(str(p.answer), extract_answer(response.choices[0].message.content or ""))
        return out

    try:
        runs = await run_rows(arithmetic_configs(args.ns, args.temperatures, args.program), items, solve, args.concurrency)
    finally:
        await grader.aclose()
    return runs, {"problems": len(items), "seed": arithmetic.SEED, "prompt": arithmetic.PROMPT}


async def humaneval_run(base_url: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=900)
    sandbox = Sandbox(SandboxLimits(concurrency=2))
    items = humaneval.problems(args.problems)
    visible = {p.id: p.has_visible_tests for p in items}

    async def passes(p: humaneval.Problem, reply: str) -> bool:
        report = await humaneval.grade(sandbox, p, reply)
        return report.total > 0 and report.passed == report.total

    async def solve(config: Config, p: humaneval.Problem) -> Outcome:
        if config.strategy and not visible[p.id]:  # no examples to test against: the score decides
            config = Config(config.name, config.temperature, {**config.strategy, "select": config.strategy["score"]}, config.rows)
        response, latency = await ask(client, p.messages, config, args.max_tokens)
        out = outcome(p.id, "all", response, latency)
        if config.strategy is None:
            out.correct["chosen"] = await passes(p, response.choices[0].message.content or "")
            return out
        ponder = response.model_extra["ponder"]
        texts = {c["index"]: c["text"] for c in ponder["candidates"]}
        graded = dict(zip(texts, await asyncio.gather(*(passes(p, t) for t in texts.values())), strict=True))
        picks = {"code_tests": ponder["chosen"], **ponder["selection"]["alternatives"]}
        out.correct = {row: graded.get(picks.get(row), False) for row in config.rows if row != "oracle"}
        out.correct["oracle"] = any(graded.values())
        return out

    runs = await run_rows(humaneval_configs(args.ns, args.temperature), items, solve, args.concurrency)
    return runs, {"problems": len(items), "with_visible_examples": sum(visible.values()), "prompt": humaneval.PROMPT, "sandbox": sandbox.isolation}


def stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else 0.0


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (request config, selector): accuracy with its standard error (per tier too), tokens and time."""
    baseline = next(r for r in runs if r["config"] == "greedy")
    base_wall = baseline["wall_s"] / len(baseline["outcomes"])
    base_latency = float(np.mean([o["latency_s"] for o in baseline["outcomes"]]))
    rows = []
    for run in runs:
        outcomes = run["outcomes"]
        count = len(outcomes)
        wall = run["wall_s"] / count
        latency = [o["latency_s"] for o in outcomes]
        for selector in run["rows"]:
            name = run["config"] if selector == "chosen" else f"{run['config']} {selector}"
            correct = [o["correct"][selector] for o in outcomes]
            accuracy = sum(correct) / count
            tiers = {}
            for tier in sorted({o["tier"] for o in outcomes}):
                marks = [o["correct"][selector] for o in outcomes if o["tier"] == tier]
                tiers[tier] = {"accuracy": sum(marks) / len(marks), "stderr": stderr(sum(marks) / len(marks), len(marks)), "problems": len(marks)}
            rows.append(
                {
                    "row": name,
                    "problems": count,
                    "accuracy": accuracy,
                    "stderr": stderr(accuracy, count),
                    "tiers": tiers,
                    "completion_tokens_per_problem": float(np.mean([o["completion_tokens"] for o in outcomes])),
                    "prompt_tokens_per_problem": float(np.mean([o["prompt_tokens"] for o in outcomes])),
                    "cached_prompt_tokens_per_problem": float(np.mean([o["cached_tokens"] for o in outcomes])),
                    "wall_s_per_problem": wall,
                    "wall_ratio": wall / base_wall,
                    "latency_s": {"mean": float(np.mean(latency)), "p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95))},
                    "latency_ratio": float(np.mean(latency)) / base_latency,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    tiers = sorted({t for r in rows for t in r["tiers"]}) if any(len(r["tiers"]) > 1 for r in rows) else []
    head = ["row", "accuracy ± s.e.", *tiers, "gen tokens/problem", "wall s/problem", "wall ÷ greedy", "latency ÷ greedy"]
    lines = [head]
    for r in rows:
        lines.append(
            [
                r["row"],
                f"{r['accuracy']:.3f} ± {r['stderr']:.3f}",
                *(f"{r['tiers'][t]['accuracy']:.3f}" for t in tiers),
                f"{r['completion_tokens_per_problem']:.1f}",
                f"{r['wall_s_per_problem']:.3f}",
                f"{r['wall_ratio']:.2f}",
                f"{r['latency_ratio']:.2f}",
            ]
        )
    return aligned(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=["arithmetic", "humaneval"])
    parser.add_argument("--problems", type=int, help="first K problems only (default: all; arithmetic: 200)")
    parser.add_argument("--ns", type=int, nargs="+", help="samples per problem (arithmetic: 1 4 8 16; humaneval: 4 8 16)")
    parser.add_argument("--temperatures", type=float, nargs="+", help="arithmetic sampling temperatures (0.4 0.8; with --program 0.6)")
    parser.add_argument("--program", action="store_true", help="arithmetic: program-aided rows (the program strategy) against plain majority")
    parser.add_argument("--temperature", type=float, default=0.8, help="humaneval sampling temperature (search-and-learn's)")
    parser.add_argument("--max-tokens", type=int, help="per rollout (arithmetic: 24; humaneval: 256)")
    parser.add_argument("--concurrency", type=int, default=8, help="problems in flight at once")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/accuracy-<suite>-<UTC time>.json)")
    args = parser.parse_args(argv)
    arith = args.suite == "arithmetic"
    args.problems = args.problems or (200 if arith else None)
    args.ns = args.ns or ([8] if args.program else [1, 4, 8, 16] if arith else [4, 8, 16])
    args.temperatures = args.temperatures or ([0.6] if args.program else [0.4, 0.8])
    args.max_tokens = args.max_tokens or (24 if arith else 256)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    suite = arithmetic_run if args.suite == "arithmetic" else humaneval_run
    with ponder_bench(MODEL, log) as bench:
        runs, suite_info = asyncio.run(suite(bench.base_url, args))
    rows = summarize(runs)
    result, out = save_result(
        f"accuracy-{args.suite}", bench.started, {"name": bench.spec.name}, args, {"suite": suite_info, "startup_s": bench.startup_s}, rows=rows, runs=runs
    )
    print(f"{table(rows)}\n\none run; ± is the standard error sqrt(p(1-p)/n); host flags: {', '.join(result['host']['flags'])}\nresult: {out}")


if __name__ == "__main__":
    main()
