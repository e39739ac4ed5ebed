"""Spend less for the same answer? The early-stop rules against the same strategy without them, on two suites, in
one run on one engine through the real server.

    .venv/bin/python -m bench.early_stop arithmetic    # majority at N = 8 and 16, step-by-step prompt (long traces)
    .venv/bin/python -m bench.early_stop humaneval     # best_of_n by the visible tests at N = 8 and 16

At each N: no early stop, DeepConf offline (keep_top 0.9, "DeepConf-high") and online (warm-up N/2 traces, then the
threshold stops the rest), Dynasor probes (every 32 tokens, 2 agreeing), adaptive sampling (batches of 4 up to N).
Arithmetic votes (majority); on HumanEval a vote over answers means nothing, so the rules run on best_of_n with
the visible tests as selector, which takes `early_stop` the same way. Ratios are to the same N without early stop,
in the same run: tokens (every stage: samples, warm-up, probes) and wall time per problem; accuracy with its standard
error. The result file has the accuracy benchmark's shape, so the dashboard plots every row. Arithmetic asks for the working ("step by step") because with "just the number" a trace is 13 tokens and
there is nothing to stop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from bench import replies
from bench.accuracy import stderr
from bench.report import aligned
from bench.server import ponder_bench, save_result
from suites import arithmetic, humaneval
from verifiers.answers import AnswerGrouper, extract_answer
from verifiers.sandbox import Sandbox, SandboxLimits

log = logging.getLogger("bench.early_stop")
MODEL = "smollm2-135m"
STEPS = "Compute {expression}. Work it out step by step, then give the final answer as a number."


def rules(n: int) -> dict[str, dict[str, Any] | None]:
    return {
        "none": None,
        "deepconf offline": {"name": "deepconf", "mode": "offline", "keep_top": 0.9, "window": 32},
        "deepconf online": {"name": "deepconf", "mode": "online", "warmup": max(2, n // 2), "keep_top": 0.9, "window": 32},
        "probe": {"name": "probe", "every": 32, "agree": 2},
        "adaptive": {"name": "adaptive", "batch": 4, "max_n": n, "confidence": 0.95},
    }


def strategy(suite: str, n: int, temperature: float, rule: dict[str, Any] | None) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "majority", "n": n, "temperature": temperature}
    if suite == "humaneval":
        base = {"name": "best_of_n", "n": n, "temperature": temperature, "select": "code_tests", "score": "self_certainty"}
    return {**base, **({"early_stop": rule} if rule else {})}


async def run(base_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=900)
    grader = AnswerGrouper(timeout_s=10)
    sandbox = Sandbox(SandboxLimits(concurrency=2))
    if args.suite == "arithmetic":
        items: list[Any] = arithmetic.problems(args.problems)
    else:
        items = [p for p in humaneval.problems() if p.has_visible_tests][: args.problems]

    async def solve(p: Any, strat: dict[str, Any]) -> dict[str, Any]:
        messages = [{"role": "user", "content": STEPS.format(expression=p.expression)}] if args.suite == "arithmetic" else p.messages
        started = time.monotonic()
        response = await client.chat.completions.create(
            model=MODEL, messages=replies.chat_messages(messages), max_tokens=args.max_tokens, extra_body={"strategy": strat}
        )
        latency = time.monotonic() - started
        text = response.choices[0].message.content or ""
        if args.suite == "arithmetic":
            correct = await grader.equivalent(str(p.answer), extract_answer(text))
        else:
            report = await humaneval.grade(sandbox, p, text)
            correct = report.total > 0 and report.passed == report.total
        ponder = replies.ponder(response)
        stop = ponder["selection"].get("early_stop") or {}
        return {
            "problem": p.id,
            "correct": {"chosen": correct},
            "latency_s": latency,
            "prompt_tokens": replies.usage(response).prompt_tokens,
            "completion_tokens": replies.usage(response).completion_tokens,
            "stages": {k: v["completion_tokens"] for k, v in ponder["tokens"].items()},
            "samples": len(ponder["candidates"]),
            "stopped": len(stop.get("stopped", [])) if isinstance(stop.get("stopped"), list) else 0,
            "saved_tokens": stop.get("saved_tokens", 0),
            "eflops": ponder["cost"]["eflops"],
        }

    configs = [(n, name, rule) for n in args.ns for name, rule in rules(n).items()]
    try:
        # Untimed: the engine compiles kernels for each batch shape it meets; the largest N shapes run first.
        await asyncio.gather(*(solve(p, strategy(args.suite, max(args.ns), args.temperature, None)) for p in items[: args.concurrency]))
        results = []
        for n, name, rule in configs:
            gate = asyncio.Semaphore(args.concurrency)
            strat = strategy(args.suite, n, args.temperature, rule)

            async def one(p: Any, strat: dict[str, Any] = strat, gate: asyncio.Semaphore = gate) -> dict[str, Any]:
                async with gate:
                    return await solve(p, strat)

            started = time.monotonic()
            outcomes = await asyncio.gather(*(one(p) for p in items))
            wall = time.monotonic() - started
            log.info("N=%d %s: %d problems in %.1f s", n, name, len(items), wall)
            results.append(
                {
                    "config": f"N={n} {name}",
                    "n": n,
                    "rule": name,
                    "strategy": strat,
                    "temperature": args.temperature,
                    "rows": ["chosen"],
                    "wall_s": wall,
                    "outcomes": outcomes,
                }
            )
    finally:
        await grader.aclose()
    return results


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        base = next(b for b in results if b["n"] == r["n"] and b["rule"] == "none")
        outcomes, count = r["outcomes"], len(r["outcomes"])
        accuracy = sum(o["correct"]["chosen"] for o in outcomes) / count
        tokens = float(np.mean([o["completion_tokens"] for o in outcomes]))
        base_tokens = float(np.mean([o["completion_tokens"] for o in base["outcomes"]]))
        rows.append(
            {
                "n": r["n"],
                "rule": r["rule"],
                "problems": count,
                "accuracy": accuracy,
                "stderr": stderr(accuracy, count),
                "tokens_per_problem": tokens,
                "tokens_ratio": tokens / base_tokens,
                "stages_per_problem": {
                    s: float(np.mean([o["stages"].get(s, 0) for o in outcomes])) for s in sorted({s for o in outcomes for s in o["stages"]})
                },
                "samples_per_problem": float(np.mean([o["samples"] for o in outcomes])),
                "stopped_per_problem": float(np.mean([o["stopped"] for o in outcomes])),
                "saved_tokens_per_problem": float(np.mean([o["saved_tokens"] for o in outcomes])),
                "eflops_ratio": float(np.mean([o["eflops"] for o in outcomes])) / float(np.mean([o["eflops"] for o in base["outcomes"]])),
                "wall_s_per_problem": r["wall_s"] / count,
                "wall_ratio": r["wall_s"] / base["wall_s"],
                "latency_p50_s": float(np.percentile([o["latency_s"] for o in outcomes], 50)),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ["N", "rule", "accuracy ± s.e.", "tokens/problem", "÷ none", "eFLOPs ÷ none", "samples", "stopped", "wall ÷ none"]
    lines = [head] + [
        [
            str(r["n"]),
            r["rule"],
            f"{r['accuracy']:.3f} ± {r['stderr']:.3f}",
            f"{r['tokens_per_problem']:.0f}",
            f"{r['tokens_ratio']:.2f}",
            f"{r['eflops_ratio']:.2f}",
            f"{r['samples_per_problem']:.1f}",
            f"{r['stopped_per_problem']:.1f}",
            f"{r['wall_ratio']:.2f}",
        ]
        for r in rows
    ]
    return aligned(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.early_stop", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=["arithmetic", "humaneval"])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, help="per rollout (arithmetic: 128; humaneval: 256)")
    parser.add_argument("--concurrency", type=int, default=4, help="problems in flight at once")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.max_tokens = args.max_tokens or (128 if args.suite == "arithmetic" else 256)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with ponder_bench(MODEL, log) as bench:
        results = asyncio.run(run(bench.base_url, args))
    rows = summarize(results)
    result, out = save_result(
        f"early_stop-{args.suite}", bench.started, {"name": bench.spec.name}, args, {"startup_s": bench.startup_s}, rows=rows, runs=results
    )
    print(
        f"{table(rows)}\n\none run; ± is the standard error; ratios to the same N without early stop in this run; host flags: {', '.join(result['host']['flags'])}\nresult: {out}"
    )


if __name__ == "__main__":
    main()
