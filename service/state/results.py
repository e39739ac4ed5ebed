"""Benchmark result files as evidence: the records of `bench/results/*.json` (or `PONDER_RESULTS_DIR`), in the
ledger's shape, for the dashboard's points and the planner's accuracy table."""

from __future__ import annotations

import importlib.util
import json
import logging
from functools import cache
from pathlib import Path

from service.state.ledger import LedgerRecord, bench_records

log = logging.getLogger("ponder.results")

# Result files in the shape `bench_records` reads: runs of configurations, each with its problems' outcomes.
RESULT_FILES = ("accuracy-*.json", "atts-*.json", "early_stop-*.json", "kinetics-*.json")


class BenchmarkResults:
    """The benchmark records of a results directory, each file parsed again only when its mtime or size changes
    (the biggest result files hold thousands of problem outcomes)."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[tuple[int, int], list[LedgerRecord]]] = {}

    def load(self, directory: Path | None) -> list[LedgerRecord]:
        paths = sorted(p for pattern in RESULT_FILES for p in directory.glob(pattern)) if directory is not None and directory.is_dir() else []
        files = {}
        for path in paths:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            cached = self._files.get(path)
            if cached is None or cached[0] != key:
                cached = (key, read_results(path))
            files[path] = cached
        self._files = files
        return [r for _, records in files.values() for r in records]


def read_results(path: Path) -> list[LedgerRecord]:
    """A malformed or half-written result file costs its points (and a warning), never the dashboard."""
    try:
        return bench_records(json.loads(path.read_text()), path.stem)
    except Exception as exc:
        log.warning("benchmark results %s not shown: %s: %s", path, type(exc).__name__, exc)
        return []


BENCHMARKS = BenchmarkResults()


@cache
def installed_results_dir() -> Path | None:
    """The `bench` package's results folder, found without importing the package."""
    spec = importlib.util.find_spec("bench")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "results"
