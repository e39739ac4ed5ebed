"""ATTS on the arithmetic suite through the real server: does the rejection rate track alpha, and what does
asynchrony buy over a barrier per turn?

One server, one engine per served model, one run. First the marginal pool of (draft, target, family) is seeded with
`ponder calibrate`'s path on problems the measured ones never include (a different seed of the suite). Then every
configuration answers the same problems: the alpha sweep in async mode, the synchronous baseline at one alpha,
per-question calibration, a takeover budget B per question (alpha derived; its budget accuracy 1 - |takeovers - B| / B),
and the same chunked loop with alpha 0 (no takeover: the draft alone) and with the target
drafting for itself (the target alone). Latency is a question's whole request (the slowest of its samples plus the
vote), reported as a ratio to the draft-alone loop measured in the same run; rejection rates come with exact 95%
intervals over every decided chunk of the configuration, and turn 0 (the only turn exchangeable with the pool)
separately.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from bench import replies
from bench.report import aligned
from bench.server import ponder_bench, save_result
from service.cli.calibrate import calibration_request
from strategies.conformal import rejection_interval
from suites import arithmetic

log = logging.getLogger("bench.atts")
MODEL = "smollm2-135m"
REFERENCE = "draft alone (alpha=0)"
PROMPT = "Compute {expression}. Work it out step by step, then give the final answer as a number."


def messages(p: arithmetic.Problem) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPT.format(expression=p.expression)}]


def configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The references first, so that a run cut short (its result file is rewritten after every configuration) still
    has the rows every ratio is taken against."""
    base = {
        "name": "atts",
        "samples": args.samples,
        "turns": args.turns,
        "draft_tokens": args.draft_tokens,
        "target_tokens": args.target_tokens,
        "family": args.family,
        "min_calibration": 16,
    }
    out = {REFERENCE: {**base, "alpha": 0.0}}
    if args.draft != args.target:
        out["target alone (alpha=0)"] = {**base, "alpha": 0.0, "draft": args.target, "target": args.target, "family": args.family + "-target"}
    out[f"sync alpha={args.sync_alpha}"] = {**base, "alpha": args.sync_alpha, "mode": "sync"}
    out |= {f"async alpha={a}": {**base, "alpha": a} for a in args.alphas}
    out[f"async alpha={args.sync_alpha} per-question"] = {**base, "alpha": args.sync_alpha, "calibration": "per_question"}
    out[f"async takeovers={args.takeovers}"] = {**base, "takeovers": args.takeovers}
    return out


async def seed_pool(client: AsyncOpenAI, args: argparse.Namespace) -> int:
    strategy = {"samples": args.samples, "draft_tokens": args.draft_tokens, "family": args.family, "draft": args.draft, "target": args.target}
    held_out = arithmetic.problems(args.calibration_problems, seed=arithmetic.SEED + 1)
    added = 0
    for p in held_out:
        response = await client.chat.completions.create(**calibration_request(MODEL, messages(p), strategy, args.draft_tokens))
        added += replies.ponder(response)["selection"]["calibration"]["added"]
    return added


