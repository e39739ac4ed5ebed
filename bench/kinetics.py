"""Kinetics on this machine: does an eFLOPs budget mean something in seconds here, and does planning it beat spending
it on a fixed number of samples? One server, one engine, one run.

    .venv/bin/python -m bench.kinetics arithmetic      # the cost model's fit, then accuracy against eFLOPs
    .venv/bin/python -m bench.kinetics humaneval --no-fit

1. Fit. Plain requests of N samples x L tokens (ignore_eos, so every sample runs to L) over a grid of N and L; each
   request's engine time against the cost model's compute FLOPs C and bytes moved M for that (N, L):
       time ~ C / F_eff + M / B_eff + t0        least squares; I_eff = F_eff / B_eff (the paper's I, here), and R^2
   Ponder's extra terms (prefill, weight reads per step) are on: at 135M parameters the weights dominate the bytes.
2. Accuracy against eFLOPs. At each budget: `kinetics` (the plan), `auto`, and the paper's fixed-N baselines, each N
   at the longest cap it can afford at that budget: majority and best-of-N on arithmetic (its "just the number"
   prompt, family `arithmetic`, so the accuracy table learns from this project's committed arithmetic runs);
   best-of-N by the visible tests on HumanEval (family `humaneval`, graded by the hidden tests), where the default
   budgets are what 1, 4 and 8 samples of the full cap cost. Reported: accuracy ± s.e., realised eFLOPs per problem
   as every response reports them, and whether any request went over its budget.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from openai import AsyncOpenAI, BadRequestError

from bench import replies
from bench.accuracy import stderr
from bench.report import aligned
from bench.server import ponder_bench, save_result
from compute.cost_model import HardwareProfile, ModelShape, max_length, request_cost
from suites import arithmetic, humaneval
from verifiers.answers import AnswerGrouper, extract_answer
from verifiers.sandbox import Sandbox, SandboxLimits

log = logging.getLogger("bench.kinetics")
MODEL = "smollm2-135m"
UNIT = HardwareProfile(name="unit", flops=1.0, bandwidth=1.0, source="spec")
"""I = 1: the cost model's memory term in this profile is the bytes moved."""


async def explain(base_url: str) -> tuple[ModelShape, HardwareProfile]:
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{base_url}/v1/cost-model", params={"model": MODEL, "budget": 1e12}, timeout=60)).json()
    return ModelShape(**body["shape"]), HardwareProfile(**body["hardware"])


async def fit(client: AsyncOpenAI, shape: ModelShape, args: argparse.Namespace) -> dict[str, Any]:
    points = []
    prompt = "Once upon a time"
    for n in args.fit_ns:
        for length in args.fit_lengths:
            times = []
            for _ in range(args.fit_repeats):
                started = time.monotonic()
                response = await client.completions.create(model=MODEL, prompt=prompt, n=n, max_tokens=length, temperature=0.8, extra_body={"ignore_eos": True})
                times.append(time.monotonic() - started)
            cost = request_cost(shape, UNIT, n, replies.usage(response).prompt_tokens, length)  # n samples of one prompt: counted once
            points.append(
                {
                    "n": n,
                    "length": length,
                    "seconds": float(np.median(times)),
                    "spread_s": [min(times), max(times)],
                    "flops": cost.compute,
                    "bytes": cost.memory,
                }
            )
            log.info("fit N=%d L=%d: %.2f s", n, length, points[-1]["seconds"])
    x = np.array([[p["flops"], p["bytes"], 1.0] for p in points])
    y = np.array([p["seconds"] for p in points])
    (a, b, t0), *_ = np.linalg.lstsq(x, y, rcond=None)
    predicted = x @ np.array([a, b, t0])
    r2 = 1.0 - float(np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2))
    flops_eff = 1.0 / a if a > 0 else float("inf")
    bandwidth_eff = 1.0 / b if b > 0 else float("inf")
    return {
        "points": points,
        "seconds_per_flop": float(a),
        "seconds_per_byte": float(b),
        "overhead_s": float(t0),
        "effective_flops": flops_eff,
        "effective_bandwidth": bandwidth_eff,
        "effective_intensity": flops_eff / bandwidth_eff if np.isfinite(flops_eff) and np.isfinite(bandwidth_eff) else None,
        "r2": r2,
    }


