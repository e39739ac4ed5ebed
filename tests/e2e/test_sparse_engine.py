"""The sparse decode backend in a real vLLM engine (the packaged SmolLM2-135M, block size 32, enforce_eager), one
engine process per configuration as the service runs them: a budget that covers the context gives exactly the dense
engine's greedy output; a smaller one reads, at every decode step and in every layer but the first, exactly the sink
block, its top-k blocks and the newest block, while a short sequence decoding beside it stays dense.

The engines run in float32: in a mixed batch the dense rows go through a kernel call of their own, whose split of the
work across threads differs from the all-dense step's, and in bfloat16 that reordered sum is enough to tip a greedy
near-tie some tokens in (seen on an AVX-512 BF16 host at the 11th token), which would say nothing about sparsity."""

from __future__ import annotations

from typing import Any

import pytest

from bench.sparse_decode import BLOCK_SIZE, MODEL_DIR, EngineJob, run_engine, text_prompt

pytestmark = pytest.mark.slow

LONG = 1200  # 38 blocks
SHORT = 100
MAX_TOKENS = 12
SPARSE_BUDGET = 512  # 16 blocks: the sink, k = 14, the newest
NUM_LAYERS = 30
DTYPE = "float32"


@pytest.fixture(scope="module")
def prompts() -> tuple[list[int], list[int]]:
    if not (MODEL_DIR / "config.json").exists():
        pytest.fail(f"no prepared model at {MODEL_DIR}: run `.venv/bin/ponder prepare-model`")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    text = text_prompt(tokenizer, LONG + SHORT)
    return text[:LONG], text[LONG:]


def job(prompts: tuple[list[int], list[int]], budget: int | None) -> dict[str, Any]:
    long, short = prompts
    return run_engine(EngineJob(model=str(MODEL_DIR), budget=budget, prompts=[long], max_tokens=MAX_TOKENS, together=[long, short], dtype=DTYPE))


@pytest.fixture(scope="module")
def dense(prompts: tuple[list[int], list[int]]) -> dict[str, Any]:
    return job(prompts, None)


def test_budget_covering_the_context_is_exactly_dense(prompts: tuple[list[int], list[int]], dense: dict[str, Any]) -> None:
    covering = job(prompts, 2048)
    assert covering["runs"][0]["tokens"] == dense["runs"][0]["tokens"]
    assert covering["together"]["tokens"] == dense["together"]["tokens"]
    assert covering["runs"][0]["stats"]["steps"] == []
    assert covering["runs"][0]["stats"]["attended_kv_tokens"] == 0


def expected_attended(seq_len: int) -> int:
    top_k = SPARSE_BUDGET // BLOCK_SIZE - 2
    newest_tokens = seq_len - (seq_len - 1) // BLOCK_SIZE * BLOCK_SIZE
    return (1 + top_k) * BLOCK_SIZE + newest_tokens


def test_below_the_budget_only_the_selected_blocks_are_read(prompts: tuple[list[int], list[int]], dense: dict[str, Any]) -> None:
    sparse = job(prompts, SPARSE_BUDGET)
    run = sparse["runs"][0]
    assert len(run["tokens"]) == MAX_TOKENS
    assert run["tokens"][0] == dense["runs"][0]["tokens"][0]  # sampled after the (dense) prefill
    steps = run["stats"]["steps"]
    # the first token comes from the prefill; every later one from a decode step over LONG + i tokens
    assert [s["seq_lens"] for s in steps] == [[LONG + i] for i in range(1, MAX_TOKENS)]
    for step in steps:
        assert step["attended"] == [expected_attended(step["seq_lens"][0])]
        assert step["attended"][0] <= SPARSE_BUDGET
        assert (step["sparse_layers"], step["dense_layers"]) == (NUM_LAYERS - 1, 1)  # layer 0 stays dense
    stats = run["stats"]
    assert stats["dense_kv_tokens"] == NUM_LAYERS * sum(s["seq_lens"][0] for s in steps)
    assert stats["attended_kv_tokens"] == sum((NUM_LAYERS - 1) * s["attended"][0] + s["seq_lens"][0] for s in steps)
    assert stats["attended_kv_tokens"] < 0.5 * stats["dense_kv_tokens"]

    together = sparse["together"]
    assert together["tokens"][1] == dense["together"]["tokens"][1]  # the short sequence decoded beside it is dense
    assert all(len(s["seq_lens"]) == 1 for s in together["stats"]["steps"])
