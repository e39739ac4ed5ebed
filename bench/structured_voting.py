"""Voting over tool calls and over JSON: `majority` against a single sample on the project's own suite of tool and
JSON problems whose right answer is known (suites/structured.py), through the real server with the official client,
every row in one run on one engine.

    .venv/bin/python -m bench.structured_voting          # 60 problems: greedy, a sample, majority@4 and @8, T=0.7

A tool problem forces a call (`tool_choice: required`), so majority votes on the calls, by function name and then by
canonical arguments; a JSON problem holds every sample to a strict `json_schema`, so majority votes on canonical JSON.
Rows, ratios and the table are bench.accuracy's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from bench import replies
from bench.accuracy import Config, Outcome, outcome, run_rows, summarize, table
from bench.server import ponder_bench, save_result
from suites import structured

log = logging.getLogger("bench.structured_voting")
MODEL = "smollm2-135m"


def configs(ns: list[int], temperature: float) -> list[Config]:
    majority = [Config(f"majority@{n} T={temperature}", temperature, {"name": "majority", "n": n, "temperature": temperature}) for n in ns]
    return [Config("greedy", 0.0), Config(f"sample T={temperature}", temperature), *majority]


async def run(base_url: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=600)
    items = structured.problems(args.problems)

    async def solve(config: Config, p: structured.Problem) -> Outcome:
        extra = {"strategy": config.strategy} if config.strategy else {}
        started = time.monotonic()
        response = await client.chat.completions.create(
            model=MODEL,
            messages=replies.chat_messages(p.messages),
            max_tokens=args.max_tokens,
            temperature=config.temperature,
            extra_body={**p.request(), **extra},
        )
        out = outcome(p.id, p.tier, response, time.monotonic() - started)
        out.correct["chosen"] = p.correct(response.choices[0].message)
        return out

    runs = await run_rows(configs(args.ns, args.temperature), items, solve, args.concurrency)
    return runs, {"problems": len(items), "seed": structured.SEED, "tiers": sorted({p.tier for p in items})}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.structured_voting", description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=60)
    parser.add_argument("--ns", type=int, nargs="+", default=[4, 8], help="majority's samples per problem")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=64, help="per sample")
    parser.add_argument("--concurrency", type=int, default=8, help="problems in flight at once")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/accuracy-tools_json-<UTC time>.json, which the dashboard reads)")
    args = parser.parse_args(argv)
    with ponder_bench(MODEL, log) as bench:
        runs, suite_info = asyncio.run(run(bench.base_url, args))
    rows = summarize(runs)
    result, out = save_result(
        "accuracy-tools_json",
        bench.started,
        {"name": bench.spec.name},
        args,
        {"suite": suite_info, "startup_s": bench.startup_s},
        rows=rows,
        runs=runs,
    )
    print(f"{table(rows)}\n\none run; ± is the standard error sqrt(p(1-p)/n); host flags: {', '.join(result['host']['flags'])}\nresult: {out}")


if __name__ == "__main__":
    main()