def configs(shape: ModelShape, hardware: HardwareProfile, l_in: int, budget: float, args: argparse.Namespace) -> list[tuple[str, dict[str, Any] | None, int]]:
    """(name, strategy, max_tokens) for one budget: the planners, and each fixed N at the longest cap it affords."""
    code = args.suite == "humaneval"
    common = {"budget": {"eflops": budget}, "family": args.suite, "temperature": args.temperature}
    kinetics = {"name": "kinetics", **common, **({"inner": "best_of_n", "select": "code_tests"} if code else {})}
    out: list[tuple[str, dict[str, Any] | None, int]] = [
        ("kinetics", kinetics, args.max_tokens),
        ("auto", {"name": "auto", **common, "probe_tokens": args.max_tokens}, args.max_tokens),
    ]
    fixed = {"best_of_n": {"select": "code_tests"}} if code else {"majority": {}, "best_of_n": {"select": args.select}}
    for n in args.fixed_ns:
        cap = min(max_length(shape, hardware, budget, n, l_in), args.max_tokens)
        if cap < 1:
            continue
        if n == 1:
            out.append(("greedy", None, cap))
            continue
        for name, knobs in fixed.items():
            out.append((f"{name}@{n}", {"name": name, "n": n, "temperature": args.temperature, **knobs}, cap))
    return out


def default_budgets(shape: ModelShape, hardware: HardwareProfile, l_in: int, args: argparse.Namespace) -> list[float]:
    if args.budgets:
        return list(args.budgets)
    if args.suite == "arithmetic":
        return [1e11, 4e11, 1.6e12]
    return [request_cost(shape, hardware, n, l_in, args.max_tokens).total for n in (1, 4, 8)]


