"""What Kinetics' allocator (compute/allocator.py) knows of how accurate a configuration is for a (model, task
family): observations from the benchmark results the dashboard shows and from the ledger's served requests whose
answer was graded (a `verifier.reference`) or marked through `POST /v1/feedback`.

    record -> Observation(n, cap, kv_budget, correct)      for Kinetics' allocator
        n    the strategy's samples (1 for a plain call); a Kinetics request's own plan
        cap  the request's max_tokens where the ledger has it, else the smallest grid cap that holds the mean sample
             (a sample that ended within L tokens would have ended the same under any cap >= L)
        B    the plan's KV budget (None: dense)
    family   a benchmark's suite, a Kinetics request's `family`; "default" pools every record of the model
    lengths  mean sample lengths of records whose samples ended by themselves: the allocator's length profile
    auto     the difficulty (probe agreement) each `auto` request measured, and for graded ones its bin, its choice
             and whether it was right: the compute-optimal table

Rebuilt at most every `REFRESH_S` per gateway: a planning request must not read the whole ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from compute.accuracy import Observation
from compute.allocator import SHORT_CAPS
from service.state.ledger import Ledger, LedgerRecord
from service.state.results import BENCHMARKS

log = logging.getLogger(__name__)

REFRESH_S = 30.0
LEDGER_RECORDS = 5000
DEFAULT_FAMILY = "default"
SAMPLING_STRATEGIES = ("none", "majority", "best_of_n", "kinetics", "auto")
PLANNED = ("kinetics", "auto")
CUT = ("length", "budget", "deadline")


@dataclass(frozen=True)
class Evidence:
    observations: list[Observation]
    lengths: list[int]
    agreements: list[float] = field(default_factory=list)
    choices: list[tuple[int, str, bool]] = field(default_factory=list)


def family_of(record: LedgerRecord) -> str:
    """Benchmark runs are named `<benchmark>-<suite>-<time>` (accuracy-arithmetic-2026...); requests say theirs."""
    if record.source == "benchmark" and record.run:
        parts = record.run.split("-")
        return parts[1] if len(parts) > 2 else DEFAULT_FAMILY
    return str(record.params.get("family") or DEFAULT_FAMILY)


def observation(record: LedgerRecord) -> tuple[Observation, int | None] | None:
    """The record as an observation, with its mean sample length when its samples ended by themselves."""
    if record.strategy not in SAMPLING_STRATEGIES or record.correct is None or record.outcome != "served":
        return None
    plan = record.params.get("plan") or {}
    if record.strategy in PLANNED and not plan:  # a benchmark file's row of a planner: its plans are not in the record
        return None
    n = int(plan.get("n") or record.params.get("n") or 1)
    mean = record.completion_tokens / n if n else 0.0
    cap = plan.get("max_tokens") or record.params.get("max_tokens") or next((c for c in SHORT_CAPS if c >= mean), SHORT_CAPS[-1])
    natural = round(mean) if record.finish_reason not in CUT and mean > 0 else None
    return Observation(n=n, max_tokens=int(cap), kv_budget=plan.get("kv_budget"), correct=bool(record.correct)), natural


def evidence(records: Iterable[LedgerRecord], model: str, family: str) -> Evidence:
    observations, lengths, agreements, choices = [], [], [], []
    for record in records:
        if record.model != model or (family != DEFAULT_FAMILY and family_of(record) != family):
            continue
        plan = record.params.get("plan") or {}
        if record.strategy == "auto" and plan.get("agreement") is not None:
            agreements.append(float(plan["agreement"]))
            if record.correct is not None and plan.get("bin") is not None:
                choices.append((int(plan["bin"]), str(plan.get("choice")), bool(record.correct)))
        found = observation(record)
        if found is None:
            continue
        observations.append(found[0])
        if found[1] is not None:
            lengths.append(found[1])
    return Evidence(observations, lengths, agreements, choices)


@dataclass
class AccuracyBook:
    ledger: Ledger
    results_dir: Path | None
    _records: list[LedgerRecord] = field(default_factory=list)
    _built: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def evidence(self, model: str, family: str) -> Evidence:
        """What is known for (model, family); an unreachable Redis leaves only the benchmark results."""
        async with self._lock:
            if time.monotonic() - self._built > REFRESH_S:
                benchmarks = await asyncio.to_thread(BENCHMARKS.load, self.results_dir)
                try:
                    served = await asyncio.wait_for(self.ledger.recent(limit=LEDGER_RECORDS), timeout=2.0)
                except Exception as exc:  # Redis slow or down: plan from the benchmarks alone
                    log.warning("ledger unreadable for the accuracy table: %s: %s", type(exc).__name__, exc)
                    served = []
                self._records, self._built = benchmarks + served, time.monotonic()
        return evidence(self._records, model, family)
