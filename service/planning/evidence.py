"""The benchmark runs the planner and the dashboard learn from, wherever Ponder runs, from three places:

    shipped      the reference runs inside the package (service/planning/reference/, package data), so a fresh
                 install, a wheel or an image, plans from measured accuracy and not from the prior alone
    imported     runs loaded into Redis by `ponder import-results`, shared by every gateway on that Redis
    results_dir  result files in `PONDER_RESULTS_DIR`, read by this gateway alone

A run is known by its name (`<benchmark>-<family>-<time>`) and counts once: a results-directory file overrides an
imported run of the same name, which overrides a shipped one. The ledger's graded and feedback-marked requests
are the fourth source (service/planning/accuracy.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from redis.asyncio import Redis

from service.state.imports import ImportedResults
from service.state.ledger import LedgerRecord
from service.state.results import BenchmarkResults, parse_results

log = logging.getLogger(__name__)

Origin = Literal["shipped", "imported", "results_dir"]
ORIGINS: tuple[Origin, ...] = ("shipped", "imported", "results_dir")
"""In order of precedence, lowest first: a later one's run replaces an earlier one's of the same name."""
REDIS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Run:
    name: str
    origin: Origin
    records: list[LedgerRecord]


@cache
def shipped_runs() -> tuple[Run, ...]:
    """Read once: package data never changes under a running process. A file that does not parse is a packaging
    bug, so it raises rather than leave the planner quietly on its prior."""
    folder = resources.files("service.planning") / "reference"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    return tuple(Run(f.name.removesuffix(".json"), "shipped", parse_results(f.read_text(), f.name.removesuffix(".json"))) for f in files)


def merge(*sources: tuple[Origin, dict[str, list[LedgerRecord]]]) -> list[Run]:
    """One run per name, the source of highest precedence winning, sorted by name."""
    runs: dict[str, Run] = {}
    for origin, found in sorted(sources, key=lambda s: ORIGINS.index(s[0])):
        for name, records in found.items():
            runs[name] = Run(name, origin, records)
    return [runs[name] for name in sorted(runs)]


class ReferenceRuns:
    """Every benchmark run this gateway knows of. `shipped=False` leaves the package's own runs out (tests that
    need a known set of points)."""

    def __init__(self, redis: Redis | None, results_dir: Path | None, *, shipped: bool = True) -> None:
        self.imported = ImportedResults(redis) if redis is not None else None
        self.results_dir = results_dir
        self.shipped = shipped
        self._files = BenchmarkResults()
        self._imported: dict[str, list[LedgerRecord]] = {}

    async def load(self) -> list[Run]:
        """An unreachable Redis keeps the imported runs last read, with a warning: the planner and dashboard go on
        with what they knew."""
        shipped = {r.name: r.records for r in await asyncio.to_thread(shipped_runs)} if self.shipped else {}
        local = await asyncio.to_thread(self._files.load, self.results_dir)
        if self.imported is not None:
            try:
                self._imported = await asyncio.wait_for(self.imported.load(), timeout=REDIS_TIMEOUT_S)
            except Exception as exc:
                log.warning("imported benchmark runs unreadable, the last read kept: %s: %s", type(exc).__name__, exc)
        return merge(("shipped", shipped), ("imported", self._imported), ("results_dir", local))
