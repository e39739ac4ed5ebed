"""Which engine settings make the embedded default fastest on this host: each variant is the default engine actor
with one setting changed, measured single-stream and at 16 concurrent requests, one variant after another in one
run (so the ratios compare like with like on whatever host this is).

    .venv/bin/python -m bench.engine_settings [--variants default,compile,...] [--repeats 3] [--workloads short,long]

The `long` workload measures what chunked prefill decides (long prompts): 8 concurrent requests with 1500-token
prompts (64 tokens each; their prefills do not fit in one 2048-token step together), and 4 streams decoding while a
6000-token prompt arrives (the longest pause between the streams' outputs, and that request's time to first token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray

from compute.protocol import SamplingSpec
from service.engines.pool import EnginePool
from service.engines.prepare import prepare_model
from service.execution.models import engine_args, engine_env
from service.planning.hardware import host_info
from service.settings import ModelSpec, Settings

TOKENS = 64
PROMPT = list(range(1000, 1040))
LONG_PROMPT, LONG_CONCURRENT, STALL_PROMPT, STALL_STREAMS = 1500, 8, 6000, 4

# Each variant: (engine_args overrides, env overrides). "default" is what `ponder serve` runs.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "default": ({}, {}),
    "eager": ({"enforce_eager": True}, {}),
    "multiprocessing": ({}, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}),
    "one_omp_thread": ({}, {"OMP_NUM_THREADS": "1"}),
    "max_num_seqs_16": ({"max_num_seqs": 16}, {}),
    "batched_tokens_512": ({"max_num_batched_tokens": 512}, {}),
    "bfloat16": ({"dtype": "bfloat16"}, {}),
    # what ran before chunked prefill was turned off on CPU (seeded requests crashed the engine with it on)
    "chunked_prefill_on": ({"enable_chunked_prefill": True}, {}),
}


async def measure(pool: EnginePool, repeats: int) -> dict[str, Any]:
    async def one(tag: str, k: int) -> int:
        produced = 0
        prompt = [k % 500 + 2000, *PROMPT]  # a distinct first token per request: no prefix-cache shortcut
        async for chunk in pool.generate(f"{tag}-{k}", prompt, SamplingSpec(max_tokens=TOKENS, ignore_eos=True, temperature=0.8)):
            produced += sum(len(d.token_ids) for d in chunk.deltas)
        return produced

    single, concurrent = [], []
    for r in range(repeats):
        started = time.perf_counter()
        tokens = sum([await one(f"s{r}", k) for k in range(3)])
        single.append(tokens / (time.perf_counter() - started))
        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(f"c{r}", k) for k in range(16))))
        concurrent.append(tokens / (time.perf_counter() - started))
    return {"single_tok_s": single, "concurrent16_tok_s": concurrent}


def long_prompt(key: int, length: int) -> list[int]:
    """Distinct from its first token on (no prefix-cache shortcut), inside SmolLM2's 49152-token vocabulary."""
    return [(key * 7919 + 13 * j) % 40000 + 100 for j in range(length)]


async def measure_long(pool: EnginePool, repeats: int) -> dict[str, Any]:
    async def timed(rid: str, prompt: list[int], tokens: int, arrivals: list[float] | None = None) -> tuple[int, float, float]:
        started = time.perf_counter()
        produced, first = 0, None
        async for chunk in pool.generate(rid, prompt, SamplingSpec(max_tokens=tokens, ignore_eos=True, temperature=0.8)):
            now = time.perf_counter()
            first = first if first is not None else now - started
            if arrivals is not None:
                arrivals.append(now)
            produced += sum(len(d.token_ids) for d in chunk.deltas)
        return produced, first or 0.0, time.perf_counter() - started

    out: dict[str, list[float]] = {
        k: [] for k in ("long8_gen_tok_s", "long8_prefill_tok_s", "long8_p50_s", "long8_max_s", "stall_max_gap_s", "stall_ttft_s", "stall_streams_s")
    }
    for r in range(repeats):
        started = time.perf_counter()
        results = await asyncio.gather(*(timed(f"l{r}-{k}", long_prompt(100 * r + k + 1, LONG_PROMPT), TOKENS) for k in range(LONG_CONCURRENT)))
        wall = time.perf_counter() - started
        out["long8_gen_tok_s"].append(sum(p for p, _, _ in results) / wall)
        out["long8_prefill_tok_s"].append(LONG_CONCURRENT * LONG_PROMPT / max(f for _, f, _ in results))
        out["long8_p50_s"].append(statistics.median(t for _, _, t in results))
        out["long8_max_s"].append(max(t for _, _, t in results))

        arrivals: list[list[float]] = [[] for _ in range(STALL_STREAMS)]
        started = time.perf_counter()
        streams = [asyncio.create_task(timed(f"d{r}-{k}", [k + 3000 + 50 * r, *PROMPT], 2 * TOKENS, arrivals[k])) for k in range(STALL_STREAMS)]
        while min(len(a) for a in arrivals) < 4:
            await asyncio.sleep(0.01)
        _, ttft, _ = await timed(f"x{r}", long_prompt(100 * r + 99, STALL_PROMPT), 8)
        await asyncio.gather(*streams)
        out["stall_streams_s"].append(time.perf_counter() - started)
        out["stall_ttft_s"].append(ttft)
        out["stall_max_gap_s"].append(max(b - a for times in arrivals for a, b in zip(times, times[1:], strict=False)))
    return out


