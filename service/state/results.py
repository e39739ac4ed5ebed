"""Benchmark result files as evidence: a file's check (the shape `bench_records` reads, so a file that passes gives
records and one that does not is refused whole), and the files of a results directory (`PONDER_RESULTS_DIR`),
each read again only when it changes. The records are in the ledger's shape, for the dashboard's points and the
planner's accuracy table."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, ValidationError, field_validator

from service.state.ledger import LedgerRecord, bench_records

log = logging.getLogger("ponder.results")

# Result files in the shape `bench_records` reads: runs of configurations, each with its problems' outcomes.
RESULT_FILES = ("accuracy-*.json", "atts-*.json", "early_stop-*.json", "kinetics-*.json")
RUN_NAME = re.compile(r"[A-Za-z0-9_.]{1,64}(-[A-Za-z0-9_.]{1,64}){2,8}")
"""`<benchmark>-<family>-<time>` as bench/ names its files: the family (the suite) is read from the name."""
MAX_RESULT_BYTES = 64 * 1024 * 1024


class InvalidResults(ValueError):
    """A result file that cannot be evidence, with what is wrong in words a person can act on."""


class _Outcome(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cached_tokens: NonNegativeInt = 0
    latency_s: NonNegativeFloat = 0.0
    correct: dict[str, bool | None] = Field(default_factory=dict)
    refused: str | bool | None = None


class _Config(BaseModel):
    model_config = ConfigDict(extra="allow")
    config: str
    strategy: dict[str, Any] | None
    temperature: float | None = None
    rows: list[str] = Field(min_length=1)
    outcomes: list[_Outcome]

    @field_validator("strategy")
    @classmethod
    def _named(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("name"), str):
            raise ValueError("a strategy needs a `name`")
        return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=256)


class _ResultFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    benchmark: str
    timestamp: datetime
    model: _Model
    runs: list[_Config] = Field(min_length=1)


def run_name(path: Path) -> str:
    name = path.name.removesuffix(".json")
    if not RUN_NAME.fullmatch(name):
        raise InvalidResults(
            f"{path.name}: a result file is named <benchmark>-<family>-<time>.json (as bench/ writes it), since the family is read from the name"
        )
    return name


def parse_results(text: str, run: str) -> list[LedgerRecord]:
    """The run's graded records; InvalidResults says where the file is not a benchmark result."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidResults(f"{run}: not JSON: {exc}") from exc
    try:
        _ResultFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise InvalidResults(f"{run}: not a benchmark result ({exc.error_count()} problem(s)); first at {where}: {first['msg']}") from exc
    records = bench_records(raw, run)
    if not any(r.correct is not None for r in records):
        raise InvalidResults(f"{run}: no outcome is graded, so the run says nothing of accuracy")
    return records


def read_result_file(path: Path) -> tuple[str, str, list[LedgerRecord]]:
    """The run's name, the file's text and its records; InvalidResults for a file that is none."""
    name = run_name(path)
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            raise InvalidResults(f"{path.name}: larger than {MAX_RESULT_BYTES // 2**20} MiB")
        text = path.read_text()
    except OSError as exc:
        raise InvalidResults(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidResults(f"{path.name}: not UTF-8 text") from exc
    return name, text, parse_results(text, name)


class BenchmarkResults:
    """The benchmark runs of a results directory, each file parsed again only when its mtime or size changes
    (the biggest result files hold thousands of problem outcomes)."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[tuple[int, int], str, list[LedgerRecord]]] = {}

    def load(self, directory: Path | None) -> dict[str, list[LedgerRecord]]:
        """Run name -> records. A malformed or half-written file costs its run (and a warning), nothing else."""
        paths = sorted(p for pattern in RESULT_FILES for p in directory.glob(pattern)) if directory is not None and directory.is_dir() else []
        files = {}
        for path in paths:
            try:
                stat = path.stat()
                key = (stat.st_mtime_ns, stat.st_size)
                cached = self._files.get(path)
                if cached is None or cached[0] != key:
                    name, _, records = read_result_file(path)
                    cached = (key, name, records)
            except (InvalidResults, OSError) as exc:
                log.warning("benchmark results %s not used: %s", path, exc)
                continue
            files[path] = cached
        self._files = files
        return {name: records for _, name, records in files.values()}
