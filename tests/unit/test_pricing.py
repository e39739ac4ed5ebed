"""A response's compute: each engine call priced by the cost model at the lengths it generated, summed per model,
with the attention each model ran; and the hardware profile the gateway prices with."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from compute.cost_model import H100, HardwareProfile, ModelShape, realised_cost
from service.execution.pricing import Attention, Priced, Pricing, hardware_profile
from service.planning.profile_hardware import save

SMOL = ModelShape(layers=30, heads=9, kv_heads=3, head_dim=64, params=134_515_008, max_context=8192)


def run(prompts: list[int], n: int, lengths: list[int], cached: list[int] | None = None, samples: bool = False) -> SimpleNamespace:
    """What pricing reads of a MeteredRun: its prompts, its sampling's n, its completions in prompt order, whether
    it is one prompt's samples sent one request each, and each prompt's prefix-cache hits."""
    hits = cached or [0] * len(prompts)
    return SimpleNamespace(
        prompts=[[1] * p for p in prompts],
        sampling=SimpleNamespace(n=n),
        completions=[SimpleNamespace(token_ids=[7] * k) for k in lengths],
        samples=samples,
        cached=lambda p: hits[p],
    )


def test_each_call_is_priced_at_its_own_lengths_and_the_calls_are_summed_per_model() -> None:
    pricing = Pricing(H100)
    sampled = Priced("smol", SMOL, Attention(), run([40], 3, [10, 20, 30]))  # type: ignore[arg-type]
    scored = Priced("smol", SMOL, Attention(), run([90], 1, [1]))  # type: ignore[arg-type]
    sparse = Priced("smol-sparse", SMOL, Attention(256, 32), run([40, 50], 2, [5, 6, 7, 8]))  # type: ignore[arg-type]
    report = pricing.report([sampled, scored, sparse])
    smol = realised_cost(SMOL, H100, 40, [10, 20, 30]).total + realised_cost(SMOL, H100, 90, [1]).total
    thin = realised_cost(SMOL, H100, 40, [5, 6], 256, 32).total + realised_cost(SMOL, H100, 50, [7, 8], 256, 32).total
    assert report["by_model"] == pytest.approx({"smol": smol, "smol-sparse": thin})
    assert report["eflops"] == pytest.approx(smol + thin) and report["seconds"] == pytest.approx((smol + thin) / H100.flops)
    assert report["attention"] == {"smol": {"mode": "dense"}, "smol-sparse": {"mode": "block_topk", "kv_budget": 256, "block_size": 32}}


def test_samples_sent_one_request_each_are_priced_as_one_n_sample_call() -> None:
    separate = Pricing(H100).report([Priced("smol", SMOL, Attention(), run([40, 40, 40], 1, [10, 20, 30], samples=True))])  # type: ignore[arg-type]
    assert separate["eflops"] == pytest.approx(realised_cost(SMOL, H100, 40, [10, 20, 30]).total)


def test_a_prefix_the_engine_had_cached_is_not_prefilled_again() -> None:
    probe = Pricing(H100).report([Priced("smol", SMOL, Attention(), run([600], 1, [12], cached=[512]))])  # type: ignore[arg-type]
    whole = realised_cost(SMOL, H100, 600, [12]).total
    assert probe["eflops"] == pytest.approx(realised_cost(SMOL, H100, 600, [12], prefilled=88).total) and probe["eflops"] < whole
    assert realised_cost(SMOL, H100, 600, [12], prefilled=600).total == pytest.approx(whole)


def test_a_call_that_generated_nothing_still_pays_for_its_prefill() -> None:
    report = Pricing(H100).report([Priced("smol", SMOL, Attention(), run([64], 2, [0, 0]))])  # type: ignore[arg-type]
    assert report["eflops"] > 0


async def test_the_gateway_prices_with_a_named_profile_or_the_saved_local_one(tmp_path: Path) -> None:
    assert await hardware_profile("h100", tmp_path, None) == H100
    priced = await hardware_profile("h100", tmp_path, 2.5)
    assert priced.price_per_hour == 2.5 and priced.flops == H100.flops
    measured = HardwareProfile(name="local", flops=1e11, bandwidth=1e10, source="measured", dtype="float32")
    save(measured, tmp_path)
    assert await hardware_profile("local", tmp_path, None) == measured
