"""`ponder import-results FILE...`: loads benchmark runs into the Redis the gateways share, so that every one of them
plans from the runs (Kinetics' and `auto`'s accuracy table) and shows them on its dashboard, within seconds and
without a restart (service/state/imports.py has the layout).

Every file is checked before anything is written, and the runs are written in one transaction: a bad file is an
error naming the file and what is wrong, and nothing is imported. `--list` shows what is there, `--remove` takes
runs out again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from service.state import store
from service.state.imports import ImportedResults, ResultRun
from service.state.results import InvalidResults, read_result_file


class ImportFailed(Exception):
    """What the command says on stderr before it exits nonzero."""


def check(paths: Sequence[Path]) -> list[ResultRun]:
    """Every file's run, or ImportFailed listing every file that is not one."""
    runs, problems = [], []
    for path in paths:
        try:
            name, text, records = read_result_file(path)
        except InvalidResults as exc:
            problems.append(str(exc))
            continue
        runs.append(ResultRun(name, text, records))
    twice = sorted(name for name, count in Counter(r.name for r in runs).items() if count > 1)
    problems += [f"{name}: given more than once (a run is known by its file's name)" for name in twice]
    if problems:
        raise ImportFailed("nothing imported:\n  " + "\n  ".join(problems))
    return runs


async def run(redis_url: str | None, files: Sequence[Path], *, dry_run: bool = False, listing: bool = False, remove: Sequence[str] = ()) -> dict[str, Any]:
    runs = check(files) if files else []
    if dry_run:
        return {"checked": [r.describe(0.0).model_dump(exclude={"imported_at"}) for r in runs]}
    if not redis_url:
        raise ImportFailed("PONDER_REDIS_URL is not set: the runs would go into this command's own in-memory store, which no gateway reads")
    redis = store.connect(redis_url)
    try:
        imported = ImportedResults(redis)
        if listing:
            return {"imported": [r.model_dump() for r in await imported.index()]}
        if remove:
            return {"removed": await imported.remove(remove)}
        return {"imported": [r.model_dump() for r in await imported.put(runs)]}
    except (RedisError, OSError) as exc:
        raise ImportFailed(f"Redis did not answer, nothing changed: {type(exc).__name__}: {exc}") from exc
    finally:
        await redis.aclose()
