"""What Kinetics' allocator (compute/allocator.py) knows of how accurate a configuration is for a (model, task
family): observations from benchmark runs (shipped with the package, imported into Redis, or in
`PONDER_RESULTS_DIR`: service/planning/evidence.py) and from the ledger's served requests whose answer was graded
(a `verifier.reference`) or marked through `POST /v1/feedback`.

    record -> Observation(n, cap, kv_budget, correct)      for Kinetics' allocator
        n    the strategy's samples (1 for a plain call); a Kinetics request's own plan
        cap  the request's max_tokens where the ledger has it, else the smallest grid cap that holds the mean sample
             (a sample that ended within L tokens would have ended the same under any cap >= L)
        B    the plan's KV budget (None: dense)
    family   a benchmark's suite, a Kinetics request's `family`; "default" pools every record of the model
    lengths  mean sample lengths of records whose samples ended by themselves: the allocator's length profile
    auto     the difficulty (probe agreement) each `auto` request measured, and for graded ones its bin, its choice
             and whether it was right: the compute-optimal table
    sources  which runs and how many ledger records a (model, family)'s evidence came from (`GET /v1/cost-model`)

The ledger is read at most every `REFRESH_S` per gateway (a planning request must not read the whole ledger); the
benchmark runs are looked at every `RUNS_REFRESH_S` (a directory's mtimes and Redis' small index of imported runs),
so an import is planned from within seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compute.accuracy import Observation
from compute.allocator import SHORT_CAPS
from service.planning.evidence import ORIGINS, Origin, ReferenceRuns, Run
from service.state.ledger import Ledger, LedgerRecord

log = logging.getLogger(__name__)

REFRESH_S = 30.0
RUNS_REFRESH_S = 2.0
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
    runs: dict[str, int] = field(default_factory=dict)
    """benchmark run -> its records that count for this (model, family)"""
    origins: dict[str, Origin] = field(default_factory=dict)
    """where each of those runs came from"""
    graded: int = 0
    """ledger records that count, graded against a `verifier.reference`"""
    feedback: int = 0
    """ledger records that count, marked through `POST /v1/feedback`"""

    def sources(self) -> dict[str, Any]:
        """Which evidence a plan used: the runs by where they came from, each with its records that counted, and
        the ledger's records. `prior_only`: nothing observed, so every accuracy is the prior's."""
        report: dict[str, Any] = {origin: [] for origin in ORIGINS}
        for run, records in sorted(self.runs.items()):
            report[self.origins[run]].append({"run": run, "records": records})
        report["ledger"] = {"records": self.graded + self.feedback, "graded": self.graded, "feedback": self.feedback}
        report["prior_only"] = not self.observations
        return report


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


def evidence(records: Iterable[LedgerRecord], model: str, family: str, origins: Mapping[str, Origin]) -> Evidence:
    """`origins` says where each benchmark run came from."""
    observations, lengths, agreements, choices = [], [], [], []
    runs: Counter[str] = Counter()
    served: Counter[str] = Counter()
    for record in records:
        if record.model != model or (family != DEFAULT_FAMILY and family_of(record) != family):
            continue
        plan = record.params.get("plan") or {}
        counted = False
        if record.strategy == "auto" and plan.get("agreement") is not None:
            agreements.append(float(plan["agreement"]))
            counted = True
            if record.correct is not None and plan.get("bin") is not None:
                choices.append((int(plan["bin"]), str(plan.get("choice")), bool(record.correct)))
        found = observation(record)
        if found is not None:
            observations.append(found[0])
            if found[1] is not None:
                lengths.append(found[1])
            counted = True
        if not counted:
            continue
        if record.source == "benchmark" and record.run:
            runs[record.run] += 1
        elif record.correct is not None:
            served["feedback" if record.feedback is not None else "graded"] += 1
    return Evidence(
        observations,
        lengths,
        agreements,
        choices,
        runs=dict(runs),
        origins={run: origins[run] for run in runs},
        graded=served["graded"],
        feedback=served["feedback"],
    )


@dataclass
class AccuracyBook:
    ledger: Ledger
    references: ReferenceRuns
    _runs: list[Run] = field(default_factory=list)
    _served: list[LedgerRecord] = field(default_factory=list)
    _runs_read: float = float("-inf")
    _built: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def evidence(self, model: str, family: str) -> Evidence:
        """What is known for (model, family); an unreachable Redis leaves the benchmark runs alone."""
        async with self._lock:
            if time.monotonic() - self._runs_read > RUNS_REFRESH_S:
                self._runs, self._runs_read = await self.references.load(), time.monotonic()
            if time.monotonic() - self._built > REFRESH_S:
                try:
                    served = await asyncio.wait_for(self.ledger.recent(limit=LEDGER_RECORDS), timeout=2.0)
                except Exception as exc:  # Redis slow or down: plan from the benchmarks alone
                    log.warning("ledger unreadable for the accuracy table: %s: %s", type(exc).__name__, exc)
                    served = []
                self._served, self._built = served, time.monotonic()
            runs, served = self._runs, self._served
        records = [r for run in runs for r in run.records]
        return evidence([*records, *served], model, family, {run.name: run.origin for run in runs})
