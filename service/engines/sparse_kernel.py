"""The arithmetic of block top-k sparse decode (service/engines/sparse_attention.py has the design): the step's plan
of which rows decode sparsely, the per-block key summaries, the choice of blocks per KV head, the reduced block
tables, and the call to the stock paged-attention kernel with them. Also the engine's record of what sparse decode
read, for the benchmark."""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from vllm import _custom_ops as ops
from vllm import envs
from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadata

from service.engines.sparse_plugin import BUDGET_ENV

STEP_RECORDS_KEPT = 10_000


def top_k_for(budget: int, block_size: int) -> int:
    k = budget // block_size - 2
    if k < 1:
        raise ValueError(
            f"{BUDGET_ENV}={budget} leaves no top-k block at block size {block_size}: it must cover the sink block, "
            f"the newest block and at least one selected block ({3 * block_size} tokens)"
        )
    return k


@dataclass
class StepRecord:
    """One step that had sparse rows: `attended[i]` KV tokens were read per sparse layer for a sequence whose dense
    length is `seq_lens[i]`."""

    seq_lens: list[int]
    attended: list[int]
    sparse_layers: int = 0
    dense_layers: int = 0


@dataclass
class SparseDecodeStats:
    """What the backend read, kept in the worker process. `dense_kv_tokens` is what dense attention would have read
    over the same layer calls of sparse-eligible rows, `attended_kv_tokens` what was read."""

    steps: deque[StepRecord] = field(default_factory=lambda: deque(maxlen=STEP_RECORDS_KEPT))
    dense_kv_tokens: int = 0
    attended_kv_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "dense_kv_tokens": self.dense_kv_tokens,
                "attended_kv_tokens": self.attended_kv_tokens,
                "steps": [dataclasses.asdict(s) for s in self.steps],
            }

    def reset(self) -> None:
        with self.lock:
            self.steps.clear()
            self.dense_kv_tokens = 0
            self.attended_kv_tokens = 0


STATS = SparseDecodeStats()


def sparse_decode_stats(worker: object = None) -> dict[str, Any]:
    """For `LLM.collective_rpc(sparse_decode_stats)` / `AsyncLLM.collective_rpc`, which call it with the worker: the
    counters live in the worker's process (the engine's own process with VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    return STATS.snapshot()


def reset_sparse_decode_stats(worker: object = None) -> None:
    STATS.reset()


@dataclass
class SparseDecodePlan:
    """The layer-independent part of one step's sparse decode, for the `rows` that decode sparsely.

    Pseudo-request j = row_index * num_kv_heads + kv_head; its table holds pseudo block ids (block * num_kv_heads +
    kv_head): the sink, the k blocks chosen per layer, the newest block.
    """

    top_k: int
    num_kv_heads: int
    rows: torch.Tensor  # [R] int64, indices into the batch
    tokens: torch.Tensor  # [R] int64, each row's query token
    candidates: torch.Tensor  # [R, C] int32 block ids of the middle blocks (1 .. nb-2), padded
    pseudo_candidates: torch.Tensor  # [kv_heads, R, C] int32: their pseudo ids
    invalid: torch.Tensor  # [R, C] bool, padding beyond a row's middle blocks
    padded: bool  # any of `invalid` is set
    sinks: torch.Tensor  # [R, num_kv_heads, 1] int32 pseudo ids of the sink blocks
    newest: torch.Tensor  # [R, num_kv_heads, 1] int32 pseudo ids of the newest blocks
    seq_lens: torch.Tensor  # [R * num_kv_heads] int32, tokens read per pseudo-request
    query_start_loc: torch.Tensor  # [R * num_kv_heads + 1] int32
    scheduler_metadata: torch.Tensor
    all_rows: bool  # every row of the batch is a sparse decode row, with one token each
    rest_seq_lens: torch.Tensor | None  # otherwise: the batch's lengths with sparse rows cut to one token
    rest_scheduler_metadata: torch.Tensor | None
    record: StepRecord
    dense_tokens: int
    attended_tokens: int


@dataclass
class KernelGeometry:
    """What the scheduler-metadata op needs besides lengths."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    isa: str
    kv_cache_dtype: str


