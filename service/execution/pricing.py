"""What every response reports as its compute: each engine call priced by Kinetics' cost model (compute/cost_model.py)
at the lengths it really generated, so a plain call, a strategy's hundred calls and a Kinetics plan are in one
currency (eFLOPs = FLOPs + I x bytes moved) that the hardware profile turns into seconds and dollars.

    call cost  = realised_cost(model shape, hardware, len(prompt), [generated tokens of each of its n samples],
                               prompt tokens the engine computed: those its prefix cache did not hold)
    request    = sum over its engine calls (rollouts, summaries, judges, drafts, scoring passes, probes)

A call on a replica that runs the sparse decode plugin is priced with its KV budget; every other call is dense, and
the report says which.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compute.cost_model import PONDER_TERMS, PROFILES, HardwareProfile, ModelShape, Terms, realised_cost
from service.execution.generation import MeteredRun
from service.planning.hardware import cpu_dtype
from service.planning.profile_hardware import load, measure, save

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attention:
    """How a served model's replicas attend at decode: dense, or block top-k within a KV budget."""

    kv_budget: int | None = None
    block_size: int | None = None

    def report(self) -> dict[str, Any]:
        return {"mode": "dense"} if self.kv_budget is None else {"mode": "block_topk", "kv_budget": self.kv_budget, "block_size": self.block_size}


@dataclass(frozen=True)
class Priced:
    """One engine call as the pricing needs it: which model, how it attends, and the run itself."""

    model: str
    shape: ModelShape
    attention: Attention
    run: MeteredRun


@dataclass(frozen=True)
class Pricing:
    hardware: HardwareProfile
    terms: Terms = PONDER_TERMS

    def call(self, call: Priced) -> float:
        """Samples sent as engine requests of their own (`samples`: one prompt repeated, so that each can be stopped
        alone) are priced as the one n-sample call they are: issued together, batched together, one prompt."""
        run = call.run
        if run.samples:
            groups = [(run.prompts[0], [len(c.token_ids) for c in run.completions], max(len(p) - run.cached(i) for i, p in enumerate(run.prompts)))]
        else:
            n = run.sampling.n
            groups = [
                (prompt, [len(c.token_ids) for c in run.completions[p * n : (p + 1) * n]], len(prompt) - run.cached(p)) for p, prompt in enumerate(run.prompts)
            ]
        attention = call.attention
        return sum(
            realised_cost(call.shape, self.hardware, len(prompt), lengths or [0], attention.kv_budget, attention.block_size, self.terms, computed).total
            for prompt, lengths, computed in groups
        )

    def report(self, calls: Iterable[Priced]) -> dict[str, Any]:
        by_model: dict[str, float] = {}
        attention: dict[str, dict[str, Any]] = {}
        for call in calls:
            by_model[call.model] = by_model.get(call.model, 0.0) + self.call(call)
            attention[call.model] = call.attention.report()
        eflops = sum(by_model.values())
        return {
            "eflops": eflops,
            "seconds": self.hardware.seconds(eflops),
            "hardware": {"name": self.hardware.name, "source": self.hardware.source, "intensity": round(self.hardware.intensity, 3)},
            "by_model": by_model,
            "attention": attention,
        }


async def hardware_profile(name: str, state_dir: Path, price_per_hour: float | None) -> HardwareProfile:
    """A named profile (b200, h100, h200: the paper's and the spec sheets'), or "local": this host as measured by
    `ponder profile-hardware`, measured now (a few seconds, once) when no profile has been saved."""
    if name != "local":
        profile = PROFILES[name]
    else:
        saved = await asyncio.to_thread(load, state_dir)
        profile = saved if saved is not None else await asyncio.to_thread(_measured, state_dir)
    return profile.model_copy(update={"price_per_hour": price_per_hour}) if price_per_hour is not None else profile


def _measured(state_dir: Path) -> HardwareProfile:
    profile = measure(cpu_dtype())
    save(profile, state_dir)
    log.info("measured this host: %.3g FLOP/s, %.3g B/s (I = %.1f); saved under %s", profile.flops, profile.bandwidth, profile.intensity, state_dir)
    return profile