async def run_variant(name: str, spec: ModelSpec, path: str, repeats: int, workloads: set[str]) -> dict[str, Any]:
    args_delta, env_delta = VARIANTS[name]
    variant = replace_spec(spec, args_delta, env_delta)
    pool = EnginePool(
        spec=variant,
        model_path=path,
        engine_args=engine_args(variant),
        env=engine_env(variant),
        namespace="ponder-bench",
        start_timeout_s=900,
        health_interval_s=60,
        retries=0,
    )
    started = time.perf_counter()
    pool.start()
    await pool.wait_ready(900)
    startup = time.perf_counter() - started
    result = await measure(pool, repeats) if "short" in workloads else {}
    if "long" in workloads:
        result |= await measure_long(pool, repeats)
    await pool.stop()
    await asyncio.sleep(3)  # let the killed engine release the cores before the next variant
    return {"variant": name, "engine_args": engine_args(variant), "env": engine_env(variant), "startup_s": startup, **result}


LONG_COLUMNS = (
    ("long8_gen_tok_s", "8×1500 gen tok/s"),
    ("long8_prefill_tok_s", "8×1500 prefill tok/s"),
    ("long8_p50_s", "8×1500 p50 s"),
    ("long8_max_s", "8×1500 max s"),
    ("stall_max_gap_s", "decode max gap s"),
    ("stall_ttft_s", "6000 TTFT s"),
    ("stall_streams_s", "4 streams s"),
)


def print_long(rows: list[dict[str, Any]]) -> None:
    """Median [min-max] of each long-prompt figure, and its ratio to the first variant's median."""
    print(f"{'variant':<20} {'start s':>8} " + " ".join(f"{label:>26}" for _, label in LONG_COLUMNS))
    for row in rows:
        cells = []
        for key, _ in LONG_COLUMNS:
            v = row[key]
            row[f"ratio_{key}"] = statistics.median(v) / statistics.median(rows[0][key])
            cells.append(f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}] x{row[f'ratio_{key}']:.2f}")
        print(f"{row['variant']:<20} {row['startup_s']:>8.1f} " + " ".join(f"{c:>26}" for c in cells))


def replace_spec(spec: ModelSpec, args: dict[str, Any], env: dict[str, str]) -> ModelSpec:
    return spec.model_copy(update={"engine_args": {**spec.engine_args, **args}, "env": {**spec.env, **env}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="default,eager,multiprocessing,one_omp_thread,max_num_seqs_16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="short", help="short (the default), long, or short,long")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = Settings()
    spec = settings.models[0]
    path = str(prepare_model(spec, settings.state_path))
    ray.init(namespace="ponder-bench", include_dashboard=False)
    rows = []
    for name in args.variants.split(","):
        rows.append(asyncio.run(run_variant(name, spec, path, args.repeats, set(args.workloads.split(",")))))
    ray.shutdown()

    workloads = set(args.workloads.split(","))
    base = rows[0]
    if "short" in workloads:
        print(f"{'variant':<20} {'start s':>8} {'single tok/s':>22} {'16 concurrent tok/s':>24} {'ratio single':>13} {'ratio 16':>9}")
        for row in rows:
            s, c = row["single_tok_s"], row["concurrent16_tok_s"]
            row["ratio_single"] = statistics.median(s) / statistics.median(base["single_tok_s"])
            row["ratio_concurrent16"] = statistics.median(c) / statistics.median(base["concurrent16_tok_s"])
            print(
                f"{row['variant']:<20} {row['startup_s']:>8.1f} {statistics.median(s):>10.1f} [{min(s):.1f}-{max(s):.1f}]"
                f" {statistics.median(c):>11.1f} [{min(c):.1f}-{max(c):.1f}] {row['ratio_single']:>13.2f} {row['ratio_concurrent16']:>9.2f}"
            )
    if "long" in workloads:
        print_long(rows)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path(__file__).parent / "results" / f"engine_settings-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "engine_settings",
                "timestamp": stamp,
                "host": host_info(),
                "tokens_per_request": TOKENS,
                "repeats": args.repeats,
                "workloads": sorted(workloads),
                "long": {"prompt": LONG_PROMPT, "concurrent": LONG_CONCURRENT, "stall_prompt": STALL_PROMPT, "stall_streams": STALL_STREAMS}
                if "long" in workloads
                else None,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