async def solve(client: AsyncOpenAI, p: arithmetic.Problem, strategy: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    strategy = {"draft": args.draft, "target": args.target, **strategy}
    response = await client.chat.completions.create(
        model=MODEL,
        messages=replies.chat_messages(messages(p)),
        max_tokens=args.draft_tokens + args.target_tokens,
        extra_body={"strategy": strategy, "verifier": {"reference": str(p.answer)}},
    )
    latency = time.perf_counter() - started
    ponder = replies.ponder(response)
    selection = ponder["selection"]
    turns = [t for s in selection["samples"] for t in s["turns"]]
    return {
        "problem": p.id,
        "tier": p.tier,
        "latency_s": latency,
        "correct": {"chosen": bool(ponder["correct"])},
        "any_correct": any(c.get("correct") for c in ponder["candidates"]),
        "completion_tokens": replies.usage(response).completion_tokens,
        "prompt_tokens": replies.usage(response).prompt_tokens,
        "cached_tokens": ponder["cached_prompt_tokens"],
        "budget_used": ponder["budget"]["used_tokens"],
        "tokens_by_model": selection["tokens_by_model"],
        "decided": len(turns),
        "rejected": sum(t["decision"] == "reject" for t in turns),
        "decided_turn0": sum(t["turn"] == 0 for t in turns),
        "rejected_turn0": sum(t["turn"] == 0 and t["decision"] == "reject" for t in turns),
        "bootstrapped": selection["calibration"]["bootstrapped"],
        "sample_wall_s": selection["sample_wall_s"],
        "turns_per_sample": len(turns) / max(len(selection["samples"]), 1),
        "budget_accuracy": selection.get("budget_accuracy"),
    }


def rate(rejected: int, decided: int) -> dict[str, Any]:
    return {"rate": rejected / decided if decided else None, "interval95": rejection_interval(rejected, decided), "decided": decided}


def summarize(runs: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    base = next(r for r in runs if r["config"] == reference)
    base_latency = statistics.mean(o["latency_s"] for o in base["outcomes"])
    rows = []
    for run in runs:
        outs = run["outcomes"]
        n = len(outs)
        accuracy = sum(o["correct"]["chosen"] for o in outs) / n
        latency = [o["latency_s"] for o in outs]
        rows.append(
            {
                "row": run["config"],
                "problems": n,
                "alpha": run["strategy"].get("alpha"),
                "accuracy": accuracy,
                "stderr": (accuracy * (1 - accuracy) / n) ** 0.5,
                "oracle": sum(o["any_correct"] for o in outs) / n,
                "rejection": rate(sum(o["rejected"] for o in outs), sum(o["decided"] for o in outs)),
                "rejection_turn0": rate(sum(o["rejected_turn0"] for o in outs), sum(o["decided_turn0"] for o in outs)),
                "takeovers_per_problem": statistics.mean(o["rejected"] for o in outs),
                "turns_per_sample": statistics.mean(o["turns_per_sample"] for o in outs),
                "draft_tokens_per_problem": statistics.mean(o["tokens_by_model"]["draft"] for o in outs),
                "target_tokens_per_problem": statistics.mean(o["tokens_by_model"]["target"] for o in outs),
                "scored_tokens_per_problem": statistics.mean(o["tokens_by_model"]["scored"] for o in outs),
                "completion_tokens_per_problem": statistics.mean(o["completion_tokens"] for o in outs),
                "latency_s": {"mean": statistics.mean(latency), "p50": statistics.median(latency), "max": max(latency)},
                "latency_ratio": statistics.mean(latency) / base_latency,
                "straggler_ratio": statistics.mean(o["sample_wall_s"]["max"] / max(o["sample_wall_s"]["median"], 1e-9) for o in outs if o["sample_wall_s"]),
                "bootstrapped": sum(o["bootstrapped"] for o in outs),
                "budget_accuracy": statistics.mean(o["budget_accuracy"] for o in outs) if outs[0]["budget_accuracy"] is not None else None,
            }
        )
    return rows


def table(rows: list[dict[str, Any]], reference: str) -> str:
    def ci(r: dict[str, Any]) -> str:
        if r["rate"] is None:
            return "-"
        lo, hi = r["interval95"]
        return f"{r['rate']:.3f} [{lo:.2f}, {hi:.2f}] n={r['decided']}"

    head = [
        "row",
        "accuracy ± s.e.",
        "rejection rate [95% CI]",
        "turn 0",
        "takeovers/q",
        "budget acc.",
        "turns/sample",
        "draft/target tok/q",
        f"latency ÷ {reference}",
        "slowest ÷ median sample",
    ]
    lines = [head]
    for r in rows:
        lines.append(
            [
                r["row"],
                f"{r['accuracy']:.3f} ± {r['stderr']:.3f}",
                ci(r["rejection"]),
                ci(r["rejection_turn0"]),
                f"{r['takeovers_per_problem']:.1f}",
                "-" if r["budget_accuracy"] is None else f"{r['budget_accuracy']:.2f}",
                f"{r['turns_per_sample']:.2f}",
                f"{r['draft_tokens_per_problem']:.0f}/{r['target_tokens_per_problem']:.0f}",
                f"{r['latency_ratio']:.2f}",
                f"{r['straggler_ratio']:.2f}",
            ]
        )
    return aligned(lines)


async def run(base_url: str, args: argparse.Namespace, checkpoint: Callable[[list[dict[str, Any]], int], None]) -> None:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=1800)
    seeded = await seed_pool(client, args)
    log.info("pool seeded with %d first-turn scores", seeded)
    items = arithmetic.problems(args.problems)
    gate = asyncio.Semaphore(args.concurrency)
    runs = []
    for name, strategy in configs(args).items():

        async def one(p: arithmetic.Problem, strategy: dict[str, Any] = strategy) -> dict[str, Any]:
            async with gate:
                return await solve(client, p, strategy, args)

        started = time.perf_counter()
        outcomes = list(await asyncio.gather(*(one(p) for p in items)))
        log.info("%s: %.0f s", name, time.perf_counter() - started)
        runs.append(
            {"config": name, "strategy": strategy, "temperature": 0.8, "rows": ["chosen"], "outcomes": outcomes, "wall_s": time.perf_counter() - started}
        )
        checkpoint(runs, seeded)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.atts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--calibration-problems", type=int, default=12, help="held-out problems seeding the pool")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--draft-tokens", type=int, default=16)
    parser.add_argument("--target-tokens", type=int, default=16)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.2, 0.4, 0.6])
    parser.add_argument("--sync-alpha", type=float, default=0.4)
    parser.add_argument("--takeovers", type=int, default=8, help="a takeover budget B per question: alpha derived from what the pool has seen")
    parser.add_argument("--draft", default=MODEL, help="a served model (PONDER_MODELS) that drafts")
    parser.add_argument("--target", default=MODEL)
    parser.add_argument("--family", default=f"bench-{uuid.uuid4().hex[:8]}", help="pool family (fresh by default: in-process Redis)")
    parser.add_argument("--models", help="PONDER_MODELS for the server (JSON), to serve a draft beside the packaged model")
    parser.add_argument("--concurrency", type=int, default=2, help="questions in flight at once")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = {"name": MODEL, "draft": args.draft, "target": args.target}
    saved: dict[str, Any] = {}
    with ponder_bench(MODEL, log, {"PONDER_MODELS": args.models} if args.models else None) as bench:

        def checkpoint(runs: list[dict[str, Any]], seeded: int) -> None:
            rows = summarize(runs, REFERENCE)
            parameters = {"startup_s": bench.startup_s, "seeded_scores": seeded, "prompt": PROMPT, "configs_done": len(runs)}
            result, out = save_result("atts-arithmetic", bench.started, model, args, parameters, rows=rows, runs=runs)
            saved.update(rows=rows, seeded=seeded, flags=result["host"]["flags"], out=out)

        asyncio.run(run(bench.base_url, args, checkpoint))
    print(
        f"{table(saved['rows'], REFERENCE)}\n\none run; ± is the standard error over problems; pool seeded with {saved['seeded']} scores; host flags: {', '.join(saved['flags'])}\nresult: {saved['out']}"
    )


if __name__ == "__main__":
    main()
