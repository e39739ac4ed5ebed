"""Running the rows: every problem of a suite through one row before the next row starts, its engine's counters read
before and after, one server started at a time (vLLM's with a peer in front of it, then Ponder's own), so nothing of
one system takes CPU while another is measured.

Requests go out as raw JSON over HTTP and responses are read as raw JSON, not through the openai client: the peers'
responses are not all OpenAI-shaped (optillm's usage has no prompt or total tokens), and what each one reports,
missing fields included, is part of what is measured."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.overhead import vllm_side
from bench.peers import counters, envs, report, systems
from bench.peers.systems import Row, Sampling
from bench.server import ROOT, Side, free_port, ponder_side, prepared_model, running, save_result
from suites import arithmetic, humaneval
from verifiers.answers import AnswerGrouper, extract_answer
from verifiers.sandbox import Sandbox, SandboxLimits

log = logging.getLogger("bench.peers")
MODEL = "smollm2-135m"
SUITES = ("arithmetic", "humaneval")
SYSTEMS = ("optillm", "its_hub", "ponder")
REQUEST_TIMEOUT_S = 900


@dataclass
class Outcome:
    problem: str
    latency_s: float
    correct: bool
    usage: dict[str, Any] | None = None
    """The response's `usage` as the system sent it."""
    ponder: dict[str, Any] | None = None
    """Ponder's own count of its engine requests and rollouts for this request."""
    error: str | None = None


@dataclass
class Suite:
    name: str
    problems: list[Any]
    sampling: Sampling
    grader: AnswerGrouper | None = None
    sandbox: Sandbox | None = None

    async def correct(self, problem: Any, reply: str) -> bool:
        if self.name == "arithmetic":
            assert self.grader is not None
            return await self.grader.equivalent(str(problem.answer), extract_answer(reply))
        assert self.sandbox is not None
        result = await humaneval.grade(self.sandbox, problem, reply)
        return result.total > 0 and result.passed == result.total


@dataclass
class RowRun:
    row: Row
    suite: str
    sampling: Sampling
    wall_s: float = 0.0
    engine: dict[str, float] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    failed: str | None = None
    """Why the row could not run at all (its server did not start, its environment could not be built)."""


def body(row: Row, suite: Suite, problem: Any) -> dict[str, Any]:
    """The request: the suite's messages, cap and temperature in the standard fields, the system's own knobs beside
    them. Ponder's code_tests selector needs examples to run: where the prompt shows none, its tie-break score picks."""
    extra = row.extra_body
    strategy = extra.get("strategy")
    if strategy and strategy.get("select") == "code_tests" and not problem.has_visible_tests:
        extra = {**extra, "strategy": {**strategy, "select": strategy["score"]}}
    s = suite.sampling
    return {"model": row.model, "messages": problem.messages, "max_tokens": s.max_tokens, "temperature": s.temperature, **extra}


async def ask(http: httpx.AsyncClient, base_url: str, row: Row, suite: Suite, problem: Any) -> Outcome:
    started = time.monotonic()
    try:
        response = await http.post(f"{base_url}/v1/chat/completions", json=body(row, suite, problem))
        latency = time.monotonic() - started
        response.raise_for_status()
        data = response.json()
        reply = data["choices"][0]["message"].get("content") or ""
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        detail = exc.response.text[:300] if isinstance(exc, httpx.HTTPStatusError) else ""
        return Outcome(problem.id, time.monotonic() - started, False, error=f"{type(exc).__name__}: {exc} {detail}".strip())
    ponder = {k: data["ponder"].get(k) for k in ("engine_requests", "rollouts")} if "ponder" in data else None
    return Outcome(problem.id, latency, await suite.correct(problem, reply), data.get("usage"), ponder)


