"""Where planning evidence comes from: the runs shipped inside the package (and inside a built wheel, read from an
installed copy), a results directory, runs imported into the real Redis, and the ledger's graded and
feedback-marked records; one run per name, and the accuracy table's report of which evidence it used."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from redis.asyncio import Redis

from service.planning import accuracy
from service.planning.accuracy import AccuracyBook
from service.planning.evidence import ReferenceRuns, merge, shipped_runs
from service.settings import LedgerSettings
from service.state import store
from service.state.imports import ImportedResults, ResultRun
from service.state.ledger import Ledger, LedgerRecord
from service.state.results import RESULT_FILES, read_result_file

from ..conftest import ROOT, empty_database, free_port
from .test_accuracy import record
from .test_dashboard_data import write_bench

REFERENCE = ROOT / "service" / "planning" / "reference"
PLANNING_RUNS = sorted(p.name for pattern in RESULT_FILES for p in (ROOT / "bench" / "results").glob(pattern))
ARITHMETIC = "accuracy-arithmetic-20261123T132821Z"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with empty_database(redis_url, "evidence") as client:
        yield client


def result_run(path: Path) -> ResultRun:
    return ResultRun(*read_result_file(path))


def tiny_run(directory: Path, name: str, model: str = "bench-model") -> Path:
    """write_bench's run under another name (and model)."""
    raw = json.loads(write_bench(directory).read_text())
    raw["model"]["name"] = model
    path = directory / f"{name}.json"
    path.write_text(json.dumps(raw))
    (directory / "accuracy-tiny-20261123T000000Z.json").unlink()
    return path


def test_the_package_ships_every_committed_planning_run_unchanged() -> None:
    """A new benchmark result in bench/results that planning reads must be shipped too, byte for byte."""
    shipped = sorted(p.name for p in REFERENCE.glob("*.json"))
    assert shipped == PLANNING_RUNS and len(shipped) >= 8
    for name in shipped:
        assert (REFERENCE / name).read_bytes() == (ROOT / "bench" / "results" / name).read_bytes(), name


def test_shipped_runs_are_read_through_the_package_and_every_record_is_graded() -> None:
    runs = shipped_runs()
    assert [r.name for r in runs] == [name.removesuffix(".json") for name in PLANNING_RUNS]
    assert all(r.origin == "shipped" and r.records and all(x.correct is not None for x in r.records) for r in runs)
    assert {x.model for r in runs for x in r.records} == {"smollm2-135m"}
    refused = next(r for r in runs if r.name.startswith("kinetics-arithmetic"))
    assert len(refused.records) == 800  # 40 refused requests of auto at the smallest budget answered nothing


def test_a_run_counts_once_and_the_nearer_source_wins() -> None:
    a, b, c = (record(source="benchmark", run=name) for name in ("a", "b", "c"))
    runs = merge(("results_dir", {"a": [a]}), ("shipped", {"a": [c], "b": [b], "c": [c]}), ("imported", {"b": [a], "c": [a]}))
    assert [(r.name, r.origin) for r in runs] == [("a", "results_dir"), ("b", "imported"), ("c", "imported")]
    assert runs[0].records == [a] and runs[1].records == [a]


async def test_reference_runs_join_the_package_a_results_directory_and_redis(redis: Redis, tmp_path: Path) -> None:
    results, staging = tmp_path / "results", tmp_path / "staging"
    results.mkdir(), staging.mkdir()
    shutil.copy(REFERENCE / f"{ARITHMETIC}.json", results)  # a shipped run, overridden by the operator's copy
    write_bench(results)
    imported = tiny_run(staging, "accuracy-imported-20261201T000000Z", model="m")
    await ImportedResults(redis).put([result_run(imported), result_run(REFERENCE / "accuracy-humaneval-20261123T143025Z.json")])

    runs = {r.name: r for r in await ReferenceRuns(redis, results).load()}
    origins = {name: r.origin for name, r in runs.items()}
    assert origins[ARITHMETIC] == "results_dir" and origins["accuracy-tiny-20261123T000000Z"] == "results_dir"
    assert origins["accuracy-imported-20261201T000000Z"] == "imported" and origins["accuracy-humaneval-20261123T143025Z"] == "imported"
    assert origins["kinetics-arithmetic-20261202T160301Z"] == "shipped"
    assert len(runs) == len(PLANNING_RUNS) + 2
    alone = await ReferenceRuns(None, None, shipped=False).load()
    assert alone == []


async def test_an_unreachable_redis_keeps_the_imported_runs_last_read(redis: Redis, tmp_path: Path) -> None:
    await ImportedResults(redis).put([result_run(tiny_run(tmp_path, "accuracy-kept-20261201T000000Z"))])
    references = ReferenceRuns(redis, None, shipped=False)
    assert [r.name for r in await references.load()] == ["accuracy-kept-20261201T000000Z"]
    dead = store.connect(f"redis://127.0.0.1:{free_port()}/0")
    assert references.imported is not None
    references.imported.redis = dead
    try:
        assert [r.name for r in await references.load()] == ["accuracy-kept-20261201T000000Z"]
    finally:
        await dead.aclose()


