"""One layer's decode attention alone, no engine: the stock CPU kernel over whole sequences against block top-k's
block choice plus the kernel over the chosen blocks, and the per-step plan, in the packaged model's geometry on
random keys (bench/sparse_decode.py runs it and reports it beside the engine's numbers)."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from service.planning.hardware import cpu_dtype

BLOCK_SIZE = 32


def _fastest_us(call: Any, calls: int = 20, rounds: int = 5) -> float:
    """The fastest of several rounds: another process taking the CPU only ever makes a round slower."""
    call()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def kernel_times(model: Path, contexts: list[int], budgets: list[int], batch: int) -> list[dict[str, Any]]:
    """One layer's decode attention alone, no engine, in the model's geometry on random keys: the stock kernel over
    whole sequences against the backend's block choice plus the kernel over the chosen blocks; and the per-step
    plan (built once for all layers)."""
    import torch
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    from service.engines import sparse_kernel as sk

    config = json.loads((model / "config.json").read_text())
    heads, kvh = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    dtype = getattr(torch, cpu_dtype())
    geometry = sk.KernelGeometry(heads, kvh, head_dim, dtype, _get_attn_isa(dtype, BLOCK_SIZE, head_dim, "auto"), "auto")
    return [_layer_times(geometry, context, budgets, batch) for context in contexts]


def _layer_times(geometry: Any, context: int, budgets: list[int], batch: int) -> dict[str, Any]:
    import torch
    from vllm import _custom_ops as ops
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadata

    from service.engines import sparse_kernel as sk

    kvh, head_dim, dtype, isa = geometry.num_kv_heads, geometry.head_dim, geometry.dtype, geometry.isa
    per_seq = (context + BLOCK_SIZE - 1) // BLOCK_SIZE
    num_blocks = batch * per_seq + 1
    kv = torch.zeros(num_blocks, kvh, BLOCK_SIZE, 2 * head_dim, dtype=dtype)
    key_cache, value_cache = kv.view(num_blocks, kvh, 2 * BLOCK_SIZE, head_dim).chunk(2, dim=2)
    summaries = sk.new_summaries(num_blocks, kvh, head_dim)
    table = (torch.randperm(num_blocks - 1) + 1)[: batch * per_seq].view(batch, per_seq).to(torch.int32)
    positions = torch.arange(context)
    for b in range(batch):
        slots = table[b].long()[positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE
        key = torch.randn(context, kvh, head_dim, dtype=dtype)
        ops.cpu_attn_reshape_and_cache(key, torch.randn_like(key), key_cache, value_cache, slots, isa)
        sk.update_block_summaries(summaries, key, slots, BLOCK_SIZE)
    query = torch.randn(batch, geometry.num_heads, head_dim, dtype=dtype)
    output = torch.empty_like(query)
    start = torch.arange(batch + 1, dtype=torch.int32)
    seq_lens = torch.full((batch,), context, dtype=torch.int32)
    schedule = ops.cpu_attn_get_scheduler_metadata(batch, geometry.num_heads, kvh, head_dim, seq_lens, dtype, start, True, -1, isa, True)
    scale = head_dim**-0.5
    dense = functools.partial(
        ops.cpu_attention_with_kv_cache, query, key_cache, value_cache, output, start, seq_lens, scale, True, None, -1, table, 0.0, schedule, None
    )
    row: dict[str, Any] = {"context": context, "batch": batch, "dense_us": _fastest_us(dense)}
    metadata = CPUAttentionMetadata(
        num_actual_tokens=batch,
        max_query_len=1,
        query_start_loc=start,
        max_seq_len=context,
        seq_lens=seq_lens,
        block_table=table,
        slot_mapping=torch.empty(0),
        scheduler_metadata=schedule,
    )
    for budget in budgets:
        plan = functools.partial(sk.plan_sparse_decode, seq_lens, start, table, None, batch, BLOCK_SIZE, sk.top_k_for(budget, BLOCK_SIZE), geometry)
        built = plan()
        if built is not None:
            row[f"{budget}_us"] = _fastest_us(functools.partial(sk.sparse_attention, query, kv, output, metadata, built, summaries, scale, 0.0))
            row[f"{budget}_plan_us"] = _fastest_us(plan)
    return row


def kernel_table(rows: list[dict[str, Any]], budgets: list[int]) -> str:
    header = ["context", "dense us/layer"] + [f"{b} us/layer (+plan us/step)" for b in budgets]
    lines = [" | ".join(header)]
    for row in rows:
        cells = [str(row["context"]), f"{row['dense_us']:.0f}"]
        cells += [f"{row[f'{b}_us']:.0f} (+{row[f'{b}_plan_us']:.0f})" if f"{b}_us" in row else "dense" for b in budgets]
        lines.append(" | ".join(cells))
    return "\n".join(lines)