def _scheduler_metadata(
    geometry: KernelGeometry, num_reqs: int, num_heads: int, num_kv_heads: int, seq_lens: torch.Tensor, query_start_loc: torch.Tensor
) -> torch.Tensor:
    return ops.cpu_attn_get_scheduler_metadata(
        num_reqs=num_reqs,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=geometry.head_dim,
        seq_lens=seq_lens,
        dtype=geometry.dtype,
        query_start_loc=query_start_loc,
        causal=True,
        sliding_window_size=-1,
        isa=geometry.isa,
        enable_kv_split=envs.VLLM_CPU_ATTN_SPLIT_KV,
        dynamic_causal=None,
        kv_cache_dtype=geometry.kv_cache_dtype,
    )


def plan_sparse_decode(
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    block_table: torch.Tensor,
    is_prefilling: torch.Tensor | None,
    num_actual_tokens: int,
    block_size: int,
    top_k: int,
    geometry: KernelGeometry,
) -> SparseDecodePlan | None:
    """None when no row decodes sparsely this step. Never writes into `block_table`: it is the model runner's
    persistent buffer."""
    num_reqs = seq_lens.shape[0]
    kvh = geometry.num_kv_heads
    query_lens = query_start_loc[1 : num_reqs + 1] - query_start_loc[:num_reqs]
    num_blocks = (seq_lens + block_size - 1) // block_size
    eligible = (query_lens == 1) & (num_blocks > top_k + 2)
    if is_prefilling is not None:
        eligible &= ~is_prefilling[:num_reqs]
    rows = eligible.nonzero().squeeze(1)
    num_rows = rows.shape[0]
    if num_rows == 0:
        return None
    tables = block_table[rows]
    row_blocks = num_blocks[rows].long()
    width = int(row_blocks.max()) - 2
    candidates = tables[:, 1 : width + 1].contiguous()
    invalid = torch.arange(width) >= (row_blocks - 2)[:, None]
    heads = torch.arange(kvh, dtype=torch.int32).view(1, kvh, 1)
    newest = tables.gather(1, (row_blocks - 1)[:, None])
    row_seq = seq_lens[rows]
    attended = (top_k + 1) * block_size + row_seq - (row_blocks - 1) * block_size
    pseudo_seq = attended.to(torch.int32).repeat_interleave(kvh)
    pseudo_start = torch.arange(num_rows * kvh + 1, dtype=torch.int32)
    pseudo_metadata = _scheduler_metadata(geometry, num_rows * kvh, geometry.num_heads // kvh, 1, pseudo_seq, pseudo_start)
    all_rows = num_rows == num_reqs and num_actual_tokens == num_rows
    rest_seq_lens = rest_metadata = None
    if not all_rows:
        rest_seq_lens = seq_lens.clone()
        rest_seq_lens[rows] = 1
        rest_metadata = _scheduler_metadata(geometry, num_reqs, geometry.num_heads, kvh, rest_seq_lens, query_start_loc)
    record = StepRecord(seq_lens=row_seq.tolist(), attended=attended.tolist())
    return SparseDecodePlan(
        top_k=top_k,
        num_kv_heads=kvh,
        rows=rows,
        tokens=query_start_loc[rows].long(),
        candidates=candidates,
        pseudo_candidates=candidates[None] * kvh + heads.view(kvh, 1, 1),
        invalid=invalid,
        padded=bool(invalid.any()),
        sinks=tables[:, :1, None] * kvh + heads,
        newest=newest[:, :, None] * kvh + heads,
        seq_lens=pseudo_seq,
        query_start_loc=pseudo_start,
        scheduler_metadata=pseudo_metadata,
        all_rows=all_rows,
        rest_seq_lens=rest_seq_lens,
        rest_scheduler_metadata=rest_metadata,
        record=record,
        dense_tokens=sum(record.seq_lens),
        attended_tokens=sum(record.attended),
    )


def new_summaries(num_blocks: int, num_kv_heads: int, head_dim: int) -> torch.Tensor:
    """Per KV head, per block, the sum of its keys: [kv_heads, blocks, head_dim] float32, head-major so that a
    row's candidates gather into one contiguous [C, head_dim] matrix per head."""
    return torch.zeros(num_kv_heads, num_blocks, head_dim, dtype=torch.float32)


def select_blocks(query: torch.Tensor, summaries: torch.Tensor, plan: SparseDecodePlan) -> torch.Tensor:
    """The top-k middle blocks per (row, KV head), as pseudo ids [R, kv_heads, k]. `query` is the rows' query
    [R, heads, head_dim]. The score is linear in the query, so summing the GQA group's query heads ranks blocks as
    Kinetics' group average does."""
    kvh, num_rows, width = plan.pseudo_candidates.shape
    head_dim = query.shape[-1]
    group_query = query.view(num_rows, kvh, -1, head_dim).sum(2, dtype=torch.float32)
    block_keys = summaries.index_select(1, plan.candidates.view(-1)).view(kvh, num_rows, width, head_dim)
    scores = (block_keys * group_query.transpose(0, 1).unsqueeze(2)).sum(-1)  # a batched matmul is slower here
    if plan.padded:
        scores.masked_fill_(plan.invalid, float("-inf"))
    best = scores.topk(plan.top_k, dim=2, sorted=False).indices
    return plan.pseudo_candidates.gather(2, best).permute(1, 0, 2)


def reduced_tables(plan: SparseDecodePlan, chosen: torch.Tensor) -> torch.Tensor:
    """[R * kv_heads, k + 2] pseudo block ids: sink, the chosen blocks, newest (last, where the kernel puts the
    query)."""
    return torch.cat([plan.sinks, chosen, plan.newest], dim=2).view(-1, plan.top_k + 2)


def update_block_summaries(summaries: torch.Tensor, key: torch.Tensor, slot_mapping: torch.Tensor, block_size: int) -> None:
    """Adds each written key [T, kv_heads, head_dim] to its block's sum; a write at offset 0 starts the block over.
    Runs in every sparse layer at every step, so the common cases (no padding, no block starting) skip their ops."""
    slots = slot_mapping[: key.shape[0]]
    if slots.numel() == 0:
        return
    keys = key[: slots.shape[0]]
    if int(slots.min()) < 0:
        written = slots >= 0
        slots, keys = slots[written], keys[written]
    blocks = slots // block_size
    fresh = slots % block_size == 0
    if bool(fresh.any()):
        summaries.index_fill_(1, blocks[fresh], 0.0)
    summaries.index_add_(1, blocks, keys.transpose(0, 1).float())


def sparse_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    output: torch.Tensor,
    metadata: CPUAttentionMetadata,
    plan: SparseDecodePlan,
    summaries: torch.Tensor,
    scale: float,
    softcap: float,
) -> None:
    """Writes attention for all `metadata.num_actual_tokens` tokens into `output`: the plan's rows over their
    selected blocks; in a mixed batch the other rows dense, by a first kernel call in which the sparse rows read one
    token (their output is then overwritten)."""
    num_tokens = metadata.num_actual_tokens
    num_blocks, kvh, block_size, _ = kv_cache.shape
    head_dim = query.shape[-1]
    group = query.shape[1] // kvh
    rows_query = query[:num_tokens] if plan.all_rows else query[plan.tokens]
    table = reduced_tables(plan, select_blocks(rows_query, summaries, plan))
    if not plan.all_rows:
        if plan.rest_seq_lens is None or plan.rest_scheduler_metadata is None:
            raise RuntimeError("a plan for a mixed batch lacks the dense rows' lengths or scheduler metadata")
        key_cache, value_cache = kv_cache.view(num_blocks, kvh, 2 * block_size, head_dim).chunk(2, dim=2)
        ops.cpu_attention_with_kv_cache(
            query=query[:num_tokens],
            key_cache=key_cache,
            value_cache=value_cache,
            output=output[:num_tokens],
            query_start_loc=metadata.query_start_loc,
            seq_lens=plan.rest_seq_lens,
            scale=scale,
            causal=True,
            alibi_slopes=None,
            sliding_window=-1,
            block_table=metadata.block_table,
            softcap=softcap,
            scheduler_metadata=plan.rest_scheduler_metadata,
            s_aux=None,
        )
    pseudo_key, pseudo_value = kv_cache.view(num_blocks * kvh, 1, 2 * block_size, head_dim).chunk(2, dim=2)
    pseudo_query = rows_query.reshape(-1, group, head_dim)
    pseudo_output = output[:num_tokens].view(-1, group, head_dim) if plan.all_rows else torch.empty_like(pseudo_query)
    ops.cpu_attention_with_kv_cache(
        query=pseudo_query,
        key_cache=pseudo_key,
        value_cache=pseudo_value,
        output=pseudo_output,
        query_start_loc=plan.query_start_loc,
        seq_lens=plan.seq_lens,
        scale=scale,
        causal=True,
        alibi_slopes=None,
        sliding_window=-1,
        block_table=table,
        softcap=softcap,
        scheduler_metadata=plan.scheduler_metadata,
        s_aux=None,
    )
    if not plan.all_rows:
        output[plan.tokens] = pseudo_output.view(-1, query.shape[1], head_dim)