async def run_row(http: httpx.AsyncClient, base_url: str, engine_url: str, row: Row, suite: Suite, concurrency: int) -> RowRun:
    read = counters.vllm_counters if row.engine == "vllm" else counters.ponder_counters
    gate = asyncio.Semaphore(concurrency)

    async def one(problem: Any) -> Outcome:
        async with gate:
            return await ask(http, base_url, row, suite, problem)

    before = await counters.settled(read, http, engine_url)
    started = time.monotonic()
    outcomes = await asyncio.gather(*(one(p) for p in suite.problems))
    wall = time.monotonic() - started
    after = await counters.settled(read, http, engine_url)
    run = RowRun(row, suite.name, suite.sampling, wall, counters.delta(before, after), list(outcomes))
    errors = sum(o.error is not None for o in outcomes)
    log.info(
        "%s / %s: %d problems in %.1f s, accuracy %.3f%s",
        suite.name,
        row.label,
        len(outcomes),
        wall,
        sum(o.correct for o in outcomes) / len(outcomes),
        f", {errors} errors (first: {next(o.error for o in outcomes if o.error)})" if errors else "",
    )
    return run


async def warm_up(http: httpx.AsyncClient, base_url: str, rows: list[Row], suite: Suite) -> None:
    """Untimed, outside every row's counters: the engine's first batches of each shape pay one-off kernel set-up,
    and each peer builds its client on its first request."""
    for row in rows:
        await ask(http, base_url, row, suite, suite.problems[0])


@contextlib.contextmanager
def server(side: Side, log_dir: Path, servers: dict[str, Any], tag: str) -> Iterator[str]:
    """The side, healthy; what it ran and how long it took to start go to the result file."""
    with running(side, log_dir / f"{tag}.log") as (base_url, startup_s):
        servers[tag] = {"startup_s": startup_s, "command": side.command, "engine_args": side.engine_args, "engine_env": side.engine_env}
        yield base_url


async def peer_phase(
    args: argparse.Namespace, suites: list[Suite], spec: Any, model_dir: Path, built: dict[str, dict[str, str]], log_dir: Path, servers: dict[str, Any]
) -> list[RowRun]:
    """vLLM's server (bench.overhead's: Ponder's engine arguments and environment), started once; per suite its
    plain call, then each peer in front of it in turn. A peer that cannot start, or was not built, fails its own
    rows only."""
    runs: list[RowRun] = []
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as http:
        with server(vllm_side(spec, model_dir, free_port()), log_dir, servers, "vllm") as vllm_url:
            for suite in suites:
                runs += await peer_suite(http, vllm_url, args, suite, built, log_dir, servers)
    return runs


async def peer_suite(
    http: httpx.AsyncClient, vllm_url: str, args: argparse.Namespace, suite: Suite, built: dict[str, dict[str, str]], log_dir: Path, servers: dict[str, Any]
) -> list[RowRun]:
    s = suite.sampling
    rows = systems.peer_rows(MODEL, suite.name, s)
    direct = rows[0]
    await warm_up(http, vllm_url, [direct, Row("warm-up n=N", "vllm", "vllm", MODEL, {"n": s.n})], suite)
    runs = [await run_row(http, vllm_url, vllm_url, direct, suite, args.concurrency)]
    peers: list[tuple[str, Callable[[], Side]]] = []
    if "optillm" in args.systems:
        peers.append(("optillm", lambda: systems.optillm_server(args.cache, vllm_url, free_port(), s)))
    if "its_hub" in args.systems:

        def its_hub(bon: bool) -> Side:
            return systems.its_hub_server(args.cache, vllm_url, MODEL, free_port(), s, bon)

        peers += [(key, functools.partial(its_hub, bon)) for key, bon in (("its_hub", False), ("its_hub_bon", True))]
    for key, side in peers:
        mine = [r for r in rows if r.server == key]
        peer = envs.ITS_HUB.name if key.startswith("its_hub") else key
        if "error" in built.get(peer, {}):
            runs += [RowRun(r, suite.name, s, failed=built[peer]["error"]) for r in mine]
            continue
        try:
            with server(side(), log_dir, servers, f"{key}-{suite.name}") as url:
                if key == "its_hub":
                    configured = await http.post(f"{url}/configure", json=systems.its_hub_configuration(vllm_url, MODEL, suite.name, s))
                    configured.raise_for_status()
                await warm_up(http, url, mine[:1], suite)
                for row in mine:
                    runs.append(await run_row(http, url, vllm_url, row, suite, args.concurrency))
        except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
            log.error("%s on %s failed: %s", key, suite.name, exc)
            done = {r.row.label for r in runs}
            runs += [RowRun(r, suite.name, s, failed=f"{type(exc).__name__}: {exc}") for r in mine if r.label not in done]
    return runs