async def accuracy(client: AsyncOpenAI, shape: ModelShape, hardware: HardwareProfile, args: argparse.Namespace) -> list[dict[str, Any]]:
    grader = AnswerGrouper(timeout_s=10)
    sandbox = Sandbox(SandboxLimits(concurrency=2))
    items: list[Any] = (
        arithmetic.problems(args.problems) if args.suite == "arithmetic" else [p for p in humaneval.problems() if p.has_visible_tests][: args.problems]
    )
    l_in = replies.usage(await client.chat.completions.create(model=MODEL, messages=items[0].messages, max_tokens=1)).prompt_tokens

    async def correct(p: Any, text: str) -> bool:
        if args.suite == "arithmetic":
            return await grader.equivalent(str(p.answer), extract_answer(text))
        report = await humaneval.grade(sandbox, p, text)
        return report.total > 0 and report.passed == report.total

    results = []
    try:
        for budget in default_budgets(shape, hardware, l_in, args):
            for name, strategy, cap in configs(shape, hardware, l_in, budget, args):
                gate = asyncio.Semaphore(args.concurrency)

                async def one(p: Any, strategy: dict[str, Any] | None = strategy, cap: int = cap, gate: asyncio.Semaphore = gate) -> dict[str, Any]:
                    async with gate:
                        started = time.monotonic()
                        extra = {"strategy": strategy} if strategy else None
                        temperature = 0.0 if strategy is None else None
                        try:
                            response = await client.chat.completions.create(
                                model=MODEL, messages=p.messages, max_tokens=cap, temperature=temperature, extra_body=extra
                            )
                        except BadRequestError as refused:  # a budget that cannot pay for the strategy's minimum
                            return {"problem": p.id, "refused": refused.message}
                        latency = time.monotonic() - started
                    ponder = replies.ponder(response)
                    selection = ponder.get("selection", {})
                    return {
                        "problem": p.id,
                        "tier": getattr(p, "tier", None),
                        "correct": {"chosen": await correct(p, response.choices[0].message.content or "")},
                        "latency_s": latency,
                        "completion_tokens": replies.usage(response).completion_tokens,
                        "prompt_tokens": replies.usage(response).prompt_tokens,
                        "eflops": ponder["cost"]["eflops"],
                        "plan": selection.get("plan"),
                        "choice": selection.get("choice"),
                    }

                started = time.monotonic()
                outcomes = await asyncio.gather(*(one(p) for p in items))
                wall = time.monotonic() - started
                log.info("budget %.3g %s (cap %d): %.1f s", budget, name, cap, wall)
                results.append(
                    {
                        "config": f"{name} @ {budget:.3g} eFLOPs",
                        "budget_eflops": budget,
                        "name": name,
                        "max_tokens": cap,
                        "strategy": strategy or {"name": "none"},
                        "temperature": 0.0 if strategy is None else args.temperature,
                        "rows": ["chosen"],
                        "wall_s": wall,
                        "outcomes": outcomes,
                    }
                )
    finally:
        await grader.aclose()
    return results


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy over every problem; a refused request (the budget cannot pay for the strategy's minimum) is counted and
    kept out of the cost columns."""
    rows = []
    for r in results:
        outcomes = r["outcomes"]
        answered = [o for o in outcomes if "refused" not in o]
        acc = sum(o["correct"]["chosen"] for o in answered) / len(outcomes)
        plans = [o["plan"] for o in answered if o.get("plan")]
        rows.append(
            {
                "budget_eflops": r["budget_eflops"],
                "row": r["name"],
                "max_tokens": r["max_tokens"],
                "accuracy": acc,
                "stderr": stderr(acc, len(outcomes)),
                "refused": len(outcomes) - len(answered),
                "eflops_per_problem": float(np.mean([o["eflops"] for o in answered])) if answered else None,
                "over_budget": sum(o["eflops"] > r["budget_eflops"] for o in answered),
                "tokens_per_problem": float(np.mean([o["completion_tokens"] for o in answered])) if answered else None,
                "plans": sorted({f"N={p['n']} cap={p['max_tokens']}" for p in plans}),
                "choices": sorted({o["choice"] for o in answered if o.get("choice")}),
                "wall_s_per_problem": r["wall_s"] / len(outcomes),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ["budget eFLOPs", "row", "accuracy ± s.e.", "eFLOPs/problem", "over", "refused", "tokens/problem", "plan / choice"]
    lines = [head]
    for r in rows:
        if r["eflops_per_problem"] is None:
            lines.append([f"{r['budget_eflops']:.3g}", r["row"], "—", "—", "0", str(r["refused"]), "—", "refused: over budget"])
            continue
        lines.append(
            [
                f"{r['budget_eflops']:.3g}",
                r["row"],
                f"{r['accuracy']:.3f} ± {r['stderr']:.3f}",
                f"{r['eflops_per_problem']:.3g}",
                str(r["over_budget"]),
                str(r["refused"]),
                f"{r['tokens_per_problem']:.1f}",
                ", ".join(r["plans"] or r["choices"] or [f"cap={r['max_tokens']}"]),
            ]
        )
    return aligned(lines)


async def measure(base_url: str, args: argparse.Namespace) -> tuple[dict[str, Any] | None, list[dict[str, Any]], HardwareProfile]:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=900)
    shape, hardware = await explain(base_url)
    await client.completions.create(model=MODEL, prompt="warm up", n=max(args.fit_ns), max_tokens=8, temperature=0.8)
    fitted = await fit(client, shape, args) if args.fit else None
    return fitted, await accuracy(client, shape, hardware, args), hardware


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kinetics", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=["arithmetic", "humaneval"])
    parser.add_argument("--no-fit", dest="fit", action="store_false", help="skip the cost model's fit")
    parser.add_argument("--fit-ns", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--fit-lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--fit-repeats", type=int, default=2)
    parser.add_argument("--problems", type=int, help="arithmetic: 40; humaneval: 12")
    parser.add_argument("--budgets", type=float, nargs="+", help="eFLOPs (local profile); default per suite, see above")
    parser.add_argument("--fixed-ns", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, help="arithmetic: 24; humaneval: 192")
    parser.add_argument("--select", default="logprob", help="best-of-N's selector on arithmetic")
    parser.add_argument("--temperature", type=float, default=0.4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    code = args.suite == "humaneval"
    args.problems = args.problems or (12 if code else 40)
    args.max_tokens = args.max_tokens or (192 if code else 24)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with ponder_bench(MODEL, log) as bench:
        fitted, results, hardware = asyncio.run(measure(bench.base_url, args))
    rows = summarize(results)
    result, out = save_result(
        f"kinetics-{args.suite}",
        bench.started,
        {"name": bench.spec.name},
        args,
        {"startup_s": bench.startup_s, "hardware": hardware.model_dump()},
        fit=fitted,
        rows=rows,
        runs=results,
    )
    fit_line = "cost model fit: skipped"
    if fitted:
        fit_line = (
            f"cost model fit ({len(fitted['points'])} points, median of {args.fit_repeats}): time = C/{fitted['effective_flops']:.3g} + "
            f"M/{fitted['effective_bandwidth']:.3g} + {fitted['overhead_s']:.3f} s; effective I = {fitted['effective_intensity']}; R^2 = {fitted['r2']:.3f}"
        )
    print(
        f"{fit_line}\nprofile: {hardware.name} ({hardware.source}), I = {hardware.intensity:.2f}\n\n{table(rows)}\n\n"
        f"one run; ± is the standard error; host flags: {', '.join(result['host']['flags'])}\nresult: {out}"
    )


if __name__ == "__main__":
    main()