async def test_the_accuracy_table_reports_the_runs_and_ledger_records_it_learnt_from(redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accuracy, "RUNS_REFRESH_S", 0.0)
    ledger = Ledger(redis, LedgerSettings())
    served = [record(id=f"{i:032x}", params={"n": 4, "family": "arithmetic"}, correct=c, time=0.0) for i, c in enumerate([True, False, None])] + [
        record(id=f"{9:032x}", params={"n": 4}, correct=True, time=0.0)
    ]
    for r in served:
        ledger.submit(r)
    await ledger.drain(5.0)
    assert await ledger.feedback(f"{2:032x}", True) is not None
    book = AccuracyBook(ledger, ReferenceRuns(redis, None))

    known = await book.evidence("smollm2-135m", "arithmetic")
    sources = known.sources()
    shipped = {s["run"]: s["records"] for s in sources["shipped"]}
    assert set(shipped) == {
        "accuracy-arithmetic-20261123T124623Z",
        ARITHMETIC,
        "early_stop-arithmetic-20261201T233116Z",
        "kinetics-arithmetic-20261202T160301Z",  # its greedy, majority and best-of-N rows; the planners' rows have no plan
        "accuracy-arithmetic-20261205T054220Z",  # its greedy and majority rows; program is not a strategy the table plans
    }  # atts is not a sampling strategy the table learns from; humaneval is another family
    assert shipped[ARITHMETIC] == 240 and shipped["kinetics-arithmetic-20261202T160301Z"] == 15 * 40
    assert sources["ledger"] == {"records": 3, "graded": 2, "feedback": 1} and sources["imported"] == sources["results_dir"] == []
    assert len(known.observations) == sum(shipped.values()) + 3 and not sources["prior_only"]

    assert (await book.evidence("m", "tiny")).sources()["prior_only"]
    await ImportedResults(redis).put([result_run(tiny_run(tmp_path, "accuracy-tiny-20261201T000000Z", model="m"))])
    imported = (await book.evidence("m", "tiny")).sources()  # within RUNS_REFRESH_S, without a restart
    assert imported["imported"] == [{"run": "accuracy-tiny-20261201T000000Z", "records": 12}] and not imported["prior_only"]


def test_the_images_copy_the_shipped_runs() -> None:
    """The images build from `service/`; nothing in either allowlist drops the reference runs again."""
    for flavour in ("cpu", "gpu"):
        lines = [line.strip() for line in (ROOT / "deploy" / f"Dockerfile.{flavour}.dockerignore").read_text().splitlines()]
        patterns = [line for line in lines if line and not line.startswith("#")]
        for name in PLANNING_RUNS:
            path = f"service/planning/reference/{name}"
            kept = False
            for pattern in patterns:  # the last matching pattern decides, as in Docker
                negated = pattern.startswith("!")
                bare = pattern.lstrip("!").rstrip("/")
                parts = path.split("/")
                if any(fnmatch("/".join(parts[:i]), bare) for i in range(1, len(parts) + 1)) or fnmatch(path, bare.replace("**/", "*")):
                    kept = negated
            assert kept, (flavour, path)
        assert "COPY service ./service" in (ROOT / "deploy" / f"Dockerfile.{flavour}").read_text()


def test_a_built_wheel_plans_from_its_shipped_runs(tmp_path: Path) -> None:
    """Builds the wheel from a copy of the tree, unpacks it as an installation would, and asks the installed copy's
    accuracy table (no results directory, an empty Redis) what it knows."""
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "results", "*.pyc")
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree)
    for package in ("compute", "service", "strategies", "verifiers", "suites", "bench"):
        shutil.copytree(ROOT / package, tree / package, ignore=ignore)
    dist = tmp_path / "dist"
    dist.mkdir()
    build = "from setuptools import build_meta; import sys; print(build_meta.build_wheel(sys.argv[1]))"
    built = subprocess.run([sys.executable, "-c", build, str(dist)], cwd=tree, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = dist / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("service/planning/reference/")) == PLANNING_RUNS
        assert not any(n.startswith("bench/results/") for n in names)
        archive.extractall(tmp_path / "site")
    probe = """
import asyncio, json, service
from service.planning.accuracy import AccuracyBook
from service.planning.evidence import ReferenceRuns
from service.settings import LedgerSettings
from service.state import store
from service.state.ledger import Ledger

async def main():
    redis = store.connect(None)
    book = AccuracyBook(Ledger(redis, LedgerSettings()), ReferenceRuns(redis, None))
    known = await book.evidence("smollm2-135m", "humaneval")
    print(json.dumps({"file": service.__file__, "observations": len(known.observations), "sources": known.sources()}))

asyncio.run(main())
"""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(tmp_path / "site"))  # the installed copy, not this checkout
    assert [s["run"] for s in report["sources"]["shipped"]] == [
        "accuracy-humaneval-20261123T143025Z",
        "early_stop-humaneval-20261202T060420Z",
        "kinetics-humaneval-20261202T161429Z",
    ]
    assert report["observations"] > 1000 and not report["sources"]["prior_only"]


def test_every_record_of_a_run_is_a_benchmark_record_of_that_run() -> None:
    for run in shipped_runs():
        assert all(isinstance(r, LedgerRecord) and r.source == "benchmark" and r.run == run.name for r in run.records)