async def ponder_phase(args: argparse.Namespace, suites: list[Suite], spec: Any, state_path: Path, log_dir: Path, servers: dict[str, Any]) -> list[RowRun]:
    runs: list[RowRun] = []
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as http:
        with server(ponder_side(spec, state_path, free_port()), log_dir, servers, "ponder") as url:
            for suite in suites:
                rows = systems.ponder_rows(MODEL, suite.name, suite.sampling)
                await warm_up(http, url, rows[:2], suite)
                for row in rows:
                    runs.append(await run_row(http, url, url, row, suite, args.concurrency))
    return runs


def build_environments(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """Each peer's versions, or why its environment could not be built (its rows then say so)."""
    built: dict[str, dict[str, str]] = {}
    for peer in envs.PEERS:
        if peer.name not in args.systems:
            continue
        try:
            built[peer.name] = envs.ensure(peer, args.cache)
        except (subprocess.CalledProcessError, OSError, ValueError) as exc:  # a peer that cannot be installed is a result
            log.error("could not build %s's environment: %s", peer.name, exc)
            built[peer.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return built


async def measure(
    args: argparse.Namespace, built: dict[str, dict[str, str]], spec: Any, state_path: Path, model_dir: Path
) -> tuple[list[Suite], list[RowRun], dict[str, Any], Path]:
    log_dir = Path(tempfile.mkdtemp(prefix="ponder-bench-peers-"))
    grader, sandbox = AnswerGrouper(timeout_s=10), Sandbox(SandboxLimits(concurrency=2))
    suites = [
        Suite(
            name,
            arithmetic.problems(args.arithmetic_problems) if name == "arithmetic" else humaneval.problems(args.humaneval_problems),
            Sampling(args.n, args.temperature, args.arithmetic_max_tokens if name == "arithmetic" else args.humaneval_max_tokens),
            grader,
            sandbox,
        )
        for name in args.suites
    ]
    servers: dict[str, Any] = {}
    runs: list[RowRun] = []
    try:
        runs += await peer_phase(args, suites, spec, model_dir, built, log_dir, servers)
        if "ponder" in args.systems:
            runs += await ponder_phase(args, suites, spec, state_path, log_dir, servers)
    finally:
        await grader.aclose()
    return suites, runs, servers, log_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description="Ponder beside optillm and its_hub on the same engine, model and problems.")
    parser.add_argument("--arithmetic-problems", type=int, default=40)
    parser.add_argument("--humaneval-problems", type=int, default=20, help="the first K HumanEval problems")
    parser.add_argument("--n", type=int, default=4, help="samples per problem for every scaling row")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--arithmetic-max-tokens", type=int, default=64, help="token cap per sample (every call of every system)")
    parser.add_argument("--humaneval-max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=1, help="problems in flight at once within a row")
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="vLLM direct always runs (the peers' reference)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench-peers", help="where the peers' environments live (reused when complete)")
    parser.add_argument("--setup", action="store_true", help="only build the peers' environments and print their versions (no engine starts)")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/peers-<UTC time>.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    spec, state_path, model_dir = prepared_model(MODEL, log)
    built = build_environments(args)
    if args.setup:
        print("\n".join(f"{name}: {versions}" for name, versions in built.items()))
        return
    started = datetime.now(UTC)
    suites, runs, servers, log_dir = asyncio.run(measure(args, built, spec, state_path, model_dir))
    rows = report.summarize(runs)
    sizes = {s.name: {"problems": len(s.problems), **asdict(s.sampling)} for s in suites}
    parameters = {"suites": sizes, "model": MODEL, "server_logs": str(log_dir), "servers": servers}
    recorded = argparse.Namespace(**{**vars(args), "cache": str(args.cache)})
    result, out = save_result("peers", started, {"name": spec.name}, recorded, parameters, peers=built, rows=rows, runs=[report.raw(r) for r in runs])
    print(f"{report.table(rows, sizes, result['host'], result['versions'], built)}\n\nresult: {out}")
