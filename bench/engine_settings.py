"""Which engine settings make the embedded default fastest on this host: each variant is the default engine actor
with one setting changed, measured single-stream and at 16 concurrent requests, one variant after another in one
run (so the ratios compare like with like on whatever host this is).

    .venv/bin/python -m bench.engine_settings [--variants default,compile,...] [--repeats 3]
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

from service.engines.pool import EnginePool
from service.engines.prepare import prepare_model
from service.engines.protocol import SamplingSpec
from service.hardware import host_info
from service.models import engine_args, engine_env
from service.settings import ModelSpec, Settings

TOKENS = 64
PROMPT = list(range(1000, 1040))

# Each variant: (engine_args overrides, env overrides). "default" is what `ponder serve` runs.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "default": ({}, {}),
    "eager": ({"enforce_eager": True}, {}),
    "multiprocessing": ({}, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}),
    "one_omp_thread": ({}, {"OMP_NUM_THREADS": "1"}),
    "max_num_seqs_16": ({"max_num_seqs": 16}, {}),
    "batched_tokens_512": ({"max_num_batched_tokens": 512}, {}),
    "bfloat16": ({"dtype": "bfloat16"}, {}),
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


async def run_variant(name: str, spec: ModelSpec, path: str, repeats: int) -> dict[str, Any]:
    args_delta, env_delta = VARIANTS[name]
    variant = replace_spec(spec, args_delta, env_delta)
    pool = EnginePool(spec=variant, model_path=path, engine_args=engine_args(variant), env=engine_env(variant),
                      namespace="ponder-bench", start_timeout_s=900, health_interval_s=60, retries=0)
    started = time.perf_counter()
    pool.start()
    await pool.wait_ready(900)
    startup = time.perf_counter() - started
    result = await measure(pool, repeats)
    await pool.stop()
    await asyncio.sleep(3)  # let the killed engine release the cores before the next variant
    return {"variant": name, "engine_args": engine_args(variant), "env": engine_env(variant), "startup_s": startup, **result}


def replace_spec(spec: ModelSpec, args: dict[str, Any], env: dict[str, str]) -> ModelSpec:
    return spec.model_copy(update={"engine_args": {**spec.engine_args, **args}, "env": {**spec.env, **env}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="default,eager,multiprocessing,one_omp_thread,max_num_seqs_16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = Settings()
    spec = settings.models[0]
    path = str(prepare_model(spec, settings.state_path))
    ray.init(namespace="ponder-bench", include_dashboard=False)
    rows = []
    for name in args.variants.split(","):
        rows.append(asyncio.run(run_variant(name, spec, path, args.repeats)))
    ray.shutdown()

    base = rows[0]
    print(f"{'variant':<20} {'start s':>8} {'single tok/s':>22} {'16 concurrent tok/s':>24} {'ratio single':>13} {'ratio 16':>9}")
    for row in rows:
        s, c = row["single_tok_s"], row["concurrent16_tok_s"]
        row["ratio_single"] = statistics.median(s) / statistics.median(base["single_tok_s"])
        row["ratio_concurrent16"] = statistics.median(c) / statistics.median(base["concurrent16_tok_s"])
        print(f"{row['variant']:<20} {row['startup_s']:>8.1f} {statistics.median(s):>10.1f} [{min(s):.1f}-{max(s):.1f}]"
              f" {statistics.median(c):>11.1f} [{min(c):.1f}-{max(c):.1f}] {row['ratio_single']:>13.2f} {row['ratio_concurrent16']:>9.2f}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path(__file__).parent / "results" / f"engine_settings-{stamp}.json"
    out.write_text(json.dumps({"benchmark": "engine_settings", "timestamp": stamp, "host": host_info(),
                               "tokens_per_request": TOKENS, "repeats": args.repeats, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
