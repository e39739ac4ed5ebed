"""`ponder import-results`: the result-file check (every refusal names the file and the problem; no input makes it
fail in another way), the Redis store of imported runs over the real Redis (all or nothing, re-read only when a
run changes), and the command itself, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from service.state.imports import INDEX, RUN, ImportedResults, ResultRun
from service.state.results import InvalidResults, parse_results, read_result_file, run_name

from ..conftest import ROOT, database_url, empty_database
from .test_dashboard_data import write_bench

GOOD = "accuracy-tiny-20261123T000000Z"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with empty_database(redis_url, "evidence") as client:
        yield client


def bench(tmp_path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(write_bench(tmp_path).read_text())
    return raw


def broken(tmp_path: Path, name: str, change: Any) -> Path:
    raw = bench(tmp_path)
    change(raw)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda r: r.pop("runs"), "first at runs: Field required"),
        (lambda r: r.update(runs=[]), "first at runs: List should have at least 1 item"),
        (lambda r: r.update(timestamp="yesterday"), "first at timestamp"),
        (lambda r: r["runs"][1].update(strategy={"n": 4}), "a strategy needs a `name`"),
        (lambda r: r["runs"][0]["outcomes"][0].update(completion_tokens=-3), "runs.0.outcomes.0.completion_tokens"),
        (lambda r: r["runs"][0].update(rows=[]), "runs.0.rows"),
        (lambda r: [o.update(correct={}) for run in r["runs"] for o in run["outcomes"]], "no outcome is graded"),
    ],
)
def test_a_bad_result_is_refused_saying_where(tmp_path: Path, change: Any, says: str) -> None:
    path = broken(tmp_path, "accuracy-bad-20261123T000000Z", change)
    with pytest.raises(InvalidResults) as refused:
        read_result_file(path)
    assert str(refused.value).startswith("accuracy-bad-20261123T000000Z: ") and says in str(refused.value)


def test_names_files_and_text_that_are_not_results(tmp_path: Path) -> None:
    for name in ("accuracy-tiny.json", "tiny.json", "accuracy-ti ny-2026.json", "a-b-c-d-e-f-g-h-i-j-k.json"):
        with pytest.raises(InvalidResults, match="<benchmark>-<family>-<time>"):
            run_name(tmp_path / name)
    assert run_name(tmp_path / f"{GOOD}.json") == GOOD
    with pytest.raises(InvalidResults, match="cannot be read"):
        read_result_file(tmp_path / f"{GOOD}.json")
    (tmp_path / "accuracy-bin-2026.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidResults, match="not UTF-8"):
        read_result_file(tmp_path / "accuracy-bin-2026.json")
    with pytest.raises(InvalidResults, match="not JSON"):
        parse_results("{", GOOD)
    name, text, records = read_result_file(write_bench(tmp_path))
    assert name == GOOD and json.loads(text)["benchmark"] == "accuracy-tiny" and len(records) == 12


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["runs", "model", "name", "rows", "outcomes", "correct", "x"]), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_a_result_or_a_refusal(value: Any) -> None:
    try:
        records = parse_results(json.dumps(value), GOOD)
    except InvalidResults:
        return
    assert any(r.correct is not None for r in records)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["runs", "model", "timestamp", "benchmark"]), JSON)
def test_a_good_result_with_any_field_replaced_is_a_result_or_a_refusal(field: str, value: Any) -> None:
    raw = json.loads((ROOT / "service" / "planning" / "reference" / "accuracy-arithmetic-20261123T132821Z.json").read_text())
    raw[field] = value
    try:
        parse_results(json.dumps(raw), GOOD)
    except InvalidResults as exc:
        assert str(exc).startswith(GOOD)


async def test_an_import_is_whole_and_a_gateway_rereads_only_what_changed(redis: Redis, tmp_path: Path) -> None:
    store = ImportedResults(redis)
    run = ResultRun(*read_result_file(write_bench(tmp_path)))
    [info] = await store.put([run])
    assert (info.run, info.model, info.benchmark, info.family, info.records, info.graded) == (GOOD, "bench-model", "accuracy", "tiny", 12, 12)
    assert json.loads(await redis.get(RUN.format(GOOD))) == json.loads(run.text)
    first = await store.load()
    assert list(first) == [GOOD] and len(first[GOOD]) == 12
    assert (await store.load())[GOOD] is first[GOOD]  # the index's digest is unchanged: the run is not fetched again
    await store.put([run])
    assert (await store.load())[GOOD] is first[GOOD]  # imported again as it was: same digest
    raw = json.loads(run.text)
    raw["runs"] = raw["runs"][:1]
    await store.put([ResultRun(GOOD, json.dumps(raw), run.records[:4])])
    assert len((await store.load())[GOOD]) == 4
    await redis.hset(INDEX, "accuracy-junk-2026", (await redis.hget(INDEX, GOOD)).replace(GOOD, "accuracy-junk-2026"))
    await redis.set(RUN.format("accuracy-junk-2026"), "{}")  # written by hand: left out, not fatal
    assert list(await store.load()) == [GOOD]
    assert await store.remove([GOOD, "accuracy-never-2026"]) == [GOOD]
    assert await redis.get(RUN.format(GOOD)) is None and [r.run for r in await store.index()] == ["accuracy-junk-2026"]


def ponder(*args: str, redis_url: str | None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in a process of its own."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **({"PONDER_REDIS_URL": redis_url} if redis_url else {})}
    return subprocess.run([sys.executable, "-m", "service.cli", "import-results", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


async def test_the_command_imports_checks_lists_and_removes(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    url = database_url(redis_url, "evidence")
    good = write_bench(tmp_path)
    bad = broken(tmp_path, "accuracy-bad-20261123T000000Z", lambda r: r["runs"][0]["outcomes"][0].update(latency_s="slow"))
    nameless = tmp_path / "results.json"
    nameless.write_text(good.read_text())

    refused = ponder(str(good), str(bad), str(nameless), str(tmp_path / "accuracy-gone-2026.json"), redis_url=url)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("ponder import-results: nothing imported:")
    for said in (
        "accuracy-bad-20261123T000000Z: not a benchmark result",
        "runs.0.outcomes.0.latency_s",
        "results.json: a result file is named",
        "accuracy-gone-2026.json: cannot be read",
    ):
        assert said in refused.stderr, refused.stderr
    assert await redis.keys("*") == []  # the good file was not imported either

    twice = ponder(str(good), str(good), redis_url=url)
    assert twice.returncode == 1 and "given more than once" in twice.stderr and await redis.keys("*") == []

    dry = ponder("--dry-run", str(good), redis_url=None)
    assert dry.returncode == 0 and json.loads(dry.stdout)["checked"][0]["records"] == 12 and await redis.keys("*") == []
    nowhere = ponder(str(good), redis_url=None)
    assert nowhere.returncode == 1 and "PONDER_REDIS_URL is not set" in nowhere.stderr

    done = ponder(str(good), redis_url=url)
    assert done.returncode == 0, done.stderr
    assert [(r["run"], r["model"], r["family"], r["graded"]) for r in json.loads(done.stdout)["imported"]] == [(GOOD, "bench-model", "tiny", 12)]
    assert list(await ImportedResults(redis).load()) == [GOOD]
    listed = ponder("--list", redis_url=url)
    assert [r["run"] for r in json.loads(listed.stdout)["imported"]] == [GOOD]
    removed = ponder("--remove", GOOD, redis_url=url)
    assert json.loads(removed.stdout) == {"removed": [GOOD]} and await redis.keys("*") == []

    usage = ponder(redis_url=url)
    assert usage.returncode == 2 and "give result files, --list or --remove" in usage.stderr
    dead = ponder(str(good), redis_url="redis://127.0.0.1:1/0")
    assert dead.returncode == 1 and "Redis did not answer, nothing changed" in dead.stderr
