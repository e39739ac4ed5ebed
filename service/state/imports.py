"""Benchmark runs imported into Redis (`ponder import-results`), so that every gateway sharing the Redis plans from
them and shows them.

Layout:
- `ponder:results:index`, a hash: run name -> what the run is (`ImportedRun`: its digest, model, records, when);
- `ponder:results:run:<name>`, the run's result file, re-serialised without indentation.
An import writes every run it was given in one MULTI/EXEC, so a gateway sees all of them or none; the files are
checked before anything is written. Nothing expires: a reference run stays until it is removed. A gateway reads
the index (small) each time it looks, and a run's file only when its digest changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel
from redis.asyncio import Redis

from service.state.ledger import LedgerRecord
from service.state.results import InvalidResults, parse_results

log = logging.getLogger("ponder.results")

INDEX = "ponder:results:index"
RUN = "ponder:results:run:{}"


class ImportedRun(BaseModel):
    run: str
    digest: str
    model: str | None
    benchmark: str
    family: str
    records: int
    graded: int
    imported_at: float


@dataclass(frozen=True)
class ResultRun:
    """A checked result file, ready to import."""

    name: str
    text: str
    records: list[LedgerRecord]

    def describe(self, at: float) -> ImportedRun:
        compact = canonical(self.text)
        return ImportedRun(
            run=self.name,
            digest=hashlib.sha256(compact.encode()).hexdigest(),
            model=self.records[0].model if self.records else None,
            benchmark=self.name.split("-")[0],
            family=self.name.split("-")[1],
            records=len(self.records),
            graded=sum(r.correct is not None for r in self.records),
            imported_at=at,
        )


def canonical(text: str) -> str:
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


class ImportedResults:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._cache: dict[str, tuple[str, list[LedgerRecord]]] = {}

    async def put(self, runs: Sequence[ResultRun]) -> list[ImportedRun]:
        """All or nothing: one transaction; a run already there under the same name is replaced."""
        at = time.time()
        described = [(r, r.describe(at)) for r in runs]
        async with self.redis.pipeline(transaction=True) as pipe:
            for run, info in described:
                pipe.set(RUN.format(run.name), canonical(run.text))
                pipe.hset(INDEX, run.name, info.model_dump_json())
            await pipe.execute()
        return [info for _, info in described]

    async def remove(self, names: Sequence[str]) -> list[str]:
        """The names that were there and are now gone."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.hdel(INDEX, name)
                pipe.delete(RUN.format(name))
            done = await pipe.execute()
        return [name for name, gone in zip(names, done[::2], strict=True) if gone]

    async def index(self) -> list[ImportedRun]:
        raw = await self.redis.hgetall(INDEX)
        return sorted((ImportedRun.model_validate_json(v) for v in raw.values()), key=lambda r: r.run)

    async def load(self) -> dict[str, list[LedgerRecord]]:
        """Run name -> records, fetching only the runs that are new or changed since the last look. A run that no
        longer reads as a result (written by hand, say) is left out with a warning."""
        found: dict[str, tuple[str, list[LedgerRecord]]] = {}
        for info in await self.index():
            cached = self._cache.get(info.run)
            if cached is None or cached[0] != info.digest:
                text = await self.redis.get(RUN.format(info.run))
                if text is None:  # removed between the two reads
                    continue
                try:
                    cached = (info.digest, parse_results(text if isinstance(text, str) else text.decode(), info.run))
                except InvalidResults as exc:
                    log.warning("imported results %s not used: %s", info.run, exc)
                    continue
            found[info.run] = cached
        self._cache = found
        return {name: records for name, (_, records) in found.items()}
